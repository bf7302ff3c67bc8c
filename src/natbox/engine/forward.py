"""Forwarding: `ip_forward` (net/ipv4/ip_forward.c) and the flow cache in front of it.

`Forwarder.ip_forward` checks the TTL and the MTU (DF), decrements the TTL, sends a redirect when the
packet leaves by the interface it came in on, runs FORWARD and hands the packet to the output stage.

The flow cache (tier 2, `Forwarder.fast_forward`) serves established TCP/UDP flows while tables other
than conntrack and nat exist (so no flow can be compiled, engine/fastpath.py): conntrack (checksums,
window tracking, timeouts), NAT and every table still run on every packet exactly as in the slow path;
only the route (out device, next hop), valid for one FIB generation, is cached. Anything unusual
continues in the slow path at the same point. It pays: with a filter FORWARD ruleset, established
flows cost about a third less with it than without (measured with natbox bench's workload).
Bounded by FLOW_CACHE_MAX (engine/fastpath.py), the oldest entry evicted first; an entry whose ct is
destroyed goes with it (`forget`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from natbox.conntrack.config import ConntrackConfig
from natbox.conntrack.conn import Conn
from natbox.conntrack.core import nf_conntrack_in
from natbox.conntrack.table import ConntrackTable
from natbox.engine.checks import exceeds_mtu
from natbox.engine.family import AddressFamily, FlowKey
from natbox.engine.fastpath import FLOW_CACHE_MAX, FlowCache
from natbox.engine.hooks import Hooks, XtHost
from natbox.engine.host import Host, Interface
from natbox.engine.icmp_rate import IcmpRateLimiter
from natbox.engine.icmp_send import IcmpSender
from natbox.engine.ip_output import IpOutput
from natbox.engine.neigh import NeighTable
from natbox.engine.path import NO_META, Drop, Held, PathState
from natbox.engine.routing import Fib
from natbox.nat.core import NatCore
from natbox.netfilter import CtInfo, CtStatus, DropReason, Hook
from natbox.rand import RandomSource
from natbox.rules.api import NF_ACCEPT
from natbox.skb import PacketType, Skb
from natbox.wire import ipv4
from natbox.wire.icmp import (
    ICMP_DEST_UNREACH,
    ICMP_EXC_TTL,
    ICMP_FRAG_NEEDED,
    ICMP_REDIR_HOST,
    ICMP_REDIRECT,
    ICMP_TIME_EXCEEDED,
)
from natbox.wire.layout import (
    ETH_HDR_LEN,
    IPH_ADDRS_END,
    IPH_DADDR,
    IPH_SADDR,
    IPH_TTL,
)

__all__ = ["Forwarder"]
_CTINFO_ESTABLISHED: Final = CtInfo.ESTABLISHED
_CTINFO_ESTABLISHED_REPLY: Final = CtInfo.ESTABLISHED_REPLY
_CTINFO_NEW: Final = CtInfo.NEW
_HOOK_FORWARD: Final = Hook.FORWARD
_HOOK_POST_ROUTING: Final = Hook.POST_ROUTING
_HOOK_PRE_ROUTING: Final = Hook.PRE_ROUTING
_PKT_HOST: Final = PacketType.HOST
_CONFIRMED: Final = CtStatus.CONFIRMED

# a tier-2 entry: (ct, ctinfo, daddr after DNAT, out device, next hop, FIB generation, sender on-link)
_Tier2 = tuple[Conn, CtInfo, int, str, int, int, bool]


class Forwarder:
    """`ip_forward` and the tier-2 flow cache of one engine (see the module docstring)."""

    def __init__(self, host: Host, fib: Fib, hooks: Hooks, icmp: IcmpSender, output: IpOutput, flowcache: FlowCache,
                 family: AddressFamily, icmp_rate: IcmpRateLimiter, state: PathState, ctx: XtHost, *,
                 table: ConntrackTable, cfg: ConntrackConfig, nat: NatCore, rnd: RandomSource,
                 neighs: NeighTable[Held]) -> None:
        self._host, self._fib, self._hooks, self._icmp, self._output = host, fib, hooks, icmp, output
        self._flowcache, self._family, self._icmp_rate, self._st, self._ctx = flowcache, family, icmp_rate, state, ctx
        self._table, self._cfg, self._nat, self._rnd, self._neighs = table, cfg, nat, rnd, neighs
        self.flows: dict[FlowKey, _Tier2] = {}
        self._rcv_core = family.rcv_core  # bound once: called per packet
        self._neigh_entry = neighs.entry
        # the keys stored for each ct (forget() finds them here): a tuple, one or two keys for most cts
        self._by_ct: dict[int, tuple[FlowKey, ...]] = {}
        # bound by the engine: the routing decision after PREROUTING (`RouteInput.ip_rcv_finish`), where
        # a packet the flow cache cannot finish continues
        self.ip_rcv_finish: Callable[[Skb], None] = lambda skb: None

    # --- ip_forward ------------------------------------------------------------------------------

    def ip_forward(self, skb: Skb) -> None:
        """`ip_forward` (net/ipv4/ip_forward.c): TTL, MTU/DF, TTL decrement, FORWARD, then output."""
        if skb.pkt_type != _PKT_HOST:
            raise Drop(DropReason.OTHERHOST, "ip_forward", "not addressed to this host at L2")
        data = skb.data
        if data[IPH_TTL] <= 1:  # a packet with TTL 1 or 0 is not forwarded
            self._icmp.icmp_send(skb, ICMP_TIME_EXCEEDED, ICMP_EXC_TTL)
            raise Drop(DropReason.TTL_EXCEEDED, "ip_forward", f"ttl {skb.ttl}")
        out_dev = self._host.interfaces[skb.oif]
        if len(data) > out_dev.mtu and exceeds_mtu(skb, out_dev.mtu):  # (exceeds_mtu's first test, inline)
            self._icmp.icmp_send(skb, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, info=out_dev.mtu)
            raise Drop(DropReason.FRAG_NEEDED, "ip_forward", f"{len(skb.data)} > mtu {out_dev.mtu} with DF")
        ipv4.ip_decrease_ttl(data)
        if skb.oif == skb.iif:
            self._maybe_redirect(skb, out_dev)
        if self._hooks.run(_HOOK_FORWARD, skb) != NF_ACCEPT:
            return
        self._output.ip_output(skb)

    def _maybe_redirect(self, skb: Skb, dev: Interface) -> None:
        """`ip_rt_send_redirect()`: a packet leaving by the interface it came in on, from a host on that
        link towards a next hop on it too, earns its sender an ICMP host redirect (IPSKB_DOREDIRECT, set by
        __mkroute_input; send_redirects is on by default), paced per host (icmp_rate.py). NAT later drops
        the redirect unless the flow is un-NATed (§9), but the pacing state is stamped all the same."""
        nexthop = skb.nexthop or skb.daddr
        if not any(a.contains(skb.saddr) and a.contains(nexthop) for a in dev.addresses):
            return
        if self._icmp_rate.allow_redirect(skb.saddr, self._ctx.now):
            self._icmp.icmp_send(skb, ICMP_REDIRECT, ICMP_REDIR_HOST, info=nexthop)

    # --- the flow caches' records ----------------------------------------------------------------

    def remember_flow(self, skb: Skb) -> None:
        """Cache the forwarding decision the slow path just made for an established TCP/UDP packet.

        The SYN that created a TCP ct is remembered too, for the packets that follow it in its direction:
        they arrive as ESTABLISHED once the reply is seen (the handshake's ACK), with the same addresses
        after DNAT, so the same route. `fast_forward` checks the ct and ctinfo of each packet and hands
        anything else (a retransmitted SYN, still NEW) to the slow path at the same point.
        """
        ct, key = skb.ct, skb.fast_key
        if (ct is None or key is None or not ct.status & _CONFIRMED or skb.frag_max_size
                or ct.synproxy is not None):
            return  # (a SYNPROXY ct needs the synproxy hook and nf_confirm's seqadj, which tier 2 skips)
        if skb.nf_bridge is not None or (self._host.interfaces[skb.oif].kind == "bridge"
                                         and self._host.bridge_ports(skb.oif)):
            return  # through a bridge's ports: the bridge stage (engine/bridge.py) picks the port, no plan does
        ctinfo = skb.ctinfo
        if ctinfo == _CTINFO_NEW:
            if key[2] == 6:
                self._flow_entry(skb, ct, key, _CTINFO_ESTABLISHED)
            return
        if ctinfo not in (_CTINFO_ESTABLISHED, _CTINFO_ESTABLISHED_REPLY):
            return
        if key[2] != 1:  # the flow cache (tier 2) is for TCP and UDP
            self._flow_entry(skb, ct, key, ctinfo)
        self._flowcache.compile(skb, key)

    def _flow_entry(self, skb: Skb, ct: Conn, key: FlowKey, ctinfo: CtInfo) -> None:
        """Store the tier-2 entry of `key` (bounded by FLOW_CACHE_MAX, the oldest evicted first)."""
        dev = self._host.interfaces[skb.iif]
        # the sender, before SNAT, if it is on-link: offline, the packet teaches its MAC (IpInput.ip_rcv)
        learn = not self._output.resolve_neighbours and self._family.on_link(dev, int.from_bytes(key[3][:4], "big"))
        flows = self.flows
        old = flows.get(key)
        if old is None and len(flows) >= FLOW_CACHE_MAX:
            gone = next(iter(flows))
            self._unlink(gone, flows.pop(gone)[0])
        if old is None or old[0] is not ct:
            if old is not None:
                self._unlink(key, old[0])
            by_ct = self._by_ct
            by_ct[ct.ct_id] = (*by_ct.get(ct.ct_id, ()), key)
        flows[key] = (ct, ctinfo, int.from_bytes(skb.data[IPH_DADDR:IPH_ADDRS_END], "big"), skb.oif, skb.nexthop,
                      self._fib.generation, learn)

    def _unlink(self, key: FlowKey, ct: Conn) -> None:
        keys = self._by_ct.get(ct.ct_id)
        if keys is not None:
            left = tuple(k for k in keys if k != key)  # (a ct's keys are distinct)
            if left:
                self._by_ct[ct.ct_id] = left
            else:
                del self._by_ct[ct.ct_id]

    def forget(self, ct: Conn) -> None:
        """Drop the entries of a destroyed ct (its `register_destroy` callback, with the compiled flows')."""
        keys = self._by_ct.pop(ct.ct_id, None)
        if keys is not None:
            flows = self.flows
            for key in keys:
                entry = flows.get(key)
                if entry is not None and entry[0] is ct:
                    del flows[key]

    # --- tier 2 ----------------------------------------------------------------------------------

    def fast_forward(self, frame: bytes, dev: Interface, pkt_id: int, key: FlowKey, src_mac: bytes,
                     dst_mac: bytes) -> bool:
        """Forward a packet of an established TCP/UDP flow with the slow path's cached decisions.

        Conntrack (checksums, TCP window tracking, timeouts) and NAT run for every packet exactly as in
        the slow path; what is cached is only what cannot change while the FIB generation is the same:
        the route (out device, next hop). Every table is still consulted unless it is empty with an
        ACCEPT policy. Anything unusual (another ct or ctinfo, a changed destination, TTL 1, a packet
        over the MTU) continues in the slow path at the same point, so the result is identical.
        Returns False, having changed nothing, when the slow path must handle the packet from the start.
        (`src_mac`, `dst_mac`: the frame's Ethernet addresses, which `receive_frame` has sliced already.)
        """
        entry = self.flows.get(key)
        if entry is None:
            return False
        conn, ctinfo, daddr_after, oif, nexthop, gen, learn = entry
        hooks = self._hooks
        usable, mangle_pre_trivial, forward_trivial, mangle_post_trivial = hooks.tier2_plan()
        if gen != self._fib.generation or not usable:
            return False
        data, _reason = self._rcv_core(frame[ETH_HDR_LEN:])
        if data is None:
            return False
        st = self._st
        skb = Skb(data, iif=dev.name, pkt_id=pkt_id)
        st.skb = skb
        if st.rx_meta is not NO_META:
            skb.gso_type, skb.gso_size, skb.csum_partial = st.rx_meta
        skb.src_mac = src_mac  # (the frame's, as eth_type_trans sliced them)
        skb.dst_mac = dst_mac
        skb.fast_key = key
        ctx = self._ctx
        now = ctx.now
        if learn:  # (an entry that holds the MAC already is what `learn` would leave unchanged)
            saddr = int.from_bytes(data[IPH_SADDR:IPH_DADDR], "big")
            e = self._neigh_entry((dev.name, saddr))
            if e is None or e.ha != src_mac:
                self._neighs.learn(dev.name, saddr, src_mac, now)
        skb.hook = ctx.hook = _HOOK_PRE_ROUTING
        if nf_conntrack_in(skb, _HOOK_PRE_ROUTING, now, self._table, self._cfg) != NF_ACCEPT:
            raise hooks.verdict_drop(_HOOK_PRE_ROUTING, "conntrack", skb)
        if skb.ct is not conn or skb.ctinfo != ctinfo or not mangle_pre_trivial:
            if hooks.run(_HOOK_PRE_ROUTING, skb, hooks.pre_after_ct) == NF_ACCEPT:
                self.ip_rcv_finish(skb)
            return True
        nat = self._nat
        if nat.nf_nat_inet_fn(skb, _HOOK_PRE_ROUTING, now=now, table=self._table, rnd=self._rnd,
                              run_chain=hooks.nat_chain[_HOOK_PRE_ROUTING]) != NF_ACCEPT:
            raise hooks.verdict_drop(_HOOK_PRE_ROUTING, "nat", skb)
        out = self._host.interfaces.get(oif)
        forwarding = dev.forwarding if dev.forwarding is not None else self._host.ip_forward
        daddr = int.from_bytes(data[IPH_DADDR:IPH_ADDRS_END], "big")
        if daddr != daddr_after or not forwarding or out is None or not out.up or out.kind == "loopback":
            self.ip_rcv_finish(skb)
            return True
        skb.oif = oif
        skb.nexthop = nexthop
        if data[IPH_TTL] <= 1 or len(data) > out.mtu:
            self.ip_forward(skb)  # which decides (the TTL, exceeds_mtu): ICMP errors, fragments, GSO
            return True
        ipv4.ip_decrease_ttl(data)
        if not forward_trivial:
            if hooks.run(_HOOK_FORWARD, skb) != NF_ACCEPT:
                return True
        if not mangle_post_trivial:
            self._output.ip_output(skb)
            return True
        skb.hook = ctx.hook = _HOOK_POST_ROUTING
        if nat.nf_nat_inet_fn(skb, _HOOK_POST_ROUTING, now=now, table=self._table, rnd=self._rnd,
                              run_chain=hooks.nat_chain[_HOOK_POST_ROUTING]) != NF_ACCEPT:
            raise hooks.verdict_drop(_HOOK_POST_ROUTING, "nat", skb)
        # confirm: the ct is confirmed already (an established flow), nothing to do
        gso_type, gso_size = (skb.gso_type, skb.gso_size) if skb.gso_size and len(data) > out.mtu else (0, 0)
        self._output.neigh_output(out, nexthop, skb, data, gso_type, gso_size, skb.csum_partial)
        self._flowcache.compile(skb, key)  # again, if the compiled flow went stale (a rule or route change)
        return True

