"""`natbox conntrack --control PATH -L|-E|-S|-C|-F|-D [filters] [-o extended|xml|id|save]`: the conntrack
tool, on a running gateway's table. The gateway parses the command line as conntrack-tools 1.4.7 does
(natbox.gateway.ctcommand) and answers with its output, messages and exit codes.

Offline, the conntrack table of a replay is written by `natbox replay --out DIR` (conntrack.txt).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from natbox.adapters.control import follow_events, forward_command

__all__ = ["conntrack_main", "status_main"]

USAGE = ("usage: natbox conntrack --control PATH -L|-E|-D [-s A[/N]] [-d A] [-r A] [-q A] [-p P [--sport N] "
         "[--dport N] [--state S]] [-u STATUS] [-m MARK] [-n|-g|-j] [-o extended,xml,id,save] | -S | -C | -F\n")


def conntrack_main(argv: Sequence[str]) -> int:
    args = list(argv)
    control = None
    if "--control" in args:
        i = args.index("--control")
        if i + 1 < len(args):
            control = args[i + 1]
            del args[i:i + 2]
    if control is None:
        sys.stderr.write("natbox conntrack: needs --control PATH (a running natbox gateway's control socket)\n"
                         + USAGE)
        return 2
    if "-E" in args or "--event" in args:
        return follow_events(control, sys.stdout, sys.stderr, "conntrack", args)
    return forward_command(control, "conntrack", args or ["-L"], None, sys.stdout, sys.stderr, "conntrack")


def status_main(argv: Sequence[str]) -> int:
    """`natbox status --control PATH [--json]`: a running gateway's interfaces, counters and conntrack figures
    (as one JSON object with --json: natbox.gateway.commands.StatusData)."""
    args = list(argv)
    as_json = "--json" in args
    args = [a for a in args if a != "--json"]
    if len(args) != 2 or args[0] != "--control":
        sys.stderr.write("usage: natbox status --control PATH [--json]\n")
        return 2
    return forward_command(args[1], "status", ["--json"] if as_json else [], None, sys.stdout, sys.stderr,
                           "natbox status")
