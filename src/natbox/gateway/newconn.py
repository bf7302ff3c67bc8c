"""`natbox gateway --offload-new`: new TCP connections opened by the kernel datapath, natbox still the owner of
the table (issue #16, new connections per second).

The engine makes templates of template-safe SYNs (engine/template.py); natbox_offload.bpf.c built with
-DNB_NEW_FLOWS forwards a later SYN of the same key itself, creating both directions' entries flagged
TRACKED, and copies every packet of such a flow to a ring buffer (offload/newflows.py). `NewConnections`:

- after every wakeup (`sync`), and before the frames of a packet socket are handled (`drain`, so that a
  packet the program passed up is never seen before the copies that came before it): the template requests
  become nb_tmpl updates, and each copy in the ring buffer is fed to the engine as the packet it was (the
  frame rebuilt from its headers with the payload's length, CHECKSUM_PARTIAL so conntrack does not verify
  the sum of bytes it was not given): the SYN that created a flow's entries through `Engine.open_copy` (its ct
  made from the template's decision, engine/template.py), a handshake or close packet through
  `Engine.track_copy` (conntrack alone), anything else through `Engine.receive` (what the engine emits is
  dropped, the program forwarded the packet). So the ct, its state, timeouts, window, events, accounting and
  the rule counters are what natbox's own path makes of the same packets;
- the SYN that created the entries (NB_EV_CREATED) is checked: the ct natbox made must have the binding the
  program used (the reply tuple the entry's rewrite implies); if not, the entries go and the disagreement is
  counted (`disagree`);
- a SYN of a template's key that natbox's own path forwarded (the program sent it up: its tuples held by a ct
  in TIME_WAIT or CLOSE that the SYN reopened, natbox NB_EVENTS_BACKLOG behind, the ring buffer full) gets the
  two TRACKED entries the program would have created, installed before the SYN leaves, when its ct has the
  template's binding (`_opened`, counted `handed`): the rest of the connection is the program's, copied, as
  if it had opened it, instead of every packet on natbox's own path (which under load kept natbox behind);
- a flow's entries go when its ct reaches TIME_WAIT or CLOSE or is destroyed; when natbox offloads the ct
  (ESTABLISHED and ASSURED) its ordinary entries replace them;
- nb_ct mirrors every TCP ct's two tuples (`ConntrackTable.register_insert`/`register_destroy`), so the
  program's NOEXIST claim of a new flow's tuples fails, and the SYN goes up, where natbox's own NAT would
  have chosen another binding (the tuples of a flow the program created it claimed itself: not again);
- when a flow the program carries (opened or handed, never offloaded as established) closes in TIME_WAIT or
  CLOSE with a FIN seen (`tcp_close_init`: a SYN then reopens the ct, `tcp_packet`), its tuples are marked
  NB_CT_REOPEN after its entries went: a client reconnecting from the same port has its SYN forwarded by
  the program, which claims over the marks, and natbox's copy of it reopens the ct (`open_copy`), instead of
  the SYN going up (live_bench's loop reuses ports within seconds);
- the map deletions (entries of closed flows, tuples of cts gone) wait for the end of the `drain` and go
  in one BPF_MAP_DELETE_BATCH per map (`flush`); a claim cancels a release of the same tuple waiting.

Known window: a ct natbox's own path confirms in the same moment the program claims the same tuple for a
SYN (two clients, the same port, the same server) is not detected before the SYN's copy is fed; it then
counts as a disagreement.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from natbox.conntrack.conn import Conn
from natbox.conntrack.proto.tcp import tcp_close_init
from natbox.conntrack.tuple import ConnTuple
from natbox.engine.engine import Engine
from natbox.engine.template import TemplateAdd, TemplateDel, TemplateKey
from natbox.errors import NatboxError
from natbox.netfilter import CtStatus, TcpState
from natbox.offload.entry import OffloadAction, OffloadKey, decode_action
from natbox.offload.newflows import (
    EV_COPY,
    EV_CREATED,
    EVENT_HEAD,
    EVENT_SIZE,
    encode_ct_key,
    template_entry,
    tracked_entries,
)
from natbox.wire.layout import (
    ETH_HDR_LEN,
    IPH_DADDR,
    IPH_MIN_LEN,
    IPH_SADDR,
    IPH_TOT_LEN,
    TCPH_DEST,
    TCPH_DOFF,
    TCPH_SOURCE,
)

__all__ = ["NewConnections", "NewFlowMapsLike", "RingLike"]

_IP = ETH_HDR_LEN
_L4 = ETH_HDR_LEN + IPH_MIN_LEN  # the program takes IHL 5 only
_CLOSED = (TcpState.TIME_WAIT, TcpState.CLOSE)
_OFFLOAD = int(CtStatus.OFFLOAD)
_EV_DATA = EVENT_HEAD.size  # struct nb_event's data
_NO_EVENT = (0, 0, 0, 0, 0)  # a record of another size: no device


def _ct_key(t: ConnTuple) -> bytes:
    return encode_ct_key(t.src, t.dst, t.sport, t.dport, 6)


def _ct_keys(conn: Conn) -> tuple[bytes, ...]:
    """The ct's two tuples as nb_ct keys; none for a ct nb_ct does not hold (not TCP, or IPv6)."""
    for t in conn.tuples:
        if t.proto != 6 or t.src >> 32 or t.dst >> 32:
            return ()
    return tuple(_ct_key(t) for t in conn.tuples)


def _reply_of(action: OffloadAction, sport: int) -> ConnTuple:
    """The REPLY tuple a packet from client port `sport` rewritten by `action` (its sport replaced by `sport`,
    as the program does) implies: the inverse of what it leaves with."""
    return ConnTuple(action.daddr, action.dport, action.saddr, sport, 6)


class NewFlowMapsLike(Protocol):
    """natbox.offload.datapath.NewFlowMaps, as the gateway uses it."""

    def install_template(self, key: OffloadKey, value: bytes) -> None: ...

    def remove_template(self, key: OffloadKey) -> None: ...

    def claim(self, ct_key: bytes) -> None: ...

    def release(self, ct_keys: list[bytes]) -> None: ...

    def remove_tracked(self, keys: list[OffloadKey]) -> None: ...

    def install_tracked(self, entries: list[tuple[OffloadKey, bytes]]) -> None: ...

    def mark_reopen(self, ct_keys: list[bytes]) -> None: ...


class RingLike(Protocol):
    """natbox.offload.newflows.EventRing: the records waiting, oldest first."""

    def consume(self) -> list[bytes]: ...

    def close(self) -> None: ...


class NewConnections:
    """The templates installed, the copies fed, the TRACKED flows (see the module docstring)."""

    def __init__(self, engine: Engine, maps: NewFlowMapsLike, ring: RingLike, ifindex: Callable[[str], int],
                 ifnames: dict[int, str], *, action: Callable[[OffloadKey], bytes | None],
                 clock: Callable[[], float], log: Callable[[str], None] = lambda text: None) -> None:
        self.engine = engine
        self.maps = maps
        self.ring = ring
        self._ifindex = ifindex
        self._ifnames = ifnames
        self._action = action  # the installed action of a key (nb_flows), for a SYN of a template already gone
        self._clock = clock
        self.log = log
        self.templates: dict[TemplateKey, OffloadKey] = {}  # engine template key → the map's key
        # the map's template key → its ORIGINAL action (decoded once) and its nb_tmpl
        self._tmpl: dict[OffloadKey, tuple[OffloadAction, bytes]] = {}
        self.tracked: dict[int, tuple[OffloadKey, OffloadKey]] = {}  # ct id → its TRACKED entries
        self._creating = False  # feeding a created SYN: the program claimed its tuples already
        self._unflow: list[OffloadKey] = []  # TRACKED entries to delete at the next `flush`
        self._unclaim: dict[bytes, None] = {}  # nb_ct tuples to release at the next `flush` (an ordered set)
        self._reopen: dict[bytes, None] = {}  # nb_ct tuples to mark NB_CT_REOPEN at the next `flush`
        self.stats = {"templates": 0, "fed": 0, "created": 0, "handed": 0, "closed": 0, "disagree": 0,
                      "claims": 0, "bad_events": 0, "errors": 0}
        self.last_error = ""
        engine.table.register_insert(self._inserted)
        engine.table.register_destroy(self._destroyed)
        if engine.templates is not None:
            engine.templates.on_opened = self._opened

    # --- templates -------------------------------------------------------------------------------

    def sync(self) -> None:
        """The loop's after-wakeup hook: copies fed, then the engine's template requests carried out."""
        self.drain()
        for req in self.engine.template_requests():
            try:
                if isinstance(req, TemplateAdd):
                    entry = template_entry(req.template, self._ifindex)
                    if entry is None:
                        continue
                    self.maps.install_template(entry.key, entry.value)
                    self.templates[req.template.key] = entry.key
                    self._tmpl[entry.key] = (decode_action(entry.value[:48]), entry.value)
                    self.stats["templates"] += 1
                elif isinstance(req, TemplateDel):
                    key = self.templates.pop(req.key, None)
                    if key is not None:
                        self._forget(key)
                        self.maps.remove_template(key)
                else:  # TemplateFlush: every template goes at once
                    for key in self.templates.values():
                        self._forget(key)
                        self.maps.remove_template(key)
                    self.templates.clear()
            except (NatboxError, OSError) as exc:
                self._error(f"offload-new: {exc}")

    def _forget(self, key: OffloadKey) -> None:
        """A template leaves the map: what natbox kept of it goes (a created SYN's copy still waiting finds its
        entry's action in nb_flows, `_created`)."""
        self._tmpl.pop(key, None)

    def _opened(self, conn: Conn, tkey: TemplateKey) -> None:
        """`FlowTemplates.on_opened`: natbox's own path forwarded the SYN of a connection template `tkey` covers
        (the program sent it up: its tuples were held by a ct in TIME_WAIT that this SYN reopened, natbox was
        NB_EVENTS_BACKLOG behind on the copies, or the ring buffer was full). When the ct has the template's
        binding, its two TRACKED entries are installed as the program would have created them
        (`tracked_entries`), before the SYN leaves: the rest of the connection is forwarded by the program and
        copied to natbox like a connection it opened, instead of every packet taking natbox's own path."""
        key = self.templates.get(tkey)
        tmpl = None if key is None else self._tmpl.get(key)
        if key is None or tmpl is None or conn.ct_id in self.tracked:
            return
        action, value = tmpl
        orig = conn.tuples[0]
        if conn.tuples[1] != _reply_of(action, orig.sport):
            return  # another binding (the template's port was taken): natbox's own path keeps the connection
        first, second = tracked_entries(value, key, orig.sport)
        keys = (first[0], second[0])
        if self._unflow:  # a deletion of the same keys waiting (a ct this SYN replaced) must not follow
            self._unflow = [k for k in self._unflow if k not in keys]
        try:
            self.maps.install_tracked([first, second])
        except (NatboxError, OSError) as exc:
            self._error(f"offload-new: {exc}")
            return
        self.tracked[conn.ct_id] = keys
        self.stats["handed"] += 1

    # --- the ring buffer -----------------------------------------------------------------------------

    def drain(self) -> int:
        """Feed every copy waiting in the ring buffer to the engine, oldest first; returns how many. The map
        deletions it leads to (and any waiting) are made at the end, batched (`flush`)."""
        records = self.ring.consume()
        if not records:
            self.flush()
            return 0
        now = self._clock()
        engine = self.engine  # calls on it stay direct: native calls in the compiled build
        ifnames, stats, tracked = self._ifnames, self.stats, self.tracked
        try:
            for raw in records:
                # struct nb_event (decode_event, without the record made)
                ifindex, copied, flags, _length, _ts = EVENT_HEAD.unpack_from(raw) if len(raw) >= EVENT_SIZE \
                    else _NO_EVENT
                name = ifnames.get(ifindex)
                if name is None or copied < _L4 + TCPH_DOFF + 1:
                    stats["bad_events"] += 1
                    continue
                data = raw[_EV_DATA:_EV_DATA + min(copied, EV_COPY)]
                hdr = min(len(data), _L4 + (data[_L4 + TCPH_DOFF] >> 4) * 4)
                total = _IP + ((data[_IP + IPH_TOT_LEN] << 8) | data[_IP + IPH_TOT_LEN + 1])
                frame = data[:hdr] + bytes(total - hdr) if total > hdr else data[:hdr]
                stats["fed"] += 1
                created = bool(flags & EV_CREATED)
                conn = None if created else engine.track_copy(frame, name, now)
                if conn is None:
                    conn = self._feed(frame, name, ifindex, created, now)
                    if conn is None:
                        continue
                if conn.ct_id in tracked and (conn.status & _OFFLOAD
                                              or (conn.tcp is not None and conn.tcp.state in _CLOSED)):
                    self._untrack(conn, "offloaded" if conn.status & _OFFLOAD else "closed")
        finally:
            self.flush()
        return len(records)

    def _feed(self, frame: bytes, name: str, ifindex: int, created: bool, now: float) -> Conn | None:
        """A copy conntrack alone could not take: the SYN that created a flow (from its template's decision, else
        the slow path), or anything else through the slow path; its ct afterwards."""
        self._creating = created
        try:
            if not (created and self.engine.open_copy(frame, name, now)):
                # the program forwarded it: natbox's output is dropped
                self.engine.receive(frame, name, now, partial=True)
        finally:
            self._creating = False
        b = int.from_bytes
        t = ConnTuple(b(frame[_IP + IPH_SADDR:_IP + IPH_SADDR + 4], "big"),
                      b(frame[_L4 + TCPH_SOURCE:_L4 + TCPH_SOURCE + 2], "big"),
                      b(frame[_IP + IPH_DADDR:_IP + IPH_DADDR + 4], "big"),
                      b(frame[_L4 + TCPH_DEST:_L4 + TCPH_DEST + 2], "big"), 6)
        hit = self.engine.table.lookup(t, now)
        conn = None if hit is None else hit[0]
        if created:
            self._created(t, conn, ifindex, now)
        return conn

    def _created(self, t: ConnTuple, conn: Conn | None, ifindex: int, now: float) -> None:
        """The SYN that made a flow's entries was fed (`conn`: the ct holding its tuple now): its ct must have
        the binding the program used."""
        self.stats["created"] += 1
        key = OffloadKey(ifindex, 6, t.src, t.dst, t.sport, t.dport)
        tmpl = self._tmpl.get(OffloadKey(ifindex, 6, t.src, t.dst, 0, t.dport))
        action = None if tmpl is None else tmpl[0]
        if action is None:
            raw = self._action(key)
            if raw is None:
                return  # the entries are gone already
            action = decode_action(raw)
        reply = _reply_of(action, t.sport)
        reply_key = OffloadKey(action.oif, 6, reply.src, reply.dst, reply.sport, reply.dport)
        if conn is not None and conn.tuples[1] == reply:
            self.tracked[conn.ct_id] = (key, reply_key)
            return
        self.stats["disagree"] += 1
        self._error(f"offload-new: natbox's binding of {t} differs from the datapath's: entries removed")
        self._unflow.extend((key, reply_key))
        for claimed in (t, reply):
            if self.engine.table.lookup(claimed, now) is None:
                self._release(_ct_key(claimed))

    # --- entries and tuples ----------------------------------------------------------------------

    def flush(self) -> None:
        """The deletions waiting, one batch per map (BPF_MAP_DELETE_BATCH): the TRACKED entries of flows that
        closed or disagreed, the nb_ct tuples of cts that left the table; then the tuples of closed cts a SYN
        would reopen marked (one BPF_MAP_UPDATE_BATCH). Made at the end of every `drain`
        (before the loop hands frames to the engine and before the offload's requests are carried out, so a
        deletion never follows an update of the same key made after it)."""
        if self._unflow:
            keys, self._unflow = self._unflow, []
            try:
                self.maps.remove_tracked(keys)
            except (NatboxError, OSError) as exc:
                self._error(f"offload-new: {exc}")
        if self._unclaim:
            ct_keys, self._unclaim = list(self._unclaim), {}
            try:
                self.maps.release(ct_keys)
            except (NatboxError, OSError) as exc:
                self._error(f"offload-new: {exc}")
        if self._reopen:  # after the entries went: the program's NOEXIST on nb_flows must find them gone
            ct_keys, self._reopen = list(self._reopen), {}
            try:
                self.maps.mark_reopen(ct_keys)
            except (NatboxError, OSError) as exc:
                self._error(f"offload-new: {exc}")

    def next_deadline(self) -> float | None:
        """The loop's timer (`EventLoop.add_timers`): due at once while deletions wait (a ct that expired in
        the engine's timers, after this turn's `drain`), so that they are made in the next turn, not after
        the loop's idle wait."""
        return 0.0 if self._unflow or self._unclaim or self._reopen else None

    def handle_timers(self, now: float) -> None:
        self.flush()

    def _untrack(self, conn: Conn, why: str) -> None:
        keys = self.tracked.pop(conn.ct_id, None)
        if keys is None:
            return
        if why != "offloaded":  # offloaded: natbox's ordinary entries replaced them
            self._unflow.extend(keys)
        self.stats["closed"] += 1
        if why == "closed" and conn.tcp is not None and tcp_close_init(conn.tcp):
            # a SYN of its tuple reopens it (tcp_packet): the program may open that flow itself once the
            # entries are gone, claiming over the marks (its reply tuple is the template's, as this flow's)
            self._reopen.update(dict.fromkeys(_ct_keys(conn)))

    def _inserted(self, conn: Conn) -> None:
        """A ct confirmed (ConntrackTable.register_insert): its TCP tuples go to nb_ct. A release or mark of
        the same tuples waiting (a ct this one replaced) must not follow the claim."""
        ct_keys = _ct_keys(conn)
        for ct_key in ct_keys:
            self._unclaim.pop(ct_key, None)
            self._reopen.pop(ct_key, None)
        if not ct_keys or self._creating:
            return  # the program claimed them when it created the flow (over a reopened ct's marks, maybe)
        for ct_key in ct_keys:
            try:
                self.maps.claim(ct_key)
            except (NatboxError, OSError) as exc:
                self._error(f"offload-new: {exc}")
        self.stats["claims"] += 1

    def _destroyed(self, conn: Conn) -> None:
        """A ct left the table (or died unconfirmed): its entries and tuples go (at the next `flush`)."""
        self._untrack(conn, "destroyed")
        if not conn.status & CtStatus.CONFIRMED:
            return  # died unconfirmed: never claimed (a created flow's SYN that natbox dropped: _created)
        for ct_key in _ct_keys(conn):
            self._release(ct_key)

    def _release(self, ct_key: bytes) -> None:
        self._reopen.pop(ct_key, None)
        self._unclaim[ct_key] = None

    def _error(self, text: str) -> None:
        self.stats["errors"] += 1
        if self.last_error != text:
            self.log(text)
        self.last_error = text

    # --- visibility and the end --------------------------------------------------------------------

    def report(self) -> str:
        templates = self.engine.templates
        why = "" if templates is None or not templates.unsafe else f" (none made: {templates.unsafe})"
        return (f"offload-new: {len(self.templates)} templates{why}, {len(self.tracked)} tracked flows, "
                + ", ".join(f"{k} {v}" for k, v in self.stats.items()))

    def close(self) -> None:
        """The last copies fed (the maps go with the datapath)."""
        try:
            self.drain()
        finally:
            self.ring.close()
