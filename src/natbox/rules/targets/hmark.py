"""`-j HMARK --hmark-tuple ... --hmark-rnd R --hmark-mod M [--hmark-offset O] ...` (libxt_HMARK.c,
net/netfilter/xt_HMARK.c `hmark_tg_v4`).

Sets `skb->mark` to a hash of the packet's (or, with `--hmark-tuple ct`, its connection's) addresses,
ports and protocol: the masked addresses in ascending order and the masked ports ordered the same way,
so both directions of a flow get the same mark; `jhash_3words(src, dst, ports, rnd) ^ (proto & mask)`,
scaled into `[0, mod)` by `reciprocal_scale`, plus the offset (`hmark_hash`). ICMP errors are hashed by
the datagram they quote; ICMP and fragments hash no ports; ESP's SPI and AH's (at offset 4) stand in for
the ports. Always continues.
"""

from __future__ import annotations

from natbox.nat.jhash import jhash2, reciprocal_scale
from natbox.rules.api import XT_CONTINUE, XtContext
from natbox.rules.matches._common import parse_uint
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
from natbox.wire.layout import (
    ICMPH_LEN,
    ICMPH_TYPE,
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
_PKT_OPTS = {SADDR_MASK, DADDR_MASK, SPI_MASK, SPORT_MASK, DPORT_MASK, PROTO_MASK, SPORT, DPORT, SPI}
_OPTS = {"hmark-src-prefix": SADDR_MASK, "hmark-dst-prefix": DADDR_MASK, "hmark-sport-mask": SPORT_MASK,
         "hmark-dport-mask": DPORT_MASK, "hmark-spi-mask": SPI_MASK, "hmark-sport": SPORT, "hmark-dport": DPORT,
         "hmark-spi": SPI, "hmark-proto-mask": PROTO_MASK, "hmark-rnd": RND, "hmark-mod": MODULUS,
         "hmark-offset": OFFSET}
_TUPLE_WORDS = ("ct", "src", "dst", "sport", "dport", "proto", "spi")  # hmark_parse's order
_ICMP_ERRORS = (ICMP_DEST_UNREACH, ICMP_SOURCE_QUENCH, ICMP_REDIRECT, ICMP_TIME_EXCEEDED, ICMP_PARAMETERPROB)
NR_ICMP_TYPES = ICMP_ADDRESSREPLY
_PORT_PROTOS = {6: 0, 17: 0, 33: 0, 50: 0, 132: 0, 136: 0, 51: 4}  # proto_ports_offset
_M32 = 0xFFFFFFFF


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

    def _tuple_word(self, word: str) -> bool:
        """`hmark_parse`: a (case-insensitive) prefix of a tuple word, the first that fits."""
        for name in _TUPLE_WORDS:
            if name.startswith(word.lower()):
                bit = {"ct": CT, "src": SADDR_MASK, "dst": DADDR_MASK, "sport": SPORT_MASK, "dport": DPORT_MASK,
                       "proto": PROTO_MASK, "spi": SPI_MASK}[name]
                if name == "src":
                    self.src_mask = _M32
                elif name == "dst":
                    self.dst_mask = _M32
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
                if not word or not self._tuple_word(word):
                    raise RulesError(f'Bad type "{",".join(words[i:])}"')
            return
        oid = _OPTS.get(opt)
        if oid is None:
            super().parse(opt, arg, inverted, rule)
            return
        if self.xflags & (1 << oid):
            raise RulesError(f'HMARK: option "--{opt}" can only be used once.\n')
        if oid in (SADDR_MASK, DADDR_MASK):
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

        return hmark_tg_v4


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
