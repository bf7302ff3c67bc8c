"""The engine: a Linux host's IPv4 path with netfilter, as a sans-IO object (§1).

`Engine.receive(frame, iface, now)` takes one Ethernet frame that arrived on `iface` at time `now` and
returns an `Output`: the frames the host sends in response (forwarded, NATed, ICMP errors, ARP replies),
what was delivered to local sockets, what was dropped and why, and (when tracing) the steps each packet
took. `Engine.send_local(datagram, now)` injects a locally generated datagram (the OUTPUT path).
Nothing here reads a clock, a socket or a file; randomness comes from the injected `rnd`.

Hooks run their registered functions in kernel priority order (§1.1), the way `nf_hook_slow()` walks
`nf_hook_entries`:

| hook        | functions (priority)                                                                  |
|-------------|---------------------------------------------------------------------------------------|
| PREROUTING  | defrag (-400), raw (-300), conntrack (-200), mangle (-150), nat DST (-100)             |
| INPUT       | mangle (-150), filter (0), nat SRC (100), confirm (INT_MAX)                             |
| FORWARD     | mangle (-150), filter (0)                                                              |
| OUTPUT      | defrag (-400), raw (-300), conntrack (-200), mangle (-150), nat DST (-100), filter (0)  |
| POSTROUTING | mangle (-150), nat SRC (100), confirm (INT_MAX)                                         |
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from natbox.conntrack.config import ConntrackConfig
from natbox.conntrack.conn import Conn
from natbox.conntrack.core import nf_conntrack_confirm, nf_conntrack_in
from natbox.conntrack.table import ConntrackTable, CtEvent
from natbox.conntrack.tuple import format_addr
from natbox.engine.defrag import IcmpOnExpire, IpDefrag
from natbox.engine.fastpath import FlowCache
from natbox.engine.host import Host, Interface
from natbox.engine.icmp_rate import IcmpRateLimiter
from natbox.engine.log import format_log_line
from natbox.engine.neigh import NeighTable, arp_solicit_saddr, build_arp_solicit, skb_truesize
from natbox.engine.output import Delivered, Dropped, Emitted, LogLine, Output
from natbox.engine.reject import build_reset_for
from natbox.engine.routing import RTN_BROADCAST, RTN_LOCAL, RTN_MULTICAST, RTN_UNICAST, Fib
from natbox.nat.core import NatCore
from natbox.nat.masquerade import masq_addr_removed, masq_device_down, masquerade
from natbox.nat.range import NatRange
from natbox.netfilter import CtInfo, Direction, DropReason, Hook, ManipType, Priority
from natbox.rand import RandomSource, SplitMix64
from natbox.rules.api import NF_ACCEPT
from natbox.rules.evaluate import Ruleset
from natbox.skb import PacketType, Skb
from natbox.wire import arp, ethernet, icmp, ipv4
from natbox.wire.checksum import complete_partial_csum, csum_replace4
from natbox.wire.gso import gso_network_seglen, gso_segment

# enum members as module constants: `Enum.MEMBER` costs an attribute lookup through EnumType per use
_CTINFO_ESTABLISHED = CtInfo.ESTABLISHED
_CTINFO_ESTABLISHED_REPLY = CtInfo.ESTABLISHED_REPLY
_CTINFO_NEW = CtInfo.NEW
_CTINFO_RELATED = CtInfo.RELATED
_CTINFO_RELATED_REPLY = CtInfo.RELATED_REPLY
_CTINFO_UNTRACKED = CtInfo.UNTRACKED
_DIRN_ORIGINAL = Direction.ORIGINAL
_HOOK_FORWARD = Hook.FORWARD
_HOOK_LOCAL_IN = Hook.LOCAL_IN
_HOOK_LOCAL_OUT = Hook.LOCAL_OUT
_HOOK_POST_ROUTING = Hook.POST_ROUTING
_HOOK_PRE_ROUTING = Hook.PRE_ROUTING
_PKT_BROADCAST = PacketType.BROADCAST
_PKT_HOST = PacketType.HOST
_PKT_LOOPBACK = PacketType.LOOPBACK
_PKT_MULTICAST = PacketType.MULTICAST
_PKT_OTHERHOST = PacketType.OTHERHOST

__all__ = ["Delivered", "Dropped", "Emitted", "Engine", "LogLine", "Output"]

NF_STOLEN = 2
_NO_META = (0, 0, False)  # (gso_type, gso_size, partial) of an ordinary frame
_NO_MAC = b"\x00" * 6
_BROADCAST_MAC = b"\xff" * 6
_ETH_HLEN, _ETH_P_IP, _ETH_P_ARP = ethernet.ETH_HLEN, ethernet.ETH_P_IP, ethernet.ETH_P_ARP
LOCAL_QUEUE_MAX = 64  # datagrams one send_local() call may queue
JOINED_GROUPS = frozenset({0xE0000001})  # 224.0.0.1: all-hosts, joined on every interface
LOCAL_NESTING_MAX = 4  # a generated packet causing another (an error about an error is refused anyway)
FLOW_CACHE_MAX = 65536  # cached forwarding decisions of established flows; the oldest is evicted first
LOOPBACK_DEPTH_MAX = 4  # nested loopback deliveries, bounding a packet that loops through lo
CT_GC_INTERVAL = 1.0  # seconds between conntrack gc runs (handle_timers): the kernel's gc_worker runs ~1/s

ICMP_DEST_UNREACH = 3
ICMP_TIME_EXCEEDED = 11
ICMP_PARAMETERPROB = 12
ICMP_REDIRECT = 5
ICMP_REDIR_HOST = 1
ICMP_ECHO = 8
ICMP_NET_UNREACH = 0
ICMP_HOST_UNREACH = 1
ICMP_PROT_UNREACH = 2
ICMP_PORT_UNREACH = 3
ICMP_FRAG_NEEDED = 4
ICMP_NET_ANO = 9
ICMP_HOST_ANO = 10
ICMP_PKT_FILTERED = 13

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


# a packet waiting for its next hop's MAC: (skb, datagram to send, gso_type, gso_size, partial)
_Held = tuple[Skb, bytes, int, int, bool]

# `Address.mask` by prefix length, so the per-packet subnet tests below need no property calls
_MASKS = tuple((0xFFFFFFFF << (32 - p)) & 0xFFFFFFFF if p else 0 for p in range(33))
_HOSTMASKS = tuple(~m & 0xFFFFFFFF for m in _MASKS)


def _on_link(dev: Interface, addr: int) -> bool:
    """`any(a.contains(addr) for a in dev.addresses)`: `addr` is in a subnet of one of `dev`'s addresses."""
    for a in dev.addresses:
        p = a.prefixlen
        if 0 <= p <= 32:
            if not (addr ^ a.addr) & _MASKS[p]:
                return True
        elif a.contains(addr):
            return True
    return False


def _is_subnet_broadcast(dev: Interface, addr: int) -> bool:
    """`any(a.broadcast == addr for a in dev.addresses)`."""
    for a in dev.addresses:
        p = a.prefixlen
        if 0 <= p <= 32:
            if a.addr | _HOSTMASKS[p] == addr:
                return True
        elif a.broadcast == addr:
            return True
    return False


def _piece_of(skb: Skb, data: bytearray) -> Skb:
    """An skb for one piece of `skb` (a GSO segment, a queued fragment): the piece's bytes with the
    original's ct and route, as skb_segment and the fragment code copy them, so an ICMP error about the
    piece is attributed and NAT-translated like one about the whole."""
    piece = Skb(data, iif=skb.iif, pkt_id=skb.pkt_id)
    piece.ct, piece.ctinfo, piece.oif, piece.nexthop = skb.ct, skb.ctinfo, skb.oif, skb.nexthop
    return piece


class _Drop(Exception):
    """Raised inside the engine to abandon a packet; never escapes `receive`."""

    def __init__(self, reason: DropReason, where: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.where = where
        self.detail = detail


HookFn = Callable[[Skb], int]
_TABLE_OPS = frozenset({"raw", "mangle", "filter"})  # hook functions registered by _table_fn, by table name


class _Context:
    """The engine seen from a rule (implements `natbox.rules.api.XtContext`)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.hook = _HOOK_PRE_ROUTING
        self.now = 0.0

    def random_u32(self) -> int:
        return self._engine.rnd.getrandbits(32)

    def addr_type(self, addr: int, dev: str | None) -> int:
        return self._engine.fib.addr_type(addr, dev)

    def iface_primary_addr(self, dev: str) -> int | None:
        iface = self._engine.host.interfaces.get(dev)
        if iface is None:
            return None
        prim = iface.primary_addresses
        return prim[0].addr if prim else None

    def nat_setup_info(self, skb: Skb, rng: NatRange, manip: ManipType) -> int:
        ct = skb.ct
        if ct is None:
            return NF_ACCEPT
        e = self._engine
        return e.nat.setup_info(ct, rng, manip, now=self.now, table=e.table, rnd=e.rnd, trace=skb.trace)

    def masquerade(self, skb: Skb, rng: NatRange) -> int:
        ct = skb.ct
        if ct is None:
            return NF_ACCEPT
        e = self._engine
        newsrc = e.fib.select_addr(skb.oif, skb.nexthop)
        return masquerade(skb, ct, rng, skb.oif, newsrc, nat=e.nat, now=self.now, table=e.table, rnd=e.rnd)

    def send_reject(self, skb: Skb, reject_with: str) -> None:
        self._engine.reject(skb, reject_with, self.now)

    def log(self, skb: Skb, prefix: str, level: int, flags: int = 0) -> None:
        self._engine.log_packet(skb, prefix, level, flags)

    def notrack(self, skb: Skb) -> None:
        skb.untracked = True
        skb.ct = None
        skb.ctinfo = _CTINFO_UNTRACKED


class Engine:
    """A Linux host's IPv4 forwarding, NAT and filtering, driven by frames and an injected clock."""

    def __init__(
        self,
        host: Host,
        *,
        ruleset: Ruleset | None = None,
        rnd: RandomSource | None = None,
        seed: int = 0,
        events: bool = False,
    ) -> None:
        host.ensure_loopback()
        host.validate()
        self.host = host
        self.fib = Fib(host)
        self.cfg: ConntrackConfig = host.conntrack
        self.table = ConntrackTable(max_entries=self.cfg.max_entries, events_enabled=events)
        self.nat = NatCore(self.table)
        self.rnd: RandomSource = rnd if rnd is not None else SplitMix64(seed)
        self.defrag = IpDefrag()
        self.icmp_rate = IcmpRateLimiter()  # per-host ICMP error and redirect pacing (inet_peer)
        self.rules = ruleset if ruleset is not None else Ruleset()
        self.stats: Counter[str] = Counter()
        self.neigh: dict[tuple[str, int], bytes] = {(n.dev, n.addr): n.mac for n in host.neighbours}
        # Neighbour resolution. Offline (the default) a next hop's MAC is a static or learned one, else a
        # synthetic 02:00:<ipv4>. With `resolve_neighbours` (the live gateway) the kernel's ARP state
        # machine runs (engine/neigh.py): packets wait while it resolves and earn their senders ICMP host
        # unreachable when it fails.
        self.resolve_neighbours = False
        self.neighs: NeighTable[_Held] = NeighTable(static=[(n.dev, n.addr, n.mac) for n in host.neighbours])
        self.listeners: set[tuple[int, int]] = set()  # (protocol, port) open on the host
        self._ctx = _Context(self)
        self._gc_next = float("-inf")  # when the conntrack gc is next due (handle_timers)
        self._out = Output()
        self._local_queue: list[tuple[Skb, float]] = []
        self._next_pkt_id = 1
        self._depth = 0
        self._skb: Skb | None = None  # the packet being processed (drops are attributed to its ct)
        self._nested = 0  # locally generated packets being sent from inside another packet's path
        self._hooks: dict[Hook, list[tuple[int, str, HookFn]]] = {}
        self.trace_all = False
        self.fast_path = True  # use the flow cache for established forwarded TCP/UDP (see _fast_forward)
        self._flows: dict[tuple[str, bytes, int, bytes], tuple[Conn, CtInfo, int, str, int, int, bool]] = {}
        self._flowcache = FlowCache(self)  # compiled flows, tried first (engine/fastpath.py)
        self._rx_meta = _NO_META  # the offload metadata of the frame receive() is handling
        # the fast paths' view of the ruleset (see tier2_plan), valid for one Ruleset object and version
        self._plan_rules: Ruleset | None = None
        self._plan_version = -1
        self._plan = (False, False, False, False)
        # _run_hook's functions per hook for one Ruleset object and version (see _refresh_ops)
        self._active_ops: dict[Hook, list[tuple[int, str, HookFn]]] = {}
        self._ops_rules: Ruleset | None = None
        self._ops_version = -1
        self._build_hooks()
        self._pre_after_ct = [n for _p, n, _f in self._hooks[_HOOK_PRE_ROUTING]].index("conntrack") + 1
        self._nat_chain = {h: self._nat_chain_fn(h) for h in (_HOOK_PRE_ROUTING, _HOOK_POST_ROUTING)}

    # --- hook registration -----------------------------------------------------------------------

    def _build_hooks(self) -> None:
        """Register the hook functions as the kernel modules would (see the module docstring)."""
        ops: dict[Hook, list[tuple[int, str, HookFn]]] = {h: [] for h in Hook}
        for hook in (_HOOK_PRE_ROUTING, _HOOK_LOCAL_OUT):
            ops[hook].append((Priority.CONNTRACK_DEFRAG, "defrag", self._hook_defrag))
            ops[hook].append((Priority.RAW, "raw", self._table_fn("raw", hook)))
            ops[hook].append((Priority.CONNTRACK, "conntrack", self._hook_conntrack(hook)))
            ops[hook].append((Priority.NAT_DST, "nat", self._hook_nat(hook)))
        for hook in Hook:
            ops[hook].append((Priority.MANGLE, "mangle", self._table_fn("mangle", hook)))
        for hook in (_HOOK_LOCAL_IN, _HOOK_FORWARD, _HOOK_LOCAL_OUT):
            ops[hook].append((Priority.FILTER, "filter", self._table_fn("filter", hook)))
        for hook in (_HOOK_LOCAL_IN, _HOOK_POST_ROUTING):
            ops[hook].append((Priority.NAT_SRC, "nat", self._hook_nat(hook)))
            ops[hook].append((Priority.CONNTRACK_CONFIRM, "confirm", self._hook_confirm))
        for hook in Hook:
            ops[hook].sort(key=lambda op: op[0])
        self._hooks = ops

    def _refresh_ops(self) -> None:
        """The hook functions `_run_hook` calls for the current ruleset: every one but those of the raw,
        mangle and filter tables that are trivial at their hook (absent, see `Ruleset.is_trivial`), whose
        function would only return NF_ACCEPT. Each keeps its index in the full list (`start`). Worked out
        again whenever the Ruleset object or its version changes."""
        rules = self.rules
        self._active_ops = {
            hook: [(i, name, fn) for i, (_prio, name, fn) in enumerate(ops)
                   if not (name in _TABLE_OPS and rules.is_trivial(name, hook))]
            for hook, ops in self._hooks.items()}
        self._ops_rules, self._ops_version = rules, rules.version

    def _table_fn(self, table: str, hook: Hook) -> HookFn:
        ctx = self._ctx
        rules = self

        def run(skb: Skb) -> int:
            # only called by _run_hook, which leaves out the table where it is trivial (_refresh_ops)
            ctx.hook = hook
            return rules.rules.run(table, hook, skb, ctx)

        return run

    def _hook_conntrack(self, hook: Hook) -> HookFn:
        def run(skb: Skb) -> int:
            if not self.rules.needs_conntrack():
                if skb.trace is not None and skb.ct is None:
                    skb.add_trace("nf_conntrack_in: not registered in this netns (no rule needs connection "
                                  "tracking): the packet is not tracked and cannot be NATed")
                return NF_ACCEPT
            verdict = nf_conntrack_in(skb, hook, self._ctx.now, self.table, self.cfg)
            if skb.trace is not None:
                self._trace_ct(skb)
            return verdict

        return run

    def _nat_chain_fn(self, hook: Hook) -> HookFn:
        ctx = self._ctx

        def run_chain(skb: Skb) -> int:
            if self.rules.is_trivial("nat", hook):
                return NF_ACCEPT
            ctx.hook = hook
            return self.rules.run("nat", hook, skb, ctx)

        return run_chain

    def _hook_nat(self, hook: Hook) -> HookFn:
        ctx = self._ctx
        run_chain = self._nat_chain_fn(hook)

        def run(skb: Skb) -> int:
            # the NAT hooks exist while a nat table does (iptable_nat registers them), and act on tracked
            # packets only
            if skb.ct is None or "nat" not in self.rules.present:
                return NF_ACCEPT
            return self.nat.nf_nat_ipv4_fn(skb, hook, now=ctx.now, table=self.table, rnd=self.rnd,
                                           run_chain=run_chain)

        return run

    def _hook_confirm(self, skb: Skb) -> int:
        if skb.ct is None or skb.ct.confirmed:
            return NF_ACCEPT
        verdict = nf_conntrack_confirm(skb, self._ctx.now, self.table)
        if skb.trace is not None and verdict == NF_ACCEPT and skb.ct is not None:
            skb.add_trace(f"nf_confirm: ct #{skb.ct.ct_id} confirmed (inserted in the table)")
        return verdict

    def _hook_defrag(self, skb: Skb) -> int:
        """`ipv4_conntrack_defrag`: fragments are held until the datagram is complete (§9)."""
        data = skb.data
        # `not skb.is_fragment` (MF and offset clear), without the two property calls
        if not (data[6] & 0x3F or data[7]) or skb.untracked or not self.rules.needs_conntrack():
            return NF_ACCEPT  # nf_defrag_ipv4 is enabled by conntrack's registration (nf_ct_netns_get)
        result = self.defrag.add(skb.data, self._ctx.now)
        if result.datagram is None:
            if result.reason is not None:
                raise _Drop(result.reason, "defrag", result.detail)
            skb.add_trace("ipv4_conntrack_defrag: fragment held for reassembly")
            return NF_STOLEN
        skb.data = result.datagram
        skb.ihl = (skb.data[0] & 0x0F) * 4
        skb.frag_max_size = result.frag_max_size
        skb.frag_pmtu = result.frag_pmtu
        skb.frag_list = list(result.frag_list) if result.frag_list else None
        if skb.trace is not None:
            skb.add_trace(f"ipv4_conntrack_defrag: reassembled {len(skb.data)} bytes "
                          f"(largest fragment {result.frag_max_size})")
        return NF_ACCEPT

    def _run_hook(self, hook: Hook, skb: Skb, start: int = 0) -> int:
        """`nf_hook_slow()`: run the hook's functions in priority order until one does not ACCEPT
        (from the `start`-th function on, when the fast path hands a packet back mid-hook)."""
        skb.hook = hook
        self._ctx.hook = hook
        rules = self.rules
        if rules is not self._ops_rules or rules.version != self._ops_version:
            self._refresh_ops()
        for i, name, fn in self._active_ops[hook]:
            if i < start:
                continue
            verdict = fn(skb)
            if verdict == NF_ACCEPT:
                continue
            if verdict == NF_STOLEN:
                return NF_STOLEN
            raise self._verdict_drop(hook, name, skb)
        return NF_ACCEPT

    def _verdict_drop(self, hook: Hook, name: str, skb: Skb) -> _Drop:
        detail = skb.note or f"{name} {hook.chain_name}"
        reason = DropReason.RULE_DROP
        if name == "conntrack":
            reason = DropReason.CT_TABLE_FULL
        elif name == "confirm":
            reason = DropReason.NAT_INSERT_FAILED
        elif name == "nat" and self.nat.drop_reason is not None:
            reason = self.nat.drop_reason
        return _Drop(reason, f"{hook.chain_name}/{name}", detail)

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
        if self.fast_path and not trace and not self.trace_all:
            fast = self._flowcache.forward(frame, iface, now, gso_type, gso_size, partial)
            if fast is not None:
                return fast
        frame = bytes(frame)
        # _begin and _new_pkt_id, inline
        self._ctx.now = now
        self._skb = None
        out = self._out = Output([], [], [], [], [])
        pkt_id = self._next_pkt_id
        self._next_pkt_id = pkt_id + 1
        if gso_type or gso_size or partial:
            self._rx_meta = (gso_type if gso_size else 0, gso_size if gso_type else 0, partial)
        try:
            self._receive_frame(frame, iface, pkt_id, trace or self.trace_all)
        except _Drop as d:
            self._record_drop(pkt_id, d)
        finally:
            self._rx_meta = _NO_META
        if self._local_queue:
            self._flush_local(now)
        return out

    def receive_ip(self, datagram: bytes, iface: str, now: float, *, trace: bool = False) -> Output:
        """An IPv4 datagram arrived on `iface` with no link layer (raw-IP captures, TUN devices)."""
        out = self._begin(now)
        pkt_id = self._new_pkt_id()
        try:
            dev = self._iface(iface)
            self._ip_rcv(datagram, dev, pkt_id, _PKT_HOST, b"", b"", trace or self.trace_all)
        except _Drop as d:
            self._record_drop(pkt_id, d)
        self._flush_local(now)
        return out

    def send_local(self, datagram: bytes, now: float, *, trace: bool = False) -> Output:
        """A local process sends `datagram` (saddr 0.0.0.0 means: let routing choose)."""
        out = self._begin(now)
        pkt_id = self._new_pkt_id()
        data, reason = ipv4.ip_rcv_core(datagram)
        if data is None:
            self._record_drop(pkt_id, _Drop(reason or DropReason.IP_HDR_TRUNCATED, "ip_local_out"))
        else:
            skb = Skb(data, pkt_id=pkt_id)
            if trace or self.trace_all:
                skb.trace = []
            self._local_queue.append((skb, now))
        self._flush_local(now)
        return out

    def next_deadline(self) -> float | None:
        """When `handle_timers` next has work to do, on the engine's clock; None: nothing is pending.

        The one deadline of everything timed (the model is aioquic's `get_timer`): the conntrack gc
        (`gc_worker`, at most every CT_GC_INTERVAL while the table holds entries; expiry itself is exact
        without it, as lookups treat an entry at or past its timeout as gone), the fragment queues'
        `ip_expire` timers, and (when resolving neighbours) the neighbour timers and their periodic gc."""
        best = self._gc_next if len(self.table) else None
        due = self.defrag.next_deadline()
        if due is not None and (best is None or due < best):
            best = due
        if self.resolve_neighbours:
            due = self.neighs.next_deadline()
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
        if self.resolve_neighbours:
            self._neigh_timers(now)
        for q in self.defrag.expire(now):
            self.stats[str(q.reason)] += q.fragments
            # ip_expire: "fragment reassembly time exceeded" only if the first fragment came, and for the
            # conntrack user only when the datagram was for this host (frag_expire_skip_icmp)
            local = self.fib.is_local(q.daddr)
            if q.head is not None and (q.icmp == IcmpOnExpire.ALWAYS or (q.icmp == IcmpOnExpire.IF_LOCAL and local)):
                body = icmp.build_icmp_error(ICMP_TIME_EXCEEDED, 1, q.head)
                if body:
                    self._queue_local(ipv4.build_ipv4(q.daddr if local else 0, q.saddr, 1, body, ttl=64,
                                                      tos=icmp.icmp_error_tos(q.head[1])))
        self._flush_local(now)
        return out

    def drain_events(self) -> list[CtEvent]:
        return self.table.drain_events()

    # --- host changes (notifiers) ----------------------------------------------------------------

    def link_down(self, dev: str, now: float) -> int:
        """`ip link set DEV down`: routes through it vanish, MASQUERADE entries via it are flushed (§5.2)."""
        self.host.interface(dev).up = False
        self.fib.rebuild()
        self.neighs.flush_dev(dev)  # neigh_ifdown: held packets are dropped without ICMP
        return masq_device_down(dev, table=self.table, now=now)

    def link_up(self, dev: str) -> None:
        self.host.interface(dev).up = True
        self.fib.rebuild()

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
        return sum(masq_addr_removed(dev, a.addr, table=self.table, now=now) for a in removed)

    def add_address(self, dev: str, addr: int, prefixlen: int) -> None:
        self.host.add_address(dev, addr, prefixlen)
        self.fib.rebuild()

    # --- internals: bookkeeping ------------------------------------------------------------------

    def _begin(self, now: float) -> Output:
        self._ctx.now = now
        self._skb = None
        self._out = Output()
        return self._out

    def _new_pkt_id(self) -> int:
        pkt_id = self._next_pkt_id
        self._next_pkt_id += 1
        return pkt_id

    def _record_drop(self, pkt_id: int, d: _Drop) -> None:
        self.stats[str(d.reason)] += 1
        skb = self._skb
        ct_id = skb.ct.ct_id if skb is not None and skb.pkt_id == pkt_id and skb.ct is not None else 0
        self._out.dropped.append(Dropped(pkt_id, str(d.reason), d.where, d.detail, ct_id))
        self._out.trace.append((pkt_id, f"DROP at {d.where}: {d.reason}{': ' + d.detail if d.detail else ''}"))

    def _iface(self, name: str) -> Interface:
        dev = self.host.interfaces.get(name)
        if dev is None:
            raise _Drop(DropReason.UNKNOWN_IFACE, "netif_receive", name)
        if not dev.up:
            raise _Drop(DropReason.LINK_DOWN, "netif_receive", name)
        return dev

    def _flush_trace(self, skb: Skb) -> None:
        if skb.trace:
            self._out.trace.extend((skb.pkt_id, step) for step in skb.trace)
            skb.trace.clear()

    # --- link layer ------------------------------------------------------------------------------

    def _receive_frame(self, frame: bytes, iface: str, pkt_id: int, trace: bool) -> None:
        dev = self.host.interfaces.get(iface)
        if dev is None or not dev.up:
            dev = self._iface(iface)  # raises the drop
        # ethernet.parse_ethernet, inline (`frame` is bytes: its slices are the copies)
        if len(frame) < _ETH_HLEN:
            raise _Drop(DropReason.SHORT_FRAME, "eth_type_trans", f"{len(frame)} bytes")
        dst_mac, src_mac, ethertype, offset = frame[0:6], frame[6:12], (frame[12] << 8) | frame[13], _ETH_HLEN
        if ethertype == _ETH_P_ARP:
            self._arp_rcv(frame[offset:], dev, pkt_id, self._pkt_type(dst_mac, dev))
            return
        if ethertype != _ETH_P_IP:
            raise _Drop(DropReason.NOT_IPV4, "netif_receive", f"ethertype 0x{ethertype:04x}")
        pkt_type = self._pkt_type(dst_mac, dev)
        if pkt_type == _PKT_OTHERHOST:
            raise _Drop(DropReason.OTHERHOST, "ip_rcv", f"frame for {ethernet.format_mac(dst_mac)}")
        key = None
        if (offset == 14 and pkt_type == _PKT_HOST and len(frame) >= 42 and frame[14] == 0x45
                and not frame[20] & 0x3F and not frame[21] and frame[26] != 127 and frame[30] != 127):
            if frame[23] in (6, 17):
                key = (dev.name, frame[:14], frame[23], frame[26:38])
                if self.fast_path and not trace and self._fast_forward(frame, dev, pkt_id, key):
                    return
            elif frame[23] == 1 and frame[34] in (0, 8):  # echo: compiled flows only (fastpath.py)
                key = (dev.name, frame[:14], 1, frame[26:36] + frame[38:40])
        self._ip_rcv(frame[offset:], dev, pkt_id, pkt_type, src_mac, dst_mac, trace, key)

    @staticmethod
    def _pkt_type(dst_mac: bytes, dev: Interface) -> PacketType:
        """`eth_type_trans`: HOST, BROADCAST, MULTICAST or OTHERHOST. An interface modelled without a MAC
        (all zeros) accepts every unicast frame, so captures taken on real hosts replay unchanged."""
        if dst_mac == _BROADCAST_MAC:
            return _PKT_BROADCAST
        if dst_mac[0] & 1:
            return _PKT_MULTICAST
        if dev.mac in (dst_mac, _NO_MAC):
            return _PKT_HOST
        return _PKT_OTHERHOST

    def _arp_rcv(self, payload: bytes, dev: Interface, pkt_id: int, pkt_type: PacketType) -> None:
        """`arp_rcv`: learn the sender, answer requests for our addresses on this device."""
        msg = arp.parse_arp(payload)
        if msg is None:
            raise _Drop(DropReason.SHORT_FRAME, "arp_rcv", "malformed ARP")
        for_us = msg.op == arp.ARPOP_REQUEST and any(a.addr == msg.target_ip for a in dev.addresses)
        if self.resolve_neighbours:
            if pkt_type == _PKT_OTHERHOST:
                return  # arp_rcv: not for this host
            released = self.neighs.arp_process(dev.name, msg, self._ctx.now, pkt_host=pkt_type == _PKT_HOST,
                                               target_local=for_us)
            for held in released:
                self._neigh_emit(dev, msg.sender_mac, held)
        elif msg.sender_ip:
            self.neigh[(dev.name, msg.sender_ip)] = msg.sender_mac
        if for_us:
            reply = arp.build_arp_reply(dev.mac, msg.target_ip, msg.sender_mac, msg.sender_ip)
            frame = ethernet.build_ethernet(msg.sender_mac, dev.mac, ethernet.ETH_P_ARP, reply)
            self._out.emitted.append(Emitted(dev.name, bytes(frame), pkt_id, 0))

    # --- IP input --------------------------------------------------------------------------------

    def _ip_rcv(self, payload: bytes, dev: Interface, pkt_id: int, pkt_type: PacketType,
                src_mac: bytes, dst_mac: bytes, trace: bool,
                key: tuple[str, bytes, int, bytes] | None = None) -> None:
        """`ip_rcv` → `ip_rcv_core` → PREROUTING → `ip_rcv_finish` (routing) → local or forward."""
        data, reason = ipv4.ip_rcv_core(payload)
        if data is None:
            raise _Drop(reason or DropReason.IP_HDR_TRUNCATED, "ip_rcv_core")
        skb = Skb(data, iif=dev.name, pkt_id=pkt_id)
        self._skb = skb
        if self._rx_meta is not _NO_META:
            skb.gso_type, skb.gso_size, skb.csum_partial = self._rx_meta
        skb.pkt_type = pkt_type
        skb.src_mac = src_mac
        skb.dst_mac = dst_mac
        skb.fast_key = key
        if trace:
            skb.trace = []
            if skb.trace is not None:
                skb.add_trace(f"ip_rcv on {dev.name}: {self._describe(skb)}")
        try:
            self._learn_neighbour(skb, dev)
            self._ip_rcv_skb(skb)
        finally:
            self._flush_trace(skb)

    def _ip_rcv_skb(self, skb: Skb) -> None:
        if self._run_hook(_HOOK_PRE_ROUTING, skb) == NF_STOLEN:
            return
        self._ip_rcv_finish(skb)

    def _learn_neighbour(self, skb: Skb, dev: Interface) -> None:
        """Learn the sender's MAC when it is on-link (what ARP would tell; natbox's shortcut offline)."""
        if skb.src_mac:
            saddr = skb.saddr
            if _on_link(dev, saddr):
                self.neigh[(dev.name, saddr)] = skb.src_mac

    def _ip_rcv_finish(self, skb: Skb) -> None:
        """`ip_rcv_finish_core` → `ip_route_input_noref` (after PREROUTING, so after DNAT)."""
        dev = self.host.interfaces[skb.iif]
        saddr, daddr = skb.saddr, skb.daddr
        lo_in = dev.kind == "loopback"
        # ip_route_input_slow's martian checks
        if saddr >> 28 == 0xE or saddr == 0xFFFFFFFF:
            raise _Drop(DropReason.MARTIAN_SOURCE, "ip_route_input", format_addr(saddr))
        if daddr == 0xFFFFFFFF or (saddr == 0 and daddr >> 28 != 0xE):
            if daddr == 0xFFFFFFFF:
                self._local_deliver(skb)
                return
        if daddr >> 28 == 0xE:
            # ip_route_input_mc: only groups the host has joined are delivered (every interface joins
            # 224.0.0.1, all-hosts); there is no multicast routing, so others are dropped here, after
            # PREROUTING and before a ct could be confirmed
            if daddr in JOINED_GROUPS:
                self._local_deliver(skb)
                return
            raise _Drop(DropReason.NO_ROUTE, "ip_route_input_mc", f"not a member of {format_addr(daddr)}")
        if not lo_in and not dev.route_localnet:
            if saddr >> 24 == 127:
                raise _Drop(DropReason.MARTIAN_SOURCE, "ip_route_input", format_addr(saddr))
            if daddr >> 24 == 127:
                raise _Drop(DropReason.MARTIAN_DESTINATION, "ip_route_input", format_addr(daddr))
        if daddr >> 24 == 0 or (saddr >> 24 == 0 and saddr != 0):
            raise _Drop(DropReason.MARTIAN_DESTINATION, "ip_route_input", format_addr(daddr))
        res = self.fib.lookup(daddr)
        if skb.ihl > 20:
            self._ip_rcv_options(skb)
        if res is not None and res.type in (RTN_LOCAL, RTN_BROADCAST):
            if skb.trace is not None:
                kind = "broadcast" if res.type == RTN_BROADCAST else "local"
                skb.add_trace(f"routing: {format_addr(daddr)} is {kind}")
            self._local_deliver(skb)
            return
        forwarding = dev.forwarding if dev.forwarding is not None else self.host.ip_forward
        if not forwarding:
            # ip_error without IN_DEV_FORWARD: dropped silently (§1.2, [V])
            raise _Drop(DropReason.FORWARDING_DISABLED, "ip_route_input", "net.ipv4.ip_forward = 0")
        if res is None:
            self._icmp_send(skb, ICMP_DEST_UNREACH, ICMP_NET_UNREACH)
            raise _Drop(DropReason.NO_ROUTE, "ip_route_input", f"no route to {format_addr(daddr)}")
        if res.type != RTN_UNICAST:
            code = {7: ICMP_HOST_UNREACH, 8: ICMP_PKT_FILTERED}.get(res.type)
            if code is not None:
                self._icmp_send(skb, ICMP_DEST_UNREACH, code)
            raise _Drop(DropReason.NO_ROUTE, "ip_route_input", f"route type {res.route.type}")
        skb.oif = res.dev or ""
        skb.nexthop = res.nexthop
        if skb.trace is not None:
            skb.add_trace(f"routing: forward via {skb.oif}"
                          + (f" gateway {format_addr(res.nexthop)}" if res.route.gateway is not None else ""))
        self._ip_forward(skb)

    def _ip_rcv_options(self, skb: Skb) -> None:
        """`ip_rcv_options` (after the input route): malformed options → parameter problem; source routes
        are dropped (accept_source_route = 0)."""
        _opts, reason, pointer = ipv4.ip_rcv_options(skb.data)
        if reason is None:
            return
        if pointer:
            self._icmp_send(skb, ICMP_PARAMETERPROB, 0, info=pointer << 24)
        raise _Drop(reason, "ip_rcv_options", "source route" if not pointer else f"bad option at byte {pointer}")

    # --- forwarding ------------------------------------------------------------------------------

    def _ip_forward(self, skb: Skb) -> None:
        """`ip_forward` (net/ipv4/ip_forward.c): TTL, MTU/DF, TTL decrement, FORWARD, then output."""
        if skb.pkt_type != _PKT_HOST:
            raise _Drop(DropReason.OTHERHOST, "ip_forward", "not addressed to this host at L2")
        if skb.data[8] <= 1:  # skb.ttl
            self._icmp_send(skb, ICMP_TIME_EXCEEDED, 0)
            raise _Drop(DropReason.TTL_EXCEEDED, "ip_forward", f"ttl {skb.ttl}")
        out_dev = self.host.interfaces[skb.oif]
        if self._exceeds_mtu(skb, out_dev.mtu):
            self._icmp_send(skb, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, info=out_dev.mtu)
            raise _Drop(DropReason.FRAG_NEEDED, "ip_forward", f"{len(skb.data)} > mtu {out_dev.mtu} with DF")
        ipv4.ip_decrease_ttl(skb.data)
        if skb.oif == skb.iif:
            self._maybe_redirect(skb, out_dev)
        if self._run_hook(_HOOK_FORWARD, skb) != NF_ACCEPT:
            return
        self._ip_output(skb)

    def _maybe_redirect(self, skb: Skb, dev: Interface) -> None:
        """`ip_rt_send_redirect()`: a packet leaving by the interface it came in on, from a host on that
        link towards a next hop on it too, earns its sender an ICMP host redirect (IPSKB_DOREDIRECT, set by
        __mkroute_input; send_redirects is on by default), paced per host (icmp_rate.py). NAT later drops
        the redirect unless the flow is un-NATed (§9), but the pacing state is stamped all the same."""
        nexthop = skb.nexthop or skb.daddr
        if not any(a.contains(skb.saddr) and a.contains(nexthop) for a in dev.addresses):
            return
        if self.icmp_rate.allow_redirect(skb.saddr, self._ctx.now):
            self._icmp_send(skb, ICMP_REDIRECT, ICMP_REDIR_HOST, info=nexthop)

    @staticmethod
    def _exceeds_mtu(skb: Skb, mtu: int) -> bool:
        """`ip_exceeds_mtu`: too big, DF set (or reassembled from fragments larger than the MTU); a GSO
        packet whose segments fit is not too big (`skb_gso_validate_network_len`)."""
        if len(skb.data) <= mtu:
            return False
        if not skb.frag_off & 0x4000:
            return False
        if skb.frag_max_size:
            return skb.frag_max_size > mtu
        return not (skb.gso_size and gso_network_seglen(skb.data, skb.gso_size) <= mtu)

    # --- the fast path -----------------------------------------------------------------------------

    def _remember_flow(self, skb: Skb) -> None:
        """Cache the forwarding decision the slow path just made for an established TCP/UDP packet.

        The SYN that created a TCP ct is remembered too, for the packets that follow it in its direction:
        they arrive as ESTABLISHED once the reply is seen (the handshake's ACK), with the same addresses
        after DNAT, so the same route. `_fast_forward` checks the ct and ctinfo of each packet and hands
        anything else (a retransmitted SYN, still NEW) to the slow path at the same point.
        """
        ct, key = skb.ct, skb.fast_key
        if ct is None or key is None or not ct.confirmed or skb.frag_max_size:
            return
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

    def _flow_entry(self, skb: Skb, ct: Conn, key: tuple[str, bytes, int, bytes], ctinfo: CtInfo) -> None:
        """Store the tier-2 entry of `key` (bounded by FLOW_CACHE_MAX, the oldest evicted first)."""
        dev = self.host.interfaces[skb.iif]
        learn = _on_link(dev, int.from_bytes(key[3][:4], "big"))
        if len(self._flows) >= FLOW_CACHE_MAX and key not in self._flows:
            del self._flows[next(iter(self._flows))]
        self._flows[key] = (ct, ctinfo, skb.daddr, skb.oif, skb.nexthop, self.fib.generation, learn)

    def tier2_plan(self) -> tuple[bool, bool, bool, bool]:
        """What the fast paths ask of the ruleset, worked out once per ruleset version (every change to the
        tables, `present` or the conntrack registration bumps `Ruleset.version`): whether the flow cache may
        be used at all (raw PREROUTING absent, conntrack registered, a nat table), and whether mangle
        PREROUTING, mangle+filter FORWARD and mangle POSTROUTING are absent. A flow may be compiled
        (`FlowCache`) only when all four hold: nothing but conntrack and nat sees its packets."""
        rules = self.rules
        if rules is self._plan_rules and rules.version == self._plan_version:
            return self._plan
        pre, fwd, post = _HOOK_PRE_ROUTING, _HOOK_FORWARD, _HOOK_POST_ROUTING
        self._plan = (rules.is_trivial("raw", pre) and rules.needs_conntrack() and "nat" in rules.present,
                      rules.is_trivial("mangle", pre),
                      rules.is_trivial("mangle", fwd) and rules.is_trivial("filter", fwd),
                      rules.is_trivial("mangle", post))
        self._plan_rules, self._plan_version = rules, rules.version
        return self._plan

    def _fast_forward(self, frame: bytes, dev: Interface, pkt_id: int, key: tuple[str, bytes, int, bytes]) -> bool:
        """Forward a packet of an established TCP/UDP flow with the slow path's cached decisions.

        Conntrack (checksums, TCP window tracking, timeouts) and NAT run for every packet exactly as in
        the slow path; what is cached is only what cannot change while the FIB generation is the same:
        the route (out device, next hop). Every table is still consulted unless it is empty with an
        ACCEPT policy. Anything unusual (another ct or ctinfo, a changed destination, TTL 1, a packet
        over the MTU) continues in the slow path at the same point, so the result is identical.
        Returns False, having changed nothing, when the slow path must handle the packet from the start.
        """
        entry = self._flows.get(key)
        if entry is None:
            return False
        conn, ctinfo, daddr_after, oif, nexthop, gen, learn = entry
        usable, mangle_pre_trivial, forward_trivial, mangle_post_trivial = self.tier2_plan()
        if gen != self.fib.generation or not usable:
            return False
        data, _reason = ipv4.ip_rcv_core(frame[14:])
        if data is None:
            return False
        skb = Skb(data, iif=dev.name, pkt_id=pkt_id)
        self._skb = skb
        if self._rx_meta is not _NO_META:
            skb.gso_type, skb.gso_size, skb.csum_partial = self._rx_meta
        skb.src_mac = frame[6:12]
        skb.dst_mac = frame[:6]
        skb.fast_key = key
        if learn:
            self.neigh[(dev.name, skb.saddr)] = skb.src_mac
        ctx = self._ctx
        now = ctx.now
        skb.hook = ctx.hook = _HOOK_PRE_ROUTING
        if nf_conntrack_in(skb, _HOOK_PRE_ROUTING, now, self.table, self.cfg) != NF_ACCEPT:
            raise self._verdict_drop(_HOOK_PRE_ROUTING, "conntrack", skb)
        if skb.ct is not conn or skb.ctinfo != ctinfo or not mangle_pre_trivial:
            if self._run_hook(_HOOK_PRE_ROUTING, skb, self._pre_after_ct) == NF_ACCEPT:
                self._ip_rcv_finish(skb)
            return True
        nat = self.nat
        if nat.nf_nat_ipv4_fn(skb, _HOOK_PRE_ROUTING, now=now, table=self.table, rnd=self.rnd,
                              run_chain=self._nat_chain[_HOOK_PRE_ROUTING]) != NF_ACCEPT:
            raise self._verdict_drop(_HOOK_PRE_ROUTING, "nat", skb)
        out = self.host.interfaces.get(oif)
        forwarding = dev.forwarding if dev.forwarding is not None else self.host.ip_forward
        if skb.daddr != daddr_after or not forwarding or out is None or not out.up or out.kind == "loopback":
            self._ip_rcv_finish(skb)
            return True
        skb.oif = oif
        skb.nexthop = nexthop
        if data[8] <= 1 or len(data) > out.mtu:
            self._ip_forward(skb)
            return True
        ipv4.ip_decrease_ttl(data)
        if not forward_trivial:
            if self._run_hook(_HOOK_FORWARD, skb) != NF_ACCEPT:
                return True
        if not mangle_post_trivial:
            self._ip_output(skb)
            return True
        skb.hook = ctx.hook = _HOOK_POST_ROUTING
        if nat.nf_nat_ipv4_fn(skb, _HOOK_POST_ROUTING, now=now, table=self.table, rnd=self.rnd,
                              run_chain=self._nat_chain[_HOOK_POST_ROUTING]) != NF_ACCEPT:
            raise self._verdict_drop(_HOOK_POST_ROUTING, "nat", skb)
        # confirm: the ct is confirmed already (an established flow), nothing to do
        gso_type, gso_size = (skb.gso_type, skb.gso_size) if skb.gso_size and len(data) > out.mtu else (0, 0)
        self._neigh_output(out, nexthop, skb, data, gso_type, gso_size, skb.csum_partial)
        self._flowcache.compile(skb, key)  # again, if the compiled flow went stale (a rule or route change)
        return True

    # --- output ----------------------------------------------------------------------------------

    def _ip_output(self, skb: Skb) -> None:
        """`ip_output` → POSTROUTING → `ip_finish_output` (fragment, resolve neighbour, transmit)."""
        if self._run_hook(_HOOK_POST_ROUTING, skb) != NF_ACCEPT:
            return
        dev = self.host.interfaces[skb.oif]
        if dev.kind == "loopback":
            self._loopback_xmit(skb)
            return
        if skb.gso_size and not skb.frag_max_size:
            self._ip_finish_output_gso(skb, dev)
            return
        # __ip_finish_output: refragment reassembled datagrams to their largest fragment, fragment what
        # exceeds the MTU, or refuse with FRAG_NEEDED when DF forbids it (ip_fragment)
        partial = skb.csum_partial
        if partial and len(skb.data) > dev.mtu:
            complete_partial_csum(skb.data)  # ip_do_fragment: "cleanup checksum before fragmentation"
            skb.csum_partial = partial = False
        pieces: list[bytearray]
        if len(skb.data) <= dev.mtu and not skb.frag_max_size:
            # ip_output_fragments' first case (nothing to fragment) without its copy: the piece is only read
            pieces, icmp_mtu = [skb.data], 0
        else:
            pieces, icmp_mtu = ipv4.ip_output_fragments(
                skb.data, dev.mtu, frag_max_size=skb.frag_max_size, frag_pmtu=skb.frag_pmtu,
                frag_list=skb.frag_list, ignore_df=bool(skb.frag_max_size))
        if not pieces:
            self._icmp_send(skb, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, info=icmp_mtu)
            raise _Drop(DropReason.FRAG_NEEDED, "ip_fragment", f"{len(skb.data)} > mtu {icmp_mtu} with DF")
        nexthop = skb.nexthop or skb.daddr
        for piece in pieces:
            self._neigh_output(dev, nexthop, skb, piece, 0, 0, partial)
        if skb.fast_key is not None and len(pieces) == 1:
            self._remember_flow(skb)
        if skb.trace is not None:
            skb.add_trace(f"ip_finish_output: sent on {dev.name}"
                          + (f" as {len(pieces)} fragments" if len(pieces) > 1 else "")
                          + f": {self._describe(skb)}")

    def _ip_finish_output_gso(self, skb: Skb, dev: Interface) -> None:
        """`ip_finish_output_gso()`: a GSO packet leaves whole when its segments fit the MTU; otherwise it
        is segmented in software and each segment goes through `ip_fragment` (natbox.wire.gso)."""
        mtu = dev.mtu
        nexthop = skb.nexthop or skb.daddr
        if gso_network_seglen(skb.data, skb.gso_size) <= mtu or len(skb.data) <= mtu:
            whole = len(skb.data) > mtu
            self._neigh_output(dev, nexthop, skb, skb.data, skb.gso_type if whole else 0, skb.gso_size if whole else 0,
                               skb.csum_partial)
            if skb.fast_key is not None:
                self._remember_flow(skb)
            return
        segs = gso_segment(skb.data, skb.gso_type, skb.gso_size)
        if segs is None:
            raise _Drop(DropReason.GSO_SEGMENT, "skb_gso_segment",
                        f"gso_type {skb.gso_type} gso_size {skb.gso_size} on a {len(skb.data)}-byte packet")
        sent = 0
        for seg in segs:
            pieces, icmp_mtu = ipv4.ip_output_fragments(seg, mtu)
            if not pieces:
                self._icmp_send(_piece_of(skb, seg), ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, info=icmp_mtu)
                self.stats[str(DropReason.FRAG_NEEDED)] += 1
                continue
            for piece in pieces:
                self._neigh_output(dev, nexthop, skb, piece, 0, 0, False)
                sent += 1
        if skb.trace is not None:
            skb.add_trace(f"ip_finish_output_gso: segments of {skb.gso_size} bytes exceed mtu {mtu}: "
                          f"{len(segs)} segments, {sent} frames sent on {dev.name}")

    def _neigh_output(self, dev: Interface, nexthop: int, skb: Skb, datagram: bytes | bytearray, gso_type: int,
                      gso_size: int, partial: bool) -> None:
        """`ip_finish_output2` → `neigh_output()`: put the next hop's MAC on `datagram` and send it, or (live
        mode, next hop unresolved) hold it while ARP resolves (`neigh_resolve_output`)."""
        mac: bytes | None
        if not self.resolve_neighbours:
            mac = self._neigh_resolve(dev, nexthop)
        elif nexthop == 0xFFFFFFFF or _is_subnet_broadcast(dev, nexthop):
            mac = _BROADCAST_MAC
        elif nexthop >> 28 == 0xE:
            mac = b"\x01\x00\x5e" + (nexthop & 0x7FFFFF).to_bytes(3, "big")  # ip_eth_mc_map
        else:
            now = self._ctx.now
            mac = self.neighs.lookup(dev.name, nexthop, now)
            if mac is None:
                held = (skb, bytes(datagram), gso_type, gso_size, partial)
                reqs, dropped = self.neighs.queue(dev.name, nexthop, held, skb_truesize(len(datagram)), now,
                                                  saddr=skb.saddr)
                for req in reqs:
                    self._out.emitted.append(Emitted(req.dev, build_arp_solicit(
                        req, dev.mac, arp_solicit_saddr(req, dev, self.fib)), skb.pkt_id, 0))
                for old in dropped:
                    self._record_held_drop(old, DropReason.NEIGH_QUEUEFULL, "__neigh_event_send")
                if skb.trace is not None:
                    skb.add_trace(f"neighbour {format_addr(nexthop)} on {dev.name} unresolved: held while ARP "
                                  "resolves")
                return
        # _neigh_emit, without copying the datagram first (bytes + bytearray is bytes)
        ct = skb.ct
        self._out.emitted.append(Emitted(dev.name, mac + dev.mac + b"\x08\x00" + datagram, skb.pkt_id,
                                         ct.ct_id if ct is not None else 0, gso_type, gso_size, partial))

    def _neigh_emit(self, dev: Interface, mac: bytes, held: _Held) -> None:
        skb, datagram, gso_type, gso_size, partial = held
        self._out.emitted.append(Emitted(dev.name, mac + dev.mac + b"\x08\x00" + datagram, skb.pkt_id,
                                         skb.ct.ct_id if skb.ct is not None else 0, gso_type, gso_size, partial))

    def _record_held_drop(self, held: _Held, reason: DropReason, where: str) -> None:
        skb = held[0]
        self.stats[str(reason)] += 1
        self._out.dropped.append(Dropped(skb.pkt_id, str(reason), where, format_addr(skb.daddr),
                                         skb.ct.ct_id if skb.ct is not None else 0))

    def _neigh_timers(self, now: float) -> None:
        """`neigh_timer_handler()` for every entry due: requests go out; each packet held by an entry that
        FAILED earns its sender ICMP host unreachable (`arp_error_report` → `ipv4_link_failure` →
        `icmp_send`, which skips non-first fragments and is rate-limited) and is dropped."""
        reqs, failed = self.neighs.timers(now)
        for req in reqs:
            dev = self.host.interfaces.get(req.dev)
            if dev is not None:
                self._out.emitted.append(Emitted(req.dev, build_arp_solicit(
                    req, dev.mac, arp_solicit_saddr(req, dev, self.fib)), 0, 0))
        for held in failed:
            skb, datagram = held[0], held[1]
            nskb = _piece_of(skb, bytearray(datagram))
            self._skb = nskb
            self._icmp_send(nskb, ICMP_DEST_UNREACH, ICMP_HOST_UNREACH)
            self._record_held_drop(held, DropReason.NEIGH_FAILED, "neigh_invalidate")
        self._skb = None

    def _neigh_resolve(self, dev: Interface, nexthop: int) -> bytes:
        """The next hop's MAC: known (static or learned), else a stable synthetic one (offline mode)."""
        if nexthop == 0xFFFFFFFF or _is_subnet_broadcast(dev, nexthop):
            return b"\xff" * 6
        mac = self.neigh.get((dev.name, nexthop))
        if mac is None:
            self.stats["neigh_synthetic"] += 1
            mac = b"\x02\x00" + nexthop.to_bytes(4, "big")
        return mac

    def _loopback_xmit(self, skb: Skb) -> None:
        """`loopback_xmit` → `netif_rx`: the skb comes back in on lo, its ct still attached (§4.1)."""
        if self._depth >= LOOPBACK_DEPTH_MAX:
            raise _Drop(DropReason.NO_ROUTE, "loopback_xmit", "loop depth exceeded")
        self._depth += 1
        try:
            skb.iif = "lo"
            skb.oif = ""
            skb.pkt_type = _PKT_LOOPBACK
            skb.add_trace("loopback_xmit: back in on lo")
            self._ip_rcv_skb(skb)
        finally:
            self._depth -= 1

    # --- local delivery --------------------------------------------------------------------------

    def _local_deliver(self, skb: Skb) -> None:
        """`ip_local_deliver` → LOCAL_IN → the local stack (`ip_local_deliver_finish`)."""
        if self._run_hook(_HOOK_LOCAL_IN, skb) != NF_ACCEPT:
            return
        self._local_stack(skb)

    def _local_stack(self, skb: Skb) -> None:
        """What the host's own stack does with a datagram for it: echo replies, resets, port unreachables."""
        proto = skb.protocol
        data = skb.data
        broadcast = skb.pkt_type in (_PKT_BROADCAST, _PKT_MULTICAST) or \
            self.fib.addr_type(skb.daddr) in (RTN_BROADCAST, RTN_MULTICAST)
        if proto == 1 and skb.l4_len >= 8:
            if data[skb.ihl] == ICMP_ECHO and not broadcast:
                body = bytes(data[skb.ihl + 4:])
                ident, seq = (body[0] << 8) | body[1], (body[2] << 8) | body[3]
                reply = icmp.build_icmp_echo(ident, seq, body[4:], reply=True)
                out = ipv4.build_ipv4(skb.daddr, skb.saddr, 1, reply, ttl=64)
                self._deliver(skb, "icmp echo request answered")
                self._queue_local(out)
                return
            self._deliver(skb, "icmp to the local stack")
            return
        if proto in (6, 17) and skb.l4_len >= 4:
            dport = skb.l4_u16(2) or 0
            if (proto, dport) in self.listeners:
                self._deliver(skb, f"socket {'tcp' if proto == 6 else 'udp'}:{dport}")
                return
            if broadcast:
                self._deliver(skb, "no socket (broadcast: no reply)")
                return
            if proto == 17:
                self._icmp_send(skb, ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, local=True)
                self._deliver(skb, f"udp port {dport} closed: port unreachable sent")
                return
            self._tcp_send_reset(skb)
            self._deliver(skb, f"tcp port {dport} closed")
            return
        self._deliver(skb, f"protocol {proto} delivered")

    def _deliver(self, skb: Skb, action: str) -> None:
        if skb.trace is not None:
            skb.add_trace(f"ip_local_deliver_finish: {action}")
        self._out.delivered.append(Delivered(skb.pkt_id, bytes(skb.data), action,
                                             skb.ct.ct_id if skb.ct is not None else 0))

    def _tcp_send_reset(self, skb: Skb) -> None:
        """`tcp_v4_send_reset` for a segment to a closed port (none in answer to a reset)."""
        rst = build_reset_for(bytes(skb.data))
        if rst is not None:
            self._queue_local(rst)

    # --- locally generated packets ---------------------------------------------------------------

    def _queue_local(self, datagram: bytes | bytearray, *, attach: Skb | None = None) -> None:
        """Send a datagram the host's stack generated (attached to `attach`'s ct, nf_ct_attach)."""
        data = bytearray(datagram)
        nskb = Skb(data, pkt_id=attach.pkt_id if attach is not None else self._current_pkt_id())
        if attach is not None and attach.ct is not None:
            # nf_ct_attach(): the new packet belongs to the old one's ct, in the other direction
            nskb.ct = attach.ct
            reply = attach.ctinfo.direction == _DIRN_ORIGINAL
            nskb.ctinfo = _CTINFO_RELATED_REPLY if reply else _CTINFO_RELATED
        if attach is not None and attach.trace is not None:
            nskb.trace = []
        self._send_now(nskb)

    def _send_now(self, nskb: Skb) -> None:
        """Send a packet the host generates while handling another one, at once, as the kernel does
        (icmp_send, nf_send_reset and icmp_reply call ip_local_out in the middle of the packet's path: a
        redirect or an error leaves before the packet that caused it goes on, with its ct as it is then).
        Nesting is bounded by LOCAL_NESTING_MAX."""
        if self._nested >= LOCAL_NESTING_MAX:
            self.stats["local_nesting_exceeded"] += 1
            return
        saved_hook, saved_skb = self._ctx.hook, self._skb
        self._nested += 1
        self._skb = nskb
        try:
            self._ip_local_out(nskb)
        except _Drop as d:
            self._record_drop(nskb.pkt_id, d)
        finally:
            self._flush_trace(nskb)
            self._nested -= 1
            self._ctx.hook, self._skb = saved_hook, saved_skb

    def _current_pkt_id(self) -> int:
        return self._next_pkt_id - 1

    def _flush_local(self, now: float) -> None:
        """Send what the host generated while handling the input (bounded by LOCAL_QUEUE_MAX)."""
        sent = 0
        while self._local_queue and sent < LOCAL_QUEUE_MAX:
            skb, _t = self._local_queue.pop(0)
            self._skb = skb
            sent += 1
            self._ctx.now = now
            try:
                self._ip_local_out(skb)
            except _Drop as d:
                self._record_drop(skb.pkt_id, d)
            finally:
                self._flush_trace(skb)
        self._local_queue.clear()

    def _ip_local_out(self, skb: Skb) -> None:
        """`ip_route_output` → `__ip_local_out` → LOCAL_OUT → (reroute after DNAT) → `ip_output`."""
        self._route_output(skb)
        if skb.trace is not None:
            skb.add_trace(f"ip_local_out: {self._describe(skb)} via {skb.oif}")
        daddr = skb.daddr
        if self._run_hook(_HOOK_LOCAL_OUT, skb) != NF_ACCEPT:
            return
        if skb.daddr != daddr:  # nf_nat_ipv4_local_fn → ip_route_me_harder
            self._route_output(skb)
        self._ip_output(skb)

    def _route_output(self, skb: Skb) -> None:
        """`ip_route_output_key`: the out device and next hop; a source address if the sender left it 0.

        A local destination goes out `lo` with itself as source (the local route's prefsrc); 127/8 from
        127.0.0.1. A 127/8 source may leave a non-loopback device only with route_localnet there (§8).
        """
        daddr = skb.daddr
        src: int | None = None
        if self.fib.is_local(daddr) or daddr >> 24 == 127:
            skb.oif = "lo"
            skb.nexthop = daddr
            src = 0x7F000001 if daddr >> 24 == 127 else daddr
        else:
            res = self.fib.lookup(daddr)
            if res is None or res.type != RTN_UNICAST or res.dev is None:
                raise _Drop(DropReason.NO_ROUTE, "ip_route_output", f"no route to {format_addr(daddr)}")
            skb.oif = res.dev
            skb.nexthop = res.nexthop
            src = res.route.prefsrc
            out = self.host.interfaces[res.dev]
            if skb.saddr >> 24 == 127 and out.kind != "loopback" and not out.route_localnet:
                raise _Drop(DropReason.MARTIAN_SOURCE, "ip_route_output",
                            f"{format_addr(skb.saddr)} may not leave {out.name} (route_localnet = 0)")
        if skb.saddr == 0:
            if src is None:
                src = self.fib.select_addr(skb.oif, daddr)
            if src is None:
                raise _Drop(DropReason.NO_ROUTE, "ip_route_output", "no source address")
            self._set_local_source(skb, src)

    @staticmethod
    def _set_local_source(skb: Skb, src: int) -> None:
        """Fill in the source the stack chose, with the IP and TCP/UDP checksums it would have written."""
        data = skb.data
        ipv4.set_saddr(data, src)
        l4 = skb.ihl
        proto = data[9]
        off = {6: 16, 17: 6}.get(proto)
        if off is None or skb.is_later_fragment or len(data) < l4 + off + 2:
            return
        check = (data[l4 + off] << 8) | data[l4 + off + 1]
        if proto == 17 and check == 0:
            return  # no UDP checksum
        check = csum_replace4(check, 0, src)
        if proto == 17 and check == 0:
            check = 0xFFFF
        data[l4 + off:l4 + off + 2] = check.to_bytes(2, "big")

    # --- ICMP errors and REJECT ------------------------------------------------------------------

    def _icmp_send(self, skb: Skb, icmp_type: int, code: int, *, info: int = 0, local: bool = False) -> None:
        """`icmp_send` (net/ipv4/icmp.c): build the error about `skb` and send it from this host,
        attached to `skb`'s ct (`nf_ct_attach` in icmp_glue_bits) so NAT translates it (§4.9)."""
        data = bytes(skb.data)
        dtype = self.fib.addr_type(skb.daddr)
        allowed = icmp.icmp_error_allowed(
            data, icmp_type=icmp_type, pkt_type_host=skb.pkt_type in (_PKT_HOST, _PKT_LOOPBACK),
            dst_broadcast=dtype == RTN_BROADCAST, dst_multicast=dtype == RTN_MULTICAST)
        body = icmp.build_icmp_error(icmp_type, code, data, info=info) if allowed else b""
        if not body:
            if skb.trace is not None:
                skb.add_trace(f"icmp_send: no ICMP error (type {icmp_type}) for this packet (RFC 1122)")
            return
        to_self = self.fib.is_local(skb.saddr) or skb.saddr >> 24 == 127
        if not self.icmp_rate.allow_error(skb.saddr, icmp_type, code, self._ctx.now, loopback=to_self):
            if skb.trace is not None:
                skb.add_trace(f"icmp_send: ICMP type {icmp_type} to {format_addr(skb.saddr)} rate-limited "
                              "(icmp_ratelimit: a burst of 6, then 1/s per host)")
            self.stats["icmp_ratelimit_host"] += 1
            return
        saddr = skb.daddr if local or self.fib.is_local(skb.daddr) else 0
        out = ipv4.build_ipv4(saddr, skb.saddr, 1, body, ttl=64, tos=icmp.icmp_error_tos(skb.tos))
        if skb.trace is not None:
            skb.add_trace(f"icmp_send: ICMP type {icmp_type} code {code} to {format_addr(skb.saddr)}")
        self._queue_local(out, attach=skb)

    def reject(self, skb: Skb, reject_with: str, now: float) -> None:
        """REJECT's packet: an ICMP error (`nf_send_unreach`) or a TCP reset (`nf_send_reset`)."""
        if reject_with == "tcp-reset":
            rst = build_reset_for(bytes(skb.data))
            if rst is not None:
                self._queue_local(rst, attach=skb)
            return
        icmp_type, code = REJECT_CODES.get(reject_with, (ICMP_DEST_UNREACH, ICMP_PORT_UNREACH))
        self._icmp_send(skb, icmp_type, code)

    def log_packet(self, skb: Skb, prefix: str, level: int, flags: int = 0) -> None:
        """The LOG target's line in the kernel's format (`nf_log_ip_packet`, see engine/log.py)."""
        mac = None
        if skb.iif:
            mac = skb.dst_mac + skb.src_mac + b"\x08\x00" if skb.src_mac else (
                bytes(12) + b"\x08\x00" if skb.iif == "lo" else b"")
        text = format_log_line(prefix, skb.data, iif=skb.iif, oif=skb.oif, mac=mac, mark=skb.mark, flags=flags)
        self._out.logs.append(LogLine(skb.pkt_id, text))

    # --- explanations ----------------------------------------------------------------------------

    @staticmethod
    def _describe(skb: Skb) -> str:
        proto = skb.protocol
        src, dst = format_addr(skb.saddr), format_addr(skb.daddr)
        if proto in (6, 17) and skb.l4_len >= 4:
            name = "TCP" if proto == 6 else "UDP"
            return f"{name} {src}:{skb.l4_u16(0)} > {dst}:{skb.l4_u16(2)} ttl {skb.ttl}"
        if proto == 1 and skb.l4_len >= 2:
            return f"ICMP {src} > {dst} type {skb.data[skb.ihl]} code {skb.data[skb.ihl + 1]} ttl {skb.ttl}"
        return f"proto {proto} {src} > {dst} ttl {skb.ttl}"

    def _trace_ct(self, skb: Skb) -> None:
        ct = skb.ct
        if ct is None:
            state = "UNTRACKED" if skb.untracked else "INVALID"
            if skb.trace is not None:
                skb.add_trace(f"nf_conntrack_in: {state}" + (f" ({skb.note})" if skb.note else ""))
            return
        what = "existing" if ct.confirmed else "new (unconfirmed)"
        if skb.trace is not None:
            skb.add_trace(f"nf_conntrack_in: ctinfo {skb.ctinfo.name}, {what} ct #{ct.ct_id}: "
                          f"original {ct.original}, reply {ct.reply}")
