"""One consistent command line: --version, --help for every command, completion, NO_COLOR/TERM=dumb."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys

import pytest
from tests.cli.test_cli_errors import natbox

from natbox.cli.builds import build_name
from natbox.cli.main import COMMANDS
from natbox.testing.paths import EXAMPLES, IMPORT_ROOT


def test_version() -> None:
    for flag in ("--version", "-V", "version"):
        res = natbox(flag)
        assert res.returncode == 0 and re.fullmatch(r"natbox \d+\.\d+\.\d+\S* \((pure Python|compiled \(mypyc\))\)\n",
                                                    res.stdout), res
        assert res.stdout.endswith(f"({build_name()})\n"), res  # the build this test process runs


def test_top_level_help_lists_every_command() -> None:
    res = natbox("--help")
    assert res.returncode == 0 and res.stdout.startswith("usage: natbox COMMAND")
    for name in COMMANDS:
        assert re.search(rf"^  {re.escape(name)}\b", res.stdout, re.M), name
    assert "NATBOX_RULES" in res.stdout and "NO_COLOR" in res.stdout and "exit status" in res.stdout


def test_no_arguments_is_a_usage_error() -> None:
    res = natbox()
    assert res.returncode == 2 and res.stderr.startswith("usage: natbox COMMAND")


def test_unknown_command() -> None:
    res = natbox("frobnicate")
    assert res.returncode == 2 and res.stderr == "natbox: unknown command 'frobnicate' (try 'natbox --help')\n"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(name: str) -> None:
    res = natbox(name, "--help")
    assert res.returncode == 0, res.stderr
    # `natbox iptables --help` is iptables' own page (natbox.cli.iptables), then natbox's notes
    assert res.stdout.startswith(("usage: natbox", "natbox ", "iptables v1.8.9", "ip6tables v1.8.9")), res.stdout[:200]
    assert "Traceback" not in res.stderr
    same = natbox("help", name)
    assert same.returncode == 0 and same.stdout == res.stdout


@pytest.mark.parametrize("name", ["iptables", "iptables-save", "iptables-restore", "conntrack", "status"])
def test_ruleset_and_control_commands_explain_where_they_act(name: str) -> None:
    out = natbox(name, "--help").stdout
    assert "--control SOCKET" in out
    if name.startswith("iptables"):
        assert "--rules FILE" in out and "NATBOX_RULES" in out


@pytest.mark.parametrize("name", ["replay", "explain", "difftest", "demo", "snapshot"])
def test_help_is_a_manual_page(name: str) -> None:
    """The argparse pages say what the command does, give examples and the exit status."""
    out = natbox(name, "--help").stdout
    assert "example" in out
    if name != "demo":
        assert "exit status" in out


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion(shell: str) -> None:
    pytest.importorskip("shtab")
    res = natbox("completion", shell)
    assert res.returncode == 0, res.stderr
    for word in ("replay", "difftest", "--host", "--scenario", "iptables-restore"):
        assert word in res.stdout, word


def test_completion_needs_a_known_shell() -> None:
    res = natbox("completion", "fish")
    assert res.returncode == 2 and "invalid choice: 'fish'" in res.stderr


def _on_a_terminal(argv: list[str], **env: str) -> str:
    """Run `python -m natbox ARGV` with stdout on a pseudo-terminal; what it printed there."""
    master, slave = pty.openpty()
    full_env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM")}
    full_env.update(env, PYTHONPATH=str(IMPORT_ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "natbox", *argv], stdout=slave, stderr=subprocess.DEVNULL,
                            env=full_env)
    os.close(slave)
    chunks: list[bytes] = []
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    proc.wait(timeout=60)
    return b"".join(chunks).decode()


@pytest.mark.parametrize("argv", [
    ["demo", "basic", "--explain"],
    ["explain", "--host", str(EXAMPLES / "masquerade-host.toml"), "--scenario",
     str(EXAMPLES / "masquerade-scenario.toml"), "--packet", "1"],
])
def test_colour_on_a_terminal_unless_no_color_or_dumb(argv: list[str]) -> None:
    assert "\x1b[" in _on_a_terminal(argv, TERM="xterm")
    assert "\x1b[" not in _on_a_terminal(argv, TERM="xterm", NO_COLOR="1")
    assert "\x1b[" not in _on_a_terminal(argv, TERM="dumb")
    assert "\x1b[" in _on_a_terminal([*argv, "--color", "always"], TERM="dumb", NO_COLOR="1")


def test_quiet_replay_prints_no_summary() -> None:
    args = ["replay", "--host", str(EXAMPLES / "masquerade-host.toml"), "--scenario",
            str(EXAMPLES / "masquerade-scenario.toml")]
    loud, quiet = natbox(*args), natbox(*args, "--quiet")
    assert loud.returncode == quiet.returncode == 0
    assert "conntrack -L" in loud.stdout and quiet.stdout == ""
    assert quiet.stderr.startswith("natbox replay: 23 packets (23 replayed)")
