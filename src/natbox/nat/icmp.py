"""ICMP error translation for NATed flows (§4.9).

Mirrors `nf_nat_icmp_reply_translation()` in net/netfilter/nf_nat_proto.c. It runs, instead of the nat
chains, for every ICMP packet whose ctinfo is RELATED or RELATED_REPLY (the ct is the flow the error is
about), at each of the four NAT hooks:

1. At least the ICMP header (8) and the embedded IP header (20) must be present, and the ICMP checksum
   must verify; otherwise DROP.
2. A redirect (type 5) passes only if both manips are done and the ct has no NAT at all; else DROP.
3. statusbit = SRC_NAT for a SRC-manip hook, DST_NAT otherwise, swapped for REPLY-direction packets;
   not set on the ct → ACCEPT unchanged.
4. The embedded header is rewritten with `tuple[!dir]` and the opposite manip type (so its L4 checksum
   follows the §4.8 rules, with "full header present" judged against the whole datagram).
5. The ICMP checksum is recomputed over the whole ICMP message.
6. The outer header gets `invert(tuple[!dir])` with protocol ICMP, this hook's manip type (the error's
   own "id" word is not touched: only query types carry one).

Checksum verification: the kernel's `nf_ip_checksum()` verifies software-checksummed (CHECKSUM_NONE)
packets at every hook; natbox models every packet as CHECKSUM_NONE, so it verifies at every hook too.
"""

from __future__ import annotations

from typing import Final

from natbox.conntrack.conn import Conn
from natbox.conntrack.tuple import ConnTuple, format_addr, invert
from natbox.nat.manip import manip_pkt
from natbox.netfilter import IPPROTO_ICMP, NF_ACCEPT, NF_DROP, CtInfo, CtStatus, Direction, Hook, ManipType
from natbox.skb import Skb
from natbox.wire.checksum import internet_checksum
from natbox.wire.icmp import ICMP_REDIRECT
from natbox.wire.layout import ICMPH_CHECKSUM, ICMPH_LEN, ICMPH_TYPE, IPH_MIN_LEN, IPH_VER_IHL

__all__ = ["icmp_reply_translation"]
_ICMP_HDR: Final = ICMPH_LEN  # struct icmphdr
_INNER_IP: Final = IPH_MIN_LEN  # struct iphdr


def icmp_reply_translation(skb: Skb, ct: Conn, ctinfo: CtInfo, hook: Hook) -> int:
    """Mirrors `nf_nat_icmp_reply_translation()`; returns NF_ACCEPT or NF_DROP (never raises).

    On DROP, `skb.note` says why (for the engine's drop accounting).
    """
    data = skb.data
    hdrlen = skb.ihl
    manip = ManipType.for_hook(hook)
    if len(data) < hdrlen + _ICMP_HDR + _INNER_IP:
        skb.note = "nat icmp: error too short for an embedded IP header"
        skb.add_trace(f"NAT ICMP error translation: dropped ({skb.note})")
        return NF_DROP
    if internet_checksum(memoryview(data)[hdrlen:]) != 0:
        skb.note = "nat icmp: bad ICMP checksum"
        skb.add_trace(f"NAT ICMP error translation: dropped ({skb.note})")
        return NF_DROP
    if data[hdrlen + ICMPH_TYPE] == ICMP_REDIRECT:
        status = ct.status
        if (status & CtStatus.NAT_DONE_MASK) != CtStatus.NAT_DONE_MASK or status & CtStatus.NAT_MASK:
            skb.note = "nat icmp: redirect about a NATed (or not fully set up) flow"
            skb.add_trace(f"NAT ICMP error translation: dropped ({skb.note})")
            return NF_DROP

    direction = ctinfo.direction
    statusbit = CtStatus.SRC_NAT if manip == ManipType.SRC else CtStatus.DST_NAT
    if direction == Direction.REPLY:
        statusbit ^= CtStatus.NAT_MASK
    if not ct.status & statusbit:
        return NF_ACCEPT

    other = ct.tuples[1 - direction]
    inner_off = hdrlen + _ICMP_HDR
    inner_ihl = (data[inner_off + IPH_VER_IHL] & 0x0F) * 4
    inner_manip = ManipType.DST if manip == ManipType.SRC else ManipType.SRC
    if not manip_pkt(data, inner_ihl, other, inner_manip, iphdroff=inner_off):
        skb.note = "nat icmp: embedded header truncated"
        skb.add_trace(f"NAT ICMP error translation: dropped ({skb.note})")
        return NF_DROP

    csum = hdrlen + ICMPH_CHECKSUM
    data[csum : csum + 2] = b"\x00\x00"
    data[csum : csum + 2] = internet_checksum(memoryview(data)[hdrlen:]).to_bytes(2, "big")

    target = invert(other)
    if target is None:  # cannot happen for a tracked ct; never raise on it
        skb.note = "nat icmp: untranslatable tuple"
        return NF_DROP
    target = ConnTuple(target.src, target.sport, target.dst, target.dport, IPPROTO_ICMP)
    if not manip_pkt(data, hdrlen, target, manip):
        skb.note = "nat icmp: outer header truncated"
        return NF_DROP
    if skb.trace is not None:
        if manip == ManipType.SRC:
            outer = f"source -> {format_addr(target.src)}"
        else:
            outer = f"destination -> {format_addr(target.dst)}"
        which = "src" if inner_manip == ManipType.SRC else "dst"
        addr, port = (other.src, other.sport) if which == "src" else (other.dst, other.dport)
        skb.add_trace(
            f"NAT ICMP error translation (ct #{ct.ct_id}): embedded {which} -> {format_addr(addr)}:{port}, "
            f"outer {outer}, ICMP checksum recomputed"
        )
    return NF_ACCEPT
