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
    """`natbox status --control PATH`: a running gateway's interfaces, counters and conntrack figures."""
    args = list(argv)
    if len(args) != 2 or args[0] != "--control":
        sys.stderr.write("usage: natbox status --control PATH\n")
        return 2
    return forward_command(args[1], "status", [], None, sys.stdout, sys.stderr, "natbox status")
