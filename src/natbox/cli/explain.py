"""`natbox explain`: each packet's path through the host, step by step, and its fate.

```
natbox explain --host HOST --in IFACE=FILE [--in ...] [--packet N] [--json] [--color auto|always|never]
natbox explain --host HOST --scenario FILE [--packet N] ...
```

For every input packet (or only packet N, counted 1-based in the merged input order): a header line (its
number, time, interface, source file and index, and `tcpdump -n` text), the engine's steps in order
(hooks, rules matched and why others did not, conntrack, NAT bindings and port choices, routing), then
its fate: `=> sent on IFACE` (with the conntrack id and the packet as sent), `=> delivered locally`,
`=> dropped at WHERE: REASON`. Colour on a terminal (`--color`). `--json` prints one JSON object per
packet instead (`natbox.replay.report.packet_record` with `trace`). Same as `natbox replay --explain`
without the summary. Exit codes as `natbox replay`.
"""

from __future__ import annotations

from collections.abc import Sequence

from natbox.cli.replay import main_for

__all__ = ["explain_main"]


def explain_main(argv: Sequence[str]) -> int:
    """`natbox explain ...` (see the module doc)."""
    return main_for(argv, prog="natbox explain", explain_cmd=True)
