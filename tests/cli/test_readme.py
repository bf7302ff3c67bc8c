"""The commands README.md and examples/README.md show run as written (those that need no root, no network
and no running gateway: demo, replay, explain and the iptables tools), and the example captures they name
are current: natbox's simulator writes them again byte for byte."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from natbox.demos.captures import CAPTURES, write_example_captures
from natbox.testing.paths import EXAMPLES, IMPORT_ROOT, REPO

OFFLINE = ("demo", "replay", "explain", "iptables", "iptables-save", "iptables-restore")


def _commands(doc: Path) -> list[str]:
    """The shell lines of the ```sh blocks of `doc` that run only offline natbox commands."""
    text = doc.read_text()
    out: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for raw in block.splitlines():
            line = re.sub(r"\s+#.*$", "", raw).strip()
            if not line or line.startswith("#") or "--control" in line:  # a running gateway: tests/live
                continue
            parts = [p.strip() for p in re.split(r"&&|;", line)]
            words = [p.split()[:2] for p in parts if p]
            if all(w[0] in ("natbox", "pip") for w in words) and any(w[0] == "natbox" for w in words) and all(
                    w[1] in OFFLINE for w in words if w[0] == "natbox"):
                out.append(" ; ".join(p for p in parts if not p.startswith("pip ")))
    return out


README_COMMANDS = _commands(REPO / "README.md") + _commands(EXAMPLES / "README.md")


def test_the_readmes_show_offline_commands() -> None:
    joined = "\n".join(README_COMMANDS)
    for word in ("natbox demo docker", "eth0=examples/lan.pcap", "eth1=examples/wan.pcap", "examples/both.pcapng",
                 "natbox explain", "natbox iptables-restore"):
        assert word in joined, word


@pytest.mark.parametrize("command", README_COMMANDS)
def test_readme_command_runs_as_written(command: str, tmp_path: Path) -> None:
    (tmp_path / "examples").symlink_to(EXAMPLES)
    exe = shutil.which("natbox")
    prelude = "" if exe else f'natbox() {{ "{sys.executable}" -m natbox "$@"; }}\n'
    env = dict(os.environ, PYTHONPATH=str(IMPORT_ROOT))
    env.pop("NATBOX_RULES", None)
    res = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", prelude + command], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, f"{command}\n{res.stderr[-2000:]}"
    assert "Traceback" not in res.stderr
    if "--out out/" in command:
        assert (tmp_path / "out" / "conntrack.txt").read_text()
    if "--pcapng out.pcapng" in command:
        assert (tmp_path / "out.pcapng").stat().st_size > 1000


def test_example_captures_are_current(tmp_path: Path) -> None:
    written = write_example_captures(EXAMPLES, tmp_path)
    assert sorted(p.name for p in written) == sorted(CAPTURES)
    for p in written:
        assert p.read_bytes() == (EXAMPLES / p.name).read_bytes(), f"examples/{p.name} is stale: " \
            "python -m natbox.demos.captures examples/"
