"""The IPv6 side of the DS-field extensions (xt_tos.c `tos_mt` / `tos_tg6`, xt_dscp.c `dscp_mt6`, xt_DSCP.c
`dscp_tg6`, xt_ecn.c `ecn_mt6`): they read the traffic class (`ipv6_get_dsfield`, Skb6.tos) and write it with
`ipv6_change_dsfield` (no header checksum in IPv6). The IPv4 modules call these from `compile()` when their
rule is an ip6tables rule."""

from __future__ import annotations

from typing import Final

from natbox.rules.api import XT_CONTINUE, XtContext
from natbox.rules.model import MatchFn, TargetFn
from natbox.skb import Skb
from natbox.wire.layout import IP6H_VER_TC_FL, TCPH_FLAGS, TCPH_MIN_LEN

__all__ = ["dsfield_tg6", "ecn_mt6", "set_dsfield6", "tos_mt6"]

INET_ECN_MASK: Final = 0x03


def set_dsfield6(skb: Skb, dsfield: int) -> None:
    """`ipv6_change_dsfield(iph, 0, dsfield)`: the 8 traffic class bits across the first two bytes."""
    data = skb.data
    word = (data[IP6H_VER_TC_FL] << 8) | data[IP6H_VER_TC_FL + 1]
    word = (word & 0xF00F) | (dsfield << 4)
    data[IP6H_VER_TC_FL], data[IP6H_VER_TC_FL + 1] = word >> 8, word & 0xFF


def tos_mt6(value: int, mask: int, inv: bool) -> MatchFn:
    """`(ipv6_get_dsfield(ipv6_hdr(skb)) & mask) == value`, inverted or not (tos and dscp matches)."""

    def tos_mt6_fn(skb: Skb, ctx: XtContext) -> bool:
        return ((skb.tos & mask) == value) != inv

    return tos_mt6_fn


def ecn_mt6(test_ip: bool, inv_ip: bool, ect: int, tcp_tests: tuple[tuple[int, bool], ...]) -> MatchFn:
    """`ecn_mt6`: the ECN bits of the traffic class, then the TCP ECE/CWR flags at the transport offset."""

    def ecn_mt6_fn(skb: Skb, ctx: XtContext) -> bool:
        if test_ip and ((skb.tos & INET_ECN_MASK) == ect) == inv_ip:
            return False
        if tcp_tests:
            data, th = skb.data, skb.ihl
            if skb.is_later_fragment or len(data) < th + TCPH_MIN_LEN:
                return False
            flags = data[th + TCPH_FLAGS]
            for flag, want in tcp_tests:
                if bool(flags & flag) != want:
                    return False
        return True

    return ecn_mt6_fn


def dsfield_tg6(keep: int, value: int) -> TargetFn:
    """`tos_tg6` / `dscp_tg6`: the traffic class becomes `(tc & keep) ^ value` when that changes it."""

    def dsfield_tg6_fn(skb: Skb, ctx: XtContext) -> int:
        orig = skb.tos
        new = (orig & keep) ^ value
        if new != orig:
            set_dsfield6(skb, new)
        return XT_CONTINUE

    return dsfield_tg6_fn
