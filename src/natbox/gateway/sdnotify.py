"""systemd's readiness protocol (sd_notify(3)), without a dependency: datagrams to $NOTIFY_SOCKET.

The gateway says `READY=1` once its devices are open and it forwards, `RELOADING=1` with
`MONOTONIC_USEC` when SIGHUP makes it reread its files (then `READY=1` again), and `STOPPING=1` when it
begins to stop, each with a `STATUS=` line for `systemctl status`. The socket is opened once at start,
before privileges are dropped, and $NOTIFY_SOCKET is removed from the environment so that programs the
gateway runs do not talk to systemd in its name. Without $NOTIFY_SOCKET every call does nothing.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time

__all__ = ["Notifier"]


class Notifier:
    """A connected datagram socket to the service manager, or nothing when not run by one."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self.sock: socket.socket | None = None
        if environ is None:
            os.environ.pop("NOTIFY_SOCKET", None)
        if not path or path[0] not in "/@":
            return  # (vsock addresses are not supported: natbox runs on the host)
        address = "\0" + path[1:] if path[0] == "@" else path  # "@": the abstract namespace
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(address)
        except OSError:
            sock.close()
            return
        self.sock = sock

    def notify(self, *fields: str) -> bool:
        """Send `fields` (KEY=VALUE) as one message; whether it was sent."""
        if self.sock is None:
            return False
        try:
            self.sock.send("\n".join(fields).encode())
        except OSError:
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def reloading(self) -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1", "STATUS=stopping")

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None
