"""The control protocol of a running gateway (`--control PATH`): one JSON request per connection.

A client connects to the gateway's UNIX socket, sends one JSON object, shuts down its write side and
reads one JSON object back:

    request:  {"cmd": "iptables" | "iptables-save" | "iptables-restore" | "conntrack" | "status" | "ipset" |
               "nfacct",
               "argv": [...], "stdin": "..."}
    response: {"exit": 0, "stdout": "...", "stderr": "..."}

`conntrack -E` is the exception: the connection stays open and carries event lines as conntrack prints
them. The gateway answers from its event loop, without ever blocking it (natbox.gateway.control), so the
engine is never touched concurrently. The plain-text commands `stats` and `conntrack` (one word, no
JSON) are still answered for quick use with `socat`.

Bounds: a request may hold at most CONTROL_REQUEST_MAX bytes (an iptables-restore dump included); the
gateway's own limits (clients, timeouts) are in natbox.gateway.control. A client here waits at most
CLIENT_TIMEOUT seconds for the answer.
"""

from __future__ import annotations

import json
import socket
from typing import Any, TextIO

from natbox.errors import NatboxError

__all__ = ["CONTROL_REQUEST_MAX", "ControlError", "control_call", "follow_events", "forward_command"]

CONTROL_REQUEST_MAX = 4 * 1024 * 1024  # bytes of one request (a large iptables-restore dump fits)
CLIENT_TIMEOUT = 10.0  # seconds a client waits for the answer


class ControlError(NatboxError, OSError):
    """The gateway could not be reached or answered something that is not a control response."""


def control_call(path: str, request: dict[str, Any]) -> dict[str, Any]:
    """Send one request to the gateway at `path` and return its response."""
    data = json.dumps(request).encode()
    if len(data) > CONTROL_REQUEST_MAX:
        raise ControlError(f"request of {len(data)} bytes is over the {CONTROL_REQUEST_MAX}-byte limit")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(CLIENT_TIMEOUT)
            sock.connect(path)
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
    except OSError as exc:
        raise ControlError(f"{path}: {exc.strerror or exc}") from None
    try:
        answer = json.loads(b"".join(chunks))
    except ValueError:
        raise ControlError(f"{path}: not a natbox gateway control socket (answer is not JSON)") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("exit"), int):
        raise ControlError(f"{path}: malformed answer from the gateway")
    return answer


def forward_command(path: str, cmd: str, argv: list[str], stdin: TextIO | None, stdout: TextIO,
                    stderr: TextIO, prog: str) -> int:
    """Run `cmd argv` on the gateway at `path`, print its output as if it ran here, return its exit code."""
    request: dict[str, Any] = {"cmd": cmd, "argv": argv}
    if stdin is not None:
        request["stdin"] = stdin.read()
    try:
        answer = control_call(path, request)
    except ControlError as exc:
        stderr.write(f"{prog}: --control {exc}\n")
        return 1
    stdout.write(str(answer.get("stdout", "")))
    stderr.write(str(answer.get("stderr", "")))
    return int(answer["exit"])


def follow_events(path: str, stdout: TextIO, stderr: TextIO, prog: str, argv: list[str] | None = None) -> int:
    """`conntrack -E [filters]`: print the gateway's conntrack events as they come, until it closes or
    Ctrl-C. A refusal (a bad filter, too many listeners) is conntrack's one line: printed on stderr, exit 2."""
    request = json.dumps({"cmd": "conntrack", "argv": argv or ["-E"]}).encode()
    first = True
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(path)
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                text = chunk.decode(errors="replace")
                if first and text.startswith("conntrack v"):
                    stderr.write(text)
                    return 2 if "Try `conntrack -h'" in text else 1
                first = False
                stdout.write(text)
                stdout.flush()
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        stderr.write(f"{prog}: --control {path}: {exc.strerror or exc}\n")
        return 1
    return 0
