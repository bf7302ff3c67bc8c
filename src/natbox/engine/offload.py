"""Flow offload, the engine's side (issue #16): which cts a kernel datapath may carry, and when they come back.

With `Engine(..., offload=True)` the engine decides, as the kernel's flowtable does, which established flows
a datapath outside it (natbox.offload: a tc BPF program with a map of compiled flows, driven by the live
gateway) forwards on its own; it does no I/O and reads no clock. The decision is `nft_flow_offload_eval`'s
(net/netfilter/nft_flow_offload.c), made where the slow path compiles a flow (engine/fastpath.py
`FlowCache.compile`, its `on_compiled` hook):

- the packet's ct is confirmed and its ctinfo is ESTABLISHED or ESTABLISHED_REPLY (neither NEW nor RELATED);
- TCP: the connection is ESTABLISHED and ASSURED (`nf_conntrack_tcp_established`) and the packet carries
  no FIN or RST (a packet that did would have moved the state on); UDP: nothing more; ICMP echo (natbox's
  addition: the flowtable takes no ICMP; the datapath carries echo flows, so a ping of an established
  session costs what the kernel's does); no other protocol;
- no helper, SEQ_ADJUST, NAT_CLASH (nor FIXED_TIMEOUT, which the compiled flows refuse too);
- natbox's own condition: both directions have a current plan (`FlowPlan`), since the datapath executes
  those plans and derives nothing. With tables besides conntrack and nat present the plans are made for the
  datapath only (fastpath.py `FlowCache.planned`): as with the kernel's flowtable, offloaded packets meet no
  chain, while every packet natbox still sees (the first ones, FIN/RST, whatever the datapath passes up) does.

Then, as `nft_flow_offload_eval` does, the ct gets IPS_OFFLOAD (`conntrack -L` prints `[OFFLOAD]` and, as
ctnetlink does for such entries, no timeout and no TCP state) and both TCP directions become liberal
(IP_CT_TCP_FLAG_BE_LIBERAL: the window tracking never saw the offloaded packets), and an `OffloadAdd`
request carries both plans to whoever drains `Engine.offload_requests()`.

A flow comes back (`flow_offload_teardown`: the bit is cleared, `flow_offload_fixup_tcp` zeroes both
td_maxwin so the window tracking picks the connection up again, an `OffloadDel` request) when:

| cause (the OffloadDel reason)                                             | kernel                       |
|---------------------------------------------------------------------------|------------------------------|
| a TCP FIN or RST of the flow reaches the engine (fin, rst: the datapath passes those up) | `nf_flow_state_check` |
| the ct is destroyed: deleted, flushed, expired (destroyed)                | `nf_flow_offload_gc_step`    |
| the FIB changed, a device went down or changed its MTU (route)            | `nf_flow_dst_check`, cleanup |
| the next hop's MAC changed (neigh)                                        | the flowtable's neigh output |
| no packet for OFFLOAD_TIMEOUT seconds (idle)                              | `nf_flow_has_expired`        |
| the datapath could not take it (`Engine.offload_refused`; no request)     | `flow_offload_add` failing   |

A ruleset change does not bring flows back: the kernel's flowtable keeps forwarding offloaded flows and the
new rules meet only the packets that still take the slow path (new connections, FIN/RST).

Accounting: offloaded packets refresh nothing by themselves. The datapath's per-direction counters and
last-seen time are folded back (`Engine.offload_stats`, the gateway does it at least once a second and
before every conntrack listing and state save): the packet and byte counters (`nf_conntrack_acct`) grow by
what the datapath counted, and the last-seen time restarts the flow's idle timer (`flow_offload_refresh`).

The ct's timeout (net/netfilter/nf_flow_table_core.c, Linux 6.18), TCP and UDP: offloading sets it to one
day (`flow_offload_add`: `nf_ct_refresh(ct, NF_CT_DAY)`); while the flow stays offloaded the flowtable gc
(`nf_flow_table_extend_ct_timeout`, here `expire`) sets it to a day again once less than five minutes are
left (TCP: only in ESTABLISHED; in FIN_WAIT..TIME_WAIT five minutes); the datapath's packets do not
touch it, nor ASSURED (`udp_packet` never sees them). `conntrack -L` shows no timeout meanwhile (ctnetlink
omits it for IPS_OFFLOAD). When the flow comes back, `flow_offload_fixup_ct`: the state's own timeout
(TCP: `timeouts[state]`; UDP: UDP_CT_REPLIED's, udp_timeout_stream, once a reply was seen, else
udp_timeout), less the flowtable's timeout when the flow came back because it was idle (it has been idle
that long), becomes the ct's timeout if that is sooner than the one it has. So an ESTABLISHED ct keeps the
rest of its day (432000 s is more), a UDP one gets 120 s (90 s after the idle teardown). ICMP echo flows
(natbox's addition, no kernel counterpart) keep the slow path's rule instead: icmp_timeout after the last
echo the datapath counted, refreshed at each fold (ICMPv6 echo: icmpv6_timeout).

IPv6 (`bind6`, nf_flow_offload_ipv6_hook): the same decision for the IPv6 compiled flows (engine/fastpath6.py,
plans of family NFPROTO_IPV6: plain forwarding and NAT66), ICMPv6 echo as ICMP echo; their routes and next
hops are checked against the FIB6 and the ND table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Final, NamedTuple

from natbox.conntrack.config import ConntrackConfig
from natbox.conntrack.conn import IP_CT_TCP_FLAG_BE_LIBERAL, IP_CT_TCP_FLAG_MAXACK_SET, Conn
from natbox.conntrack.table import ConntrackTable
from natbox.conntrack.tuple import tuple_l3num
from natbox.engine.family import FlowKey, flow_key6
from natbox.engine.fastpath import FlowCache, FlowPlan
from natbox.engine.host import Host
from natbox.engine.neigh import NeighTable
from natbox.engine.path import Held
from natbox.engine.route6 import Fib6
from natbox.engine.routing import Fib
from natbox.netfilter import NFPROTO_IPV6, CtInfo, CtStatus, TcpState
from natbox.skb import Skb
from natbox.wire.layout import ETH_HDR_LEN, ETH_PROTO, IP6H_LEN, IPH_MIN_LEN, IPH_VER_IHL, TCPH_FLAGS

__all__ = ["NF_CT_DAY", "OFFLOAD_TIMEOUT", "FlowOffload", "OffloadAdd", "OffloadDel", "OffloadRequest",
           "OffloadedFlow"]

OFFLOAD_TIMEOUT: Final = 30.0  # nf_flowtable_tcp_timeout / nf_flowtable_udp_timeout: an idle flow comes back
NF_CT_DAY: Final = 86400.0  # the timeout of an offloaded ct (flow_offload_add, nf_flow_table_extend_ct_timeout)
EXTEND_BELOW: Final = 300.0  # nf_flow_table_extend_ct_timeout's min_timeout: extended again when less is left
_CLOSING_STATES: Final = (TcpState.FIN_WAIT, TcpState.CLOSE_WAIT, TcpState.LAST_ACK, TcpState.TIME_WAIT)
_TCP_FLAGS: Final = ETH_HDR_LEN + IPH_MIN_LEN + TCPH_FLAGS  # a flow key exists only for IHL 5 (family.flow_key)
_TCP_FLAGS6: Final = ETH_HDR_LEN + IP6H_LEN + TCPH_FLAGS  # and for IPv6 without extension headers (flow_key6)
_MATCH6_LEN: Final = 36  # an IPv6 flow key's addresses and ports
_ETH_P_IPV6_BYTES: Final = b"\x86\xdd"
_ICMP: Final = (1, 58)  # ICMP and ICMPv6: echo flows only (natbox's addition)
_FIN, _RST = 0x01, 0x04
_REFUSE: Final = int(CtStatus.HELPER | CtStatus.SEQ_ADJUST | CtStatus.NAT_CLASH | CtStatus.FIXED_TIMEOUT
              | CtStatus.DYING)
_CONFIRMED, _OFFLOAD, _ASSURED = int(CtStatus.CONFIRMED), int(CtStatus.OFFLOAD), int(CtStatus.ASSURED)
_SEEN_REPLY: Final = int(CtStatus.SEEN_REPLY)
_ESTABLISHED: Final = (CtInfo.ESTABLISHED, CtInfo.ESTABLISHED_REPLY)


class OffloadAdd(NamedTuple):
    """Install the ct's two compiled flows in the datapath: `plans[0]` the ORIGINAL direction, `plans[1]`
    the REPLY one. Each plan's `dst_mac` is the next hop's MAC now (also when the engine resolves
    neighbours, where the compiled flows leave it empty)."""

    ct_id: int
    plans: tuple[FlowPlan, FlowPlan]


class OffloadDel(NamedTuple):
    """Remove the ct's entries: `reason` is one of fin, rst, destroyed, route, neigh, idle, refused."""

    ct_id: int
    reason: str


OffloadRequest = OffloadAdd | OffloadDel


class OffloadedFlow:
    """One offloaded ct: its plans, what the datapath counted so far and when it last saw a packet."""

    __slots__ = ("bytes", "conn", "folded", "keys", "last_seen", "packets", "plans", "saved_timeout", "since")

    def __init__(self, conn: Conn, plans: tuple[FlowPlan, FlowPlan], keys: list[FlowKey], now: float) -> None:
        self.conn = conn
        self.plans = plans
        self.keys = keys
        self.since = now  # when it was offloaded
        self.last_seen = now  # the last packet the datapath carried (or the offload)
        self.folded = [0, 0, 0, 0]  # the datapath's cumulative packets, bytes of each direction, as last folded
        self.packets = [0, 0]  # packets and bytes the datapath carried for this ct, per direction (all installs)
        self.bytes = [0, 0]
        self.saved_timeout = conn.timeout  # the ct's timeout before the offload made it a day (refused: restored)


class FlowOffload:
    """The offloaded flows of one engine and the requests for the datapath (see the module docstring)."""

    def __init__(self, host: Host, fib: Fib, neighs: NeighTable[Held], flowcache: FlowCache, table: ConntrackTable,
                 cfg: ConntrackConfig, clock: Callable[[], float]) -> None:
        self._host, self._fib, self._neighs, self._flowcache = host, fib, neighs, flowcache
        self._table, self._cfg = table, cfg
        self.flows: dict[int, OffloadedFlow] = {}  # by ct id
        self.keys: dict[FlowKey, OffloadedFlow] = {}  # the flow keys of the frames the datapath carries
        self.requests: list[OffloadRequest] = []
        # an OffloadDel is waiting: the datapath must drop the entries before the packet that brought the flow
        # back leaves (nf_flow_tcp_state tears the flow down in the datapath itself, before the FIN goes on)
        self.removal_pending = False
        self.refused: dict[int, Conn] = {}  # cts the datapath declined: not offered again (until destroyed)
        # flows come back, until the datapath's last counts of them are folded: kept through one drain()
        self.leaving: dict[int, OffloadedFlow] = {}
        self._drained: list[int] = []
        self.stats = {"offloaded": 0, "fin": 0, "rst": 0, "destroyed": 0, "route": 0, "neigh": 0, "idle": 0,
                      "refused": 0}
        self.carried = [0, 0]  # packets and bytes the datapath carried, every flow, as folded
        self._gens = (fib.generation, neighs.generation, 0, 0)
        self._clock = clock  # the engine's clock at the current call
        # the IPv6 side (bind6): its compiled flows, FIB6 and ND table; None until bound
        self._v6: tuple[FlowCache, Fib6, NeighTable[Held]] | None = None

    def bind6(self, flowcache6: FlowCache, fib6: Fib6, neighs6: NeighTable[Held]) -> None:
        """Offload IPv6 flows too: the engine's IPv6 compiled flows (their `on_compiled` is `consider`)."""
        self._v6 = (flowcache6, fib6, neighs6)
        self._gens = (self._fib.generation, self._neighs.generation, fib6.generation, neighs6.generation)

    def _side(self, family: int) -> tuple[FlowCache, Fib | Fib6, NeighTable[Held]]:
        """The compiled flows, FIB and neighbour table of an address family (NFPROTO_*)."""
        if family == NFPROTO_IPV6 and self._v6 is not None:
            return self._v6
        return self._flowcache, self._fib, self._neighs

    # --- the decision ----------------------------------------------------------------------------

    def consider(self, skb: Skb, conn: Conn) -> None:
        """`nft_flow_offload_eval` for a packet the slow path just forwarded (FlowCache's `on_compiled`)."""
        status = conn.status
        if status & (_OFFLOAD | _REFUSE) or not status & _CONFIRMED or skb.ctinfo not in _ESTABLISHED:
            return
        proto = conn.tuples[0].proto
        tcp = conn.tcp
        if proto == 6:
            data = skb.data
            thoff = skb.ihl if skb.family == NFPROTO_IPV6 else (data[IPH_VER_IHL] & 0x0F) * 4
            if (tcp is None or tcp.state != TcpState.ESTABLISHED or not status & _ASSURED
                    or len(data) <= thoff + TCPH_FLAGS or data[thoff + TCPH_FLAGS] & (_FIN | _RST)):
                return  # the packet's fin/rst, nf_conntrack_tcp_established
        elif proto != 17 and proto not in _ICMP:  # ICMP(v6): only echo flows have plans (natbox's addition)
            return
        if conn.ct_id in self.refused or skb.frag_max_size:
            return
        found = self._plans(conn)
        if found is None:
            return
        plans, keys = found
        conn.status |= _OFFLOAD
        if tcp is not None:
            tcp.seen[0].flags |= IP_CT_TCP_FLAG_BE_LIBERAL
            tcp.seen[1].flags |= IP_CT_TCP_FLAG_BE_LIBERAL
        now = self._clock()
        flow = OffloadedFlow(conn, plans, keys, now)
        if proto not in _ICMP:  # flow_offload_add: nf_ct_refresh(ct, NF_CT_DAY) (ICMP: natbox's, see fold)
            conn.timeout = now + NF_CT_DAY
        self.flows[conn.ct_id] = flow
        for key in keys:
            self.keys[key] = flow
        self.stats["offloaded"] += 1
        self.requests.append(OffloadAdd(conn.ct_id, plans))
        skb.add_trace(f"nft_flow_offload: ct {conn.ct_id} offloaded: both directions go to the datapath")

    def _plans(self, conn: Conn) -> tuple[tuple[FlowPlan, FlowPlan], list[FlowKey]] | None:
        """Both directions' current plans (the next hop's MAC filled in) and flow keys; None if one is missing."""
        plans: list[FlowPlan | None] = [None, None]
        keys: list[FlowKey] = [("", b"", 0, b""), ("", b"", 0, b"")]
        flowcache, fib, neighs = self._side(tuple_l3num(conn.tuples[0]))
        fib_gen = fib.generation
        for key, flow in flowcache.compiled_of(conn):
            plan = flow.plan
            if plan.fib_gen != fib_gen or plan.mtu != flow.out.mtu or plan.proto != conn.tuples[0].proto:
                continue
            if not plan.dst_mac:  # resolving neighbours: the MAC the output path would use now
                mac = neighs.known(plan.oif, plan.nexthop)
                if mac is None:
                    continue
                plan = replace(plan, dst_mac=mac)
            plans[plan.direction] = plan
            keys[plan.direction] = key
        first, second = plans
        return None if first is None or second is None else ((first, second), keys)

    def executor(self) -> FlowCache:
        """An executor of the offloaded flows' plans with a datapath's semantics (`FlowCache.datapath`), for the
        offline model (engine/offload_model.py)."""
        dp = self._flowcache.datapath()
        if self._v6 is not None:  # IPv6 frames go to its IPv6 sibling, as the engine's executor hands them on
            dp.v6 = self._v6[0].datapath()
        return dp

    @property
    def stamps(self) -> tuple[int, int]:
        """What a plan's validity stamps are now: the neighbour table's generation (the FIB's is revalidated);
        IPv6 plans: the ND table's (`stamps6`)."""
        return self._fib.generation, self._neighs.generation

    @property
    def stamps6(self) -> tuple[int, int]:
        """`stamps` for IPv6 plans: the FIB6's and the ND table's generations."""
        return (0, 0) if self._v6 is None else (self._v6[1].generation, self._v6[2].generation)

    # --- coming back -----------------------------------------------------------------------------

    def teardown(self, conn: Conn, reason: str, *, request: bool = True) -> None:
        """`flow_offload_teardown` + `flow_offload_fixup_ct`: the ct is the slow path's again."""
        flow = self.flows.pop(conn.ct_id, None)
        if flow is None:
            return
        for key in flow.keys:
            if self.keys.get(key) is flow:
                del self.keys[key]
        conn.status &= ~_OFFLOAD
        if request:
            self.leaving[conn.ct_id] = flow
        tcp = conn.tcp
        if tcp is not None:  # flow_offload_fixup_tcp: the tracker re-learns the windows from the next packets
            for seen in tcp.seen:
                seen.td_maxwin = 0
                seen.flags &= ~IP_CT_TCP_FLAG_MAXACK_SET  # else the RST check uses a stale td_maxack
        if reason == "refused":  # flow_offload_add failed: the ct never got its day
            if conn.timeout == flow.since + NF_CT_DAY:
                conn.timeout = flow.saved_timeout
        else:
            self._fixup_timeout(conn, expired=reason == "idle")
        self.stats[reason] = self.stats.get(reason, 0) + 1
        if request:
            self.requests.append(OffloadDel(conn.ct_id, reason))
            self.removal_pending = True
            # the compiled flows go too: the packets that follow take the slow path, which compiles the flow
            # again and so offers it again (the compiled flows' executor never does)
            self._side(tuple_l3num(conn.tuples[0]))[0].forget(conn)

    def _fixup_timeout(self, conn: Conn, *, expired: bool) -> None:
        """`flow_offload_fixup_ct`'s timeout (Linux 6.18; no NF_FLOW_CLOSING here: a FIN or RST reaches the
        engine, which tears the flow down at once, before the tracker sees the packet)."""
        proto, cfg = conn.tuples[0].proto, self._cfg
        if proto == 6 and conn.tcp is not None:
            timeout = float(cfg.tcp_timeouts()[conn.tcp.state])
        elif proto == 17:
            timeout = float(cfg.udp_timeout_stream if conn.status & _SEEN_REPLY else cfg.udp_timeout)
        else:
            return
        if expired:  # nf_flow_has_expired: idle for the flowtable's timeout already
            timeout -= OFFLOAD_TIMEOUT
        now = self._clock()
        timeout = max(timeout, 0.0)
        if conn.timeout - now > timeout:
            conn.timeout = now + timeout

    def ingress(self, frame: bytes, key: FlowKey | None, iface: str = "") -> str | None:
        """`nf_flow_offload_ip_hook`'s (`nf_flow_offload_ipv6_hook`'s) `nf_flow_state_check` for a frame of an
        offloaded flow that reached the engine: a TCP FIN or RST tears the flow down before the slow path
        handles the packet. Returns the reason when it did. `key`: the frame's IPv4 flow key; None for an
        IPv6 frame, whose key (`flow_key6`) is derived here when IPv6 flows are offloaded."""
        if key is None:
            if self._v6 is None or frame[ETH_PROTO:ETH_PROTO + 2] != _ETH_P_IPV6_BYTES:
                return None
            key = flow_key6(frame, iface)
            if key is None:
                return None
        flow = self.keys.get(key)
        at = _TCP_FLAGS6 if len(key[3]) == _MATCH6_LEN else _TCP_FLAGS
        if flow is None or key[2] != 6 or len(frame) <= at:
            return None
        flags = frame[at]
        if not flags & (_FIN | _RST):
            return None
        reason = "rst" if flags & _RST else "fin"
        self.teardown(flow.conn, reason)
        return reason

    def destroyed(self, conn: Conn) -> None:
        """The ct left the table (its `register_destroy` callback)."""
        self.refused.pop(conn.ct_id, None)
        if conn.ct_id in self.flows:
            self.teardown(conn, "destroyed")

    def refuse(self, ct_id: int) -> None:
        """The datapath could not take the ct (no ifindex, a synthetic MAC...): it stays on the slow path."""
        flow = self.flows.get(ct_id)
        if flow is not None:
            self.refused[ct_id] = flow.conn
            self.teardown(flow.conn, "refused", request=False)

    def retry(self, ct_id: int) -> bool:
        """Offer a refused ct again (the datapath has room again): its next packet through the engine decides
        anew, as `nft_flow_offload_eval` does at every packet (its compiled flows go, so that packet takes the
        slow path, which compiles the flow again and so offers it). False when the ct is not a refused one."""
        conn = self.refused.pop(ct_id, None)
        if conn is None:
            return False
        self._side(tuple_l3num(conn.tuples[0]))[0].forget(conn)
        return True

    def revalidate(self) -> None:
        """After a FIB or neighbour change: bring back the flows whose route, device or next hop changed."""
        v6 = self._v6
        gens = (self._fib.generation, self._neighs.generation, 0 if v6 is None else v6[1].generation,
                0 if v6 is None else v6[2].generation)
        if gens == self._gens:
            return
        self._gens = gens
        ifaces = self._host.interfaces
        for flow in list(self.flows.values()):
            reason = None
            for plan in flow.plans:
                _, fib, neighs = self._side(plan.family)
                out, dev = ifaces.get(plan.oif), ifaces.get(plan.iif)
                if (plan.fib_gen != fib.generation or out is None or dev is None or not out.up or not dev.up
                        or out.mtu != plan.mtu):
                    reason = "route"
                    break
                mac = neighs.known(plan.oif, plan.nexthop)
                if mac is not None and mac != plan.dst_mac and not plan.neigh_synthetic:
                    reason = "neigh"
                    break
            if reason is not None:
                self.teardown(flow.conn, reason)

    def expire(self, now: float) -> None:
        """The flowtable's gc (`nf_flow_offload_gc_step`): a flow idle for OFFLOAD_TIMEOUT comes back; the others'
        cts get a day again when less than EXTEND_BELOW is left (`nf_flow_table_extend_ct_timeout`)."""
        for flow in list(self.flows.values()):
            conn = flow.conn
            if now - flow.last_seen >= OFFLOAD_TIMEOUT:
                self.teardown(conn, "idle")
            elif conn.timeout - now < EXTEND_BELOW:
                proto, tcp = conn.tuples[0].proto, conn.tcp
                if proto == 17 or (tcp is not None and tcp.state == TcpState.ESTABLISHED):
                    conn.timeout = now + NF_CT_DAY
                elif tcp is not None and tcp.state in _CLOSING_STATES:  # nf_flow_table_tcp_timeout
                    conn.timeout = now + EXTEND_BELOW

    def drain(self) -> list[OffloadRequest]:
        """The requests since the last call; the flows that came back before that call can no longer be
        folded (their entries are gone)."""
        self.revalidate()
        for ct_id in self._drained:
            self.leaving.pop(ct_id, None)
        self._drained = list(self.leaving)
        out, self.requests = self.requests, []
        self.removal_pending = False
        return out

    # --- accounting ------------------------------------------------------------------------------

    def fold(self, ct_id: int, direction: int, packets: int, nbytes: int, last_seen: float) -> bool:
        """Fold a datapath entry's cumulative counters (since it was installed) into the ct: the counters grow by
        what is new, `last_seen` restarts the idle timer (the ct's timeout stays the flowtable's: module docstring).
        Also for a flow that came back since the last drain (its last counts). False: not offloaded."""
        flow = self.flows.get(ct_id) or self.leaving.get(ct_id)
        if flow is None or direction not in (0, 1):
            return False
        folded = flow.folded
        i = 2 * direction
        dp, db = packets - folded[i], nbytes - folded[i + 1]
        if dp < 0 or db < 0:  # the entry was rewritten (its counters restarted)
            dp, db = packets, nbytes
        folded[i], folded[i + 1] = packets, nbytes
        if dp <= 0:
            return True
        flow.packets[direction] += dp
        flow.bytes[direction] += db
        self.carried[0] += dp
        self.carried[1] += db
        conn, cfg = flow.conn, self._cfg
        if cfg.acct:
            conn.acct_packets[direction] += dp
            conn.acct_bytes[direction] += db
        flow.last_seen = max(flow.last_seen, last_seen)  # flow_offload_refresh: the idle timer restarts
        proto = conn.tuples[0].proto
        if flow is self.flows.get(ct_id) and proto in _ICMP:
            # ICMP echo (natbox's addition): nf_conntrack_icmp_packet's (icmpv6's) refresh at the last echo
            # counted; TCP and UDP cts keep the day the flowtable gave them (module docstring)
            timeout = cfg.icmp_timeout if proto == 1 else cfg.icmpv6_timeout
            conn.timeout = max(conn.timeout, flow.last_seen + timeout)
        return True
