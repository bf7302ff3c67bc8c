"""`-j HMARK --hmark-tuple ... --hmark-rnd R --hmark-mod M [--hmark-offset O] ...` (libxt_HMARK.c,
net/netfilter/xt_HMARK.c `hmark_tg_v4`).

Sets `skb->mark` to a hash of the packet's (or, with `--hmark-tuple ct`, its connection's) addresses,
ports and protocol: the masked addresses in ascending order and the masked ports ordered the same way,
so both directions of a flow get the same mark; `jhash_3words(src, dst, ports, rnd) ^ (proto & mask)`,
scaled into `[0, mod)` by `reciprocal_scale`, plus the offset (`hmark_hash`). ICMP errors are hashed by
the datagram they quote; ICMP and fragments hash no ports; ESP's SPI and AH's (at offset 4) stand in for
the ports. Always continues.

In ip6tables (`hmark_tg_v6`) the masks are 128 bits and an address counts as the XOR of its four masked
words (`hmark_addr6_mask`); the packet's protocol is `ipv6_find_hdr`'s (stopping at AH); an ICMPv6 error
(type 1-127) is hashed by the header it quotes; a fragment or ICMPv6 hashes no ports; a header chain that
cannot be walked hashes the zero tuple (`hmark_pkt_set_htuple_ipv6` returns 0 with nothing set).
"""

from __future__ import annotations

from typing import Final

from natbox.nat.jhash import jhash2, reciprocal_scale
from natbox.netfilter import NFPROTO_IPV6
from natbox.rules.api import XT_CONTINUE, XtContext
from natbox.rules.matches._common import parse_uint
from natbox.rules.matches._xtflags import parse_plen6, plen_mask6
from natbox.rules.model import (
    RESOURCE_PROBLEM,
    Opt,
    Rule,
    RulesError,
    Target,
    TargetFn,
    mask_to_prefix,
    parse_ipv4,
)
from natbox.skb import Skb
from natbox.wire.icmp import (
    ICMP_ADDRESSREPLY,
    ICMP_DEST_UNREACH,
    ICMP_PARAMETERPROB,
    ICMP_REDIRECT,
    ICMP_SOURCE_QUENCH,
    ICMP_TIME_EXCEEDED,
)
from natbox.wire.ipv4 import IP_MF, IP_OFFSET
from natbox.wire.ipv6 import IP6_FH_F_AUTH, IP6_FH_F_FRAG, NEXTHDR_ICMP, ipv6_find_hdr
from natbox.wire.layout import (
    ICMP6H_LEN,
    ICMP6H_TYPE,
    ICMPH_LEN,
    ICMPH_TYPE,
    IP6H_ADDRS_END,
    IP6H_DADDR,
    IP6H_LEN,
    IP6H_SADDR,
    IPH_DADDR,
    IPH_FRAG_OFF,
    IPH_MIN_LEN,
    IPH_PROTOCOL,
    IPH_SADDR,
    IPH_VER_IHL,
)

__all__ = ["Hmark"]

# enum of xt_HMARK.h (also the option ids of libxt_HMARK)
(SADDR_MASK, DADDR_MASK, SPI, SPI_MASK, SPORT, DPORT, SPORT_MASK, DPORT_MASK, PROTO_MASK, RND, MODULUS, OFFSET,
 CT, METHOD_L3) = range(14)
_PKT_OPTS: Final = {SADDR_MASK, DADDR_MASK, SPI_MASK, SPORT_MASK, DPORT_MASK, PROTO_MASK, SPORT, DPORT, SPI}
_OPTS: Final = {"hmark-src-prefix": SADDR_MASK, "hmark-dst-prefix": DADDR_MASK, "hmark-sport-mask": SPORT_MASK,
         "hmark-dport-mask": DPORT_MASK, "hmark-spi-mask": SPI_MASK, "hmark-sport": SPORT, "hmark-dport": DPORT,
         "hmark-spi": SPI, "hmark-proto-mask": PROTO_MASK, "hmark-rnd": RND, "hmark-mod": MODULUS,
         "hmark-offset": OFFSET}
_TUPLE_WORDS: Final = ("ct", "src", "dst", "sport", "dport", "proto", "spi")  # hmark_parse's order
_ICMP_ERRORS: Final = (ICMP_DEST_UNREACH, ICMP_SOURCE_QUENCH, ICMP_REDIRECT, ICMP_TIME_EXCEEDED, ICMP_PARAMETERPROB)
NR_ICMP_TYPES: Final = ICMP_ADDRESSREPLY
_PORT_PROTOS: Final = {6: 0, 17: 0, 33: 0, 50: 0, 132: 0, 136: 0, 51: 4}  # proto_ports_offset
_M32: Final = 0xFFFFFFFF


def _plen_mask(plen: int) -> int:
    plen = min(plen, 32)  # an IPv4 address takes the first 32 bits of the 128-bit mask
    return (_M32 << (32 - plen)) & _M32 if plen else 0


def _swap_ports(ports: int, mask: int, set_: int) -> int:
    """`hmark_swap_ports`: mask and set the two 16-bit halves, the larger one high."""
    hp = (ports & mask) | set_
    src, dst = hp >> 16, hp & 0xFFFF
    return (dst << 16) | src if dst > src else (src << 16) | dst


class Hmark(Target):
    name = "HMARK"
    options = (Opt("hmark-tuple", 1), *(Opt(o, 1) for o in _OPTS))

    def __init__(self) -> None:
        self.flags = 0
        self.xflags = 0  # libxtables' cb->xflags: which options (and tuple words) were given
        self.src_mask = self.dst_mask = 0
        self.port_mask = self.port_set = 0  # sport in the high half, as the bytes lie on the wire
        self.proto_mask = 0
        self.hashrnd = self.hmodulus = self.hoffset = 0

    def _tuple_word(self, word: str, full: int) -> bool:
        """`hmark_parse`: a (case-insensitive) prefix of a tuple word, the first that fits (`full`: the all-ones
        address mask of the rule's family)."""
        for name in _TUPLE_WORDS:
            if name.startswith(word.lower()):
                bit = {"ct": CT, "src": SADDR_MASK, "dst": DADDR_MASK, "sport": SPORT_MASK, "dport": DPORT_MASK,
                       "proto": PROTO_MASK, "spi": SPI_MASK}[name]
                if name == "src":
                    self.src_mask = full
                elif name == "dst":
                    self.dst_mask = full
                elif name == "sport":
                    self.port_mask |= 0xFFFF0000
                elif name == "dport":
                    self.port_mask |= 0xFFFF
                elif name == "proto":
                    self.proto_mask = 0xFFFF
                elif name == "spi":
                    self.port_mask = _M32
                self.flags |= 1 << bit
                self.xflags |= 1 << bit
                return True
        return False

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        a = arg or ""
        if opt == "hmark-tuple":
            if self.xflags & (1 << METHOD_L3):  # O_HMARK_TYPE shares the id of XT_HMARK_METHOD_L3
                raise RulesError('HMARK: option "--hmark-tuple" can only be used once.\n')
            self.xflags |= 1 << METHOD_L3
            words = a.split(",")
            for i, word in enumerate(words):
                if i == len(words) - 1 and not word:
                    raise RulesError('"--hmark-tuple" requires a list of types with no spaces, e.g. '
                                     "src,dst,sport,dport,proto")
                full = (1 << 128) - 1 if rule.family == NFPROTO_IPV6 else _M32
                if not word or not self._tuple_word(word, full):
                    raise RulesError(f'Bad type "{",".join(words[i:])}"')
            return
        oid = _OPTS.get(opt)
        if oid is None:
            super().parse(opt, arg, inverted, rule)
            return
        if self.xflags & (1 << oid):
            raise RulesError(f'HMARK: option "--{opt}" can only be used once.\n')
        if oid in (SADDR_MASK, DADDR_MASK) and rule.family == NFPROTO_IPV6:
            mask6 = plen_mask6(parse_plen6("HMARK", opt, a))
            if oid == SADDR_MASK:
                self.src_mask = mask6
            else:
                self.dst_mask = mask6
        elif oid in (SADDR_MASK, DADDR_MASK):
            plen = parse_uint(a, 0, _M32)  # xtopt_parse_plenmask: any larger length is the whole address
            if plen is None and a.count(".") == 3 and (m := parse_ipv4(a)) is not None and mask_to_prefix(m) >= 0:
                plen = mask_to_prefix(m)
            if plen is None:
                raise RulesError(f'HMARK: bad value for option "--{opt}", neither a valid network mask nor valid '
                                 "CIDR (0-32).\n")
            if oid == SADDR_MASK:
                self.src_mask = _plen_mask(plen)
            else:
                self.dst_mask = _plen_mask(plen)
        else:
            lo, hi = (1, _M32) if oid == MODULUS else (0, 0xFFFF if oid in (SPORT_MASK, DPORT_MASK, SPORT, DPORT,
                                                                            PROTO_MASK) else _M32)
            v = parse_uint(a, lo, hi)
            if v is None:
                raise RulesError(f'HMARK: bad value for option "--{opt}", or out of range ({lo}-{hi}).\n')
            self._store(oid, v)
        self.flags |= 1 << oid
        self.xflags |= 1 << oid

    def _store(self, oid: int, v: int) -> None:
        if oid == SPORT_MASK:
            self.port_mask = (self.port_mask & 0xFFFF) | v << 16
        elif oid == DPORT_MASK:
            self.port_mask = (self.port_mask & 0xFFFF0000) | v
        elif oid == SPI_MASK:
            self.port_mask = v
        elif oid == SPORT:
            self.port_set = (self.port_set & 0xFFFF) | v << 16
        elif oid == DPORT:
            self.port_set = (self.port_set & 0xFFFF0000) | v
        elif oid == SPI:
            self.port_set = v
        elif oid == PROTO_MASK:
            self.proto_mask = v
        elif oid == RND:
            self.hashrnd = v
        elif oid == MODULUS:
            self.hmodulus = v
        else:
            self.hoffset = v

    def final_check(self, rule: Rule) -> None:
        """`HMARK_check`."""
        x = self.xflags
        if not x & (1 << MODULUS):
            raise RulesError("--hmark-mod is mandatory")
        if not x & (1 << RND):
            raise RulesError("--hmark-rnd is mandatory")
        if x & (1 << SPI_MASK) and x & ((1 << SPORT_MASK) | (1 << DPORT_MASK)):
            raise RulesError("you cannot use --hmark-spi-mask and --hmark-?port-mask,at the same time")
        if not any(x & (1 << o) for o in _PKT_OPTS) and not x & (1 << CT):
            raise RulesError("you have to specify --hmark-tuple at least")

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        """`hmark_tg_check`."""
        f = self.flags
        if (not self.hmodulus or (f & (1 << SPI_MASK) and f & ((1 << SPORT_MASK) | (1 << DPORT_MASK)))
                or (f & (1 << SPI) and f & ((1 << SPORT) | (1 << DPORT)))):
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def _has(self, bit: int) -> bool:
        return bool(self.flags & (1 << bit))

    def _fields(self, save: bool) -> list[str]:
        pm, ps = self.port_mask, self.port_set
        items = [(SPORT_MASK, "sport-mask", pm >> 16, 4), (DPORT_MASK, "dport-mask", pm & 0xFFFF, 4),
                 (SPI_MASK, "spi-mask", pm, 8), (SPORT, "sport", ps >> 16, 4), (DPORT, "dport", ps & 0xFFFF, 4),
                 (SPI, "spi", ps, 8), (PROTO_MASK, "proto-mask", self.proto_mask, 2), (RND, "rnd", self.hashrnd, 8)]
        if save:
            return [f" --hmark-{name} 0x{v:0{w}x}" for bit, name, v, w in items if self._has(bit)]
        return [f"{name} 0x{v:x} " for bit, name, v, _w in items if self._has(bit)]

    def save(self) -> str:
        out = ""
        if self._has(SADDR_MASK):
            out += f" --hmark-src-prefix {bin(self.src_mask).count('1')}"
        if self._has(DADDR_MASK):
            out += f" --hmark-dst-prefix {bin(self.dst_mask).count('1')}"
        out += "".join(self._fields(True))
        if self._has(MODULUS):
            out += f" --hmark-mod {self.hmodulus}"
        if self._has(OFFSET):
            out += f" --hmark-offset {self.hoffset}"
        if self._has(CT):
            out += " --hmark-tuple ct"
        return out

    def print_list(self, numeric: bool) -> str:
        out = " HMARK "
        if self._has(MODULUS):
            out += f"mod {self.hmodulus} "
        if self._has(OFFSET):
            out += f"+ 0x{self.hoffset:x} "
        if self._has(CT):
            out += "ct, "
        if self._has(SADDR_MASK):
            out += f"src-prefix {bin(self.src_mask).count('1')} "
        if self._has(DADDR_MASK):
            out += f"dst-prefix {bin(self.dst_mask).count('1')} "
        return out + "".join(self._fields(False))

    def compile(self) -> TargetFn:
        use_ct = self._has(CT)
        l3 = self._has(METHOD_L3)
        smask, dmask, pmask, pset = self.src_mask, self.dst_mask, self.port_mask, self.port_set
        proto_mask, rnd, mod, offset = self.proto_mask, self.hashrnd, self.hmodulus, self.hoffset

        def hmark_tg_v4(skb: Skb, ctx: XtContext) -> int:
            if use_ct:
                ct = skb.ct
                if ct is None:
                    return XT_CONTINUE
                orig, repl = ct.tuples[0], ct.tuples[1]
                src, dst, proto, ports = orig.src & smask, repl.src & dmask, orig.proto, 0
                if not l3 and proto != 1:
                    ports = _swap_ports((orig.sport << 16) | repl.sport, pmask, pset)
            else:
                t = _pkt_tuple(skb.data, smask, dmask, pmask, pset, l3)
                if t is None:
                    return XT_CONTINUE
                src, dst, proto, ports = t
            if l3:
                proto = 0
            lo, hi = (src, dst) if src <= dst else (dst, src)
            h = jhash2((lo, hi, ports), rnd) ^ (proto & proto_mask)
            skb.mark = (reciprocal_scale(h, mod) + offset) & _M32
            return XT_CONTINUE

        def hmark_tg_v6(skb: Skb, ctx: XtContext) -> int:
            """`hmark_tg_v6()`."""
            if use_ct:
                ct = skb.ct
                if ct is None:
                    return XT_CONTINUE
                orig, repl = ct.tuples[0], ct.tuples[1]
                src, dst, proto, ports = _fold6(orig.src & smask), _fold6(repl.src & dmask), orig.proto, 0
                if not l3 and proto != 1:  # hmark_ct_set_htuple tests IPPROTO_ICMP for both families
                    ports = _swap_ports((orig.sport << 16) | repl.sport, pmask, pset)
            else:
                t = _pkt_tuple6(skb.data, smask, dmask, pmask, pset, l3)
                if t is None:
                    return XT_CONTINUE
                src, dst, proto, ports = t
            if l3:
                proto = 0
            lo, hi = (src, dst) if src <= dst else (dst, src)
            h = jhash2((lo, hi, ports), rnd) ^ (proto & proto_mask)
            skb.mark = (reciprocal_scale(h, mod) + offset) & _M32
            return XT_CONTINUE

        return hmark_tg_v6 if self.family == NFPROTO_IPV6 else hmark_tg_v4


def _pkt_tuple(data: bytearray, smask: int, dmask: int, pmask: int, pset: int,
               l3: bool) -> tuple[int, int, int, int] | None:
    """`hmark_pkt_set_htuple_ipv4`: (src, dst, proto, ports), or None when a quoted header is cut short."""
    nh = 0
    ihl = (data[IPH_VER_IHL] & 0x0F) * 4
    if data[IPH_PROTOCOL] == 1 and len(data) >= ihl + ICMPH_LEN:  # get_inner_hdr: an ICMP error's quote
        itype = data[ihl + ICMPH_TYPE]
        if itype <= NR_ICMP_TYPES and itype in _ICMP_ERRORS:
            nh = ihl + ICMPH_LEN
            if len(data) < nh + IPH_MIN_LEN:
                return None
            ihl = (data[nh + IPH_VER_IHL] & 0x0F) * 4
    src = int.from_bytes(data[nh + IPH_SADDR:nh + IPH_SADDR + 4], "big") & smask
    dst = int.from_bytes(data[nh + IPH_DADDR:nh + IPH_DADDR + 4], "big") & dmask
    if l3:
        return src, dst, 0, 0
    proto = data[nh + IPH_PROTOCOL]
    if proto == 1 or ((data[nh + IPH_FRAG_OFF] << 8) | data[nh + IPH_FRAG_OFF + 1]) & (IP_MF | IP_OFFSET):
        return src, dst, proto, 0  # ICMP has no ports; fragments are skipped (ip_is_fragment)
    off = _PORT_PROTOS.get(proto)
    pos = nh + ihl + (off or 0)
    if off is None or len(data) < pos + 4:
        return src, dst, proto, 0
    return src, dst, proto, _swap_ports(int.from_bytes(data[pos:pos + 4], "big"), pmask, pset)


def _fold6(a: int) -> int:
    """`hmark_addr6_mask` after `ntohl`: the XOR of the four 32-bit words of a masked address."""
    return ((a >> 96) ^ (a >> 64) ^ (a >> 32) ^ a) & _M32


def _pkt_tuple6(data: bytearray, smask: int, dmask: int, pmask: int, pset: int,
                l3: bool) -> tuple[int, int, int, int] | None:
    """`hmark_pkt_set_htuple_ipv6`: (src, dst, proto, ports), or None where it returns -1 (a quoted header
    cut short or unwalkable: the mark is left alone)."""
    found = ipv6_find_hdr(data, -1, IP6_FH_F_AUTH)
    if found is None:
        return 0, 0, 0, 0  # "return 0" with the tuple still zeroed: the zero tuple is hashed
    off, nexthdr, _fragoff, flags = found
    hdr = 0  # where the IPv6 header whose addresses count starts
    if not flags & IP6_FH_F_FRAG and nexthdr == NEXTHDR_ICMP and len(data) >= off + ICMP6H_LEN and (
            0 < data[off + ICMP6H_TYPE] < 128):  # get_inner6_hdr: an ICMPv6 error's quote
        hdr = off + ICMP6H_LEN
        if len(data) < hdr + IP6H_LEN:
            return None
        inner = ipv6_find_hdr(data, -1, IP6_FH_F_AUTH, hdr)
        if inner is None:
            return None
        off, nexthdr, _fragoff, flags = inner
    src = _fold6(int.from_bytes(data[hdr + IP6H_SADDR:hdr + IP6H_DADDR], "big") & smask)
    dst = _fold6(int.from_bytes(data[hdr + IP6H_DADDR:hdr + IP6H_ADDRS_END], "big") & dmask)
    if l3:
        return src, dst, 0, 0
    if nexthdr == NEXTHDR_ICMP or flags & IP6_FH_F_FRAG:
        return src, dst, nexthdr, 0
    po = _PORT_PROTOS.get(nexthdr)
    pos = off + (po or 0)
    if po is None or len(data) < pos + 4:
        return src, dst, nexthdr, 0
    return src, dst, nexthdr, _swap_ports(int.from_bytes(data[pos:pos + 4], "big"), pmask, pset)
