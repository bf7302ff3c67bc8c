"""ICMPv6 error translation for NAT66 flows (`nf_nat_icmpv6_reply_translation`, nf_nat_proto.c; §3.4).

It runs instead of the nat chains for ICMPv6 packets whose ctinfo is RELATED or RELATED_REPLY:

1. the ICMPv6 header and the embedded IPv6 header (8 + 40 bytes) must be there and the ICMPv6 checksum
   (pseudo-header included) must verify; else DROP;
2. a Redirect passes only if both manips are done and the ct has no NAT; else DROP;
3. statusbit = SRC_NAT at SRC hooks, DST_NAT at DST hooks, swapped for REPLY; not set → ACCEPT as is;
4. the embedded packet gets `tuple[!dir]` with the opposite manip (`nf_nat_ipv6_manip_pkt`);
5. the ICMPv6 checksum is recomputed from scratch with the outer addresses as they are now;
6. the outer header gets `invert(tuple[!dir])` (protocol ICMPv6) with this hook's manip, its checksum
   following the address incrementally.
"""

from __future__ import annotations

from natbox.conntrack.conn import Conn
from natbox.conntrack.proto.icmpv6 import icmpv6_checksum_ok
from natbox.conntrack.tuple import ConnTuple, invert
from natbox.nat.manip6 import nf_nat_ipv6_manip_pkt
from natbox.netfilter import IPPROTO_ICMPV6, NF_ACCEPT, NF_DROP, CtInfo, CtStatus, Direction, Hook, ManipType
from natbox.skb import Skb
from natbox.wire.icmpv6 import NDISC_REDIRECT, set_icmpv6_checksum
from natbox.wire.layout import ICMP6H_LEN, ICMP6H_TYPE, IP6H_DADDR, IP6H_LEN, IP6H_SADDR

__all__ = ["icmpv6_reply_translation"]


def _drop(skb: Skb, why: str) -> int:
    skb.note = f"nat icmpv6: {why}"
    skb.add_trace(f"NAT ICMPv6 error translation: dropped ({skb.note})")
    return NF_DROP


def icmpv6_reply_translation(skb: Skb, ct: Conn, ctinfo: CtInfo, hook: Hook, hdrlen: int) -> int:
    """Mirrors `nf_nat_icmpv6_reply_translation()` for the ICMPv6 message at `hdrlen`; NF_ACCEPT or NF_DROP."""
    data = skb.data
    manip = ManipType.for_hook(hook)
    if len(data) < hdrlen + ICMP6H_LEN + IP6H_LEN:
        return _drop(skb, "error too short for an embedded IPv6 header")
    if not skb.csum_partial and not icmpv6_checksum_ok(data, hdrlen):
        return _drop(skb, "bad ICMPv6 checksum")
    if data[hdrlen + ICMP6H_TYPE] == NDISC_REDIRECT:
        status = ct.status
        if (status & CtStatus.NAT_DONE_MASK) != CtStatus.NAT_DONE_MASK or status & CtStatus.NAT_MASK:
            return _drop(skb, "redirect about a NATed (or not fully set up) flow")
    direction = ctinfo.direction
    statusbit = CtStatus.SRC_NAT if manip == ManipType.SRC else CtStatus.DST_NAT
    if direction == Direction.REPLY:
        statusbit ^= CtStatus.NAT_MASK
    if not ct.status & statusbit:
        return NF_ACCEPT
    other = ct.tuples[1 - direction]
    inner_manip = ManipType.DST if manip == ManipType.SRC else ManipType.SRC
    if not nf_nat_ipv6_manip_pkt(data, other, inner_manip, iphdroff=hdrlen + ICMP6H_LEN):
        return _drop(skb, "embedded header truncated")
    if not skb.csum_partial:
        set_icmpv6_checksum(int.from_bytes(data[IP6H_SADDR:IP6H_DADDR], "big"),
                            int.from_bytes(data[IP6H_DADDR:IP6H_DADDR + 16], "big"), data, hdrlen)
    target = invert(other)
    if target is None:
        return _drop(skb, "untranslatable tuple")
    target = ConnTuple(target.src, target.sport, target.dst, target.dport, IPPROTO_ICMPV6)
    if not nf_nat_ipv6_manip_pkt(data, target, manip):
        return _drop(skb, "outer header truncated")
    skb.add_trace(f"NAT ICMPv6 error translation (ct #{ct.ct_id}): embedded packet and outer "
                  f"{'source' if manip == ManipType.SRC else 'destination'} translated")
    return NF_ACCEPT
