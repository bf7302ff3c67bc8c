"""The engine: a Linux host's IPv4 path with netfilter, as a sans-IO object (§1).

`Engine.receive(frame, iface, now)` takes one Ethernet frame that arrived on `iface` at time `now` and
returns an `Output`: the frames the host sends in response (forwarded, NATed, ICMP errors, ARP replies),
what was delivered to local sockets, what was dropped and why, and (when tracing) the steps each packet
took. `Engine.send_local(datagram, now)` injects a locally generated datagram (the OUTPUT path);
`Engine.next_deadline()` / `handle_timers(now)` run everything timed. Nothing here reads a clock, a socket
or a file; randomness comes from the injected `rnd`.

The Engine is a coordinator: it owns the host's state (interfaces, FIB, conntrack table, NAT, neighbour
table, ruleset) and wires the stages of the packet path, each a module with a narrow interface:

| stage                                | module                 | kernel                                     |
|--------------------------------------|------------------------|--------------------------------------------|
| compiled flows (tried first)         | engine/fastpath.py     | (a flow's decisions, executed as a plan)   |
| link layer, ARP, ip_rcv              | engine/ip_input.py     | eth_type_trans, arp_rcv, ip_rcv_core       |
| PREROUTING, routing decision         | engine/route_input.py  | ip_rcv_finish, ip_route_input_noref        |
| forward (and the tier-2 flow cache)  | engine/forward.py      | ip_forward                                 |
| local in, local out, loopback        | engine/local.py        | ip_local_deliver, ip_local_out             |
| output and neighbours                | engine/ip_output.py    | ip_output, ip_finish_output, neigh_output  |
| ICMP errors, REJECT, LOG             | engine/icmp_send.py    | icmp_send, nf_send_unreach, nf_log         |
| hook functions and nf_hook_slow      | engine/hooks.py        | nf_hook_slow, the tables' hook ops         |

What they share while one call runs is an `engine/path.py` `PathState`; what depends on the address
family sits behind `engine/family.py`'s `AddressFamily` (IPv4 today).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Final

from natbox.conntrack.config import ConntrackConfig
from natbox.conntrack.conn import Conn
from natbox.conntrack.table import ConntrackTable, CtEvent
from natbox.engine.bridge import Bridges
from natbox.engine.defrag import IpDefrag
from natbox.engine.defrag6 import Defrag6
from natbox.engine.family import IPV4, AddressFamily, FlowKey
from natbox.engine.fastpath import FlowCache
from natbox.engine.fastpath6 import FlowCache6
from natbox.engine.forward import Forwarder
from natbox.engine.hooks import Hooks, XtHost
from natbox.engine.hooks6 import Hooks6
from natbox.engine.host import Host
from natbox.engine.icmp_rate import IcmpRateLimiter
from natbox.engine.icmp_send import IcmpSender
from natbox.engine.ip6_input import Ip6Input
from natbox.engine.ip6_output import Ip6Output
from natbox.engine.ip_input import IpInput
from natbox.engine.ip_output import IpOutput
from natbox.engine.local import LocalStack
from natbox.engine.log6 import format_log_line6
from natbox.engine.neigh import NeighTable
from natbox.engine.offload import FlowOffload, OffloadRequest
from natbox.engine.output import Delivered, Dropped, Emitted, LogLine, Output
from natbox.engine.path import NF_STOLEN, NO_META, Drop, Held, PathState
from natbox.engine.reject6 import reject6
from natbox.engine.route6 import Fib6
from natbox.engine.route_input import RouteInput
from natbox.engine.routing import Fib
from natbox.engine.synproxy import SynproxyNet
from natbox.engine.template import FlowTemplates, TemplateRequest
from natbox.ipset.core import IpsetRegistry
from natbox.nat.core import NatCore
from natbox.nat.masquerade import masq_addr_removed, masq_device_down
from natbox.netfilter import NF_ACCEPT, NFPROTO_IPV6, DropReason
from natbox.rand import RandomSource, SplitMix64
from natbox.rules.evaluate import Ruleset
from natbox.rules.xtstate import XtState
from natbox.skb import PacketType, Skb, Skb6

__all__ = ["CT_GC_INTERVAL", "Delivered", "Dropped", "Emitted", "Engine", "LogLine", "Output"]

CT_GC_INTERVAL: Final = 1.0  # seconds between conntrack gc runs (handle_timers): the kernel's gc_worker runs ~1/s
_PKT_HOST: Final = PacketType.HOST


def _neigh_table(host: Host, *, ipv6: bool) -> NeighTable[Held]:
    """The ARP (or ND) table of the host's neighbours of one family: its PERMANENT ones as static entries; the
    ones a snapshot's kernel had learned as learned STALE entries (`NeighTable.learn`, at time 0: untouched since
    long, so the first use sends them through DELAY and a probe, and the gc may reclaim them, as the kernel's)."""
    table: NeighTable[Held] = NeighTable(static=[(n.dev, n.addr, n.mac) for n in host.neighbours
                                                 if n.ipv6 == ipv6 and n.permanent])
    for n in host.neighbours:
        if n.ipv6 == ipv6 and not n.permanent:
            table.learn(n.dev, n.addr, n.mac, 0.0)
    return table


class Engine:
    """A Linux host's IPv4 forwarding, NAT and filtering, driven by frames and an injected clock.

    `resolve_neighbours`: offline (the default) a next hop's MAC is a static or learned one, else a
    synthetic 02:00:<ipv4>; with it (the live gateway) the kernel's ARP state machine runs
    (engine/neigh.py): packets wait while it resolves and earn their senders ICMP host unreachable when
    it fails. `listeners`: the (protocol, port) pairs open on the host (its local stack answers the rest
    with resets and port unreachables). `offload`: decide which established flows a datapath outside the
    engine may carry (engine/offload.py; `offload_requests`, `offload_stats`); off, nothing of it runs.
    `templates`: make connection templates of new TCP connections' SYNs for such a datapath
    (engine/template.py; `template_requests`).
    """

    def __init__(
        self,
        host: Host,
        *,
        ruleset: Ruleset | None = None,
        ruleset6: Ruleset | None = None,
        rnd: RandomSource | None = None,
        seed: int = 0,
        events: bool = False,
        resolve_neighbours: bool = False,
        listeners: Iterable[tuple[int, int]] = (),
        family: AddressFamily = IPV4,
        offload: bool = False,
        templates: bool = False,
    ) -> None:
        host.ensure_loopback()
        host.validate()
        self.host = host
        self.fib = Fib(host)
        self.cfg: ConntrackConfig = host.conntrack
        self.table = ConntrackTable(max_entries=self.cfg.max_entries, events_enabled=events)
        self.nat = NatCore()
        self.rnd: RandomSource = rnd if rnd is not None else SplitMix64(seed)
        self.defrag = IpDefrag()
        self.icmp_rate = IcmpRateLimiter()  # per-host ICMP error and redirect pacing (inet_peer)
        self._resolve = resolve_neighbours
        self.neighs: NeighTable[Held] = _neigh_table(host, ipv6=False)
        self.trace_all = False
        self._flow_key = family.flow_key
        self._gc_next = float("-inf")  # when the conntrack gc is next due (handle_timers)
        # the stages (see the module docstring), wired here and nowhere else
        st = self._st = PathState()
        self.stats: Counter[str] = st.stats
        ctx = self._ctx = XtHost(host, self.fib, self.nat, self.table, self.rnd)
        rules = ruleset if ruleset is not None else Ruleset()
        hooks = self._hooks = Hooks(rules, ctx, table=self.table, cfg=self.cfg, nat=self.nat, rnd=self.rnd,
                                    defrag=self.defrag)
        hooks.rules6 = ruleset6 if ruleset6 is not None else Ruleset(NFPROTO_IPV6)
        icmp = self._icmp = IcmpSender(self.fib, self.icmp_rate, family, st, ctx, self.cfg)
        local = self._local = LocalStack(host, self.fib, hooks, icmp, family, st, ctx)
        local.listeners = set(listeners)
        output = IpOutput(host, self.fib, hooks, icmp, family, self.neighs, st, ctx,
                          resolve_neighbours=resolve_neighbours)
        self._flowcache = FlowCache(host, self.fib, self.cfg, hooks, self.neighs, st, output.neigh_mac,
                                    resolve_neighbours=resolve_neighbours)
        forward = Forwarder(host, self.fib, hooks, icmp, output, self._flowcache, family, self.icmp_rate, st, ctx,
                            table=self.table, cfg=self.cfg, nat=self.nat, rnd=self.rnd, neighs=self.neighs)
        route = RouteInput(host, self.fib, hooks, icmp, local, forward)
        self._input = IpInput(host, family, route, forward, output, self.neighs, st, ctx,
                              resolve_neighbours=resolve_neighbours)
        # the cycles of the packet path, closed once: errors and resets leave through LOCAL_OUT; output
        # sends to lo back in through PREROUTING; a packet the flow cache cannot finish is routed
        ctx.reject, ctx.log_packet = icmp.reject, icmp.log_packet
        ctx.dup_packet, ctx.listeners = local.nf_dup_ipv4, lambda: local.listeners
        icmp.queue_local = local.queue_local
        ctx.synproxy.send = local.send_skb
        local.ip_output, local.rcv_skb = output.ip_output, route.ip_rcv_skb
        output.loopback_xmit, output.remember_flow = local.loopback_xmit, forward.remember_flow
        forward.ip_rcv_finish = route.ip_rcv_finish
        self._forward, self._output = forward, output
        self.table.register_destroy(self._ct_destroyed)
        self._offload: FlowOffload | None = None
        if offload:
            self._offload = FlowOffload(host, self.fib, self.neighs, self._flowcache, self.table, self.cfg,
                                        lambda: ctx.now)
            self._flowcache.on_compiled = self._offload.consider
        self._templates: FlowTemplates | None = None
        if templates:  # engine/template.py: new connections' SYNs as templates for a datapath
            tpl = self._templates = FlowTemplates(host, self.fib, self.neighs, hooks, self.table, self.cfg)
            remember = forward.remember_flow

            def remember_and_template(skb: Skb) -> None:
                remember(skb)
                key = skb.fast_key
                if key is not None:
                    tpl.consider(skb, key)

            output.remember_flow = remember_and_template
        self._setup_ipv6(hooks, ctx, st, local.listeners)
        # engine/bridge.py, when the host has bridge ports (a bridge without ports is an ordinary device
        # on which frames are received and sent directly, as the docker demos' docker0)
        self.bridges: Bridges | None = None
        if any(i.master is not None for i in host.interfaces.values()):
            br = self.bridges = Bridges(host, self.fib, hooks, family, st, ctx)
            br.pass_up_ip, br.neigh_mac = self._input.ip_rcv_bridged, output.neigh_mac
            br.pass_up_frame = lambda frame, dev, pkt_id, trace: self._input.receive_frame(frame, dev, pkt_id,
                                                                                          trace, None)
            self._input.br_handle_frame = br.br_handle_frame

    def _setup_ipv6(self, hooks: Hooks, ctx: XtHost, st: PathState, listeners: set[tuple[int, int]]) -> None:
        """The IPv6 path beside the IPv4 one (ipv6-semantics.md): its FIB, hooks, output (with ICMPv6 errors)
        and input (with ND), sharing the conntrack table, NAT, the XtHost and the PathState."""
        self.fib6 = Fib6(self.host)
        ctx.fib6 = self.fib6
        self.neighs6: NeighTable[Held] = _neigh_table(self.host, ipv6=True)
        self._hooks6 = Hooks6(hooks)
        self.defrag6 = Defrag6()
        self._hooks6.defrag = self._defrag6
        out6 = self._out6 = Ip6Output(self.host, self.fib6, self._hooks6, self.neighs6, st, self.rnd, ctx,
                                      resolve_neighbours=self._resolve)
        in6 = self._in6 = Ip6Input(self.host, self.fib6, self._hooks6, out6, self.neighs6, st, listeners, ctx,
                                   resolve_neighbours=self._resolve)
        ctx.dup_packet6 = out6.nf_dup_ipv6
        ctx.synproxy.send6 = out6.send_skb6
        out6.loopback_rcv = in6.rcv_skb
        # IPv6 compiled flows: the IPv4 ones hand them IPv6 frames; the forward path records flows
        flows6 = self._flowcache6 = FlowCache6(self.host, self.fib6, self.cfg, hooks, self.neighs6, st, out6.neigh_mac,
                                               resolve_neighbours=self._resolve)
        self._flowcache.v6 = flows6
        in6.remember_flow = flows6.compile6
        if self._offload is not None:  # IPv6 flows are offloaded too (nf_flow_offload_ipv6_hook)
            self._offload.bind6(flows6, self.fib6, self.neighs6)
            flows6.on_compiled = self._offload.consider
        self._input.ipv6_rcv = in6.ipv6_rcv
        reject4, log4 = ctx.reject, ctx.log_packet

        def reject(skb: Skb, how: str, now: float) -> None:
            if isinstance(skb, Skb6):
                reject6(out6, skb, how, now, self.cfg)
            else:
                reject4(skb, how, now)

        def log_packet(skb: Skb, prefix: str, level: int, flags: int = 0) -> None:
            if isinstance(skb, Skb6):  # nf_log_ip6_packet (engine/log6.py)
                mac = None if not skb.iif else (skb.dst_mac + skb.src_mac + b"\x86\xdd" if skb.src_mac else
                                               bytes(12) + b"\x86\xdd" if skb.iif == "lo" else b"")
                st.out.logs.append(LogLine(skb.pkt_id, format_log_line6(prefix, skb.data, iif=skb.iif, oif=skb.oif,
                                                                        mac=mac, mark=skb.mark, flags=flags)))
            else:
                log4(skb, prefix, level, flags)

        ctx.reject, ctx.log_packet = reject, log_packet

    # --- settings --------------------------------------------------------------------------------

    @property
    def rules(self) -> Ruleset:
        return self._hooks.rules

    @rules.setter
    def rules(self, ruleset: Ruleset) -> None:
        self._hooks.rules = ruleset

    @property
    def rules6(self) -> Ruleset:
        """The ip6tables ruleset (family ipv6: /work/briefs/ipv6-interface.md)."""
        return self._hooks.rules6

    @rules6.setter
    def rules6(self, ruleset: Ruleset) -> None:
        self._hooks.rules6 = ruleset

    @property
    def ipsets(self) -> IpsetRegistry | None:
        """The namespace's ipsets, which `-m set` and `-j SET` rules use (None: no sets)."""
        return self._ctx.sets

    @ipsets.setter
    def ipsets(self, registry: IpsetRegistry | None) -> None:
        self._ctx.sets = registry

    @property
    def xt_state(self) -> XtState:
        """The namespace's recent lists, hashlimit tables and other extension state, as the ruleset names them."""
        return self._hooks.xt_state()

    @property
    def synproxy(self) -> SynproxyNet:
        """SYNPROXY's state in this namespace: its counters (/proc/net/stat/synproxy) and cookie secret."""
        return self._ctx.synproxy

    @property
    def resolve_neighbours(self) -> bool:
        return self._resolve

    @property
    def fast_path(self) -> bool:
        """Whether the fast tiers (compiled flows, flow cache) are used; off, every packet takes the slow
        path (the equivalence tests compare the two)."""
        return self._input.fast_path

    @fast_path.setter
    def fast_path(self, on: bool) -> None:
        self._input.fast_path = on

    @property
    def listeners(self) -> set[tuple[int, int]]:
        return self._local.listeners

    @listeners.setter
    def listeners(self, pairs: set[tuple[int, int]]) -> None:
        self._local.listeners = pairs

    def tier2_plan(self) -> tuple[bool, bool, bool, bool]:
        """The fast paths' view of the ruleset (see `Hooks.tier2_plan`)."""
        return self._hooks.tier2_plan()

    # --- entry points ----------------------------------------------------------------------------

    def receive(self, frame: bytes | bytearray | memoryview, iface: str, now: float, *, trace: bool = False,
                gso_type: int = 0, gso_size: int = 0, partial: bool = False) -> Output:
        """A frame arrived on `iface` at `now`. Returns what the host did. Never raises on bad bytes.

        `gso_type`/`gso_size` describe a GSO super-packet and `partial` a CHECKSUM_PARTIAL one, as a
        device with vnet headers delivers them (see `natbox.wire.gso`); frames the host sends for it
        carry the same in their `Emitted` fields when they leave as such.

        `frame` may be a memoryview of a buffer the caller reuses after this call and after sending
        what it returns (the gateway's receive ring): a compiled flow then copies only the headers
        and hands the payload back as `Emitted.tail`; every other path copies the frame first.
        """
        key: FlowKey | None
        if not trace and not self.trace_all and self._input.fast_path:
            fast = self._flowcache.forward(frame, iface, now, gso_type, gso_size, partial)
            if fast is not None:
                return fast
            key = self._flowcache.miss_key  # the key the compiled flows derived (of the frame as bytes)
            if type(frame) is not bytes:
                frame = bytes(frame)
        else:
            frame = bytes(frame)
            key = self._flow_key(frame, iface)
        if self._offload is not None and (key is None or key in self._offload.keys):
            self._offload.ingress(frame, key, iface)  # nf_flow_state_check: a FIN or RST brings the flow back
        self._ctx.now = now
        st = self._st
        st.skb = None
        out = st.out = Output([], [], [], [], [])
        pkt_id = st.next_pkt_id
        st.next_pkt_id = pkt_id + 1
        if gso_type or gso_size or partial:
            st.rx_meta = (gso_type if gso_size else 0, gso_size if gso_type else 0, partial)
        try:
            self._input.receive_frame(frame, iface, pkt_id, trace or self.trace_all, key)
        except Drop as d:
            st.record_drop(pkt_id, d)
        finally:
            st.rx_meta = NO_META
        if self._local.queue:
            self._local.flush(now)
        if self.bridges is not None:
            self.bridges.br_dev_xmit(out)  # what left by a bridge device leaves by its ports
        return out

    def receive_ip(self, datagram: bytes, iface: str, now: float, *, trace: bool = False) -> Output:
        """An IPv4 (or IPv6) datagram arrived on `iface` with no link layer (raw-IP captures, TUN devices)."""
        out = self._begin(now)
        pkt_id = self._st.new_pkt_id()
        try:
            dev = self._input.iface(iface)
            if datagram[:1] and datagram[0] >> 4 == 6:
                self._in6.ipv6_rcv(datagram, dev, pkt_id, _PKT_HOST, b"", b"", trace or self.trace_all)
            else:
                self._input.ip_rcv(datagram, dev, pkt_id, _PKT_HOST, b"", b"", trace or self.trace_all)
        except Drop as d:
            self._st.record_drop(pkt_id, d)
        self._local.flush(now)
        if self.bridges is not None:
            self.bridges.br_dev_xmit(out)  # what left by a bridge device leaves by its ports
        return out

    def send_local(self, datagram: bytes, now: float, *, trace: bool = False) -> Output:
        """A local process sends `datagram` (saddr 0.0.0.0 or :: means: let routing choose)."""
        out = self._begin(now)
        pkt_id = self._st.new_pkt_id()
        if datagram[:1] and datagram[0] >> 4 == 6:
            self._out6.send_local6(datagram, pkt_id, trace or self.trace_all)
            self._local.flush(now)
            if self.bridges is not None:
                self.bridges.br_dev_xmit(out)  # what left by a bridge device leaves by its ports
            return out
        data, reason = IPV4.rcv_core(datagram)
        if data is None:
            self._st.record_drop(pkt_id, Drop(reason or DropReason.IP_HDR_TRUNCATED, "ip_local_out"))
        else:
            skb = Skb(data, pkt_id=pkt_id)
            if trace or self.trace_all:
                skb.trace = []
            self._local.queue.append(skb)
        self._local.flush(now)
        if self.bridges is not None:
            self.bridges.br_dev_xmit(out)  # what left by a bridge device leaves by its ports
        return out

    # --- timers ----------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When `handle_timers` next has work to do, on the engine's clock; None: nothing is pending.

        The one deadline of everything timed (the model is aioquic's `get_timer`): the conntrack gc
        (`gc_worker`, at most every CT_GC_INTERVAL while the table holds entries; expiry itself is exact
        without it, as lookups treat an entry at or past its timeout as gone), the fragment queues'
        `ip_expire` timers, and (when resolving neighbours) the neighbour timers and their periodic gc."""
        best = self._gc_next if len(self.table) else None
        for due in (self.defrag.next_deadline(), self.defrag6.next_deadline()):
            if due is not None and (best is None or due < best):
                best = due
        if self._resolve:
            for neighs in (self.neighs, self.neighs6):
                due = neighs.next_deadline()
                if due is not None and (best is None or due < best):
                    best = due
        return best

    def handle_timers(self, now: float) -> Output:
        """Do every timed piece of work due at `now` (aioquic's `handle_timer`); calling it early does nothing.

        In the order the old one-second tick ran them: conntrack gc (when due: it runs at most every
        CT_GC_INTERVAL, since a gc every 0.25 s lengthened pings through the live gateway), neighbour timers
        (`neigh_timer_handler`: ARP requests, ICMP host unreachable for packets whose resolution failed),
        fragment queues past `ipfrag_time` (`ip_expire`: time exceeded, reassembly, for the first fragment).
        """
        out = self._begin(now)
        if now >= self._gc_next and len(self.table):
            self.table.gc(now)
            self._gc_next = now + CT_GC_INTERVAL
            if self._offload is not None:
                self._offload.expire(now)
        if self._resolve:
            self._output.neigh_timers(now)
            self._neigh6_timers(now)
        for q in self.defrag.expire(now):
            self._icmp.frag_expired(q)
        for q6 in self.defrag6.expire(now):
            self._st.stats[str(DropReason.FRAG_TIMEOUT)] += q6.fragments
            if q6.head:  # ip6frag_expire_frag_queue: Time Exceeded (3), reassembly (1), about the first fragment
                head = self._st.skb = Skb6(bytearray(q6.head), iif=q6.iif)
                self._out6.icmp6_send(head, 3, 1)
                self._st.skb = None
        self._local.flush(now)
        if self.bridges is not None:
            self.bridges.br_dev_xmit(out)  # what left by a bridge device leaves by its ports
        return out

    def _defrag6(self, skb: Skb) -> int:
        """nf_defrag_ipv6's hook (engine/defrag6.py): hold fragments, hand on the reassembled datagram."""
        res = self.defrag6.gather(skb.data, skb.iif, self._ctx.now)
        if res is None or res.unreassembled:
            if res is not None:
                skb.add_trace(f"ipv6_defrag: {res.detail}: the queue is dropped, the fragment goes on")
            return NF_ACCEPT
        if res.reason is not None:
            raise Drop(res.reason, "nf_ct_frag6_gather", res.detail)
        if res.datagram is None:
            skb.add_trace("ipv6_defrag: fragment held for reassembly")
            return NF_STOLEN
        skb.data = res.datagram
        if isinstance(skb, Skb6):
            skb.reparse()
        skb.frag_max_size = res.frag_max_size
        skb.frag_list = list(res.frag_list) or None
        skb.add_trace(f"ipv6_defrag: reassembled {len(skb.data)} bytes (largest fragment {res.frag_max_size})")
        return NF_ACCEPT

    def _neigh6_timers(self, now: float) -> None:
        """The ND side of `neigh_timer_handler`: solicitations go out; packets whose resolution failed earn
        their senders Destination Unreachable, address unreachable (`ndisc_error_report`)."""
        reqs, failed = self.neighs6.timers(now)
        for req in reqs:
            self._out6.emit_ns(req, 0)
        for held in failed:
            skb = held[0]
            if isinstance(skb, Skb6):
                self._st.skb = skb
                self._out6.icmp6_send(skb, 1, 3)
            self._st.record_held_drop(held, DropReason.NEIGH_FAILED, "neigh_invalidate", "")
        self._st.skb = None

    def drain_events(self) -> list[CtEvent]:
        return self.table.drain_events()

    def _ct_destroyed(self, ct: Conn) -> None:
        """A ct left the table (`nf_ct_destroy`): the flow caches forget it."""
        self._forward.forget(ct)
        self._flowcache.forget(ct)
        self._flowcache6.forget(ct)
        if self._offload is not None:
            self._offload.destroyed(ct)

    # --- flow offload (engine/offload.py) ---------------------------------------------------------

    @property
    def offload(self) -> FlowOffload | None:
        """The flow offload state (None unless the engine was made with `offload=True`)."""
        return self._offload

    def offload_requests(self) -> list[OffloadRequest]:
        """What the datapath must install and remove since the last call, in order (`OffloadAdd`,
        `OffloadDel`); flows whose route or next hop changed are brought back first. Empty unless offloading."""
        return [] if self._offload is None else self._offload.drain()

    def offload_removal_pending(self) -> bool:
        """An `OffloadDel` waits in `offload_requests()`: the frames the engine just emitted (a FIN, an RST that
        brought the flow back) must leave only after the datapath dropped the entries, or the peer's answer
        is carried past natbox."""
        return self._offload is not None and self._offload.removal_pending

    def offload_stats(self, ct_id: int, direction: int, packets: int, nbytes: int, last_seen: float) -> bool:
        """Fold the datapath's cumulative counters of one direction of an offloaded ct (since its entry was
        installed; `nbytes` counts IP bytes, as conntrack does) and the time it last carried a packet (on the
        engine's clock) into the ct: accounting and timeout. False when the ct is not offloaded."""
        return self._offload is not None and self._offload.fold(ct_id, direction, packets, nbytes, last_seen)

    @property
    def templates(self) -> FlowTemplates | None:
        """The connection templates (None unless the engine was made with `templates=True`)."""
        return self._templates

    def track_copy(self, frame: bytes, iface: str, now: float) -> Conn | None:
        """A copy of a packet a datapath forwarded for a connection it opened from a template: conntrack alone
        when that is what the slow path would do to state (engine/template.py), the ct; None: call `receive`."""
        if self._templates is None:
            return None
        self._ctx.now = now
        return self._templates.track_copy(frame, iface, now)

    def open_copy(self, frame: bytes, iface: str, now: float) -> bool:
        """A copy of the SYN with which a datapath opened a connection from a template: its ct made from the
        template's decision (engine/template.py `open_copy`); False: nothing done, call `receive`."""
        if self._templates is None:
            return False
        self._ctx.now = now
        return self._templates.open_copy(frame, iface, now)

    def template_requests(self) -> list[TemplateRequest]:
        """The templates made, dropped and flushed since the last call (engine/template.py)."""
        return [] if self._templates is None else self._templates.drain()

    def offload_refused(self, ct_id: int) -> None:
        """The datapath could not install the ct's flows: it stays on the slow path (no OffloadDel follows)."""
        if self._offload is not None:
            self._offload.refuse(ct_id)

    # --- host changes (notifiers) ----------------------------------------------------------------

    def link_down(self, dev: str, now: float) -> int:
        """`ip link set DEV down`: routes through it vanish, MASQUERADE entries via it are flushed (§5.2)."""
        self.host.interface(dev).up = False
        self.fib.rebuild()
        self.fib6.rebuild()
        if self._resolve:  # neigh_ifdown: every entry goes; held packets are dropped without ICMP
            self.neighs.flush_dev(dev)
        # Offline nothing is held and a MAC the table knows is what ARP would answer again once the link is
        # back (scenarios/masquerade-link-down.toml: the kernel re-resolves the same MAC), so it stays.
        return masq_device_down(dev, table=self.table, now=now)

    def link_up(self, dev: str) -> None:
        self.host.interface(dev).up = True
        self.fib.rebuild()
        self.fib6.rebuild()

    def del_address(self, dev: str, addr: int, now: float) -> int:
        """`ip addr del`: remove the address (and, for a primary, its secondaries), flush MASQUERADE (§5.2)."""
        iface = self.host.interface(dev)
        victim = next((a for a in iface.addresses if a.addr == addr), None)
        if victim is None:
            return 0
        removed = [victim]
        if not victim.secondary:  # promote_secondaries=0: the subnet's secondaries go too
            removed += [a for a in iface.addresses if a.secondary and victim.contains(a.addr)
                        and a.prefixlen == victim.prefixlen]
        iface.addresses = [a for a in iface.addresses if a not in removed]
        self.fib.rebuild()
        self.fib6.rebuild()
        return sum(masq_addr_removed(dev, a.addr, table=self.table, now=now) for a in removed)

    def add_address(self, dev: str, addr: int, prefixlen: int) -> None:
        self.host.add_address(dev, addr, prefixlen)
        self.fib.rebuild()
        self.fib6.rebuild()

    def add_address6(self, dev: str, addr: int, prefixlen: int, *, deprecated: bool = False) -> None:
        """`ip -6 addr add ADDR/LEN dev DEV nodad` (the newest global address is preferred, IPv6 §3.5)."""
        self.host.add_address6(dev, addr, prefixlen, deprecated=deprecated)
        self.fib6.rebuild()

    def del_address6(self, dev: str, addr: int, now: float) -> int:
        """`ip -6 addr del`: `masq_inet6_event` deletes the cts masqueraded via `dev` whose reply destination
        is the address (IPv6 §3.5); returns how many."""
        iface = self.host.interface(dev)
        before = len(iface.addresses6)
        iface.addresses6 = [a for a in iface.addresses6 if a.addr != addr]
        if len(iface.addresses6) == before:
            return 0
        self.fib6.rebuild()
        return masq_addr_removed(dev, addr, table=self.table, now=now)

    # --- bookkeeping -----------------------------------------------------------------------------

    def _begin(self, now: float) -> Output:
        self._ctx.now = now
        st = self._st
        st.skb = None
        st.out = Output()
        return st.out
