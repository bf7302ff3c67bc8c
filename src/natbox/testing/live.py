"""Helpers for live tests: labs of network namespaces (root only), programs run inside them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from natbox.adapters.netns import have_netns
from natbox.lab.builder import lab_down, lab_up
from natbox.lab.model import Lab, parse_lab_toml
from natbox.testing.paths import IMPORT_ROOT
from natbox.testing.paths import LAB_EXAMPLES as EXAMPLES

_NETNS_REASON: list[str | None] = []


def netns_reason() -> str | None:
    if not _NETNS_REASON:
        _NETNS_REASON.append(have_netns())
    return _NETNS_REASON[0]


def require_programs(*names: str) -> None:
    """Skip the calling test, naming each program it needs that is not on PATH (a fresh machine has no
    ethtool, iptables, ping, tcpdump, tshark, conntrack or iperf3; .ci/run installs them)."""
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (not on PATH)")


LAB_PREFIX_MAX = 3  # a lab name is at most 8 of [a-z0-9] (natbox.lab.model): the prefix, then 5 for the pid
_PID_DIGITS = 5  # PID_MAX_LIMIT (include/linux/threads.h) is 4 * 1024 * 1024 < 36 ** 5
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def unique_lab_name(prefix: str, pid: int | None = None) -> str:
    """A lab name (at most 8 of [a-z0-9]) unique to process `pid` (default: this one): `prefix` (1-3 of
    [a-z0-9]) then the pid in base 36 on exactly 5 digits. The fixed width keeps names of distinct
    (prefix, pid) pairs distinct, so two runs at once never share (and tear down) each other's namespaces;
    the pid in decimal truncated to 8 characters did share them ("off6" + 12345 and 12346: "off61234")."""
    if not 1 <= len(prefix) <= LAB_PREFIX_MAX or prefix.strip(_BASE36):
        raise ValueError(f"lab name prefix {prefix!r}: must be 1-{LAB_PREFIX_MAX} of [a-z0-9]")
    n = os.getpid() if pid is None else pid
    if not 0 <= n < 36 ** _PID_DIGITS:
        raise ValueError(f"pid {n}: out of range for a lab name")
    digits = ""
    for _ in range(_PID_DIGITS):
        n, d = divmod(n, 36)
        digits = _BASE36[d] + digits
    return prefix + digits


def load_example(name: str, lab_name: str) -> Lab:
    text = (EXAMPLES / name).read_text()
    lab = parse_lab_toml(text, str(EXAMPLES / name))
    lab.name = lab_name
    return lab


def build_lab(lab: Lab) -> Iterator[Lab]:
    lab_down(lab)
    lab_up(lab)
    try:
        yield lab
    finally:
        lab_down(lab)


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(IMPORT_ROOT) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    return e


def ns_run(lab: Lab, node: str, argv: list[str], timeout: float = 30.0,
           input_bytes: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["ip", "netns", "exec", lab.netns(node), *argv], capture_output=True, timeout=timeout,
                          env=env(), input=input_bytes, check=False)


def ns_python(lab: Lab, node: str, code: str, timeout: float = 30.0) -> subprocess.CompletedProcess[bytes]:
    return ns_run(lab, node, [sys.executable, "-c", code], timeout=timeout)


def ns_popen(lab: Lab, node: str, argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["ip", "netns", "exec", lab.netns(node), *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env())


def gateway_argv(host_file: Path, *extra: str) -> list[str]:
    """`python -m natbox gateway ...` once the lead wired it into natbox.cli.main, else the module. Options in
    $NATBOX_TEST_GATEWAY_ARGS are added (the live suite run again with `--offload`: .ci/run); when they ask for
    --offload or --offload-new where it cannot run (no clang or tc, no BPF), the calling test skips, naming it."""
    from natbox.cli import main as cli_main

    if gateway_offloads():
        from natbox.testing.gateway_live import require_offload

        require_offload()

    extra = (*extra, *os.environ.get("NATBOX_TEST_GATEWAY_ARGS", "").split())

    if "gateway" in cli_main.COMMANDS:
        return [sys.executable, "-m", "natbox", "gateway", str(host_file), *extra]
    return [sys.executable, "-m", "natbox.cli.gateway", str(host_file), *extra]


def gateway_offloads() -> bool:
    """Whether $NATBOX_TEST_GATEWAY_ARGS runs every gateway with --offload or --offload-new: tests then expect
    what docs/differences.md says that mode shows (offloaded entries listed `[OFFLOAD]`)."""
    return any(a in ("--offload", "--offload-new") for a in os.environ.get("NATBOX_TEST_GATEWAY_ARGS", "").split())


def wait_ready(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> str:
    """Read the gateway's stderr until its 'ready' line and return all it said until then; fail with what
    it said otherwise."""
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline().decode(errors="replace")
        if not line:
            break
        lines.append(line)
        if "ready:" in line:
            return "".join(lines)
    proc.kill()
    out = "".join(lines) + (proc.stderr.read().decode(errors="replace") if proc.stderr else "")
    pytest.fail(f"gateway did not start: {out}")


def stop(proc: subprocess.Popen[bytes]) -> str:
    """SIGTERM the process (by its own pid) and return the rest of its stderr."""
    if proc.poll() is None:
        proc.terminate()
    try:
        _out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        _out, err = proc.communicate()
    return err.decode(errors="replace")


def run_natbox(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """`python -m natbox ARGS` from the root namespace (the control socket is a path: any namespace reaches it)."""
    return subprocess.run([sys.executable, "-m", "natbox", *args], env=env(), timeout=timeout, text=True,
                          capture_output=True, check=False)
