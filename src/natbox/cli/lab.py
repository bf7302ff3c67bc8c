"""`natbox lab FILE up|down|status|plan|exec NODE CMD...`: network-namespace labs for trying the gateway.

Exit codes: 0 success, 1 a command failed, 2 bad usage or a bad lab file. `exec` returns the command's
own exit status.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence

from natbox.lab.model import Lab

__all__ = ["cli_lab"]

USAGE = """\
usage: natbox lab FILE up|down|status|plan
       natbox lab FILE exec NODE CMD [ARGS...]
       natbox lab FILE gateway [GATEWAY ARGS...]

  up       create the lab's namespaces, links, addresses and routes (nbx-<lab>-<node>)
  down     delete them
  status   which namespaces exist
  plan     print the commands `up` would run
  exec     run CMD inside NODE's namespace
  gateway  run `natbox gateway` in the gateway node with the lab's host file (until Ctrl-C or
           SIGTERM: natbox lab becomes the gateway, so signals reach it)
"""


def _gateway_argv(lab_path: str, lab: Lab, extra: Sequence[str]) -> list[str] | None:
    """`python -m natbox gateway HOST ARGS...` for the lab's gateway node, or None without one."""
    gw = lab.gateway
    if gw is None or gw.host is None:
        return None
    host = os.path.join(os.path.dirname(os.path.abspath(lab_path)), gw.host)
    return [sys.executable, "-m", "natbox", "gateway", host, *lab.gateway_args(), *extra]


def _exec(argv: list[str]) -> int:
    """Become `argv` (`ip netns exec NS CMD...`, which becomes CMD in turn): no wrapper stays behind, so a
    signal sent to `natbox lab ... gateway` (SIGTERM from kill or a service manager, Ctrl-C) reaches the
    gateway itself, which stops cleanly and releases its interfaces. Returns only when the exec failed."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        sys.stderr.write(f"natbox lab: cannot run {argv[0]}: {exc.strerror or exc}\n")
        return 1


def cli_lab(argv: Sequence[str]) -> int:
    from natbox.adapters.netns import NetnsError
    from natbox.errors import UsageError
    from natbox.files import read_text
    from natbox.lab.builder import lab_down, lab_exec_argv, lab_status, lab_up, plan_up
    from natbox.lab.model import LabError, parse_lab_toml

    args = list(argv)
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return 0 if args else 2
    if len(args) < 2:
        sys.stderr.write("natbox lab: missing action (up, down, status, plan, exec)\n")
        return 2
    path, action, rest = args[0], args[1], args[2:]
    try:
        text = read_text(path)  # one line naming the file if it is missing, a directory, binary...
    except UsageError as exc:
        sys.stderr.write(f"natbox lab: {exc}\n")
        return 2
    try:
        lab = parse_lab_toml(text, path)
    except LabError as exc:
        sys.stderr.write(f"natbox lab: {exc}\n")
        return 2
    try:
        if action == "plan":
            for cmd in plan_up(lab):
                print(shlex.join(cmd))
            return 0
        if action == "up":
            if os.geteuid() != 0:
                sys.stderr.write("natbox lab: up needs root (network namespaces)\n")
                return 1
            lab_up(lab)
            print(f"lab {lab.name} up: " + ", ".join(lab.netns(n) for n in lab.nodes))
            if lab.gateway is not None and lab.gateway.host is not None:
                print(f"start the gateway with: natbox lab {shlex.quote(path)} gateway")
            return 0
        if action == "down":
            deleted = lab_down(lab)
            print(f"lab {lab.name} down" + (f": deleted {', '.join(deleted)}" if deleted else " (nothing to delete)"))
            return 0
        if action == "status":
            for node, up in lab_status(lab).items():
                print(f"{lab.netns(node)}\t{'up' if up else 'absent'}")
            return 0
        if action == "gateway":
            gw_argv = _gateway_argv(path, lab, rest)
            if gw_argv is None:
                sys.stderr.write(f"natbox lab: {path}: no node has gateway = true and a host file\n")
                return 2
            assert lab.gateway is not None
            return _exec(lab_exec_argv(lab, lab.gateway.name, gw_argv))
        if action == "exec":
            if len(rest) < 2:
                sys.stderr.write("natbox lab: usage: exec NODE CMD [ARGS...]\n")
                return 2
            return _exec(lab_exec_argv(lab, rest[0], rest[1:]))
    except NetnsError as exc:
        sys.stderr.write(f"natbox lab: {exc}\n")
        return 1
    sys.stderr.write(f"natbox lab: unknown action {action!r} (up, down, status, plan, exec)\n")
    return 2


if __name__ == "__main__":
    sys.exit(cli_lab(sys.argv[1:]))
