"""Live natbox as the router of a difftest run: `natbox gateway --adopt` in the router's namespace, asked
through its control socket (`natbox.difftest.kernel.run_on_kernel(..., natbox_router=True)`)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["CMD_TIMEOUT", "LIVE_START_TIMEOUT", "LiveNatbox"]

CMD_TIMEOUT = 15.0  # seconds, any one command asked of the gateway
LIVE_START_TIMEOUT = 20.0  # seconds natbox gateway may take to say it is ready


class LiveNatbox:
    """`natbox gateway --adopt --control SOCK --no-vnet-hdr` in the router namespace, ended by PID.

    The lab's links have offloads off, so there is no GSO to carry; without vnet headers the gateway keeps
    the devices' real MTUs in its model, and fragmentation and frag-needed are natbox's own decisions.
    (With vnet headers the gateway raises the model MTU for 64 KiB GSO segments: issue 5's engine work.)"""

    def __init__(self, netns: str, extra: tuple[str, ...] = ()) -> None:
        import natbox

        self.netns = netns
        self.sock = os.path.join(tempfile.gettempdir(), f"{netns}.ctl")
        src = str(Path(natbox.__file__).resolve().parents[1])
        self.env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-m", "natbox", "gateway", "--adopt", "--control",
             self.sock, "--seed", "0", "--no-vnet-hdr", *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=self.env)
        assert self.proc.stderr is not None
        deadline = time.monotonic() + LIVE_START_TIMEOUT
        said: list[str] = []
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            said.append(line)
            if "ready:" in line:
                return
        self.stop()
        raise RuntimeError("natbox gateway --adopt did not start: " + " | ".join(x.strip() for x in said))

    def natbox(self, *argv: str) -> str:
        cmd = [sys.executable, "-m", "natbox", *argv[:1], "--control", self.sock, *argv[1:]]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=CMD_TIMEOUT, env=self.env, check=False)
        if p.returncode not in (0, 1):
            raise RuntimeError(f"natbox {' '.join(argv)}: exit {p.returncode}: {p.stderr.strip()}")
        return p.stdout

    def exec(self, argv: list[str]) -> None:
        if argv[0] in ("iptables", "conntrack", "iptables-restore", "ip6tables", "ip6tables-restore"):
            self.natbox(*argv)
            return
        if argv[:2] == ["ip", "addr"]:  # natbox's own addresses (gateway/commands.py's ip_addr_command)
            from natbox.adapters.control import ControlError, control_call

            try:
                answer = control_call(self.sock, {"cmd": "ip", "argv": argv[1:]})
            except ControlError as exc:
                raise RuntimeError(f"live natbox: {' '.join(argv)}: {exc}") from None
            if answer["exit"] != 0:
                raise RuntimeError(f"live natbox: {' '.join(argv)}: {str(answer.get('stderr', '')).strip()}")
            return
        raise RuntimeError(f"live natbox: `{' '.join(argv)}` is not mirrored on the gateway")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()
