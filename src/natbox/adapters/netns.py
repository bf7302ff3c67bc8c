"""Network namespaces: create, delete, run commands in, and enter them from Python.

Named namespaces are the files `ip netns add` bind-mounts under /var/run/netns/NAME. Entering one from
Python is `setns(fd, CLONE_NEWNET)` on that file (via ctypes; it changes the calling *thread*'s namespace,
which is what `enter_netns` restores on exit). Sockets and TAP devices opened inside keep belonging to the
namespace they were opened in after the thread leaves it.

Everything created here is cleaned up: `temp_netns()` deletes its namespaces on exit, even on error.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from natbox.errors import NatboxError

__all__ = [
    "NETNS_DIR",
    "NetnsError",
    "create_netns",
    "delete_netns",
    "enter_netns",
    "have_netns",
    "netns_exec_argv",
    "netns_exists",
    "run",
    "run_in_netns",
    "temp_netns",
    "unique_name",
]

NETNS_DIR = "/var/run/netns"
CLONE_NEWNET = 0x40000000
COMMAND_TIMEOUT = 30.0  # seconds any one helper command may take
NAME_MAX = 64  # longest namespace name accepted (a file name; ours are short)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_counter = itertools.count(1)


class NetnsError(NatboxError, RuntimeError):
    """A namespace operation failed; the message names the command and its stderr."""


def _check_name(name: str) -> str:
    if not _NAME_RE.match(name) or len(name) > NAME_MAX:
        raise NetnsError(f"bad namespace name {name!r}")
    return name


def unique_name(prefix: str) -> str:
    """`PREFIX-<pid>-<n>`: unique among this process's names and other processes' (different pid)."""
    return _check_name(f"{prefix}-{os.getpid()}-{next(_counter)}")


def run(argv: Sequence[str], *, check: bool = True, timeout: float = COMMAND_TIMEOUT,
        input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command (no shell), capturing output; raise NetnsError when `check` and it fails."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False,
                              input=input_text)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"{' '.join(argv)}: {exc}") from None
    if check and proc.returncode != 0:
        err = proc.stderr.strip().splitlines()
        raise NetnsError(f"{' '.join(argv)}: exit {proc.returncode}: {err[-1] if err else ''}")
    return proc


def netns_exec_argv(name: str, argv: Sequence[str]) -> list[str]:
    """The argv running `argv` inside namespace `name` (`ip netns exec NAME ...`)."""
    return ["ip", "netns", "exec", _check_name(name), *argv]


def run_in_netns(name: str, argv: Sequence[str], *, check: bool = True,
                 timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return run(netns_exec_argv(name, argv), check=check, timeout=timeout)


def netns_exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, _check_name(name)))


def create_netns(name: str) -> str:
    """`ip netns add NAME`, with loopback up. Refuses to reuse an existing namespace."""
    if netns_exists(name):
        raise NetnsError(f"namespace {name!r} already exists")
    run(["ip", "netns", "add", name])
    try:
        run_in_netns(name, ["ip", "link", "set", "lo", "up"])
    except NetnsError:
        delete_netns(name)
        raise
    return name


def delete_netns(name: str) -> bool:
    """`ip netns del NAME` if it exists (its veths go with it). Returns whether it existed."""
    if not netns_exists(name):
        return False
    run(["ip", "netns", "del", name], check=False)
    return True


@contextmanager
def temp_netns(prefix: str, count: int = 1) -> Iterator[list[str]]:
    """`count` fresh namespaces with unique names, deleted on exit whatever happens."""
    names: list[str] = []
    try:
        for _ in range(count):
            names.append(create_netns(unique_name(prefix)))  # noqa: PERF401 (cleanup needs partial lists)
        yield names
    finally:
        for name in names:
            delete_netns(name)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _setns(fd: int) -> None:
    if _libc().setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetnsError(f"setns: {os.strerror(err)}")


@contextmanager
def enter_netns(name: str) -> Iterator[None]:
    """Run the body with this thread in namespace `name`; the previous namespace is restored after."""
    path = os.path.join(NETNS_DIR, _check_name(name))
    old = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            new = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise NetnsError(f"namespace {name!r}: {exc.strerror}") from None
        try:
            _setns(new)
        finally:
            os.close(new)
        try:
            yield
        finally:
            _setns(old)
    finally:
        os.close(old)


def have_netns() -> str | None:
    """None when this process can create namespaces, else why not (for skipping tests)."""
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip)"
    try:
        with temp_netns("nbx-probe"):
            pass
    except NetnsError as exc:
        return f"cannot create network namespaces: {exc}"
    return None
