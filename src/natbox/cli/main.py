"""`natbox` command line: one subcommand per job, each a thin shell over the engine.

Exit codes: 0 success, 1 failure, 2 bad usage or input (iptables' own codes for its subcommands).
Errors are one line on stderr, naming the file:line:column where there is one; never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

__all__ = ["main"]

USAGE = """\
usage: natbox COMMAND [ARGS...]

commands:
  demo NAME            run a built-in experiment (docker, qemu, hairpin, port-clash, basic)
  replay               replay captures (or a scenario file) through a host model (natbox replay --help)
  explain              every packet's path through the host, step by step (natbox explain --help)
  iptables ARGS        iptables, on a ruleset file (--rules FILE or NATBOX_RULES)
  iptables-save        print a ruleset file as iptables-save does
  iptables-restore     load iptables-save text into a ruleset file
                       (all three take --control SOCKET to act on a running gateway instead)
  conntrack --control SOCKET -L|-S|-C|-F   the live gateway's conntrack table
  status --control SOCKET                  the live gateway's interfaces, counters and table figures
  bench [engine|rules] measure the engine's packet rate, or the filter chain cost
  gateway HOST         run the host model on real interfaces: a live NAT (root)
  lab FILE up|down|exec NODE CMD   build a topology of network namespaces to try the gateway in (root)
  snapshot DIR         save a real host's interfaces, routes, sysctls and ruleset (--netns NAME)
  difftest SCENARIO    run scenarios on the Linux kernel and on natbox, and compare (root)
  version              print natbox's version
"""


def _version(argv: Sequence[str]) -> int:
    from importlib.metadata import version

    print(f"natbox {version('natbox')}")
    return 0


def _lazy(module: str, func: str) -> Callable[[Sequence[str]], int]:
    def run(argv: Sequence[str]) -> int:
        import importlib

        fn: Callable[[list[str]], int] = getattr(importlib.import_module(module), func)
        return fn(list(argv))

    return run


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "demo": _lazy("natbox.cli.demo", "demo_main"),
    "replay": _lazy("natbox.cli.replay", "replay_main"),
    "explain": _lazy("natbox.cli.explain", "explain_main"),
    "iptables": _lazy("natbox.cli.iptables", "iptables_main"),
    "iptables-save": _lazy("natbox.cli.iptables", "iptables_save_main"),
    "iptables-restore": _lazy("natbox.cli.iptables", "iptables_restore_main"),
    "conntrack": _lazy("natbox.cli.conntrack", "conntrack_main"),
    "status": _lazy("natbox.cli.conntrack", "status_main"),
    "bench": _lazy("natbox.cli.bench", "bench_main"),
    "snapshot": _lazy("natbox.adapters.snapshot", "cli_snapshot"),
    "gateway": _lazy("natbox.cli.gateway", "cli_gateway"),
    "lab": _lazy("natbox.cli.lab", "cli_lab"),
    "difftest": _lazy("natbox.difftest.cli", "cli_difftest"),
    "version": _version,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0 if args else 2
    cmd = COMMANDS.get(args[0])
    if cmd is None:
        sys.stderr.write(f"natbox: unknown command {args[0]!r} (try 'natbox --help')\n")
        return 2
    try:
        return cmd(args[1:])
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
