"""The event loop: frames from ports (AF_PACKET sockets, TAPs) into the engine, its output back out.

One `selectors` wakeup reads up to `batch` frames from each ready port (round robin), calls
`engine.receive(frame, iface, now=time.monotonic())` for each and transmits `Output.emitted` on the port
named by each `Emitted.iface`. `engine.expire(now)` runs every `expire_interval` seconds.

Offloads: a frame read as a GSO packet (gso_size > 0) is one 64 KiB super-packet; the frames the engine
emits for it keep its gso_type/gso_size when they are larger than the out port's MTU (so the kernel on
the far side segments them), and a packet whose checksum arrived partial leaves partial again.

Bounds: nothing is queued inside the loop. At most `batch` frames per port are read per wakeup; a frame
the kernel refuses (full socket buffer) is dropped and counted, as a full qdisc would drop it.
Stop: `stop()`, or SIGTERM/SIGINT once `install_signal_handlers()` was called (the signal wakes the
selector through a socketpair, so the loop exits within one batch).
"""

from __future__ import annotations

import contextlib
import selectors
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Protocol

from natbox.adapters.packet_socket import GSO_TCPV4, RxFrame
from natbox.wire.arp import build_arp_request

__all__ = ["EngineLike", "EventLoop", "NeighResolver", "OutputLike", "Port"]

BATCH_DEFAULT = 64  # frames read from one port per wakeup
EXPIRE_INTERVAL = 1.0  # seconds between engine.expire() calls
SELECT_TIMEOUT_MAX = 0.5  # seconds: the loop looks at its stop flag at least this often
ETH_HLEN = 14
# neighbour resolution (net.ipv4.neigh.default.* defaults)
NEIGH_RETRANS = 1.0  # retrans_time_ms: seconds between ARP requests
NEIGH_SOLICIT = 3  # mcast_solicit: requests before the entry fails
NEIGH_UNRES_BYTES = 212992  # unres_qlen_bytes: bytes queued per unresolved neighbour
NEIGH_PENDING_MAX = 256  # unresolved neighbours tracked at once (more: the packet is dropped)
SYNTHETIC_MAC_PREFIX = b"\x02\x00"  # the engine's placeholder MAC for an unknown next hop: 02:00 + IPv4


class Port(Protocol):
    """A device the loop reads frames from and writes frames to (PacketSocket, TapDevice)."""

    ifname: str

    def fileno(self) -> int: ...

    def recv_batch(self, max_frames: int) -> list[RxFrame]: ...

    def send(self, frame: bytes | bytearray, gso_type: int = 0, gso_size: int = 0, partial: bool = False) -> bool: ...

    def close(self) -> None: ...


class EmittedLike(Protocol):
    @property
    def iface(self) -> str: ...

    @property
    def frame(self) -> bytes: ...


class OutputLike(Protocol):
    @property
    def emitted(self) -> Sequence[EmittedLike]: ...


class EngineLike(Protocol):
    def receive(self, frame: bytes, iface: str, now: float) -> OutputLike: ...

    def expire(self, now: float) -> OutputLike: ...


class NeighResolver:
    """ARP for next hops the engine has no MAC for: mirrors `neigh_resolve_output()` / `arp_solicit()`.

    The engine emits a frame to an unknown next hop with the placeholder MAC 02:00:<next hop IPv4> and
    no entry in `neigh`; such frames are held here (at most NEIGH_UNRES_BYTES per next hop) while ARP
    requests go out every NEIGH_RETRANS seconds, NEIGH_SOLICIT times. The engine learns the reply (it
    sees every frame), after which the held frames leave with the real MAC; if resolution fails they are
    dropped (the kernel would also send ICMP host unreachable: that needs the engine, see the report).
    """

    def __init__(self, neigh: dict[tuple[str, int], bytes], ifaces: dict[str, tuple[bytes, list[tuple[int, int]]]]
                 ) -> None:
        self.neigh = neigh  # the engine's (dev, addr) -> MAC table: read only here
        self.ifaces = ifaces  # name -> (mac, [(addr, prefixlen), ...])
        # (dev, addr) -> [deadline of next request, requests sent, queued bytes, queued frames]
        self.pending: dict[tuple[str, int], list[object]] = {}
        self.stats: Counter[str] = Counter()

    def _source(self, dev: str, addr: int) -> int | None:
        info = self.ifaces.get(dev)
        if info is None:
            return None
        for a, plen in info[1]:
            mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF if plen else 0
            if (a & mask) == (addr & mask):
                return a
        return info[1][0][0] if info[1] else None

    def unresolved(self, dev: str, frame: bytes) -> bool:
        """Whether `frame` carries the engine's placeholder MAC: 02:00 + an on-link address of `dev` that
        the engine has no entry for (a real MAC matching all three is not a practical concern)."""
        if frame[:2] != SYNTHETIC_MAC_PREFIX:
            return False
        addr = int.from_bytes(frame[2:6], "big")
        if (dev, addr) in self.neigh:
            return False
        info = self.ifaces.get(dev)
        if info is None:
            return False
        for a, plen in info[1]:
            mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF if plen else 0
            if (a & mask) == (addr & mask):
                return True
        return False

    def hold(self, dev: str, frame: bytes, meta: tuple[int, int, bool], now: float) -> list[tuple[str, bytes]]:
        """Called for a frame with a placeholder MAC: hold it. Returns ARP requests to send now."""
        addr = int.from_bytes(frame[2:6], "big")
        key = (dev, addr)
        entry = self.pending.get(key)
        if entry is None:
            if len(self.pending) >= NEIGH_PENDING_MAX:
                self.stats["neigh_table_full"] += 1
                return []
            entry = [now + NEIGH_RETRANS, 1, 0, []]
            self.pending[key] = entry
            self.stats["neigh_solicit"] += 1
            out = self._request(dev, addr)
        else:
            out = []
        queued = entry[3]
        assert isinstance(queued, list)
        size = entry[2]
        assert isinstance(size, int)
        while queued and size + len(frame) > NEIGH_UNRES_BYTES:  # __neigh_event_send drops the oldest
            size -= len(queued.pop(0)[0])
            self.stats["neigh_unres_drop"] += 1
        queued.append((frame, meta))
        entry[2] = size + len(frame)
        return out

    def _request(self, dev: str, addr: int) -> list[tuple[str, bytes]]:
        info = self.ifaces.get(dev)
        src = self._source(dev, addr)
        if info is None or src is None:
            return []
        mac = info[0]
        return [(dev, b"\xff" * 6 + mac + b"\x08\x06" + build_arp_request(mac, src, addr))]

    def resolved(self) -> list[tuple[str, bytes, tuple[int, int, bool]]]:
        """Held frames whose next hop the engine now knows, with the real destination MAC."""
        out: list[tuple[str, bytes, tuple[int, int, bool]]] = []
        if not self.pending:
            return out
        for key in [k for k in self.pending if k in self.neigh]:
            entry = self.pending.pop(key)
            mac = self.neigh[key]
            queued = entry[3]
            assert isinstance(queued, list)
            for frame, meta in queued:
                out.append((key[0], mac + frame[6:], meta))
        return out

    def timers(self, now: float) -> list[tuple[str, bytes]]:
        """Retransmit requests that are due; fail entries that ran out of requests."""
        out: list[tuple[str, bytes]] = []
        for key, entry in list(self.pending.items()):
            deadline, sent = entry[0], entry[1]
            assert isinstance(deadline, float) and isinstance(sent, int)
            if now < deadline:
                continue
            if sent >= NEIGH_SOLICIT:
                del self.pending[key]
                queued = entry[3]
                assert isinstance(queued, list)
                self.stats["neigh_failed"] += 1
                self.stats["neigh_failed_drop"] += len(queued)
                continue
            entry[0] = now + NEIGH_RETRANS
            entry[1] = sent + 1
            out += self._request(*key)
        return out


class EventLoop:
    """Drives `engine` with the frames of `ports` (keyed by the engine's interface names)."""

    def __init__(self, engine: EngineLike, ports: dict[str, Port], *, mtus: dict[str, int] | None = None,
                 batch: int = BATCH_DEFAULT, expire_interval: float = EXPIRE_INTERVAL,
                 clock: Callable[[], float] = time.monotonic, resolver: NeighResolver | None = None,
                 partial_skips_checksum: bool = False) -> None:
        self.engine = engine
        self.resolver = resolver
        # CHECKSUM_PARTIAL packets are never L4-verified by the kernel (`nf_ip_checksum()` returns 0 for
        # them). Until the engine takes an ip_summed flag per packet, the loop reproduces that by turning
        # the engine's nf_conntrack_checksum off for exactly the packets that arrived partial.
        self.warn: Callable[[str], None] = lambda text: None  # one-line diagnostics (the gateway: stderr)
        cfg = getattr(engine, "cfg", None)
        self._csum_cfg = cfg if partial_skips_checksum and getattr(cfg, "checksum", False) else None
        self.ports = ports
        self.mtus = {name: (mtus or {}).get(name, 1500) for name in ports}
        self._rx_limit = {name: self.mtus[name] + ETH_HLEN + 4 for name in ports}  # + an 802.1Q tag
        self.batch = batch
        self.expire_interval = expire_interval
        self.clock = clock
        self.stats: Counter[str] = Counter()
        self._sel = selectors.DefaultSelector()
        self._stopping = False
        self._hangup = False
        self.on_hangup: Callable[[], None] | None = None  # SIGHUP: called from the loop, between packets
        self.after_wakeup: list[Callable[[], None]] = []  # called after each wakeup (control-socket events)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._readers: dict[int, Callable[[], None]] = {}
        for name, port in ports.items():
            self._sel.register(port.fileno(), selectors.EVENT_READ, name)
        self._old_handlers: dict[int, object] = {}
        self._old_wakeup_fd: int | None = None

    # --- control ---------------------------------------------------------------------------------

    def add_reader(self, fileobj: int, callback: Callable[[], None]) -> None:
        """Call `callback` when `fileobj` is readable (the seam for a control socket)."""
        self._readers[fileobj] = callback
        self._sel.register(fileobj, selectors.EVENT_READ, f"reader:{fileobj}")

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
        next_expire = start + self.expire_interval
        select = self._sel.select
        try:
            while not self._stopping:
                now = clock()
                if duration is not None and now - start >= duration:
                    break
                timeout = min(max(next_expire - now, 0.0), SELECT_TIMEOUT_MAX)
                events = select(timeout)
                for key, _mask in events:
                    name = key.data
                    if name is None:
                        self._drain_wake()
                    elif name.startswith("reader:"):
                        self._readers[key.fd]()
                    else:
                        self._service(name)
                for fn in self.after_wakeup:
                    fn()
                if self._hangup:
                    self._hangup = False
                    if self.on_hangup is not None:
                        self.on_hangup()
                now = clock()
                if self.resolver is not None and self.resolver.pending:
                    self._neigh_timers(now)
                if now >= next_expire:
                    self._emit(self.engine.expire(now), 0, 0, False)
                    next_expire = now + self.expire_interval
        finally:
            self._restore_signals()

    def poll_once(self, timeout: float = 0.0) -> int:
        """One wakeup (for tests and embedding): returns the number of frames read."""
        before = self.stats["rx"]
        for key, _mask in self._sel.select(timeout):
            if key.data is None:
                self._drain_wake()
            elif key.data.startswith("reader:"):
                self._readers[key.fd]()
            else:
                self._service(key.data)
        return self.stats["rx"] - before

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(256):
                pass
        except OSError:
            pass

    def _service(self, name: str) -> None:
        frames = self.ports[name].recv_batch(self.batch)
        if not frames:
            return
        self.stats["rx"] += len(frames)
        receive = self.engine.receive
        clock = self.clock
        limit = self._rx_limit[name]
        for f in frames:
            if len(f[0]) > limit and not f[2]:
                self._oversize(name, len(f[0]))
        cfg = self._csum_cfg
        try:
            if cfg is None:
                for frame, gso_type, gso_size, partial in frames:
                    self._emit(receive(frame, name, clock()), gso_type, gso_size, partial)
            else:
                try:
                    for frame, gso_type, gso_size, partial in frames:
                        cfg.checksum = not partial
                        self._emit(receive(frame, name, clock()), gso_type, gso_size, partial)
                finally:
                    cfg.checksum = True
        except Exception as exc:  # an engine bug must not stop the gateway: count it, report the first
            self.stats["engine_error"] += 1
            if self.stats["engine_error"] == 1:
                import traceback

                self.warn("error: the engine raised on a frame from " + name + " (rest of the batch dropped): "
                          + "".join(traceback.format_exception(exc)).strip())
        resolver = self.resolver
        if resolver is not None and resolver.pending:
            for dev, frame, (gt, gs, pt) in resolver.resolved():
                self._send(dev, frame, gt, gs, pt)

    def _oversize(self, name: str, size: int) -> None:
        """A frame over the MTU without GSO information: the peer hands us TSO/GRO super-packets that
        only vnet headers describe. Counted; the first one is reported."""
        self.stats["rx_oversize"] += 1
        if self.stats["rx_oversize"] == 1:
            self.warn(f"warning: {name}: a {size}-byte frame without GSO information (mtu {self.mtus[name]}): "
                      "the peer uses TSO/GSO/GRO; use vnet headers or turn those offloads off on the peer")

    def _neigh_timers(self, now: float) -> None:
        assert self.resolver is not None
        for dev, frame in self.resolver.timers(now):
            self._send(dev, frame, 0, 0, False)

    def _emit(self, out: OutputLike, gso_type: int, gso_size: int, partial: bool) -> None:
        resolver = self.resolver
        for e in out.emitted:
            frame = e.frame
            if resolver is not None and frame[:2] == SYNTHETIC_MAC_PREFIX and resolver.unresolved(e.iface, frame):
                for dev, req in resolver.hold(e.iface, frame, (gso_type, gso_size, partial), self.clock()):
                    self._send(dev, req, 0, 0, False)
                continue
            self._send(e.iface, frame, gso_type, gso_size, partial)

    def _send(self, iface: str, frame: bytes, gso_type: int, gso_size: int, partial: bool) -> None:
        stats = self.stats
        port = self.ports.get(iface)
        if port is None:
            stats["tx_no_port"] += 1
            return
        mtu = self.mtus[iface]
        if len(frame) - ETH_HLEN > mtu:
            if not gso_size:
                stats["tx_oversize"] += 1  # no GSO info: the kernel would refuse it (EMSGSIZE)
                return
            ok = port.send(frame, gso_type, _segment_size(frame, gso_type, gso_size, mtu), partial)
        else:
            ok = port.send(frame, 0, 0, partial)
        stats["tx" if ok else "tx_error"] += 1

    def close(self) -> None:
        """Close the selector and every port."""
        self._sel.close()
        for port in self.ports.values():
            port.close()
        self._wake_r.close()
        self._wake_w.close()

    def report(self) -> str:
        parts = [f"{k}={v}" for k, v in sorted(self.stats.items())]
        if self.resolver is not None:
            parts += [f"{k}={v}" for k, v in sorted(self.resolver.stats.items())]
        for name, port in self.ports.items():
            pstats = getattr(port, "stats", None)
            if isinstance(pstats, dict):
                parts.append(f"{name}:" + ",".join(f"{k}={v}" for k, v in sorted(pstats.items()) if v))
        return " ".join(parts)


def _segment_size(frame: bytes, gso_type: int, gso_size: int, mtu: int) -> int:
    """The GSO segment size for the out port: the input's, capped so each segment's IP packet fits
    `mtu` (`skb_gso_validate_network_len`), using this frame's own IP and TCP header lengths."""
    ihl = (frame[ETH_HLEN] & 0x0F) * 4
    if gso_type == GSO_TCPV4 and len(frame) >= ETH_HLEN + ihl + 13:
        l4 = (frame[ETH_HLEN + ihl + 12] >> 4) * 4
    else:
        l4 = 8
    return max(min(gso_size, mtu - ihl - l4), 8)
