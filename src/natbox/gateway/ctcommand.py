"""`conntrack` on the live table of a running gateway, as conntrack-tools 1.4.7 parses and answers it.

The command line is read as conntrack.c reads it: one command (-L -D -F -C -S -E, or their long names;
two are "Invalid commands combination"), generic options (-s -d -r -q with an optional /prefix, -p, -u,
-m, -n -g -j, -f, -w, -o), and the protocol's own options, known only after `-p` (--sport --dport
--reply-port-src --reply-port-dst, --state for TCP and SCTP, --icmp-type --icmp-code --icmp-id for ICMP). A
repeated option keeps its last value. Errors are conntrack's own lines and exit codes (2 for a bad
command line, `Try conntrack -h ...` after it); an option conntrack knows but natbox does not implement
is refused as a kernel without that feature refuses it ("Operation failed: Operation not supported").
Filters select what -L lists, -D deletes and -E reports.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from natbox.conntrack.conn import Conn
from natbox.conntrack.format import format_stats
from natbox.conntrack.proto.sctp import SCTP_CONNTRACK_NAMES
from natbox.conntrack.proto.tcp import TCP_CONNTRACK_NAMES
from natbox.engine.engine import Engine
from natbox.gateway.ctoutput import OUTPUT_TYPES, XML_FOOTER, XML_HEADER, format_line, format_save, format_xml
from natbox.netfilter import NFPROTO_IPV4, NFPROTO_IPV6, CtStatus

__all__ = ["CtArgs", "CtUsageError", "conntrack_command", "parse_conntrack_args"]

PROG = "conntrack v1.4.7 (conntrack-tools)"
TRY = "Try `conntrack -h' or 'conntrack --help' for more information.\n"
NOT_SUPPORTED = "Operation failed: Operation not supported"

COMMANDS = {"-L": "list", "--dump": "list", "-D": "delete", "--delete": "delete", "-F": "flush",
            "--flush": "flush", "-C": "count", "--count": "count", "-S": "stats", "--stats": "stats",
            "-E": "event", "--event": "event", "-G": "get", "--get": "get", "-I": "create", "--create": "create",
            "-U": "update", "--update": "update", "-R": "load", "--load-file": "load", "-A": "add", "--add": "add"}
IMPLEMENTED = frozenset({"list", "delete", "flush", "count", "stats", "event"})
# generic options: spelling -> (the long name conntrack reports it by, takes a value: 1, an optional one: 2)
OPTIONS: dict[str, tuple[str, int]] = {}
for _names, _long, _arg in (
    (("-s", "--src", "--orig-src"), "src", 1), (("-d", "--dst", "--orig-dst"), "dst", 1),
    (("-r", "--reply-src"), "reply-src", 1), (("-q", "--reply-dst"), "reply-dst", 1),
    (("-p", "--protonum", "--proto"), "protonum", 1), (("-t", "--timeout"), "timeout", 1),
    (("-u", "--status"), "status", 1), (("-z", "--zero"), "zero", 0), (("-e", "--event-mask"), "event-mask", 1),
    (("-m", "--mark"), "mark", 1), (("-i", "--id"), "id", 1), (("-f", "--family"), "family", 1),
    (("-n", "--src-nat"), "src-nat", 2), (("-g", "--dst-nat"), "dst-nat", 2), (("-j", "--any-nat"), "any-nat", 2),
    (("-o", "--output"), "output", 1), (("-b", "--buffer-size"), "buffer-size", 1), (("-w", "--zone"), "zone", 1),
    (("--orig-zone",), "orig-zone", 1), (("--reply-zone",), "reply-zone", 1), (("-c", "--secmark"), "secmark", 1),
    (("-l", "--label"), "label", 1), (("--mask-src",), "mask-src", 1), (("--mask-dst",), "mask-dst", 1),
    (("--tuple-src",), "tuple-src", 1), (("--tuple-dst",), "tuple-dst", 1),
):
    for _name in _names:
        OPTIONS[_name] = (_long, _arg)
# what each implemented command accepts (conntrack.c's commands_v_options); the rest is "Illegal option"
LEGAL = {
    "list": {"src", "dst", "reply-src", "reply-dst", "protonum", "status", "zero", "mark", "family", "src-nat",
             "dst-nat", "any-nat", "output", "zone", "orig-zone", "reply-zone", "secmark", "label", "mask-src",
             "mask-dst"},
    "delete": {"src", "dst", "reply-src", "reply-dst", "protonum", "status", "mark", "id", "family", "src-nat",
               "dst-nat", "any-nat", "output", "zone", "orig-zone", "reply-zone", "secmark", "label", "mask-src",
               "mask-dst"},
    "event": {"src", "dst", "reply-src", "reply-dst", "protonum", "status", "event-mask", "mark", "family",
              "src-nat", "dst-nat", "any-nat", "output", "buffer-size", "zone", "orig-zone", "reply-zone",
              "secmark", "label", "mask-src", "mask-dst"},
    "flush": {"family"}, "count": set(), "stats": set(),
}
# what natbox applies; a legal option outside this set is refused as not supported
APPLIED = {"src", "dst", "reply-src", "reply-dst", "protonum", "status", "mark", "family", "src-nat", "dst-nat",
           "any-nat", "output", "zone", "buffer-size"}
PROTOS = {"tcp": 6, "udp": 17, "udplite": 136, "icmp": 1, "icmpv6": 58, "sctp": 132, "dccp": 33, "gre": 47}
PORT_OPTS = {"--sport": (0, "sport"), "--orig-port-src": (0, "sport"), "--dport": (0, "dport"),
             "--orig-port-dst": (0, "dport"), "--reply-port-src": (1, "sport"), "--reply-port-dst": (1, "dport")}
ICMP_OPTS = ("--icmp-type", "--icmp-code", "--icmp-id")
STATUS_NAMES = {"EXPECTED": CtStatus.EXPECTED, "ASSURED": CtStatus.ASSURED, "SEEN_REPLY": CtStatus.SEEN_REPLY,
                "FIXED_TIMEOUT": CtStatus.FIXED_TIMEOUT, "UNSET": 0, "UNREPLIED": 0}
TCP_STATES = {name: i for i, name in enumerate(TCP_CONNTRACK_NAMES)} | {"LISTEN": 9}
SCTP_STATES = {name: i for i, name in enumerate(SCTP_CONNTRACK_NAMES)}


class CtUsageError(ValueError):
    """A command line conntrack refuses: the message and exit status it gives."""

    def __init__(self, message: str, code: int = 2, usage: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.usage = usage


Predicate = Callable[[Conn], bool]


@dataclass
class CtArgs:
    """A parsed conntrack command line: the command, its filters as predicates, the output types."""

    command: str = ""
    filters: dict[str, Predicate] = field(default_factory=dict)  # by option: a repeated one replaces
    outputs: frozenset[str] = frozenset()
    seen: dict[str, str] = field(default_factory=dict)  # long option name -> value as given
    family: int = 0  # conntrack.c's `family`: AF_UNSPEC until -f or an address sets it (NFPROTO_* here)

    def set_family(self, l3num: int) -> None:
        """conntrack.c's set_family: -f and every address option fix the family; a different one is refused.
        Once fixed, only entries of that family are listed (the dump asks the kernel for that family)."""
        if self.family and self.family != l3num:
            raise CtUsageError("mismatched address family")
        self.family = l3num
        self.filters["family"] = lambda ct: ct.l3num == l3num

    def keep(self, ct: Conn) -> bool:
        return all(f(ct) for f in self.filters.values())


def _atoi(text: str) -> int:
    """C atoi: leading digits, 0 when there are none."""
    digits = ""
    for ch in text.strip():
        if not ch.isdigit():
            break
        digits += ch
    return int(digits) if digits else 0


def _strtoul(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        return _atoi(text)


def _address(text: str) -> tuple[int, int]:
    """ADDR[/LEN] as conntrack reads it (inet_aton: "1.2.3" is 1.2.0.3): (address, mask)."""
    addr, sep, plen = text.partition("/")
    if ":" in addr:  # an IPv6 address (inet_pton AF_INET6), /LEN up to 128
        try:
            value6 = int.from_bytes(socket.inet_pton(socket.AF_INET6, addr), "big")
        except OSError:
            raise CtUsageError(f"Invalid IP address `{addr}'") from None
        if sep and (not plen.isdigit() or int(plen) > 128):
            raise CtUsageError("Invalid netmask")
        mask6 = ((1 << 128) - 1) ^ ((1 << (128 - int(plen))) - 1) if sep else (1 << 128) - 1
        return value6 & mask6, mask6
    try:
        value = int.from_bytes(socket.inet_aton(addr), "big")
    except OSError:
        raise CtUsageError(f"Invalid IP address `{addr}'") from None
    if not sep:
        return value, 0xFFFFFFFF
    if not plen.isdigit() or int(plen) > 32:
        raise CtUsageError("Invalid netmask")
    mask = (0xFFFFFFFF << (32 - int(plen))) & 0xFFFFFFFF
    return value & mask, mask


def _addr_family(text: str) -> int:
    return NFPROTO_IPV6 if ":" in text.partition("/")[0] else NFPROTO_IPV4


def _addr_filter(direction: int, attr: str, text: str) -> Predicate:
    value, mask = _address(text)
    return lambda ct: (getattr(ct.tuples[direction], attr) & mask) == value


def _status_filter(text: str) -> Predicate:
    want = mask = 0
    for name in text.split(","):
        if name not in STATUS_NAMES:
            raise CtUsageError(f"Bad parameter `{name}'")
        if name == "UNSET":
            raise CtUsageError("Operation failed: invalid parameters", code=1, usage=False)
        if name == "UNREPLIED":
            mask |= CtStatus.SEEN_REPLY
        else:
            want |= STATUS_NAMES[name]
            mask |= STATUS_NAMES[name]
    return lambda ct: (ct.status & mask) == want


def _mark_filter(text: str) -> Predicate:
    value, _, mask_text = text.partition("/")
    mark, mask = _strtoul(value), _strtoul(mask_text) if mask_text else 0xFFFFFFFF
    return lambda ct: (ct.mark & mask) == (mark & mask)


def _v4(addr: int) -> int:
    """`ct->repl.src.v4`: the first 32 bits of the address union (all of an IPv4 address, the top of an IPv6 one)."""
    return addr >> 96 if addr > 0xFFFFFFFF else addr


def _nat_filter(kind: str, text: str | None) -> Predicate:
    """-n (SNAT), -g (DNAT), -j (either): conntrack.c's filter_nat on libnetfilter_conntrack 1.0.9's
    getobjopt_is_snat/dnat/spat/dpat. Without an address, an entry is SNAT when SRC_NAT_DONE and the reply
    is not sent to the original source's first 32 bits (`.v4`, also for IPv6) or port (`l4dst` vs
    `l4src`); DNAT likewise. The port test reads ICMP's id/type fields as ports (so a NATed ping entry
    counts as both), as 1.0.9 does. With an IPv4 address, the NAT must be to that address; an IPv6 one only
    sets the family (filter_nat tests ATTR_SNAT_IPV4/ATTR_DNAT_IPV4 alone)."""
    ip = _address(text)[0] if text and _addr_family(text) == NFPROTO_IPV4 else None

    def snat(ct: Conn) -> bool:
        orig, reply = ct.tuples
        if not ct.status & CtStatus.SRC_NAT_DONE:
            return False
        if ip is not None:
            return _v4(orig.src) != _v4(reply.dst) and reply.dst == ip
        return _v4(orig.src) != _v4(reply.dst) or orig.sport != reply.dport

    def dnat(ct: Conn) -> bool:
        orig, reply = ct.tuples
        if not ct.status & CtStatus.DST_NAT_DONE:
            return False
        if ip is not None:
            return _v4(orig.dst) != _v4(reply.src) and reply.src == ip
        return _v4(orig.dst) != _v4(reply.src) or orig.dport != reply.sport

    if kind == "src-nat":
        return snat
    if kind == "dst-nat":
        return dnat
    return lambda ct: snat(ct) or dnat(ct)


def _outputs(text: str) -> frozenset[str]:
    types = text.split(",")
    for t in types:
        if t not in OUTPUT_TYPES:
            raise CtUsageError(f"Bad parameter `{t}'")
    if "save" in types and len(types) > 1:
        raise CtUsageError("cannot combine save output with any other output type, use -o save only", code=1,
                           usage=False)
    return frozenset(types)


def _generic(args: CtArgs, name: str, value: str | None) -> None:
    """Turn one generic option into a filter or a setting (the last of a repeated option wins)."""
    args.seen[name] = value or ""
    if value is None and name not in ("src-nat", "dst-nat", "any-nat", "zero"):
        return
    if name in ("src", "dst", "reply-src", "reply-dst"):
        assert value is not None
        direction, attr = {"src": (0, "src"), "dst": (0, "dst"), "reply-src": (1, "src"),
                           "reply-dst": (1, "dst")}[name]
        args.filters[name] = _addr_filter(direction, attr, value)
        args.set_family(_addr_family(value))
    elif name == "status":
        args.filters[name] = _status_filter(value or "")
    elif name == "mark":
        args.filters[name] = _mark_filter(value or "")
    elif name in ("src-nat", "dst-nat", "any-nat"):
        args.filters[name] = _nat_filter(name, value)
        if value:
            args.set_family(_addr_family(value))
    elif name == "family":
        # conntrack.c: strncmp(optarg, "ipv4", strlen("ipv4")): a prefix test ("ipv6foo" is ipv6; "inet6" is refused)
        text = value or ""
        if not text.startswith(("ipv4", "ipv6")):
            raise CtUsageError(f"`{text}' unsupported protocol")
        args.set_family(NFPROTO_IPV6 if text.startswith("ipv6") else NFPROTO_IPV4)  # one family (both by default)
    elif name == "zone":
        zone = _atoi(value or "")
        args.filters[name] = lambda ct: ct.zone == zone
    elif name == "output":
        args.outputs = _outputs(value or "")


def _proto(text: str) -> int:
    if text.isdigit():
        return int(text) & 0xFF
    proto = PROTOS.get(text)
    if proto is None:
        raise CtUsageError(f"`{text}' unsupported protocol")
    return proto


def _proto_filter(proto: int) -> Predicate:
    return lambda ct: ct.tuples[0].proto == proto


def _proto_option(args: CtArgs, proto: int, opt: str, value: str) -> None:
    if opt in PORT_OPTS:
        direction, attr = PORT_OPTS[opt]
        port = _atoi(value) & 0xFFFF
        args.filters[f"{direction}{attr}"] = lambda ct: getattr(ct.tuples[direction], attr) == port
    elif opt == "--state" and proto == 132:  # libct_proto_sctp (1.4.7 segfaults on an unknown state name)
        sstate = SCTP_STATES.get(value)
        if sstate is None:
            raise CtUsageError(f"unknown SCTP state `{value}'")
        args.filters["state"] = lambda ct: ct.sctp is not None and ct.sctp.state == sstate
    elif opt == "--state":
        state = TCP_STATES.get(value)
        if state is None:
            raise CtUsageError(f"unknown TCP state `{value}'")
        args.filters["state"] = lambda ct: ct.tcp is not None and int(ct.tcp.state) == state
    elif opt in ICMP_OPTS:
        n = _atoi(value)
        if opt == "--icmp-type":
            args.filters[opt] = lambda ct: ct.tuples[0].dport >> 8 == n
        elif opt == "--icmp-code":
            args.filters[opt] = lambda ct: ct.tuples[0].dport & 0xFF == n
        else:
            args.filters[opt] = lambda ct: ct.tuples[0].sport == n


def _proto_options(proto: int | None) -> tuple[str, ...]:
    if proto in (6, 132, 33):
        return (*PORT_OPTS, "--state") if proto in (6, 132) else tuple(PORT_OPTS)
    if proto in (17, 136):
        return tuple(PORT_OPTS)
    if proto == 1:
        return ICMP_OPTS
    return ()


def _command(args: CtArgs, argv: list[str], i: int, command: str) -> int:
    """Set the command; `-L`/`-D`/`-E` may name a table (conntrack only). Returns the next index."""
    if args.command:
        raise CtUsageError("Invalid commands combination")
    args.command = command
    if command in ("list", "delete", "event", "flush", "count", "stats") and i + 1 < len(argv) \
            and not argv[i + 1].startswith("-"):
        table = argv[i + 1]
        if table in ("expect", "dying", "unconfirmed"):
            raise CtUsageError(NOT_SUPPORTED, code=1, usage=False)
        if table != "conntrack":
            raise CtUsageError(f"unknown type `{table}'")
        return i + 2
    return i + 1


def parse_conntrack_args(argv: list[str]) -> CtArgs:
    """conntrack's command line (see the module docstring); CtUsageError with conntrack's message."""
    args = CtArgs()
    proto: int | None = None
    i = 0
    while i < len(argv):
        opt = argv[i]
        if opt in COMMANDS:
            i = _command(args, argv, i, COMMANDS[opt])
            continue
        known = OPTIONS.get(opt)
        if known is None and opt in _proto_options(proto):
            if i + 1 >= len(argv):
                raise CtUsageError(f"option `{opt}' requires an argument")
            assert proto is not None
            _proto_option(args, proto, opt, argv[i + 1])
            i += 2
            continue
        if known is None:
            if opt in ("-h", "--help", "-V", "--version"):
                raise CtUsageError(NOT_SUPPORTED, code=1, usage=False)
            raise CtUsageError(f"unknown option `{opt}'")
        name, takes = known
        value: str | None = None
        if takes == 1:
            if i + 1 >= len(argv):
                raise CtUsageError(f"option `{opt}' requires an argument")
            value = argv[i + 1]
            i += 2
        elif takes == 2 and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            value = argv[i + 1]
            i += 2
        else:
            i += 1
        if name == "protonum":
            assert value is not None
            proto = _proto(value)
            args.filters[name] = _proto_filter(proto)
            args.seen[name] = value
            continue
        _generic(args, name, value)
    if not args.command:
        raise CtUsageError("Invalid commands combination")  # conntrack with options but no command
    _check_legal(args)
    return args


def _check_legal(args: CtArgs) -> None:
    if args.command not in IMPLEMENTED:
        raise CtUsageError(NOT_SUPPORTED, code=1, usage=False)
    legal = LEGAL[args.command]
    for name in args.seen:
        if name not in legal:
            raise CtUsageError(f"Illegal option `--{name}' with this command")
    if "zero" in args.seen and args.filters:
        raise CtUsageError("Can't use -z with filtering parameters")
    for name in args.seen:
        if name not in APPLIED:
            raise CtUsageError(NOT_SUPPORTED, code=1, usage=False)


def _listing(conns: list[Conn], now: float, outputs: frozenset[str]) -> str:
    if "xml" in outputs:
        return XML_HEADER + "".join(format_xml(c, now) + "\n" for c in conns) + XML_FOOTER if conns else ""
    if "save" in outputs:
        return "".join(format_save(c, now) + "\n" for c in conns)
    return "".join(format_line(c, now, outputs) + "\n" for c in conns)


def conntrack_command(engine: Engine, argv: list[str], now: float, out: TextIO, err: TextIO) -> int:
    """`conntrack ARGS` on the live table (conntrack-tools 1.4.7 output, §7.3); its exit status."""
    try:
        args = parse_conntrack_args(argv or ["-L"])
    except CtUsageError as exc:
        err.write(f"{PROG}: {exc}\n" + (TRY if exc.usage else ""))
        return exc.code
    table = engine.table
    if args.command == "list":
        conns = [c for c in table.live(now) if args.keep(c)]
        out.write(_listing(conns, now, args.outputs))
        err.write(f"{PROG}: {len(conns)} flow entries have been shown.\n")
        return 0
    if args.command == "stats":
        out.write(format_stats(table.stats) + "\n")
        return 0
    if args.command == "count":
        out.write(f"{len(table.live(now))}\n")
        return 0
    if args.command == "delete":
        victims = [c for c in table.live(now) if args.keep(c)]
        out.write(_listing(victims, now, args.outputs))
        for ct in victims:
            table.delete(ct, now, reason="conntrack -D")
        err.write(f"{PROG}: {len(victims)} flow entries have been deleted.\n")
        return 0 if victims else 1
    if args.command == "flush":
        table.flush(now)
        err.write(f"{PROG}: connection tracking table has been emptied.\n")
        return 0
    err.write(f"{PROG}: {NOT_SUPPORTED}\n")  # -E is served by the control server itself
    return 1
