"""ip6tables' extension header matches, as ip6tables 1.8.9 parses and prints them and the kernel checks them:
`-m hbh` / `-m dst` (libip6t_hbh.c, libip6t_dst.c, ip6t_hbh.c), `-m rt` (libip6t_rt.c, ip6t_rt.c), `-m frag`
(libip6t_frag.c, ip6t_frag.c), `-m ipv6header` (libip6t_ipv6header.c, ip6t_ipv6header.c) and `-m srh`
revision 1 (libip6t_srh.c, ip6t_srh.c). Their evaluation on packets is natbox.rules.matches.exthdr6_eval.
"""

from __future__ import annotations

from typing import ClassVar

from natbox.rules.addr6 import ALL_ONES6, format_addr6, mask6_to_prefix, parse_ipv6, prefix6_to_mask
from natbox.rules.matches._common import ETC_PROTOCOLS, PROTO_NAMES
from natbox.rules.matches._xtopt import U8_MAX, U16_MAX, U32_MAX, parse_range, parse_value
from natbox.rules.matches.icmp6 import strtoul_prefix
from natbox.rules.model import RESOURCE_PROBLEM, Match, Opt, Rule, RulesError

__all__ = ["Dst", "Frag", "Hbh", "Ipv6header", "Rt", "Srh", "print_ids"]

IP6T_OPTS_OPTSNR = 16  # options of -m hbh/dst (ip6t_opts.h)
IP6T_RT_HOPS = 16  # addresses of --rt-0-addrs (ip6t_rt.h)


def print_ids(name: str, lo: int, hi: int, invert: bool) -> str:
    """`print_ids`/`print_spis`/`print_nums` of the libip6t extensions: nothing for the full range."""
    inv = "!" if invert else ""
    if lo == 0 and hi == U32_MAX and not invert:
        return ""
    return f"{name}:{inv}{lo}" if lo == hi else f"{name}s:{inv}{lo}:{hi}"


def _range_save(opt: str, r: tuple[int, int], invert: bool) -> str:
    if r == (0, U32_MAX):
        return ""
    return (" !" if invert else "") + f" --{opt} " + (f"{r[0]}" if r[0] == r[1] else f"{r[0]}:{r[1]}")


class Hbh(Match):
    """`-m hbh [!] --hbh-len N --hbh-opts TYPE[:LEN],...` (`struct ip6t_opts`)."""

    name: ClassVar[str] = "hbh"
    options = (Opt("hbh-len", 1, True), Opt("hbh-opts", 1))

    def __init__(self) -> None:
        self.hdrlen: int | None = None
        self.inv_len = False
        self.opts: list[int] = []  # type << 8 | length (0xFF: any length)

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        a = arg or ""
        if opt == f"{self.name}-len":
            self.hdrlen, self.inv_len = parse_value(self.name, opt, a, U32_MAX), inverted
        elif opt == f"{self.name}-opts":
            self.opts = self._parse_options(a)
        else:
            super().parse(opt, arg, inverted, rule)

    def _num(self, text: str, what: str) -> int:
        """`parse_opts_num`: strtoul base 0."""
        v, end = strtoul_prefix(text, 0)
        if end == 0:
            raise RulesError(f"{self.name}: no valid digits in {what} `{text}'")
        if v is None or v > 0xFFFFFFFFFFFFFFFF:
            raise RulesError(f"{what} `{text}' specified too big: would overflow")
        if end != len(text):
            raise RulesError(f"{self.name}: error parsing {what} `{text}'")
        return v

    def _parse_options(self, text: str) -> list[int]:
        """`parse_options`: at most 16 `type[:length]`, each number cut to 8 bits."""
        parts = text.split(",")
        out: list[int] = []
        for i, part in enumerate(parts[:IP6T_OPTS_OPTSNR]):
            t, colon, ln = part.partition(":")
            if colon and i == IP6T_OPTS_OPTSNR - 1:
                raise RulesError("too many ports specified")
            v = (self._num(t, "opt") & 0xFF) << 8
            if colon:
                if v == 0:
                    raise RulesError("PAD0 hasn't got length")
                v |= self._num(ln, "length") & 0xFF
            else:
                v |= 0xFF
            out.append(v)
        if len(parts) > IP6T_OPTS_OPTSNR:
            raise RulesError("too many addresses specified")
        return out

    def _opts_text(self) -> str:
        return "".join((" " if i == 0 else ",") + f"{o >> 8}" + (f":{o & 0xFF}" if o & 0xFF != 0xFF else "")
                       for i, o in enumerate(self.opts))

    def save(self) -> str:
        out = ""
        if self.hdrlen is not None:
            out += (" !" if self.inv_len else "") + f" --{self.name}-len {self.hdrlen}"
        if self.opts:
            out += f" --{self.name}-opts" + self._opts_text()
        return out

    def print_list(self, numeric: bool) -> str:
        out = f" {self.name}"
        if self.hdrlen is not None:
            out += f" length:{'!' if self.inv_len else ''}{self.hdrlen}"
        if self.opts:
            out += " opts" + self._opts_text()
        return out


class Dst(Hbh):
    """`-m dst [!] --dst-len N --dst-opts ...`: the same match on the Destination Options header."""

    name = "dst"
    options = (Opt("dst-len", 1, True), Opt("dst-opts", 1))


class Rt(Match):
    """`-m rt` (`struct ip6t_rt`): type, segments left, length, and type 0's reserved field and addresses."""

    name = "rt"
    options = (Opt("rt-type", 1, True), Opt("rt-segsleft", 1, True), Opt("rt-len", 1, True), Opt("rt-0-res", 0),
               Opt("rt-0-addrs", 1), Opt("rt-0-not-strict", 0))

    def __init__(self) -> None:
        self.rt_type: int | None = None
        self.segsleft = (0, U32_MAX)
        self.hdrlen: int | None = None
        self.res = False
        self.addrs: list[int] = []
        self.not_strict = False
        self.inv: set[str] = set()

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        a = arg or ""
        if inverted:
            self.inv.add(opt)
        if opt == "rt-type":
            self.rt_type = parse_value("rt", opt, a, U32_MAX)
        elif opt == "rt-segsleft":
            self.segsleft = parse_range("rt", opt, a, U32_MAX)
        elif opt == "rt-len":
            self.hdrlen = parse_value("rt", opt, a, U32_MAX)
        elif opt == "rt-0-res":
            self.res = True
        elif opt == "rt-0-addrs":
            if self.rt_type != 0 or "rt-type" in self.inv:
                raise RulesError("`--rt-type 0' required before `--rt-0-addrs'")
            parts = a.split(",")
            if len(parts) > IP6T_RT_HOPS:
                raise RulesError("too many addresses specified")
            for p in parts:
                v = parse_ipv6(p)
                if v is None:
                    raise RulesError(f"bad address: {p}")
                self.addrs.append(v)
        elif opt == "rt-0-not-strict":
            if not self.addrs:
                raise RulesError("`--rt-0-addr ...' required before `--rt-0-not-strict'")
            self.not_strict = True
        else:
            super().parse(opt, arg, inverted, rule)

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        """`rt_mt6_check`: the type 0 fields need `--rt-type 0`."""
        if (self.res or self.addrs) and (self.rt_type != 0 or "rt-type" in self.inv):
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def save(self) -> str:
        out = ""
        if self.rt_type is not None:
            out += (" !" if "rt-type" in self.inv else "") + f" --rt-type {self.rt_type}"
        out += _range_save("rt-segsleft", self.segsleft, "rt-segsleft" in self.inv)
        if self.hdrlen is not None:
            out += (" !" if "rt-len" in self.inv else "") + f" --rt-len {self.hdrlen}"
        if self.res:
            out += " --rt-0-res"
        if self.addrs:
            out += " --rt-0-addrs " + ",".join(format_addr6(x) for x in self.addrs)
        if self.not_strict:
            out += " --rt-0-not-strict"
        return out

    def print_list(self, numeric: bool) -> str:
        out = " rt"
        if self.rt_type is not None:
            out += f" type:{'!' if 'rt-type' in self.inv else ''}{self.rt_type}"
        ids = print_ids("segsleft", *self.segsleft, "rt-segsleft" in self.inv)
        out += f" {ids}" if ids else ""
        if self.hdrlen is not None:
            out += f" length:{'!' if 'rt-len' in self.inv else ''}{self.hdrlen}"
        if self.res:
            out += " reserved"
        if self.addrs:
            out += " 0-addrs " + ",".join(format_addr6(x) for x in self.addrs)
        if self.not_strict:
            out += " 0-not-strict"
        return out


class Frag(Match):
    """`-m frag` (`struct ip6t_frag`): identification range, length, reserved, first/more/last."""

    name = "frag"
    options = (Opt("fragid", 1, True), Opt("fraglen", 1, True), Opt("fragres", 0), Opt("fragfirst", 0),
               Opt("fragmore", 0), Opt("fraglast", 0))

    def __init__(self) -> None:
        self.ids = (0, U32_MAX)
        self.inv_ids = False
        self.hdrlen: int | None = None
        self.inv_len = False
        self.flags: list[str] = []  # of fragres, fragfirst, fragmore, fraglast

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt == "fragid":
            self.ids, self.inv_ids = parse_range("frag", opt, arg or "", U32_MAX), inverted
        elif opt == "fraglen":
            self.hdrlen, self.inv_len = parse_value("frag", opt, arg or "", U32_MAX), inverted
        elif opt in ("fragres", "fragfirst", "fragmore", "fraglast"):
            other = {"fragmore": "fraglast", "fraglast": "fragmore"}.get(opt)
            if other in self.flags:
                raise RulesError(f'frag: "--{other}" and "--{opt}" cannot be used together.\n')
            if opt in self.flags:
                raise RulesError(f'frag: option "--{opt}" can only be used once.\n')
            self.flags.append(opt)
        else:
            super().parse(opt, arg, inverted, rule)

    def _flags_in_order(self) -> list[str]:
        return [f for f in ("fragres", "fragfirst", "fragmore", "fraglast") if f in self.flags]

    def save(self) -> str:
        out = _range_save("fragid", self.ids, self.inv_ids)
        if self.hdrlen is not None:
            out += (" !" if self.inv_len else "") + f" --fraglen {self.hdrlen}"
        return out + "".join(f" --{f}" for f in self._flags_in_order())

    def print_list(self, numeric: bool) -> str:
        out = " frag " + print_ids("id", *self.ids, self.inv_ids)
        if self.hdrlen is not None:
            out += f" length:{'!' if self.inv_len else ''}{self.hdrlen}"
        words = {"fragres": "reserved", "fragfirst": "first", "fragmore": "more", "fraglast": "last"}
        return out + "".join(f" {words[f]}" for f in self._flags_in_order())


# `chain_flags` of libip6t_ipv6header.c: (protocol, flag, name), in print order
IPV6HEADER_FLAGS = ((0, 0x80, "hop-by-hop"), (60, 0x40, "ipv6-opts"), (43, 0x20, "ipv6-route"),
                    (44, 0x10, "ipv6-frag"), (51, 0x08, "ah"), (50, 0x04, "esp"), (59, 0x02, "ipv6-nonxt"),
                    (255, 0x01, "protocol"))
# `chain_protos`: the names tried when /etc/protocols (getprotobyname) has none
_CHAIN_PROTOS = {"hop-by-hop": 0, "protocol": 255, "hop": 0, "dst": 60, "route": 43, "frag": 44, "auth": 51,
                 "esp": 50, "none": 59, "prot": 255, "0": 0, "60": 60, "43": 43, "44": 44, "51": 51, "50": 50,
                 "59": 59, "255": 255}
_GETPROTOBYNAME = {**{n: p for p, n in ETC_PROTOCOLS.items()}, **{n: p for p, n in PROTO_NAMES.items() if p},
                   "ip": 0, "hopopt": 0, "mobility-header": 135}


class Ipv6header(Match):
    """`-m ipv6header [!] --header NAME,... [--soft]` (`struct ip6t_ipv6header_info`)."""

    name = "ipv6header"
    options = (Opt("header", 1, True), Opt("soft", 0))

    def __init__(self) -> None:
        self.matchflags: int | None = None
        self.invert = False
        self.soft = False

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt == "header":
            flags = 0
            for word in (w for w in (arg or "").split(",") if w):
                proto = _GETPROTOBYNAME.get(word, _CHAIN_PROTOS.get(word))
                if proto is None:
                    raise RulesError(f"unknown header `{word}' specified")
                flag = next((f for p, f, _n in IPV6HEADER_FLAGS if p == proto), None)
                if flag is None:
                    raise RulesError(f"unknown header `{proto}' specified")
                flags |= flag
            self.matchflags, self.invert = flags, inverted
        elif opt == "soft":
            self.soft = True
        else:
            super().parse(opt, arg, inverted, rule)

    def final_check(self, rule: Rule) -> None:
        if self.matchflags is None:
            raise RulesError('ipv6header: option "--header" must be specified\n')

    def _names(self) -> str:
        return ",".join(n for _p, f, n in IPV6HEADER_FLAGS if (self.matchflags or 0) & f)

    def save(self) -> str:
        out = (" !" if self.invert else "") + " --header " + self._names()
        return out + (" --soft" if self.soft else "")

    def print_list(self, numeric: bool) -> str:
        out = " ipv6header"
        if self.matchflags or self.invert:
            out += " flags:" + ("!" if self.invert else "")
            out += f"0x{self.matchflags or 0:02X}" if numeric else self._names()
        return out + (" soft" if self.soft else "")


# -m srh revision 1: (option, -L word, largest value), in the order both outputs use
_SRH_NUMS = (("srh-next-hdr", "next-hdr", U8_MAX), ("srh-hdr-len-eq", "hdr-len-eq", U8_MAX),
             ("srh-hdr-len-gt", "hdr-len-gt", U8_MAX), ("srh-hdr-len-lt", "hdr-len-lt", U8_MAX),
             ("srh-segs-left-eq", "segs-left-eq", U8_MAX), ("srh-segs-left-gt", "segs-left-gt", U8_MAX),
             ("srh-segs-left-lt", "segs-left-lt", U8_MAX), ("srh-last-entry-eq", "last-entry-eq", U8_MAX),
             ("srh-last-entry-gt", "last-entry-gt", U8_MAX), ("srh-last-entry-lt", "last-entry-lt", U8_MAX),
             ("srh-tag", "tag", U16_MAX))
_SRH_SIDS = (("srh-psid", "psid"), ("srh-nsid", "nsid"), ("srh-lsid", "lsid"))


class Srh(Match):
    """`-m srh` revision 1 (`struct ip6t_srh1`): Segment Routing Header fields and segment ids."""

    name = "srh"
    revision = 1
    options = tuple(Opt(o, 1, True) for o, _w, _m in _SRH_NUMS) + tuple(Opt(o, 1, True) for o, _w in _SRH_SIDS)

    def __init__(self) -> None:
        self.nums: dict[str, int] = {}
        self.sids: dict[str, tuple[int, int]] = {}  # address as given (not masked), mask
        self.inv: set[str] = set()

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        a = arg or ""
        if inverted:
            self.inv.add(opt)
        for o, _w, hi in _SRH_NUMS:
            if o == opt:
                self.nums[opt] = parse_value("srh", opt, a, hi)
                return
        if opt in {o for o, _w in _SRH_SIDS}:
            self.sids[opt] = _parse_hostmask6(a)
            return
        super().parse(opt, arg, inverted, rule)

    def save(self) -> str:
        out = ""
        for o, _w, _hi in _SRH_NUMS:
            if o in self.nums:
                out += (" !" if o in self.inv else "") + f" --{o} {self.nums[o]}"
        for o, _w in _SRH_SIDS:
            if o in self.sids:
                addr, mask = self.sids[o]
                out += (" !" if o in self.inv else "") + f" --{o} {format_addr6(addr)}/{mask6_to_prefix(mask)}"
        return out

    def print_list(self, numeric: bool) -> str:
        out = " srh"
        for o, w, _hi in _SRH_NUMS:
            if o in self.nums:
                out += f" {w}:{'!' if o in self.inv else ''}{self.nums[o]}"
        for o, w in _SRH_SIDS:
            if o in self.sids:
                addr, mask = self.sids[o]
                out += f" {w} {'!' if o in self.inv else ''} {format_addr6(addr)}/{mask6_to_prefix(mask)}"
        return out


def _parse_hostmask6(text: str) -> tuple[int, int]:
    """`xtopt_parse_hostmask` for IPv6: the address as given and a prefix length (128 without `/`)."""
    host, slash, plen = text.partition("/")
    addr = parse_ipv6(host)
    if addr is None:
        raise RulesError(f"host/network `{host}' not found")
    if not slash:
        return addr, ALL_ONES6
    if not plen.isdigit() or int(plen) > 128:
        raise RulesError(f"invalid mask `{plen}' specified")
    return addr, prefix6_to_mask(int(plen))
