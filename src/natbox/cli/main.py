"""`natbox` command line: one subcommand per job, each a thin shell over the engine.

Exit codes: 0 success, 1 failure, 2 bad usage or input (iptables' own codes for its subcommands).
Errors are one line on stderr, naming the file:line:column where there is one; never a traceback: what a
subcommand does not catch itself (a `NatboxError`, a file that cannot be read) is caught here and printed
as `natbox COMMAND: message`, exit 2.

`natbox --help` lists the commands, `natbox COMMAND --help` (or `natbox help COMMAND`) explains one in
full, `natbox --version` prints the version, `natbox completion bash|zsh|tcsh` prints a completion script
(needs shtab: `pip install 'natbox[completion]'`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from natbox.errors import NatboxError

__all__ = ["COMMANDS", "build_parser", "main"]

USAGE = """\
usage: natbox COMMAND [ARGS...]
       natbox COMMAND --help      (or natbox help COMMAND): a command's options, in full
       natbox --version

Linux NAT (netfilter conntrack, the nat/filter/mangle/raw tables) as a userspace engine that does to
IPv4 packets what a Linux 6.x kernel does, and prints what Linux's tools would print.

commands:
  demo NAME            run a built-in experiment in simulated time (docker, qemu, hairpin, port-clash,
                       basic); no root, no network
  replay               replay captures (or a scenario file) through a host model: what leaves each
                       interface, conntrack -L, iptables -nvL, drops
  explain              every packet's path through the host (hooks, chains, rules, conntrack, NAT, routing)
  iptables ARGS        iptables, on a ruleset file (--rules FILE or $NATBOX_RULES) or a running gateway
                       (--control SOCKET)
  iptables-save        print a ruleset as iptables-save does (same --rules / --control)
  iptables-restore     load iptables-save text into a ruleset (same --rules / --control)
  ip6tables ARGS       ip6tables, ip6tables-save, ip6tables-restore: the same on an IPv6 ruleset file
  ip6tables-save       (--rules FILE or $NATBOX_RULES6; IPv4 and IPv6 rules are two files, as
  ip6tables-restore    iptables-save and ip6tables-save write them)
  ipset ARGS           ipset 7.17, on a sets file of `ipset save` text (--sets FILE or $NATBOX_IPSETS)
  nfacct ARGS          nfacct 1.0.2, on an objects file of `nfacct list` text (--acct FILE or $NATBOX_NFACCT)
  conntrack            the conntrack tool on a running gateway's table (--control SOCKET): -L -E -S -C -D -F
  status               a running gateway's interfaces, counters and table figures (--control SOCKET)
  bench [engine|rules] measure the engine's packet rate, or the filter chain cost
  gateway HOST         run the host model on real interfaces: a live NAT (root)
  lab FILE up|down|gateway|exec NODE CMD   namespaces to try the gateway in (root)
  snapshot DIR         save a real host's interfaces, routes, sysctls and ruleset (--netns NAME)
  difftest SCENARIO    run scenarios on the Linux kernel and on natbox, and compare (root)
  completion SHELL     print a shell completion script (bash, zsh, tcsh)
  version              print natbox's version

environment:
  NATBOX_RULES         the ruleset file of iptables, iptables-save and iptables-restore without --rules
  NATBOX_RULES6        the IPv6 ruleset file of ip6tables, ip6tables-save and ip6tables-restore
  NATBOX_IPSETS        the sets file of ipset without --sets
  NATBOX_NFACCT        the accounting objects file of nfacct (and of iptables' -m nfacct) without --acct
  NO_COLOR, TERM=dumb  no colour in --color auto output

exit status: 0 success; 1 failure (a difference, a failed run); 2 bad usage or an input that cannot be
used, with one line on stderr naming it. The iptables commands exit as iptables does.
"""

RULES_HELP = """\
Where the ruleset is:
  --rules FILE         a ruleset file in `iptables-save -c` form; each command loads it, applies the
                       change and writes it back (iptables -A/-I/-D/-F..., iptables-restore), or prints it
  NATBOX_RULES=FILE    the same, from the environment, when --rules is not given
  --control SOCKET     instead of a file: the live ruleset of a running `natbox gateway --control SOCKET`
                       (new rules apply to new connections only, as in Linux)
One of them is needed; the rest of the command line is the iptables tool's own.
"""

SUBCOMMAND_HELP: dict[str, str] = {
    "iptables-save": """\
usage: natbox iptables-save (--rules FILE | --control SOCKET) [-c] [-t TABLE]

Print the ruleset as iptables-save v1.8.9 (nf_tables) does: every table (or only -t TABLE), with the
packet and byte counters when -c is given. `natbox iptables-save -h` prints iptables-save's own usage.

""" + RULES_HELP + """
example: natbox iptables-save --rules r.v4 -t nat
""",
    "iptables-restore": """\
usage: natbox iptables-restore (--rules FILE | --control SOCKET) [-n] [-c] [-t] [FILE]

Load iptables-save text (from FILE or stdin) into the ruleset as iptables-restore v1.8.9 does: each table
named in the input is replaced (or, with -n/--noflush, appended to); -c restores counters; -t/--test only
checks the input. Messages and exit codes are iptables-restore's (`natbox iptables-restore -h` prints its
own usage).

""" + RULES_HELP + """
example: iptables-save > dump; natbox iptables-restore --rules r.v4 < dump
""",
    "ip6tables-save": """\
usage: natbox ip6tables-save --rules FILE [-c] [-t TABLE]

Print the IPv6 ruleset as ip6tables-save v1.8.9 (nf_tables) does: every table (or only -t TABLE), with
the packet and byte counters when -c is given. The IPv6 ruleset is its own file (`ip6tables-save -c`
text; NATBOX_RULES6 when --rules is not given), beside the IPv4 one.

example: natbox ip6tables-save --rules r.v6 -t nat
""",
    "ip6tables-restore": """\
usage: natbox ip6tables-restore --rules FILE [-n] [-c] [-t] [FILE]

Load ip6tables-save text (from FILE or stdin) into the IPv6 ruleset file as ip6tables-restore v1.8.9
does (NATBOX_RULES6 when --rules is not given); -n/--noflush, -c, -t/--test as for iptables-restore.

example: ip6tables-save > dump; natbox ip6tables-restore --rules r.v6 < dump
""",
    "ipset": """\
usage: natbox ipset [--sets FILE] [--rules FILE] ARGS...
       natbox ipset --control SOCKET ARGS...

ipset v7.17 on a sets file holding `ipset save` text: create/add/del/test/list/save/restore/flush/destroy/
swap/rename, -exist, -file, -name, -terse, -output save, with ipset's output, messages and exit codes.
  --sets FILE          the sets file (default $NATBOX_IPSETS); loaded, changed and written back
  --rules FILE         the ruleset file (default $NATBOX_RULES): sets its rules use (-m set, -j SET) are
                       referenced and cannot be destroyed
  --control SOCKET     instead of a file: the sets of a running `natbox gateway --control SOCKET`, which
                       its rules use (`natbox iptables --control` rules may name them)
Types: hash:ip, hash:net, hash:ip,port, hash:net,port, hash:ip,port,ip, hash:ip,port,net, hash:net,iface,
hash:mac, bitmap:ip, bitmap:port, list:set; family inet only.

example: natbox ipset --sets s.ipset create blocked hash:net timeout 600
""",
    "nfacct": """\
usage: natbox nfacct [--acct FILE] [--rules FILE] ARGS...
       natbox nfacct --control SOCKET ARGS...

nfacct v1.0.2 on a file holding `nfacct list` text: list [reset] [xml], add NAME [byte|packet QUOTA],
delete NAME, get NAME [reset] [xml], flush, restore (from stdin), version, help; nfacct's output, messages
and exit codes.
  --acct FILE          the objects file (default $NATBOX_NFACCT); loaded, changed and written back
  --rules FILE         the ruleset file (default $NATBOX_RULES): objects its -m nfacct rules name cannot be
                       deleted, and flush keeps them
  --control SOCKET     instead of a file: the objects of a running `natbox gateway --control SOCKET`, which
                       its -m nfacct rules count into
`natbox iptables --acct FILE` checks -m nfacct rules against the same objects.

example: natbox nfacct --acct a.nfacct add http-in
""",
    "conntrack": """\
usage: natbox conntrack --control SOCKET [-L | -E | -S | -C | -F | -D [filters]]

The conntrack tool (conntrack-tools 1.4) on the connection tracking table of a running
`natbox gateway --control SOCKET`:
  -L                   list the table as `conntrack -L` (the default)
  -E                   follow events as `conntrack -E` ([NEW], [UPDATE], [DESTROY]) until interrupted
  -S                   per-CPU statistics as `conntrack -S`
  -C                   the number of entries
  -F                   flush the table
  -D [-s A] [-d A] [-r A] [-q A] [-p PROTO] [--sport N] [--dport N]
                       delete the entries that match
Offline, `natbox replay --out DIR` writes the table of a replay to DIR/conntrack.txt.

example: natbox conntrack --control /run/natbox.sock -L
""",
    "status": """\
usage: natbox status --control SOCKET [--json]

A running `natbox gateway --control SOCKET`: its interfaces with their counters, the engine's drop
reasons and the conntrack table's figures.

  --json   the same as one JSON object (keys: host, interfaces, neighbours, loop, engine_counters,
           conntrack, reports), for scripts and monitoring

example: natbox status --control /run/natbox.sock --json
""",
}


def _version_text() -> str:
    from importlib.metadata import PackageNotFoundError, version

    from natbox.cli.builds import build_name

    try:
        return f"natbox {version('natbox')} ({build_name()})"
    except PackageNotFoundError:
        return f"natbox (not installed) ({build_name()})"


def _version(argv: Sequence[str]) -> int:
    print(_version_text())
    return 0


def _lazy(module: str, func: str) -> Callable[[Sequence[str]], int]:
    def run(argv: Sequence[str]) -> int:
        import importlib

        fn: Callable[[list[str]], int] = getattr(importlib.import_module(module), func)
        return fn(list(argv))

    return run


def _completion(argv: Sequence[str]) -> int:
    from natbox.cli.common import parse, parser

    p = parser("natbox completion", "Print a shell completion script for natbox on stdout.", """\
examples:
  natbox completion bash > ~/.local/share/bash-completion/completions/natbox
  natbox completion zsh > "${fpath[1]}/_natbox"
Needs shtab (pip install 'natbox[completion]').""")
    p.add_argument("shell", choices=("bash", "zsh", "tcsh"), help="the shell to complete in")
    args = parse(p, argv)
    if isinstance(args, int):
        return args
    try:
        import shtab
    except ImportError:
        sys.stderr.write("natbox completion: needs shtab: pip install 'natbox[completion]' (or pip install shtab)\n")
        return 2
    sys.stdout.write(shtab.complete(build_parser(file_hints=True), shell=args.shell) + "\n")
    return 0


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "demo": _lazy("natbox.cli.demo", "demo_main"),
    "replay": _lazy("natbox.cli.replay", "replay_main"),
    "explain": _lazy("natbox.cli.explain", "explain_main"),
    "iptables": _lazy("natbox.cli.iptables", "iptables_main"),
    "iptables-save": _lazy("natbox.cli.iptables", "iptables_save_main"),
    "iptables-restore": _lazy("natbox.cli.iptables", "iptables_restore_main"),
    "ip6tables": _lazy("natbox.cli.ip6tables", "ip6tables_main"),
    "ip6tables-save": _lazy("natbox.cli.ip6tables", "ip6tables_save_main"),
    "ip6tables-restore": _lazy("natbox.cli.ip6tables", "ip6tables_restore_main"),
    "ipset": _lazy("natbox.cli.ipset", "ipset_main"),
    "nfacct": _lazy("natbox.cli.nfacct", "nfacct_main"),
    "conntrack": _lazy("natbox.cli.conntrack", "conntrack_main"),
    "status": _lazy("natbox.cli.conntrack", "status_main"),
    "bench": _lazy("natbox.cli.bench", "bench_main"),
    "snapshot": _lazy("natbox.adapters.snapshot", "cli_snapshot"),
    "gateway": _lazy("natbox.cli.gateway", "cli_gateway"),
    "lab": _lazy("natbox.cli.lab", "cli_lab"),
    "difftest": _lazy("natbox.difftest.cli", "cli_difftest"),
    "completion": _completion,
    "version": _version,
}

# one-line summaries for the completion parser (the same words as USAGE)
_SUMMARY = {
    "demo": "run a built-in experiment", "replay": "replay captures through a host model",
    "explain": "every packet's path through the host", "iptables": "iptables, on a ruleset file or a gateway",
    "iptables-save": "print a ruleset as iptables-save does", "iptables-restore": "load iptables-save text",
    "ip6tables": "ip6tables, on an IPv6 ruleset file or a gateway",
    "ip6tables-save": "print an IPv6 ruleset as ip6tables-save does",
    "ip6tables-restore": "load ip6tables-save text",
    "ipset": "ipset, on a sets file",
    "nfacct": "nfacct, on an accounting objects file",
    "conntrack": "a running gateway's conntrack table", "status": "a running gateway's state",
    "bench": "measure the engine", "gateway": "a live NAT on real interfaces",
    "lab": "network namespaces to try the gateway in", "snapshot": "save a real host's configuration",
    "difftest": "compare natbox with the kernel", "completion": "print a shell completion script",
    "version": "print natbox's version",
}


def build_parser(*, file_hints: bool = False) -> argparse.ArgumentParser:
    """The whole command line as one argparse tree (for completion scripts and documentation): the
    commands that parse with argparse contribute their own parsers; the others take their arguments
    as they are."""
    from natbox.adapters.snapshot import build_parser as snapshot_parser
    from natbox.cli.demo import build_parser as demo_parser
    from natbox.cli.replay import build_parser as replay_parser
    from natbox.difftest.cli import build_parser as difftest_parser

    top = argparse.ArgumentParser(prog="natbox", description="Linux NAT as a userspace engine.")
    top.add_argument("--version", action="version", version=_version_text())
    sub = top.add_subparsers(dest="command", metavar="COMMAND")
    own: dict[str, argparse.ArgumentParser] = {
        "demo": demo_parser(), "replay": replay_parser(explain_cmd=False), "explain": replay_parser(explain_cmd=True),
        "difftest": difftest_parser(), "snapshot": snapshot_parser(),
    }
    for name in COMMANDS:
        if name in own:
            sp = sub.add_parser(name, parents=[own[name]], add_help=False, help=_SUMMARY[name],
                                description=own[name].description)
        else:
            sp = sub.add_parser(name, help=_SUMMARY[name])
            if name == "completion":
                sp.add_argument("shell", choices=("bash", "zsh", "tcsh"))
            elif name != "version":
                sp.add_argument("args", nargs=argparse.REMAINDER)
        if file_hints:
            import shtab

            for action in sp._actions:
                meta = str(action.metavar or "")
                if "DIR" in meta:
                    setattr(action, "complete", shtab.DIRECTORY)  # noqa: B010 (shtab reads this attribute)
                elif any(w in meta for w in ("FILE", "HOST", "SCENARIO")):
                    setattr(action, "complete", shtab.FILE)  # noqa: B010
    return top


def _help(args: list[str]) -> int:
    """`natbox help [COMMAND]`."""
    if not args:
        sys.stdout.write(USAGE)
        return 0
    return main([args[0], "--help"])


def _run(name: str, cmd: Callable[[Sequence[str]], int], argv: list[str]) -> int:
    """Run one command; what it lets escape that is a user's mistake becomes one line and exit 2."""
    try:
        return cmd(argv)
    except BrokenPipeError:
        # the reader went away (natbox ... | head): stop quietly, and keep Python from complaining at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130
    except NatboxError as exc:
        msg = str(exc)
    except UnicodeDecodeError as exc:
        msg = f"an input is not UTF-8 text (byte {exc.start}: {exc.reason}; is it a binary file?)"
    except OSError as exc:
        msg = f"{exc.filename}: {exc.strerror}" if exc.filename is not None else (exc.strerror or str(exc))
    sys.stderr.write(f"natbox {name}: {msg}\n")
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        sys.stderr.write(USAGE)
        return 2
    if args[0] in ("-h", "--help", "help"):
        return _help(args[1:] if args[0] == "help" else [])
    if args[0] in ("-V", "--version"):
        return _version([])
    name = args[0]
    cmd = COMMANDS.get(name)
    if cmd is None:
        sys.stderr.write(f"natbox: unknown command {name!r} (try 'natbox --help')\n")
        return 2
    rest = args[1:]
    # the iptables tools and conntrack keep their own -h (their emulation); --help explains natbox's side
    if name in SUBCOMMAND_HELP and (rest == ["--help"] or (name == "status" and rest == ["-h"])):
        sys.stdout.write(SUBCOMMAND_HELP[name])
        return 0
    return _run(name, cmd, rest)


if __name__ == "__main__":
    sys.exit(main())
