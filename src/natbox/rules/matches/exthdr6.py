"""ip6tables' extension header matches, as ip6tables 1.8.9 parses and prints them and the kernel checks them:
`-m hbh` / `-m dst` (libip6t_hbh.c, libip6t_dst.c, ip6t_hbh.c), `-m rt` (libip6t_rt.c, ip6t_rt.c), `-m frag`
(libip6t_frag.c, ip6t_frag.c) and `-m ipv6header` (libip6t_ipv6header.c, ip6t_ipv6header.c); `-m srh` is
natbox.rules.matches.srh6. Each header is found as the kernel finds it, with `ipv6_find_hdr` for that header
number (ipv6-semantics.md §1.6), except ipv6header's own walk; a header cut short (the kernel's hotdrop) is no
match here, as for natbox's other header matches.
"""

from __future__ import annotations

from typing import ClassVar, Final

from natbox.rules.addr6 import format_addr6, parse_ipv6
from natbox.rules.api import XtContext
from natbox.rules.matches._common import ETC_PROTOCOLS, PROTO_NAMES
from natbox.rules.matches._xtopt import U32_MAX, parse_range, parse_value
from natbox.rules.matches.icmp6 import strtoul_prefix
from natbox.rules.model import RESOURCE_PROBLEM, Match, MatchFn, Opt, Rule, RulesError
from natbox.skb import Skb
from natbox.wire.ipv6 import (
    NEXTHDR_AUTH,
    NEXTHDR_DEST,
    NEXTHDR_ESP,
    NEXTHDR_FRAGMENT,
    NEXTHDR_HOP,
    NEXTHDR_NONE,
    NEXTHDR_ROUTING,
    ipv6_find_hdr,
)
from natbox.wire.layout import (
    FRAGH_ID,
    FRAGH_LEN,
    FRAGH_OFF,
    FRAGH_RESERVED,
    IP6H_LEN,
    IP6H_NEXTHDR,
    IP6OPT_HDRLEN,
    IP6OPT_NEXTHDR,
    IP6RT0_ADDR,
    IP6RT0_RESERVED,
    IP6RT_SEGMENTS_LEFT,
    IP6RT_TYPE,
)

__all__ = ["Dst", "Frag", "Hbh", "Ipv6header", "Rt", "print_ids"]

IP6T_OPTS_OPTSNR: Final = 16  # options of -m hbh/dst (ip6t_opts.h)
IP6T_RT_HOPS: Final = 16  # addresses of --rt-0-addrs (ip6t_rt.h)


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
    nexthdr: ClassVar[int] = NEXTHDR_HOP
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

    def compile(self) -> MatchFn:
        """`hbh_mt6`: the header's byte length against --*-len (0: any), then the listed options in order
        (type, and length unless 0xFF) from the header's first option; fewer options than listed: no match."""
        target, want_len, inv_len, opts = self.nexthdr, self.hdrlen or 0, self.inv_len, tuple(self.opts)

        def hbh_mt6(skb: Skb, ctx: XtContext) -> bool:
            data = skb.data
            found = ipv6_find_hdr(data, target)
            if found is None or found[0] + 2 > len(data):
                return False
            ptr = found[0]
            hdrlen = (data[ptr + IP6OPT_HDRLEN] + 1) << 3
            if len(data) - ptr < hdrlen:
                return False
            ret = not want_len or (want_len == hdrlen) != inv_len
            if not opts:
                return ret
            return ret and _options_match(data, ptr + 2, hdrlen - 2, opts)

        return hbh_mt6

    def why(self, skb: Skb, ctx: XtContext) -> str:
        return _why_header(skb, self.nexthdr, "options")


def _why_header(skb: Skb, nexthdr: int, what: str) -> str:
    """The trace's reason when an extension header match failed: the header is not there, or its fields."""
    if ipv6_find_hdr(skb.data, nexthdr) is None:
        return f"no match (no {_HDR_NAMES[nexthdr]} header)"
    return f"no match ({what})"


_HDR_NAMES: Final = {NEXTHDR_HOP: "hop-by-hop", NEXTHDR_DEST: "destination options", NEXTHDR_ROUTING: "routing",
              NEXTHDR_FRAGMENT: "fragment", NEXTHDR_AUTH: "AH"}


def _options_match(data: bytearray, ptr: int, left: int, opts: tuple[int, ...]) -> bool:
    """The option walk of `hbh_mt6`."""
    n = len(data)
    for i, spec in enumerate(opts):
        if left < 1 or ptr >= n:
            return False
        otype = data[ptr]
        if otype != spec >> 8:
            return False
        if otype:
            if left < 2 or ptr + 1 >= n:
                return False
            olen = data[ptr + 1]
            if spec & 0xFF != 0xFF and spec & 0xFF != olen:
                return False
            optlen = olen + 2
        else:
            optlen = 1  # Pad1
        if (ptr > n - optlen or left < optlen) and i < len(opts) - 1:
            return False
        ptr += optlen
        left -= optlen
    return True


class Dst(Hbh):
    """`-m dst [!] --dst-len N --dst-opts ...`: the same match on the Destination Options header."""

    name = "dst"
    nexthdr = NEXTHDR_DEST
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

    def compile(self) -> MatchFn:
        """`rt_mt6`: segments left, length, type, type 0's reserved word and addresses (in order and all of
        them, or with --rt-0-not-strict each listed one somewhere after the previous)."""
        segs, inv_segs = self.segsleft, "rt-segsleft" in self.inv
        want_len, inv_len = self.hdrlen, "rt-len" in self.inv
        rt_type, inv_type = self.rt_type, "rt-type" in self.inv
        res, addrs, not_strict = self.res, tuple(self.addrs), self.not_strict

        def rt_mt6(skb: Skb, ctx: XtContext) -> bool:
            data = skb.data
            found = ipv6_find_hdr(data, NEXTHDR_ROUTING)
            if found is None or found[0] + IP6RT0_RESERVED > len(data):
                return False
            ptr = found[0]
            hdrlen = (data[ptr + IP6OPT_HDRLEN] + 1) << 3
            if len(data) - ptr < hdrlen:
                return False
            ok = ((segs[0] <= data[ptr + IP6RT_SEGMENTS_LEFT] <= segs[1]) != inv_segs
                  and (want_len is None or (want_len == hdrlen) != inv_len)
                  and (rt_type is None or (rt_type == data[ptr + IP6RT_TYPE]) != inv_type))
            if ok and res:
                ok = data[ptr + IP6RT0_RESERVED:ptr + IP6RT0_ADDR] == bytes(4)
            if not addrs:
                return ok
            n = (hdrlen - IP6RT0_ADDR) // 16
            if not ok or len(addrs) > n:
                return False
            hdr = [int.from_bytes(data[ptr + IP6RT0_ADDR + 16 * i:ptr + IP6RT0_ADDR + 16 * i + 16], "big")
                   for i in range(n)]
            if not_strict:
                i = 0
                for a in hdr:
                    if a == addrs[i]:
                        i += 1
                        if i == len(addrs):
                            return True
                return False
            return len(addrs) == n and tuple(hdr) == addrs

        return rt_mt6

    def why(self, skb: Skb, ctx: XtContext) -> str:
        return _why_header(skb, NEXTHDR_ROUTING, "routing header fields")


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
            if opt in self.flags:
                raise RulesError(f'frag: option "--{opt}" can only be used once.\n')
            self.flags.append(opt)
        else:
            super().parse(opt, arg, inverted, rule)

    def final_check(self, rule: Rule) -> None:
        """`xtables_options_fcheck`: --fragmore and --fraglast exclude each other (table order, recorded)."""
        if "fragmore" in self.flags and "fraglast" in self.flags:
            raise RulesError('frag: option "--fragmore" cannot be used together with "--fraglast".\n')

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

    def compile(self) -> MatchFn:
        """`frag_mt6`: identification range, reserved bits, first (offset 0), more (M set), last (M clear);
        `--fraglen` is parsed but the kernel never compares it (a Fragment header has no length field)."""
        ids, inv_ids = self.ids, self.inv_ids
        res, first = "fragres" in self.flags, "fragfirst" in self.flags
        more, last = "fragmore" in self.flags, "fraglast" in self.flags

        def frag_mt6(skb: Skb, ctx: XtContext) -> bool:
            data = skb.data
            found = ipv6_find_hdr(data, NEXTHDR_FRAGMENT)
            if found is None or found[0] + FRAGH_LEN > len(data):
                return False
            ptr = found[0]
            ident = int.from_bytes(data[ptr + FRAGH_ID:ptr + FRAGH_ID + 4], "big")
            frag_off = int.from_bytes(data[ptr + FRAGH_OFF:ptr + FRAGH_ID], "big")
            reserved = data[ptr + FRAGH_RESERVED]
            return ((ids[0] <= ident <= ids[1]) != inv_ids
                    and not (res and (reserved or frag_off & 0x6))
                    and not (first and frag_off & ~0x7)
                    and not (more and not frag_off & 1)
                    and not (last and frag_off & 1))

        return frag_mt6

    def why(self, skb: Skb, ctx: XtContext) -> str:
        return _why_header(skb, NEXTHDR_FRAGMENT, "fragment header fields")


# `chain_flags` of libip6t_ipv6header.c: (protocol, flag, name), in print order
IPV6HEADER_FLAGS: Final = ((0, 0x80, "hop-by-hop"), (60, 0x40, "ipv6-opts"), (43, 0x20, "ipv6-route"),
                    (44, 0x10, "ipv6-frag"), (51, 0x08, "ah"), (50, 0x04, "esp"), (59, 0x02, "ipv6-nonxt"),
                    (255, 0x01, "protocol"))
# `chain_protos`: the names tried when /etc/protocols (getprotobyname) has none
_CHAIN_PROTOS: Final = {"hop-by-hop": 0, "protocol": 255, "hop": 0, "dst": 60, "route": 43, "frag": 44, "auth": 51,
                 "esp": 50, "none": 59, "prot": 255, "0": 0, "60": 60, "43": 43, "44": 44, "51": 51, "50": 50,
                 "59": 59, "255": 255}
_GETPROTOBYNAME: Final = {**{n: p for p, n in ETC_PROTOCOLS.items()}, **{n: p for p, n in PROTO_NAMES.items() if p},
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

    def compile(self) -> MatchFn:
        """`ipv6header_mt6`: a bit per header of the chain (NONE and ESP end it), `prot` when an upper-layer
        protocol follows; hard mode wants exactly the listed set, `--soft` the listed bits (inverted: absent)."""
        want, inv, soft = self.matchflags or 0, 0xFF if self.invert else 0, self.soft

        def ipv6header_mt6(skb: Skb, ctx: XtContext) -> bool:
            seen = _ipv6header_bits(skb.data)
            if seen is None:
                return False
            if soft:
                return not ((seen ^ want ^ inv) & want)
            return seen != want if inv else seen == want

        return ipv6header_mt6

    def why(self, skb: Skb, ctx: XtContext) -> str:
        seen = _ipv6header_bits(skb.data)
        return "no match (headers cut short)" if seen is None else f"no match (headers 0x{seen:02X})"


_HDR_BIT: Final = {NEXTHDR_HOP: 0x80, NEXTHDR_ROUTING: 0x20, NEXTHDR_FRAGMENT: 0x10, NEXTHDR_AUTH: 0x08,
    NEXTHDR_DEST: 0x40}
_NF_IP6_EXT: Final = frozenset({*_HDR_BIT, NEXTHDR_ESP, NEXTHDR_NONE})  # nf_ip6_ext_hdr(): ESP counts here


def _ipv6header_bits(data: bytearray) -> int | None:
    """The walk of `ipv6header_mt6`; None when a header does not fit (no match)."""
    if len(data) < IP6H_LEN:
        return None
    nexthdr, ptr, seen = data[IP6H_NEXTHDR], IP6H_LEN, 0
    left = len(data) - ptr
    while nexthdr in _NF_IP6_EXT:
        if nexthdr == NEXTHDR_NONE:
            seen |= 0x02
            break
        if left < 2:
            return None
        if nexthdr == NEXTHDR_ESP:
            seen |= 0x04
            break
        if nexthdr == NEXTHDR_FRAGMENT:
            hdrlen = FRAGH_LEN
        elif nexthdr == NEXTHDR_AUTH:
            hdrlen = (data[ptr + IP6OPT_HDRLEN] + 2) << 2
        else:
            hdrlen = (data[ptr + IP6OPT_HDRLEN] + 1) << 3
        seen |= _HDR_BIT[nexthdr]
        nexthdr = data[ptr + IP6OPT_NEXTHDR]
        left -= hdrlen
        ptr += hdrlen
        if ptr > len(data):
            break
    if nexthdr not in (NEXTHDR_NONE, NEXTHDR_ESP):
        seen |= 0x01
    return seen
