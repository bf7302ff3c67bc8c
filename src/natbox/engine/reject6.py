"""ip6tables REJECT's answers (net/ipv6/netfilter/nf_reject_ipv6.c, ip6t_REJECT.c; ipv6-semantics.md §4.2).

`--reject-with` names map to ICMPv6 Destination Unreachable codes 0-6 (icmp6-port-unreachable, code 4, the
default) sent by `icmp6_send` (rate-limited, attached to the packet's ct); `tcp-reset` answers with a RST
(`nf_send_reset6`), attached too. NPT's map failure asks for Parameter Problem code 0 pointing at the source
(8) or destination (24) address field.
"""

from __future__ import annotations

from typing import Final

from natbox.conntrack.config import ConntrackConfig
from natbox.conntrack.proto.tcp import nf_conntrack_tcp_set_closing
from natbox.engine.ip6_output import Ip6Output
from natbox.engine.reject import build_reset6_for
from natbox.skb import Skb6
from natbox.wire import icmpv6
from natbox.wire.layout import IP6H_DADDR, IP6H_SADDR

__all__ = ["REJECT6_CODES", "reject6"]

REJECT6_CODES: dict[str, tuple[int, int]] = {
    "icmp6-no-route": (icmpv6.ICMPV6_DEST_UNREACH, icmpv6.ICMPV6_NOROUTE),
    "icmp6-adm-prohibited": (icmpv6.ICMPV6_DEST_UNREACH, icmpv6.ICMPV6_ADM_PROHIBITED),
    "icmp6-addr-unreachable": (icmpv6.ICMPV6_DEST_UNREACH, icmpv6.ICMPV6_ADDR_UNREACH),
    "icmp6-port-unreachable": (icmpv6.ICMPV6_DEST_UNREACH, icmpv6.ICMPV6_PORT_UNREACH),
    "icmp6-policy-fail": (icmpv6.ICMPV6_DEST_UNREACH, icmpv6.ICMPV6_POLICY_FAIL),
    "icmp6-reject-route": (icmpv6.ICMPV6_DEST_UNREACH, icmpv6.ICMPV6_REJECT_ROUTE),
    "npt-paramprob-saddr": (icmpv6.ICMPV6_PARAMPROB, icmpv6.ICMPV6_HDR_FIELD),
    "npt-paramprob-daddr": (icmpv6.ICMPV6_PARAMPROB, icmpv6.ICMPV6_HDR_FIELD),
}
_POINTERS: Final = {"npt-paramprob-saddr": IP6H_SADDR, "npt-paramprob-daddr": IP6H_DADDR}


def reject6(out: Ip6Output, skb: Skb6, how: str, now: float, cfg: ConntrackConfig) -> None:
    """REJECT's packet for an IPv6 skb: a RST (`nf_send_reset6`, which moves the packet's ct to CLOSE with
    `nf_ct_set_closing`) or an ICMPv6 error (`nf_send_unreach6`)."""
    if how == "tcp-reset":
        if skb.protocol != 6 or skb.is_later_fragment:
            return
        rst = build_reset6_for(bytes(skb.data), skb.ihl)
        if rst is not None:
            if skb.ct is not None:
                nf_conntrack_tcp_set_closing(skb.ct, now, cfg)
            out.queue_local(rst, skb)
        return
    icmp_type, code = REJECT6_CODES.get(how, (icmpv6.ICMPV6_DEST_UNREACH, icmpv6.ICMPV6_PORT_UNREACH))
    out.icmp6_send(skb, icmp_type, code, info=_POINTERS.get(how, 0))
