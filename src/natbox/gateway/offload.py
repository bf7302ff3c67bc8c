"""`natbox gateway --offload`: the engine decides, a kernel datapath forwards (issue #16).

The engine (engine/offload.py) says which established flows a datapath may carry and when they come back
(`Engine.offload_requests()`: OffloadAdd with both directions' compiled plans, OffloadDel); natbox.offload's
`Datapath` is a tc BPF program on clsact ingress of the AF_PACKET interfaces natbox owns, with a map of
per-direction rewrites. `GatewayOffload` connects the two:

- each loop turn (`sync`, after every wakeup): the engine's requests become map updates, an entry pair per
  ct (`offload_entry(plan, ifindex)` builds an entry from a plan and nothing else); a plan the datapath
  cannot express (`offload_entry` says None) is handed back (`Engine.offload_refused`) and the flow stays
  on natbox's own path;
- at least once a second (`handle_timers`), before every control-socket `conntrack` command and before
  the state is saved (`fold`): one batched read of the map's per-entry counters and last-seen times,
  folded into the cts (`Engine.offload_stats`: accounting exact to that granularity, timeouts refreshed);
  also before entries are removed, so no counted packet is lost;
- at the stop (`close`, also on SIGTERM/SIGINT, which end the loop): a last fold, the filters and maps go.

A full map (MAX_FLOWS entries; the kernel says E2BIG) refuses the flow, which stays on natbox's own path,
correct and counted (`full` in `natbox status`); no install into that map is tried again until an entry of
it goes (no system call per new flow while full). Each entry pair that goes lets one flow of its family
refused that way be offered again (`FlowOffload.retry`: its next packet through natbox offloads it), at
most FULL_RETRIES times per ct. IPv4 and IPv6 flows have maps of their own (nb_flows, nb_flows6), so each
family is full or not on its own: a full IPv4 map pauses no IPv6 install, nor the other way round. The
kernel's flowtable has no fixed size; its `flow_offload_add` failing leaves the ct to the slow path and
`nft_flow_offload_eval` tries again at the next packet.

TAP devices natbox holds the fd of are not offloaded: their frames never cross a kernel path natbox could
hand a flow to (natbox reads and writes them itself). Frames the datapath redirects never reach natbox's
packet sockets, which --offload binds per ethertype (`ports.ProtocolPort`): a protocol's packet sockets
are served after tc ingress, ETH_P_ALL ones (tcpdump) before it, so tcpdump still sees offloaded packets.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from typing import Generic, Protocol, TypeVar

from natbox.conntrack.format import PROTO_NAMES
from natbox.conntrack.tuple import format_addr
from natbox.engine.engine import Engine
from natbox.engine.fastpath import FlowPlan
from natbox.engine.offload import OffloadAdd
from natbox.errors import NatboxError
from natbox.gateway.log import ERR, say
from natbox.gateway.loop import EVENT_READ, EventLoop
from natbox.gateway.newconn import NewConnections
from natbox.netfilter import NFPROTO_IPV4, NFPROTO_IPV6
from natbox.offload.datapath import Datapath, OffloadMapFull, detach_stale, ifindex
from natbox.offload.entry import OffloadAction, OffloadKey, offload_entry
from natbox.offload.newflows import EventRing

__all__ = ["FOLD_INTERVAL", "GatewayOffload", "Offload", "remove_stale_filters", "start_offload"]

FOLD_INTERVAL = 1.0  # seconds between two reads of the datapath's counters
RECENT_MAX = 64  # offload events `natbox status` shows (the newest)
FULL_RETRIES = 3  # times a ct refused for a full map is offered again once entries go
WAITING_MAX = 4096  # cts refused for a full map remembered for those offers (the oldest forgotten)

K = TypeVar("K", bound=Hashable)
A = TypeVar("A")
A_contra = TypeVar("A_contra", contravariant=True)


class FlowStatsLike(Protocol):
    """natbox.offload.entry.FlowStats: one entry's counters since it was installed."""

    @property
    def packets(self) -> int: ...

    @property
    def bytes(self) -> int: ...

    @property
    def last_seen_ns(self) -> int: ...  # CLOCK_MONOTONIC, as the gateway's clock (time.monotonic)


class DatapathLike(Protocol[K, A_contra]):
    """natbox.offload.datapath.Datapath, as the gateway uses it."""

    def attach(self, ifname: str) -> None: ...

    def install(self, key: K, action: A_contra) -> None: ...

    def remove(self, key: K) -> None: ...

    def stats(self) -> Mapping[K, FlowStatsLike]: ...

    def close(self) -> None: ...


class GatewayOffload(Generic[K, A]):
    """The installed entries of one gateway and the folding of their counters (see the module docstring)."""

    def __init__(self, engine: Engine, datapath: DatapathLike[K, A], entry: Callable[
            [FlowPlan, Callable[[str], int]], tuple[K, A] | None], ifindex: Callable[[str], int], *,
            clock: Callable[[], float] = time.monotonic, log: Callable[[str], None] = lambda text: None) -> None:
        self.engine = engine
        self.datapath = datapath
        self._entry = entry
        self._ifindex = ifindex
        self._clock = clock
        self.log = log  # errors (once each in a row)
        self.recent: deque[str] = deque(maxlen=RECENT_MAX)  # flows offloaded and come back, newest last
        self.ifnames: list[str] = []  # the interfaces the datapath is attached to
        self.installed: dict[int, tuple[K, K]] = {}  # ct id -> the entry keys of its ORIGINAL and REPLY direction
        self._family: dict[int, int] = {}  # ct id -> the family of its plans (its entries' map), while installed
        self._owner: dict[K, tuple[int, int]] = {}  # entry key -> (ct id, direction)
        self._next_fold = 0.0
        self.stats = {"installed": 0, "removed": 0, "refused": 0, "full": 0, "folds": 0, "errors": 0}
        self.last_error = ""
        self.full_maps: set[int] = set()  # the families whose map the last install found full (no entry went since)
        self._waiting: dict[int, dict[int, int]] = {}  # family -> ct id -> times refused for a full map, oldest first
        self.newconn: NewConnections | None = None  # --offload-new (gateway/newconn.py)

    @property
    def full(self) -> bool:
        """Whether a map (IPv4's or IPv6's) is full."""
        return bool(self.full_maps)

    # --- requests --------------------------------------------------------------------------------

    def sync(self) -> None:
        """Carry out the engine's requests (the loop calls it after every wakeup)."""
        requests = self.engine.offload_requests()
        if not requests:
            return
        if any(not isinstance(r, OffloadAdd) for r in requests):
            self.fold()  # what the entries about to go counted belongs to their cts
        for req in requests:
            if isinstance(req, OffloadAdd):
                self._install(req)
            else:
                self._remove(req.ct_id, req.reason)

    def drive(self, loop: EventLoop) -> None:
        """Wire into `loop`: removals before the frame that caused them leaves, the rest of the requests after
        every wakeup, counters folded by the timers."""
        loop.before_emit = self.before_emit
        loop.after_wakeup.append(self.sync)
        loop.add_timers(self)

    def before_emit(self) -> None:
        """Between a frame's engine run and its leaving (the loop's `before_emit`): a flow that frame brought
        back (FIN, RST) loses its entries first. Else the peer's answer to that FIN could still be carried by
        the datapath past natbox's conntrack, as the kernel's flowtable never lets it (nf_flow_tcp_state tears
        the flow down before the FIN goes on)."""
        if self.engine.offload_removal_pending():
            self.sync()

    def _install(self, req: OffloadAdd) -> None:
        try:
            entries = [self._entry(plan, self._ifindex) for plan in req.plans]
        except (NatboxError, OSError, ValueError) as exc:  # an interface gone between the plan and now
            self._error(f"offload: ct {req.ct_id}: {exc}")
            entries = [None]
        if any(e is None for e in entries):
            self.stats["refused"] += 1
            self.engine.offload_refused(req.ct_id)
            return
        if req.ct_id in self.installed:
            self._remove(req.ct_id, "replaced")
        family = req.plans[0].family
        if family in self.full_maps:  # no room in its map since the last try: not even a system call
            self._map_full(req.ct_id, family)
            return
        keys: list[K] = []
        try:
            for e in entries:
                if e is not None:
                    self.datapath.install(e[0], e[1])
                    keys.append(e[0])
        except (NatboxError, OSError) as exc:  # the map is full or the kernel refused: the flow stays natbox's
            for key in keys:
                self._remove_key(key)
            if _is_full(exc):
                self.full_maps.add(family)
                self.log(f"offload: {exc}: new {_FAMILY_NAMES.get(family, family)} flows stay on natbox's path "
                         "until entries go")
                self._map_full(req.ct_id, family)
            else:
                self._error(f"offload: ct {req.ct_id}: installing failed: {exc}")
                self.engine.offload_refused(req.ct_id)
            return
        self._waiting.get(family, {}).pop(req.ct_id, None)
        first, second = keys
        self.installed[req.ct_id] = (first, second)
        self._family[req.ct_id] = family
        self._owner[first] = (req.ct_id, 0)
        self._owner[second] = (req.ct_id, 1)
        self.stats["installed"] += 1
        plan = req.plans[0]
        self.recent.append(f"{self._clock():.3f} ct {req.ct_id} {plan.iif}->{plan.oif} offloaded")

    def _map_full(self, ct_id: int, family: int) -> None:
        """The ct stays on natbox's path: counted, and remembered for an offer once entries of its map go."""
        self.stats["full"] += 1
        waiting = self._waiting.setdefault(family, {})
        times = waiting.pop(ct_id, 0) + 1
        if times <= FULL_RETRIES:
            if len(waiting) >= WAITING_MAX:
                del waiting[next(iter(waiting))]
            waiting[ct_id] = times
        self.engine.offload_refused(ct_id)

    def _offer_waiting(self, family: int) -> None:
        """An entry pair of `family` went: the oldest ct refused for that family's full map (and still there) is
        offered again."""
        offload = self.engine.offload
        waiting = self._waiting.get(family, {})
        while waiting and offload is not None:
            ct_id = next(iter(waiting))
            times = waiting.pop(ct_id)
            if offload.retry(ct_id):
                waiting[ct_id] = times  # newest now: it counts its tries on
                return

    def _remove(self, ct_id: int, reason: str) -> None:
        keys = self.installed.pop(ct_id, None)
        if keys is None:
            return
        for key in keys:
            self._owner.pop(key, None)
            self._remove_key(key)
        self.stats["removed"] += 1
        self.recent.append(f"{self._clock():.3f} ct {ct_id} back to natbox ({reason})")
        family = self._family.pop(ct_id, 0)
        self.full_maps.discard(family)
        self._offer_waiting(family)

    def _remove_key(self, key: K) -> None:
        try:
            self.datapath.remove(key)
        except (NatboxError, OSError) as exc:
            self._error(f"offload: removing an entry failed: {exc}")

    def _error(self, text: str) -> None:
        self.stats["errors"] += 1
        if self.last_error != text:
            self.log(text)
        self.last_error = text

    # --- counters --------------------------------------------------------------------------------

    def fold(self) -> None:
        """One batched read of the datapath's counters, folded into the cts."""
        if not self.installed:
            return
        try:
            counted = self.datapath.stats()
        except (NatboxError, OSError) as exc:
            self._error(f"offload: reading the counters failed: {exc}")
            return
        self.stats["folds"] += 1
        owner = self._owner
        fold = self.engine.offload_stats
        for key, st in counted.items():
            who = owner.get(key)
            if who is None or not st.packets:
                continue
            fold(who[0], who[1], st.packets, st.bytes, st.last_seen_ns / 1e9)  # bytes: IP total lengths

    def next_deadline(self) -> float | None:
        return self._next_fold if self.installed else None

    def handle_timers(self, now: float) -> None:
        """The loop's timer: fold the counters once a second."""
        if now >= self._next_fold:
            self._next_fold = now + FOLD_INTERVAL
            self.fold()

    # --- visibility and the end --------------------------------------------------------------------

    def report(self) -> str:
        """The lines `natbox status` shows: the map's size, counters, and each offloaded flow's."""
        self.fold()  # the figures as of now
        offload = self.engine.offload
        full = "".join(f", {_FAMILY_NAMES.get(f, f)} map full" for f in sorted(self.full_maps))
        lines = [f"offload: {len(self.installed)} flows offloaded, {len(self._owner)} map entries, "
                 + ", ".join(f"{k} {v}" for k, v in self.stats.items()) + full]
        if offload is not None:
            came_back = ", ".join(f"{k} {v}" for k, v in offload.stats.items() if v)
            lines.append(f"offload decisions: {came_back or 'none'}")
            lines.append(f"offload carried: {offload.carried[0]} packets, {offload.carried[1]} bytes")
            now = self._clock()
            for ct_id, flow in sorted(offload.flows.items()):
                t = flow.conn.tuples[0]
                lines.append(f"  ct {ct_id} {PROTO_NAMES.get(t.proto, t.proto)} src={format_addr(t.src)} "
                             f"dst={format_addr(t.dst)} sport={t.sport} dport={t.dport} "
                             f"original packets={flow.packets[0]} bytes={flow.bytes[0]} "
                             f"reply packets={flow.packets[1]} bytes={flow.bytes[1]} "
                             f"idle {max(now - flow.last_seen, 0.0):.1f}s")
        if self.newconn is not None:
            lines.append(self.newconn.report())
        if self.recent:
            lines.append("offload events (newest last):" + "".join(f"\n  {e}" for e in self.recent))
        return "\n".join(lines)

    def close(self) -> None:
        """The last fold, then the datapath goes (filters detached, maps unpinned)."""
        try:
            if self.newconn is not None:
                self.newconn.close()
            self.fold()
        finally:
            self.installed.clear()
            self._family.clear()
            self._owner.clear()
            self.datapath.close()


_FAMILY_NAMES = {NFPROTO_IPV4: "IPv4", NFPROTO_IPV6: "IPv6"}  # FlowPlan.family


def _is_full(exc: BaseException) -> bool:
    """Whether an install failed because the map is full (the kernel's E2BIG; ENOSPC too)."""
    return isinstance(exc, OffloadMapFull) or (isinstance(exc, OSError) and exc.errno in (errno.E2BIG,
                                                                                           errno.ENOSPC))


Offload = GatewayOffload[OffloadKey, OffloadAction]
WORKDIR_PREFIX = "natbox-offload-"  # + the gateway's pid, under the temporary directory


def _remove_stale_workdirs() -> None:
    """The workdirs of gateways that were killed (SIGKILL: no close) go: those whose pid is not running."""
    tmp = tempfile.gettempdir()
    for name in os.listdir(tmp):
        pid = name.removeprefix(WORKDIR_PREFIX)
        if name.startswith(WORKDIR_PREFIX) and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            shutil.rmtree(os.path.join(tmp, name), ignore_errors=True)


def start_offload(engine: Engine, loop: EventLoop, ifnames: list[str], *, seal: bool = False,
                  new_flows: bool = False) -> Offload | None:
    """The datapath on `ifnames` (the AF_PACKET interfaces natbox owns), wired into the loop: requests carried
    out after every wakeup, counters folded every second. `seal` (--user): its bpffs and workdir go once it is
    attached (`Datapath.seal`), while root may still remove them. `new_flows` (--offload-new): the program
    handles new connections from the engine's templates too (gateway/newconn.py). None (having said why in one
    line) when it cannot start."""
    if not ifnames:
        say("--offload: no AF_PACKET interface to offload on (TAP devices natbox holds cross no kernel path)", ERR)
        return None
    _remove_stale_workdirs()
    try:
        datapath = Datapath(os.path.join(tempfile.gettempdir(), f"{WORKDIR_PREFIX}{os.getpid()}"),
                            new_flows=new_flows)
    except NatboxError as exc:
        say(f"--offload: {exc}", ERR)
        return None
    try:
        for name in ifnames:
            datapath.attach(name)
    except NatboxError as exc:
        datapath.close()
        say(f"--offload: {exc}", ERR)
        return None
    if seal:
        datapath.seal()
    attached = frozenset(ifnames)

    def attached_ifindex(name: str) -> int:
        # 0 (offload_entry declines) for a device without the program: a TAP natbox holds would get the
        # redirected frames on natbox's own fd, as if the VM had sent them
        return ifindex(name) if name in attached else 0

    offload: Offload = GatewayOffload(engine, datapath, offload_entry, attached_ifindex, log=say)
    offload.ifnames = list(ifnames)
    if datapath.new_flows is not None:
        try:
            ring = EventRing(datapath.new_flows.events_fd)
        except OSError as exc:
            datapath.close()
            say(f"--offload-new: {exc}", ERR)
            return None
        newconn = offload.newconn = NewConnections(
            engine, datapath.new_flows, ring, attached_ifindex, {ifindex(name): name for name in ifnames},
            action=datapath.action, clock=time.monotonic, log=say)
        loop.after_wakeup.append(newconn.sync)  # the copies first: what they do to the cts, offload.sync carries out
        loop.before_frames.append(newconn.drain)
        loop.add_timers(newconn)  # deletions an expiry left are made in the next turn
        loop.watch(ring.fileno(), EVENT_READ, lambda mask: None)  # wakes the loop; after_wakeup drains
    offload.drive(loop)
    return offload


def remove_stale_filters(ifnames: list[str]) -> None:
    """At every start, with --offload or without: a natbox killed before it closed its datapath left its
    program on the devices, forwarding the flows it held past this one; it goes (one warning each)."""
    if shutil.which("tc") is None:
        return
    for name in ifnames:
        try:
            if detach_stale(name):
                say(f"warning: {name}: removed the offload filter a natbox that was killed left forwarding its flows")
        except (NatboxError, OSError) as exc:
            say(f"warning: {name}: {exc}")
