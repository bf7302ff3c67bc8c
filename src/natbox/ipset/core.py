"""The set registry (ip_set_core.c): create, destroy, flush, rename, swap, list and save, plus the
element syntax of each type (the uadt functions: ranges expanded as the kernel iterates them).

`IpsetRegistry.sets` is `ip_set_list`: a destroyed set leaves a hole the next create fills, and listings
go in index order with list:set sets last (the kernel's two-pass `ip_set_dump_do`), which is why
`ipset save` output restores. Rules take references with `get_ref`/`put_ref` (`ip_set_nfnl_get_byindex`);
a referenced set cannot be destroyed.
"""

from __future__ import annotations

from typing import Final

from natbox.ipset.bitmap import BitmapSet, ListSet
from natbox.ipset.elem import (
    PORT_PROTOS,
    format_ip,
    format_net,
    format_proto_port,
    hostmask,
    parse_ip,
    parse_ip_range,
    parse_proto_port,
    parse_uint,
    range_to_cidrs,
)
from natbox.ipset.elem6 import (
    format_net6,
    hostmask6,
    null_elem,
    parse_ip2_plain6,
    parse_ip6,
    parse_net6,
    parse_plain_ip6,
)
from natbox.ipset.errors import IpsetError
from natbox.ipset.settype import SET_TYPES, Elem, SetType
from natbox.ipset.store import Entry, HashSet, IpSet
from natbox.netfilter import NFPROTO_IPV6
from natbox.wire.ipv6 import format_addr6

__all__ = ["E_NOSET", "E_RANGE_LIMIT", "IpsetRegistry", "format_elem", "parse_elems"]

E_NOSET: Final = "The set with the given name does not exist"
E_RANGE_LIMIT: Final = "The range you specified exceeds the size limit of the set type"
IPSET_MAXNAMELEN: Final = 32
MAX_RANGE_ELEMS: Final = 1 << 20  # bound on one command's range expansion (the kernel loops without bound)


def _nets(text: str, net0: bool, for_test: bool) -> list[tuple[int, int]]:
    lo, hi, cidr = parse_ip_range(text)
    if cidr is not None:
        if cidr == 0 and not net0:
            raise IpsetError("The value of the CIDR parameter of the IP address is invalid")
        return [(lo, cidr)]
    if lo == hi or for_test:
        return [(lo, 32)]
    return range_to_cidrs(lo, hi)


def _ips(text: str, netmask: int = 32) -> list[int]:
    lo, hi, _ = parse_ip_range(text)
    m = hostmask(netmask)
    lo, hi = lo & m, hi & m
    step = 1 << (32 - netmask)
    if (hi - lo) // step >= MAX_RANGE_ELEMS:
        raise IpsetError("Range too large")
    return list(range(lo, hi + 1, step))


def _plain_ip(text: str) -> int:
    """`ipset_parse_single_ip`: the second address of hash:ip,port,ip takes no range or prefix."""
    if "/" in text or "-" in text:
        raise IpsetError(f"Syntax error: plain IP address must be supplied: {text}")
    return parse_ip(text)


def _ports(text: str) -> list[tuple[int, int]]:
    proto, lo, hi = parse_proto_port(text)
    if hi - lo >= MAX_RANGE_ELEMS:
        raise IpsetError("Range too large")
    return [(proto, p) for p in range(lo, hi + 1)]


def _iface(text: str) -> tuple[int, str]:
    if text.startswith("physdev:"):
        return 1, text[8:]
    return 0, text


def parse_elems(s: IpSet, text: str, for_test: bool = False) -> tuple[list[Elem], bool]:
    """An element argument → the elements the kernel's uadt adds/deletes/tests, and whether a test
    should try every stored prefix (a host address given to a net type)."""
    t = s.type
    parts = text.split(",")
    dims = t.dims
    if len(parts) < len(dims) or (len(parts) == len(dims) and not parts[-1] and len(dims) > 1):
        present = len(parts) if parts[-1] else len(parts) - 1
        raise IpsetError(f"Syntax error: {'Second' if present <= 1 else 'Third'} element is missing "
                         f"from {text}.")
    if len(parts) > len(dims):
        raise IpsetError(f"Syntax error: Elem separator in {text}, but settype {t.name} supports none.")
    if s.family == NFPROTO_IPV6:
        return _parse_elems6(s, parts, for_test)
    out: list[Elem] = []
    all_cidrs = False
    name = t.name
    if name == "hash:ip":
        assert isinstance(s, HashSet)
        out = [(ip,) for ip in _ips(parts[0], s.netmask)]
    elif name == "hash:net":
        nets = _nets(parts[0], t.net0, for_test)
        all_cidrs = for_test and nets[0][1] == 32
        out = list(nets)
    elif name == "hash:ip,port":
        out = [(ip, pr, po) for ip in _ips(parts[0]) for pr, po in _ports(parts[1])]
    elif name == "hash:net,port":
        nets = _nets(parts[0], False, for_test)
        all_cidrs = for_test and nets[0][1] == 32
        out = [(ip, c, pr, po) for ip, c in nets for pr, po in _ports(parts[1])]
    elif name == "hash:ip,port,ip":
        ip2 = _plain_ip(parts[2])
        out = [(ip, pr, po, ip2) for ip in _ips(parts[0]) for pr, po in _ports(parts[1])]
    elif name == "hash:ip,port,net":
        nets = _nets(parts[2], False, for_test)
        all_cidrs = for_test and nets[0][1] == 32
        out = [(ip, pr, po, ip2, c) for ip in _ips(parts[0]) for pr, po in _ports(parts[1]) for ip2, c in nets]
    elif name == "hash:net,iface":
        nets = _nets(parts[0], True, for_test)
        all_cidrs = for_test and nets[0][1] == 32
        phys, iface = _iface(parts[1])
        if len(iface) > 15:
            raise IpsetError(f"Syntax error: interface name '{iface}' is longer than 15 characters")
        out = [(ip, c, phys, iface) for ip, c in nets]
    elif name == "hash:mac":
        out = [(_mac(parts[0]),)]
    elif name == "bitmap:ip":
        assert isinstance(s, BitmapSet)
        out = [(ip,) for ip in _ips(parts[0], s.netmask)]
    elif name == "bitmap:port":
        proto, lo, hi = parse_proto_port(parts[0])
        if proto not in PORT_PROTOS:
            raise IpsetError(f"Syntax error: invalid port {parts[0]}")
        out = [(p,) for p in range(lo, hi + 1)]
    if len(out) > MAX_RANGE_ELEMS:
        raise IpsetError("Range too large")
    return out, all_cidrs


def _ports6(text: str) -> list[tuple[int, int]]:
    proto, lo, hi = parse_proto_port(text, NFPROTO_IPV6)
    return [(proto, p) for p in range(lo, hi + 1)]


def _parse_elems6(s: IpSet, parts: list[str], for_test: bool) -> tuple[list[Elem], bool]:
    """`parse_elems` for a set of family inet6 (natbox.ipset.elem6): no address ranges, so only a port range
    expands; parsed left to right as ipset's ADT argument parsers run."""
    name = s.type.name
    if name == "hash:ip":
        assert isinstance(s, HashSet)
        ip = parse_plain_ip6(parts[0]) & hostmask6(s.netmask)
        if not for_test:
            null_elem(ip)
        return [(ip,)], False
    if name == "hash:net":
        ip, cidr = parse_net6(parts[0], False)
        return [(ip, cidr)], for_test and cidr == 128
    if name == "hash:net,iface":
        ip, cidr = parse_net6(parts[0], True)
        phys, iface = _iface(parts[1])
        if len(iface) > 15:
            raise IpsetError(f"Syntax error: interface name '{iface}' is longer than 15 characters")
        return [(ip, cidr, phys, iface)], for_test and cidr == 128
    if name == "hash:net,port":
        ip, cidr = parse_net6(parts[0], False)
        return [(ip, cidr, pr, po) for pr, po in _ports6(parts[1])], for_test and cidr == 128
    ip = parse_plain_ip6(parts[0])
    ports = _ports6(parts[1])
    if name == "hash:ip,port":
        return [(ip, pr, po) for pr, po in ports], False
    if name == "hash:ip,port,ip":
        ip2 = parse_ip2_plain6(parts[2])
        return [(ip, pr, po, ip2) for pr, po in ports], False
    ip2, cidr = parse_net6(parts[2], False)  # hash:ip,port,net
    return [(ip, pr, po, ip2, cidr) for pr, po in ports], for_test and cidr == 128


def shown_elem6(s: IpSet, text: str) -> str:
    """The element `ipset test` names for an inet6 set: ipset prints it back from its parsed data (the address
    as given but in inet_ntop form, a /128 left out, `icmpv6:` as `ipv6-icmp:`; recorded)."""
    out = []
    for dim, part in zip(s.type.dims, text.split(","), strict=False):
        if dim in ("ip", "net", "ip2", "net2"):
            addr, slash, cidr = part.partition("/")
            keep = slash and cidr != "128"
            out.append(format_addr6(parse_ip6(addr)) + (f"/{cidr}" if keep else ""))
        elif dim == "port":
            proto, lo, hi = parse_proto_port(part, NFPROTO_IPV6)
            out.append(format_proto_port(proto, lo) + (f"-{hi}" if hi != lo else ""))
        else:
            out.append(part)
    return ",".join(out)


def _mac(text: str) -> bytes:
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) in (1, 2) for p in parts):
        raise IpsetError(f"Syntax error: cannot parse {text} as ethernet address")
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise IpsetError(f"Syntax error: cannot parse {text} as ethernet address") from None


def format_elem(t: SetType, e: Elem, family: int = 2) -> str:
    """`ipset_print_elem` for each type: the element as list and save print it."""
    name = t.name
    if family == NFPROTO_IPV6:
        return _format_elem6(name, e)
    if name in ("hash:ip", "bitmap:ip"):
        return format_ip(int(e[0]))  # type: ignore[call-overload]
    if name == "hash:net":
        return format_net(e[0], e[1])  # type: ignore[arg-type]
    if name == "hash:ip,port":
        return f"{format_ip(e[0])},{format_proto_port(e[1], e[2])}"  # type: ignore[arg-type]
    if name == "hash:net,port":
        return f"{format_net(e[0], e[1])},{format_proto_port(e[2], e[3])}"  # type: ignore[arg-type]
    if name == "hash:ip,port,ip":
        return f"{format_ip(e[0])},{format_proto_port(e[1], e[2])},{format_ip(e[3])}"  # type: ignore[arg-type]
    if name == "hash:ip,port,net":
        return (f"{format_ip(e[0])},{format_proto_port(e[1], e[2])},"  # type: ignore[arg-type]
                f"{format_net(e[3], e[4])}")  # type: ignore[arg-type]
    if name == "hash:net,iface":
        ip, cidr, phys, iface = e
        net = format_ip(ip) + f"/{cidr}" if cidr != 32 else format_ip(ip)  # type: ignore[arg-type]
        return f"{net},{'physdev:' if phys else ''}{iface}"
    if name == "hash:mac":
        mac = e[0]
        assert isinstance(mac, bytes)
        return ":".join(f"{b:02X}" for b in mac)
    return str(e[0])


def _format_elem6(name: str, e: Elem) -> str:
    """`format_elem` of an inet6 set's element."""
    a = format_addr6(e[0])  # type: ignore[arg-type]
    if name == "hash:ip":
        return a
    if name == "hash:net":
        return format_net6(e[0], e[1])  # type: ignore[arg-type]
    if name == "hash:ip,port":
        return f"{a},{format_proto_port(e[1], e[2])}"  # type: ignore[arg-type]
    if name == "hash:net,port":
        return f"{format_net6(e[0], e[1])},{format_proto_port(e[2], e[3])}"  # type: ignore[arg-type]
    if name == "hash:ip,port,ip":
        return f"{a},{format_proto_port(e[1], e[2])},{format_addr6(e[3])}"  # type: ignore[arg-type]
    if name == "hash:ip,port,net":
        return f"{a},{format_proto_port(e[1], e[2])},{format_net6(e[3], e[4])}"  # type: ignore[arg-type]
    return f"{format_net6(e[0], e[1])},{'physdev:' if e[2] else ''}{e[3]}"  # type: ignore[arg-type]


def _features(s: IpSet) -> tuple[frozenset[str], bool, int]:
    """The type's `features` (IPSET_TYPE_IP, _PORT, _IP2, _IFACE, _MAC, _NAME, _NOMATCH) and the set's family:
    `ip_set_swap` compares both."""
    t = s.type
    dims = frozenset({"net": "ip", "net2": "ip2"}.get(d, d) for d in t.dims)
    return dims, t.nomatch, s.family


class IpsetRegistry:
    """`ip_set_list` of one network namespace, with the operations of ip_set_core.c."""

    def __init__(self) -> None:
        self.sets: list[IpSet | None] = []
        self._by_name: dict[str, IpSet] = {}

    def copy(self) -> IpsetRegistry:
        """Another registry of the same sets: the same objects, at the same indexes."""
        reg = IpsetRegistry()
        reg.sets, reg._by_name = list(self.sets), dict(self._by_name)
        return reg

    # --- lookups ---------------------------------------------------------------------------------

    def get(self, name: str) -> IpSet | None:
        return self._by_name.get(name)

    def find(self, name: str) -> IpSet:
        s = self._by_name.get(name)
        if s is None:
            raise IpsetError(E_NOSET)
        return s

    def ordered(self) -> list[IpSet]:
        """Dump order: index order, list:set sets in a second pass (IPSET_DUMP_LAST)."""
        live = [s for s in self.sets if s is not None]
        return [s for s in live if s.type.kind != "list"] + [s for s in live if s.type.kind == "list"]

    def get_ref(self, name: str) -> IpSet | None:
        """`ip_set_get_byname()` for a rule: the set with one more reference, or None."""
        s = self._by_name.get(name)
        if s is not None:
            s.ref += 1
        return s

    def put_ref(self, name: str) -> None:
        s = self._by_name.get(name)
        if s is not None and s.ref > 0:
            s.ref -= 1

    # --- commands --------------------------------------------------------------------------------

    def create(self, s: IpSet, exist: bool) -> None:
        """`ip_set_create()`: the first free index; a clash is an error unless -exist and the same set."""
        clash = self._by_name.get(s.name)
        if clash is not None:
            if exist and clash.same_set(s):
                return
            raise IpsetError("Set cannot be created: set with the same name already exists")
        for i, old in enumerate(self.sets):
            if old is None:
                self.sets[i] = s
                break
        else:
            self.sets.append(s)
        self._by_name[s.name] = s

    def destroy(self, name: str | None) -> None:
        """`ip_set_destroy()`: one set, or every set when none is named (all or nothing)."""
        busy = "Set cannot be destroyed: it is in use by a kernel component"
        if name is None:
            if any(s is not None and s.ref for s in self.sets):
                raise IpsetError(busy)
            for s in self.ordered():
                if isinstance(s, ListSet):
                    s.flush()
            self.sets.clear()
            self._by_name.clear()
            return
        s = self.find(name)
        if s.ref:
            raise IpsetError(busy)
        if isinstance(s, ListSet):
            s.flush()
        self.sets[self.sets.index(s)] = None
        del self._by_name[name]
        while self.sets and self.sets[-1] is None:
            self.sets.pop()

    def flush(self, name: str | None) -> None:
        for s in [self.find(name)] if name is not None else self.ordered():
            s.flush()

    def rename(self, old: str, new: str) -> None:
        """`ip_set_rename()`."""
        s = self.find(old)
        if new in self._by_name:
            raise IpsetError("Set cannot be renamed: a set with the new name already exists")
        if s.ref:
            raise IpsetError("Set cannot be renamed: it is in use by another system")
        del self._by_name[old]
        s.name = new
        self._by_name[new] = s

    def swap(self, a: str, b: str) -> None:
        """`ip_set_swap()`: the sets exchange contents; names and references stay in place."""
        x, y = self.find(a), self.find(b)
        if _features(x) != _features(y):
            raise IpsetError("The sets cannot be swapped: their type does not match")
        x.swap_data(y)

    # --- output ----------------------------------------------------------------------------------

    def list_text(self, s: IpSet, now: float, *, terse: bool = False, header: bool = True) -> str:
        """`ipset list` (plain output) of one set."""
        s.gc(now)
        entries = self._members(s, now)
        out = (f"Name: {s.name}\nType: {s.type.name}\nRevision: {s.type.revision}\nHeader: {s.header()}\n"
               f"Size in memory: {s.memsize(now)}\nReferences: {s.ref}\nNumber of entries: {len(entries)}\n")
        if terse:
            return out
        out += "Members:\n"
        for text, e in entries:
            out += text + s.ext_text(e, now) + "\n"
        return out

    def xml_text(self, s: IpSet, now: float, *, terse: bool = False) -> str:
        """`ipset -o xml list` of one set (without the <ipsets> wrapper)."""
        s.gc(now)
        entries = self._members(s, now)
        words = s.header().split()
        head = ""
        i = 0
        while i < len(words):
            if words[i] in ("counters", "comment", "skbinfo", "forceadd"):
                head += f"<{words[i]}/>"
                i += 1
            else:
                head += f"<{words[i]}>{words[i + 1]}</{words[i]}>"
                i += 2
        out = (f'<ipset name="{s.name}">\n<type>{s.type.name}</type>\n<revision>{s.type.revision}</revision>\n'
               f"<header>{head}\n<memsize>{s.memsize(now)}</memsize>\n<references>{s.ref}</references>\n"
               f"<numentries>{len(entries)}</numentries>\n</header>\n")
        if not terse:
            out += "<members>\n"
            for text, e in entries:
                ext = "".join(f"<{k}/>" if v is None else f"<{k}>{v}</{k}>" for k, v in s.ext_pairs(e, now))
                out += f"<member><elem>{text}</elem>{ext}</member>\n"
            out += "</members>\n"
        return out + "</ipset>\n"

    def save_text(self, s: IpSet, now: float) -> str:
        """`ipset save` of one set: its create line, then an add line per member."""
        s.gc(now)
        out = f"create {s.name} {s.type.name} {s.header()}\n"
        for text, e in self._members(s, now):
            out += f"add {s.name} {text}{s.ext_text(e, now)}\n"
        return out

    def _members(self, s: IpSet, now: float) -> list[tuple[str, Entry]]:
        if isinstance(s, ListSet):
            return [(m.name, e) for m, e in s.member_sets(now)]
        return [(format_elem(s.type, e.elem, s.family), e) for e in s.entries(now)]


def check_name(name: str) -> str:
    if len(name) > IPSET_MAXNAMELEN - 1:
        raise IpsetError(f"Syntax error: setname '{name}' is longer than {IPSET_MAXNAMELEN - 1} characters")
    return name


def find_type(name: str) -> SetType:
    aliases = {"iphash": "hash:ip", "nethash": "hash:net", "ipporthash": "hash:ip,port",
               "ipportiphash": "hash:ip,port,ip", "ipportnethash": "hash:ip,port,net", "ipmap": "bitmap:ip",
               "portmap": "bitmap:port", "setlist": "list:set"}
    t = SET_TYPES.get(aliases.get(name, name))
    if t is None:
        raise IpsetError(f"Syntax error: typename '{name}' is unknown")
    return t


__all__ += ["check_name", "find_type", "parse_ip", "parse_uint", "shown_elem6"]
