"""The event loop: frames from ports (AF_PACKET sockets, TAPs) into the engine, its output back out.

One `selectors` wakeup reads up to `batch` frames from each ready port (round robin), calls
`engine.receive(frame, iface, now=time.monotonic())` for each and transmits `Output.emitted` on the port
named by each `Emitted.iface`. Timers: the loop sleeps until `engine.next_deadline()` (at most
SELECT_TIMEOUT_MAX) and then calls `engine.handle_timers(now)`, which does everything due.

Other descriptors (the control socket and its clients) share the same poll: `watch(fd, events, callback)`
calls `callback(mask)` when the descriptor is ready. Their callbacks must never block (non-blocking
sockets only): a slow client costs the packets nothing. `Timers` added with `add_timers` (the control
server's idle timeouts) get `handle_timers(now)` once their `next_deadline()` has come, and that
deadline shortens the poll like the engine's own.

Offloads: a frame read as a GSO packet (gso_size > 0) is one 64 KiB super-packet. The engine's
`receive` takes each frame's `gso_type`, `gso_size` and `partial`, and each `Emitted` it returns carries
its own (natbox.engine.output): the frame leaves with those, its partial checksum field as the engine
left it (no byte of the payload is read or copied here).

Zero-copy reads: a port may hand out long frames as memoryviews of its receive ring, valid until its
next `recv_batch`. The loop gives them to the engine as they are (a compiled flow copies only the
headers and returns the payload as `Emitted.tail`, which is sent from the ring; every other path
copies) and sends everything a frame caused before it reads from that port again.

Bounds: nothing is queued inside the loop. At most `batch` frames per port are read per wakeup; a frame
the kernel refuses (full socket buffer) is dropped and counted, as a full qdisc would drop it.
Stop: `stop()`, or SIGTERM/SIGINT once `install_signal_handlers()` was called (the signal wakes the
selector through a socketpair, so the loop exits within one batch).
"""

from __future__ import annotations

import contextlib
import functools
import selectors
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Protocol, runtime_checkable

from natbox.adapters.vnet import GSO_TCPV4, GSO_TCPV6, RxFrame
from natbox.wire.layout import ETH_HDR_LEN, IP6H_LEN, IPH_VER_IHL, TCPH_DOFF

__all__ = ["EngineLike", "EventLoop", "OutputLike", "Port", "Timers"]

BATCH_DEFAULT = 64  # frames read from one port per wakeup
SELECT_TIMEOUT_MAX = 0.5  # seconds: the loop looks at its stop flag at least this often
ETH_HLEN = ETH_HDR_LEN
EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE


class Port(Protocol):
    """A device the loop reads frames from and writes frames to (PacketSocket, TapDevice)."""

    ifname: str

    def fileno(self) -> int: ...

    def recv_batch(self, max_frames: int) -> list[RxFrame]: ...

    def send(self, frame: bytes | bytearray, gso_type: int = 0, gso_size: int = 0, partial: bool = False,
             csum_ready: bool = False, tail: memoryview | None = None) -> bool: ...

    def close(self) -> None: ...


@runtime_checkable
class ReportsTruncation(Protocol):
    """A port that can say when a frame was cut short and dropped (PacketSocket, ProtocolPort): without vnet
    headers, a peer's super-packet larger than a receive ring slot never reaches the loop as a frame."""

    on_truncated: Callable[[int], None] | None


class EmittedLike(Protocol):
    """What the loop reads of `natbox.engine.output.Emitted`: where a frame goes and how it leaves (GSO
    metadata, and whether its checksum is partial: then the field holds the final pseudo-header sum)."""

    @property
    def iface(self) -> str: ...

    @property
    def frame(self) -> bytes: ...

    @property
    def gso_type(self) -> int: ...

    @property
    def gso_size(self) -> int: ...

    @property
    def partial(self) -> bool: ...

    @property
    def tail(self) -> memoryview | None: ...


class OutputLike(Protocol):
    @property
    def emitted(self) -> Sequence[EmittedLike]: ...


class EngineLike(Protocol):
    def receive(self, frame: bytes | memoryview, iface: str, now: float, *, gso_type: int = 0, gso_size: int = 0,
                partial: bool = False) -> OutputLike: ...

    def next_deadline(self) -> float | None: ...

    def handle_timers(self, now: float) -> OutputLike: ...


class Timers(Protocol):
    """Something with timed work besides the engine (the control server's idle timeouts)."""

    def next_deadline(self) -> float | None: ...

    def handle_timers(self, now: float) -> None: ...


Watcher = Callable[[int], None]  # called with the ready event mask


class EventLoop:
    """Drives `engine` with the frames of `ports` (keyed by the engine's interface names)."""

    def __init__(self, engine: EngineLike, ports: dict[str, Port], *, mtus: dict[str, int] | None = None,
                 batch: int = BATCH_DEFAULT, clock: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self.warn: Callable[[str], None] = lambda text: None  # one-line diagnostics (the gateway: stderr)
        self.ports = ports
        self.mtus = {name: (mtus or {}).get(name, 1500) for name in ports}
        self._rx_limit = {name: self.mtus[name] + ETH_HLEN + 4 for name in ports}  # + an 802.1Q tag
        self._tx = {name: port.send for name, port in ports.items()}  # bound once: per packet, one lookup
        self.batch = batch
        self.clock = clock
        self.stats: Counter[str] = Counter()
        self._sel = selectors.DefaultSelector()
        self._stopping = False
        self._hangup = False
        self.on_hangup: Callable[[], None] | None = None  # SIGHUP: called from the loop, between packets
        self.after_wakeup: list[Callable[[], None]] = []  # called after each wakeup (control-socket events)
        # called when frames were read from a port, before the engine sees them (--offload-new: the copies of
        # the packets the datapath forwarded before them go first)
        self.before_frames: list[Callable[[], object]] = []
        # called after the engine took each frame and before what it emitted leaves (--offload: entries of flows
        # that came back go first)
        self.before_emit: Callable[[], None] | None = None
        self._said_rx_error: dict[str, str] = {}  # port -> the last read error reported
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._timers: list[Timers] = []
        for name, port in ports.items():
            self._sel.register(port.fileno(), selectors.EVENT_READ, name)
            if isinstance(port, ReportsTruncation):
                port.on_truncated = functools.partial(self._truncated, name)
        self._old_handlers: dict[int, object] = {}
        self._old_wakeup_fd: int | None = None

    # --- control ---------------------------------------------------------------------------------

    def watch(self, fd: int, events: int, callback: Watcher) -> None:
        """Call `callback(mask)` when `fd` is ready for `events` (EVENT_READ | EVENT_WRITE); watching a
        descriptor again changes its events and callback. The callback must not block."""
        try:
            self._sel.modify(fd, events, callback)
        except KeyError:
            self._sel.register(fd, events, callback)

    def unwatch(self, fd: int) -> None:
        """Stop watching `fd` (before it is closed)."""
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(fd)

    def add_timers(self, timers: Timers) -> None:
        self._timers.append(timers)

    def stop(self) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop the loop cleanly; SIGHUP calls `on_hangup` (main thread only)."""
        def handler(signum: int, frame: FrameType | None) -> None:
            if signum == signal.SIGHUP:
                self._hangup = True
            else:
                self._stopping = True

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self._old_handlers[sig] = signal.signal(sig, handler)
        self._old_wakeup_fd = signal.set_wakeup_fd(self._wake_w.fileno())

    def _restore_signals(self) -> None:
        for sig, old in self._old_handlers.items():
            signal.signal(sig, old)  # type: ignore[arg-type]
        if self._old_wakeup_fd is not None:
            signal.set_wakeup_fd(self._old_wakeup_fd)
        self._old_handlers.clear()
        self._old_wakeup_fd = None

    # --- running ---------------------------------------------------------------------------------

    def run(self, *, duration: float | None = None) -> None:
        """Run until stopped (or for `duration` seconds)."""
        clock = self.clock
        start = clock()
        deadline = self.engine.next_deadline
        try:
            while not self._stopping:
                now = clock()
                if duration is not None and now - start >= duration:
                    break
                due = deadline()
                timeout = SELECT_TIMEOUT_MAX if due is None else min(max(due - now, 0.0), SELECT_TIMEOUT_MAX)
                self._dispatch(min(timeout, self._timers_due(now)))
                if self._hangup:
                    self._hangup = False
                    if self.on_hangup is not None:
                        self.on_hangup()
                now = clock()
                self._run_timers(now)
                due = deadline()
                if due is not None and now >= due:
                    self._emit(self.engine.handle_timers(now))
        finally:
            self._restore_signals()

    def _timers_due(self, now: float) -> float:
        """Seconds until the earliest deadline of the added timers (SELECT_TIMEOUT_MAX without one)."""
        timeout = SELECT_TIMEOUT_MAX
        for t in self._timers:
            due = t.next_deadline()
            if due is not None:
                timeout = min(timeout, max(due - now, 0.0))
        return timeout

    def _run_timers(self, now: float) -> None:
        for t in self._timers:
            due = t.next_deadline()
            if due is not None and now >= due:
                t.handle_timers(now)

    def _dispatch(self, timeout: float) -> int:
        """One poll: frames from ready ports into the engine, ready watchers called, then the
        `after_wakeup` hooks. Returns the number of frames read."""
        before = self.stats["rx"]
        for key, mask in self._sel.select(timeout):
            data = key.data
            if data is None:
                self._drain_wake()
            elif isinstance(data, str):
                self._service(data)
            else:
                data(mask)
        for fn in self.after_wakeup:
            fn()
        return self.stats["rx"] - before

    def poll_once(self, timeout: float = 0.0) -> int:
        """One wakeup (for tests and embedding), then the added timers that are due: returns the number of
        frames read."""
        n = self._dispatch(timeout)
        self._run_timers(self.clock())
        return n

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(256):
                pass
        except OSError:
            pass

    def _service(self, name: str) -> None:
        try:
            frames = self.ports[name].recv_batch(self.batch)
        except OSError as exc:  # ENETDOWN once when the device goes down (packet_notifier): counted, not fatal
            self.stats["rx_error"] += 1
            text = f"warning: {name}: {exc.strerror or exc}"
            if self._said_rx_error.get(name) != text:  # once in a row per port: a repeating error does not flood
                self._said_rx_error[name] = text
                self.warn(text)
            return
        if not frames:
            return
        stats = self.stats
        stats["rx"] += len(frames)
        for fn in self.before_frames:
            fn()
        receive = self.engine.receive
        clock = self.clock
        limit = self._rx_limit[name]
        for f in frames:
            if len(f[0]) > limit and not f[2]:
                self._oversize(name, len(f[0]))
        emit = self._emit
        before_emit = self.before_emit
        try:
            # the engine takes each packet's offload metadata (it skips the L4 checksum check of a
            # CHECKSUM_PARTIAL packet as nf_ip_checksum does) and says how each frame it emits leaves
            if before_emit is None:
                for frame, gso_type, gso_size, partial in frames:
                    emit(receive(frame, name, clock(), gso_type=gso_type, gso_size=gso_size, partial=partial))
            else:
                for frame, gso_type, gso_size, partial in frames:
                    out = receive(frame, name, clock(), gso_type=gso_type, gso_size=gso_size, partial=partial)
                    before_emit()
                    emit(out)
        except Exception as exc:  # an engine bug must not stop the gateway: count it, report the first
            stats["engine_error"] += 1
            if stats["engine_error"] == 1:
                import traceback

                self.warn("error: the engine raised on a frame from " + name + " (rest of the batch dropped): "
                          + "".join(traceback.format_exception(exc)).strip())

    def _oversize(self, name: str, size: int) -> None:
        """A frame over the MTU without GSO information: the peer hands us TSO/GRO super-packets that
        only vnet headers describe. Counted; the first one is reported."""
        self.stats["rx_oversize"] += 1
        if self.stats["rx_oversize"] == 1:
            self.warn(f"warning: {name}: a {size}-byte frame without GSO information (mtu {self.mtus[name]}): "
                      "the peer uses TSO/GSO/GRO; use vnet headers or turn those offloads off on the peer")

    def _truncated(self, name: str, size: int) -> None:
        """A frame the port cut short and dropped (a ring slot holds an MTU-sized frame without vnet headers):
        over the MTU it is a super-packet natbox could not handle, as `_oversize` (under --offload, the first
        packets of a flow before its entries are installed)."""
        if size > self._rx_limit[name]:
            self._oversize(name, size)

    def _emit(self, out: OutputLike) -> None:
        """Send what the engine emitted, each frame with its own offload metadata, its partial checksum
        field taken as the engine left it (already the final header's pseudo-header sum)."""
        tx = self._tx
        mtus = self.mtus
        stats = self.stats
        sent = 0
        for e in out.emitted:
            frame = e.frame
            iface = e.iface
            send = tx.get(iface)
            if send is None:
                stats["tx_no_port"] += 1
                continue
            mtu = mtus[iface]
            tail = e.tail  # the payload, still in the receive ring: sent from there (zero-copy reads)
            if len(frame) + (0 if tail is None else len(tail)) - ETH_HLEN > mtu:
                gso_size = e.gso_size
                if not gso_size:
                    stats["tx_oversize"] += 1  # no GSO info: the kernel would refuse it (EMSGSIZE)
                    continue
                gso_type = e.gso_type
                ok = send(frame, gso_type, _segment_size(frame, gso_type, gso_size, mtu), e.partial, True, tail)
            elif tail is None:
                ok = send(frame, 0, 0, e.partial, True)
            else:
                ok = send(frame, 0, 0, e.partial, True, tail)
            if ok:
                sent += 1
            else:
                stats["tx_error"] += 1
        if sent:
            stats["tx"] += sent

    def close(self) -> None:
        """Close the selector and every port."""
        self._sel.close()
        for port in self.ports.values():
            port.close()
        self._wake_r.close()
        self._wake_w.close()

    def counters(self) -> dict[str, dict[str, int]]:
        """The loop's counters (under "loop") and each port's non-zero ones (under its interface name)."""
        out: dict[str, dict[str, int]] = {"loop": dict(sorted(self.stats.items()))}
        for name, port in self.ports.items():
            pstats = getattr(port, "stats", None)
            if isinstance(pstats, dict):
                out[name] = {str(k): int(v) for k, v in sorted(pstats.items()) if v}
        return out

    def report(self) -> str:
        counters = self.counters()
        parts = [f"{k}={v}" for k, v in counters.pop("loop").items()]
        parts += [f"{name}:" + ",".join(f"{k}={v}" for k, v in c.items()) for name, c in counters.items()]
        return " ".join(parts)


def _segment_size(frame: bytes, gso_type: int, gso_size: int, mtu: int) -> int:
    """The GSO segment size for the out port: the input's, capped so each segment's IP packet fits
    `mtu` (`skb_gso_validate_network_len`), using this frame's own IP and TCP header lengths (IPv6: the
    fixed header, which a GSO frame's TCP/UDP header follows: vnet.l4_csum_location)."""
    ihl = IP6H_LEN if frame[ETH_HLEN + IPH_VER_IHL] >> 4 == 6 else (frame[ETH_HLEN + IPH_VER_IHL] & 0x0F) * 4
    if gso_type in (GSO_TCPV4, GSO_TCPV6) and len(frame) > ETH_HLEN + ihl + TCPH_DOFF:
        l4 = (frame[ETH_HLEN + ihl + TCPH_DOFF] >> 4) * 4
    else:
        l4 = 8
    return max(min(gso_size, mtu - ihl - l4), 8)
