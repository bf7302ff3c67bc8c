"""ICMP errors the host sends, REJECT's answers and LOG's lines (net/ipv4/icmp.c, ipt_REJECT.c, nf_log).

`IcmpSender.icmp_send` mirrors `icmp_send`: it decides whether an error may be sent about a packet
(`__icmp_send`'s tests, wire/icmp.py, then the per-host rate limit of engine/icmp_rate.py), builds it
with the address family's builder and hands it to the local output path attached to the packet's ct
(`nf_ct_attach` in `icmp_glue_bits`), so NAT translates it (§4.9).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from natbox.conntrack.config import ConntrackConfig
from natbox.conntrack.proto.tcp import nf_conntrack_tcp_set_closing
from natbox.conntrack.tuple import format_addr
from natbox.engine.defrag import ExpiredQueue, IcmpOnExpire
from natbox.engine.family import AddressFamily
from natbox.engine.hooks import XtHost
from natbox.engine.icmp_rate import IcmpRateLimiter
from natbox.engine.log import format_log_line
from natbox.engine.output import LogLine
from natbox.engine.path import PathState
from natbox.engine.reject import build_reset_for
from natbox.engine.routing import RTN_BROADCAST, RTN_MULTICAST, Fib
from natbox.skb import PacketType, Skb
from natbox.wire.icmp import (
    ICMP_DEST_UNREACH,
    ICMP_EXC_FRAGTIME,
    ICMP_HOST_ANO,
    ICMP_HOST_UNREACH,
    ICMP_NET_ANO,
    ICMP_NET_UNREACH,
    ICMP_PKT_FILTERED,
    ICMP_PORT_UNREACH,
    ICMP_PROT_UNREACH,
    ICMP_TIME_EXCEEDED,
)
from natbox.wire.layout import IPH_TOS

__all__ = ["REJECT_CODES", "IcmpSender", "QueueLocal"]

# REJECT --reject-with → (ICMP type, code); tcp-reset is handled separately (ipt_REJECT.c)
REJECT_CODES: dict[str, tuple[int, int]] = {
    "icmp-net-unreachable": (ICMP_DEST_UNREACH, ICMP_NET_UNREACH),
    "icmp-host-unreachable": (ICMP_DEST_UNREACH, ICMP_HOST_UNREACH),
    "icmp-port-unreachable": (ICMP_DEST_UNREACH, ICMP_PORT_UNREACH),
    "icmp-proto-unreachable": (ICMP_DEST_UNREACH, ICMP_PROT_UNREACH),
    "icmp-net-prohibited": (ICMP_DEST_UNREACH, ICMP_NET_ANO),
    "icmp-host-prohibited": (ICMP_DEST_UNREACH, ICMP_HOST_ANO),
    "icmp-admin-prohibited": (ICMP_DEST_UNREACH, ICMP_PKT_FILTERED),
}
_PKT_HOST: Final = PacketType.HOST
_PKT_LOOPBACK: Final = PacketType.LOOPBACK

# sends a datagram the host generated (attached to a packet's ct, or none): LocalStack.queue_local
QueueLocal = Callable[[bytes, "Skb | None"], None]


class IcmpSender:
    """ICMP errors, REJECT and LOG for one engine."""

    def __init__(self, fib: Fib, rate: IcmpRateLimiter, family: AddressFamily, state: PathState, ctx: XtHost,
                 cfg: ConntrackConfig) -> None:
        self._fib, self._rate, self._family, self._st, self._ctx, self._cfg = fib, rate, family, state, ctx, cfg
        self.queue_local: QueueLocal = lambda datagram, attach: None  # bound by the engine (LocalStack)

    def icmp_send(self, skb: Skb, icmp_type: int, code: int, *, info: int = 0, local: bool = False) -> None:
        """`icmp_send` (net/ipv4/icmp.c): build the error about `skb` and send it from this host,
        attached to `skb`'s ct (`nf_ct_attach` in icmp_glue_bits) so NAT translates it (§4.9)."""
        fib, family = self._fib, self._family
        data = bytes(skb.data)
        dtype = fib.addr_type(skb.daddr)
        allowed = family.icmp_error_allowed(data, icmp_type, pkt_type_host=skb.pkt_type in (_PKT_HOST, _PKT_LOOPBACK),
                                            dst_broadcast=dtype == RTN_BROADCAST, dst_multicast=dtype == RTN_MULTICAST)
        body = family.icmp_error(data, icmp_type, code, info) if allowed else b""
        if not body:
            if skb.trace is not None:
                skb.add_trace(f"icmp_send: no ICMP error (type {icmp_type}) for this packet (RFC 1122)")
            return
        if local and not fib.is_local(skb.daddr):
            # delivered by a route out lo (RTCF_LOCAL) to an address that is not local: the error's source would
            # be that address (iph->daddr), and icmp_route_lookup's ip_route_output_key_hash refuses a source
            # that is not local (__ip_dev_find: ENETUNREACH), so no error leaves (measured on 6.18)
            if skb.trace is not None:
                skb.add_trace(f"icmp_send: no route for an error from {format_addr(skb.daddr)} (not local)")
            return
        to_self = fib.is_local(skb.saddr) or skb.saddr >> 24 == 127
        if not self._rate.allow_error(skb.saddr, icmp_type, code, self._ctx.now, loopback=to_self):
            if skb.trace is not None:
                skb.add_trace(f"icmp_send: ICMP type {icmp_type} to {format_addr(skb.saddr)} rate-limited "
                              "(icmp_ratelimit: a burst of 6, then 1/s per host)")
            self._st.stats["icmp_ratelimit_host"] += 1
            return
        saddr = skb.daddr if local or fib.is_local(skb.daddr) else 0
        out = self._family.build_datagram(saddr, skb.saddr, 1, body, ttl=64, tos=self._family.error_tos(skb.tos))
        if skb.trace is not None:
            skb.add_trace(f"icmp_send: ICMP type {icmp_type} code {code} to {format_addr(skb.saddr)}")
        self.queue_local(out, skb)

    def frag_expired(self, q: ExpiredQueue) -> None:
        """`ip_expire`: "fragment reassembly time exceeded" only if the first fragment came, and for the
        conntrack user only when the datagram was for this host (frag_expire_skip_icmp)."""
        self._st.stats[str(q.reason)] += q.fragments
        local = self._fib.is_local(q.daddr)
        if q.head is not None and (q.icmp == IcmpOnExpire.ALWAYS or (q.icmp == IcmpOnExpire.IF_LOCAL and local)):
            body = self._family.icmp_error(q.head, ICMP_TIME_EXCEEDED, ICMP_EXC_FRAGTIME)
            if body:
                self.queue_local(self._family.build_datagram(q.daddr if local else 0, q.saddr, 1, body, ttl=64,
                                                             tos=self._family.error_tos(q.head[IPH_TOS])), None)

    def reject(self, skb: Skb, reject_with: str, now: float) -> None:
        """REJECT's packet: an ICMP error (`nf_send_unreach`) or a TCP reset (`nf_send_reset`: the RST is
        attached to the packet's ct, which `nf_ct_set_closing` moves to CLOSE)."""
        if reject_with == "tcp-reset":
            rst = build_reset_for(bytes(skb.data))
            if rst is not None:
                if skb.ct is not None:
                    nf_conntrack_tcp_set_closing(skb.ct, now, self._cfg)
                self.queue_local(rst, skb)
            return
        icmp_type, code = REJECT_CODES.get(reject_with, (ICMP_DEST_UNREACH, ICMP_PORT_UNREACH))
        self.icmp_send(skb, icmp_type, code)

    def log_packet(self, skb: Skb, prefix: str, level: int, flags: int = 0) -> None:
        """The LOG target's line in the kernel's format (`nf_log_ip_packet`, see engine/log.py)."""
        mac = None
        if skb.iif:
            mac = skb.dst_mac + skb.src_mac + b"\x08\x00" if skb.src_mac else (
                bytes(12) + b"\x08\x00" if skb.iif == "lo" else b"")
        text = format_log_line(prefix, skb.data, iif=skb.iif, oif=skb.oif, mac=mac, mark=skb.mark, flags=flags)
        self._st.out.logs.append(LogLine(skb.pkt_id, text))
