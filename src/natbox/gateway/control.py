"""The gateway's control socket, served without ever blocking forwarding.

Every descriptor here is non-blocking and polled by the packet loop itself (`EventLoop.watch`): a client
costs the loop one `recv` or `send` when its socket is ready, never a wait. The protocol is
natbox.adapters.control's (one JSON request per connection, read until the client shuts its write
side; the one-word plain-text commands `stats` and `conntrack` are answered on their first read).

Bounds, each answered with a one-line error before the connection is closed (never raised):
- a request holds at most CONTROL_REQUEST_MAX bytes (4 MiB: a large iptables-restore dump fits);
- at most CLIENTS_MAX connections are served at a time (more are answered "busy" and closed);
- a request must be complete within REQUEST_TIMEOUT seconds of the connect, with no more than
  IDLE_TIMEOUT seconds between two reads (a half-open client, a slowloris);
- an answer the client does not take within ANSWER_TIMEOUT seconds is dropped with the connection;
- `conntrack -E` subscribers (at most EVENT_SUBSCRIBERS_MAX) get the events through a buffer of
  SUBSCRIBER_BUFFER_MAX bytes: a listener that does not read is dropped when it is full, as netlink
  drops a listener with ENOBUFS.
Requests that cannot be parsed (malformed or deeply nested JSON, a non-object) get an error answer.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import time
from collections.abc import Callable
from functools import partial

from natbox.adapters.control import CONTROL_REQUEST_MAX
from natbox.conntrack.conn import Conn
from natbox.conntrack.format import format_event
from natbox.engine.engine import Engine
from natbox.gateway.commands import Commands
from natbox.gateway.ctcommand import PROG, TRY, CtUsageError, parse_conntrack_args
from natbox.gateway.log import say
from natbox.gateway.loop import EVENT_READ, EVENT_WRITE, EventLoop

__all__ = ["CLIENTS_MAX", "EVENT_SUBSCRIBERS_MAX", "ControlPathError", "ControlServer", "claim_path"]

CLIENTS_MAX = 32  # control connections served at a time (subscribers not counted)
EVENT_SUBSCRIBERS_MAX = 16  # concurrent `conntrack -E` listeners
REQUEST_TIMEOUT = 10.0  # seconds from connect until the whole request has arrived
IDLE_TIMEOUT = 3.0  # seconds a client may stay silent while sending its request
ANSWER_TIMEOUT = 10.0  # seconds a client has to take its answer
SUBSCRIBER_BUFFER_MAX = 1 << 20  # bytes of events waiting for one slow `conntrack -E` listener
READ_MAX = 4 * 65536  # bytes read from one client per wakeup
ACCEPT_MAX = 16  # connections accepted per wakeup
LISTEN_BACKLOG = 64


class ControlPathError(OSError):
    """--control PATH names something that must not be replaced (a file, a live socket)."""


def claim_path(path: str) -> None:
    """Make `path` free for a new socket: nothing there, or a stale socket (no one listening), which is
    removed. A regular file, a directory or a socket someone listens on raises ControlPathError."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlPathError(f"--control {path}: exists and is not a socket (refusing to replace it)")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.setblocking(False)
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)  # stale: left by a process that is gone
            return
        except FileNotFoundError:
            return
        except BlockingIOError:
            pass  # a full backlog: someone listens
    raise ControlPathError(f"--control {path}: a process is listening on it (another gateway?)")


def _error(text: str, code: int = 1) -> bytes:
    return json.dumps({"exit": code, "stdout": "", "stderr": f"natbox gateway: {text}\n"}).encode()


class _Client:
    """One control connection: its request so far, or its answer still to send."""

    __slots__ = ("answer", "buf", "deadline", "idle", "keep", "sock", "subscriber")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.answer: memoryview | None = None  # set once the request is answered
        self.deadline = now + REQUEST_TIMEOUT  # when the current phase must be over
        self.idle = now + IDLE_TIMEOUT  # while reading: when silence ends the connection
        self.subscriber = False  # `conntrack -E`: events are appended to `answer` as they come
        self.keep: Callable[[Conn], bool] | None = None  # its filters (-p, -s, ...)

    def due(self) -> float:
        return self.deadline if self.answer is not None else min(self.deadline, self.idle)


class ControlServer:
    """The control socket at `path`: listening, its clients and its event subscribers, all in `loop`."""

    def __init__(self, path: str, engine: Engine, loop: EventLoop,
                 clock: Callable[[], float] = time.monotonic) -> None:
        claim_path(path)
        self.path = path
        self.engine = engine
        self.loop = loop
        self.clock = clock
        self.commands = Commands(engine, loop)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o077)  # the socket is its owner's only (mode 0600) from its creation on
        try:
            self.sock.bind(path)
        except OSError:
            self.sock.close()
            raise
        finally:
            os.umask(old_umask)
        self._inode = os.stat(path).st_ino
        os.chmod(path, 0o600)
        self.sock.listen(LISTEN_BACKLOG)
        self.sock.setblocking(False)
        self.clients: dict[int, _Client] = {}
        self.stats = {"accepted": 0, "busy": 0, "timeout": 0, "oversize": 0, "malformed": 0, "dropped_listener": 0}
        self.commands.reports.append(self.report)
        loop.watch(self.sock.fileno(), EVENT_READ, self._on_accept)
        loop.add_timers(self)
        loop.after_wakeup.append(self.pump)

    def report(self) -> str:
        """One line for `natbox status`: connections now and what was refused or dropped."""
        subs = len(self.subscribers)
        return (f"control: clients {len(self.clients) - subs} (max {CLIENTS_MAX}), listeners {subs}, "
                + ", ".join(f"{k} {v}" for k, v in self.stats.items()))

    @property
    def subscribers(self) -> list[_Client]:
        return [c for c in self.clients.values() if c.subscriber]

    # --- connections ---------------------------------------------------------------------------------

    def _on_accept(self, _mask: int) -> None:
        for _ in range(ACCEPT_MAX):
            try:
                conn, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: say it once per wakeup, keep forwarding
                say(f"warning: --control {self.path}: accept: {exc.strerror or exc}")
                return
            conn.setblocking(False)
            if len(self.clients) - len(self.subscribers) >= CLIENTS_MAX:
                self.stats["busy"] += 1
                with contextlib.suppress(OSError):
                    conn.send(_error(f"busy: {CLIENTS_MAX} control connections already open"))
                conn.close()
                continue
            self.stats["accepted"] += 1
            client = _Client(conn, self.clock())
            self.clients[conn.fileno()] = client
            self.loop.watch(conn.fileno(), EVENT_READ, partial(self._on_client, client))

    def _close(self, client: _Client) -> None:
        fd = client.sock.fileno()
        if fd >= 0:
            self.loop.unwatch(fd)
            self.clients.pop(fd, None)
        client.sock.close()

    def _on_client(self, client: _Client, mask: int) -> None:
        if mask & EVENT_READ and client.answer is None:
            self._read(client)
        if client.sock.fileno() >= 0 and mask & EVENT_WRITE:
            self._flush(client)

    def _read(self, client: _Client) -> None:
        size = 0
        while size < READ_MAX:
            try:
                chunk = client.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._close(client)
                return
            if not chunk:
                self._complete(client)
                return
            client.buf += chunk
            size += len(chunk)
            if len(client.buf) > CONTROL_REQUEST_MAX:
                self.stats["oversize"] += 1
                self._respond(client, _error(f"request over the {CONTROL_REQUEST_MAX}-byte limit", 2))
                return
            head = client.buf[:64].lstrip()
            if head and not head.startswith(b"{"):
                if client.buf.strip():
                    self._complete(client)  # a plain one-word command (stats, conntrack) comes in one piece
                    return
        client.idle = self.clock() + IDLE_TIMEOUT

    def _respond(self, client: _Client, answer: bytes) -> None:
        """Send `answer`, then close (the rest goes when the client reads, within ANSWER_TIMEOUT)."""
        client.buf = bytearray()
        client.answer = memoryview(answer)
        client.deadline = self.clock() + ANSWER_TIMEOUT
        self._flush(client)

    def _flush(self, client: _Client) -> None:
        data = client.answer
        if data is None:
            return
        try:
            sent = client.sock.send(data) if data else 0
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._close(client)
            return
        client.answer = data = data[sent:]
        if client.subscriber:
            client.deadline = float("inf")  # it stays; what it does not read fills its buffer (see pump)
        elif not data:
            self._close(client)
            return
        # the request is complete: nothing more is read (a subscriber that went away shows on a send)
        if data:
            self.loop.watch(client.sock.fileno(), EVENT_WRITE, partial(self._on_client, client))
        else:
            self.loop.unwatch(client.sock.fileno())

    # --- requests ------------------------------------------------------------------------------------

    def _complete(self, client: _Client) -> None:
        text = bytes(client.buf).decode(errors="replace").strip()
        if not text.startswith("{"):
            self._respond(client, self.commands.answer_plain(text).encode())
            return
        try:
            req = json.loads(text)
        except (ValueError, RecursionError):
            req = None
        if not isinstance(req, dict):
            self.stats["malformed"] += 1
            self._respond(client, _error("malformed control request", 2))
            return
        argv = req.get("argv")
        if req.get("cmd") == "conntrack" and isinstance(argv, list) and ("-E" in argv or "--event" in argv):
            try:
                keep = parse_conntrack_args([str(a) for a in argv]).keep
            except CtUsageError as exc:
                self._respond(client, (f"{PROG}: {exc}\n" + (TRY if exc.usage else "")).encode())
                return
            self._subscribe(client, keep)
            return
        self._respond(client, self.commands.answer_json(req).encode())

    def _subscribe(self, client: _Client, keep: Callable[[Conn], bool]) -> None:
        """`conntrack -E [filters]`: the connection stays open and receives the events of the cts the
        filters select, as conntrack prints them."""
        if len(self.subscribers) >= EVENT_SUBSCRIBERS_MAX:
            self._respond(client, f"{PROG}: too many event listeners\n".encode())
            return
        client.subscriber = True
        client.keep = keep
        self._respond(client, b"")
        self.engine.table.events_enabled = True

    def pump(self) -> None:
        """Queue the engine's new conntrack events to the subscribers (called after each wakeup)."""
        subscribers = self.subscribers
        if not subscribers:
            return
        events = self.engine.table.drain_events()
        if not events:
            return
        lines = [(ev, format_event(ev) + "\n") for ev in events]
        for client in subscribers:
            keep = client.keep
            data = "".join(line for ev, line in lines
                           if keep is None or keep(ev.snapshot if ev.snapshot is not None else ev.conn)).encode()
            if not data:
                continue
            pending = client.answer if client.answer is not None else memoryview(b"")
            if len(pending) + len(data) > SUBSCRIBER_BUFFER_MAX:
                self.stats["dropped_listener"] += 1
                self._close(client)  # it does not read: dropped, as netlink drops it with ENOBUFS
                continue
            client.answer = memoryview(bytes(pending) + data)
            self._flush(client)
        if not self.subscribers:
            self.engine.table.events_enabled = False
            self.engine.table.drain_events()

    # --- timers (EventLoop.add_timers) ---------------------------------------------------------------

    def next_deadline(self) -> float | None:
        due = min((c.due() for c in self.clients.values()), default=float("inf"))
        return None if due == float("inf") else due

    def handle_timers(self, now: float) -> None:
        for client in list(self.clients.values()):
            if now < client.due():
                continue
            if client.answer is None:  # half-open, slowloris: told why, then closed
                self.stats["timeout"] += 1
                self._respond(client, _error("control request timed out (send it whole, then shut down the "
                                             "write side)", 2))
                if client.sock.fileno() >= 0:
                    self._close(client)
            else:
                self._close(client)  # it does not take its answer

    def close(self) -> None:
        """Close every connection and the socket, and remove it (when it is still ours and we may)."""
        for client in list(self.clients.values()):
            self._close(client)
        self.loop.unwatch(self.sock.fileno())
        self.sock.close()
        try:
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        except PermissionError:
            say(f"--control {self.path}: left in place (no permission to remove it after dropping root); "
                "the next start replaces it")
        except OSError as exc:
            say(f"warning: --control {self.path}: not removed ({exc.strerror or exc})")
