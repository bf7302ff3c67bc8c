"""`natbox ip6tables`, `natbox ip6tables-save`, `natbox ip6tables-restore`: the ip6tables tools on a rules file.

The same commands as natbox.cli.iptables for family NFPROTO_IPV6, on their own ruleset file: IPv4 and IPv6
rulesets are kept in two files, as the kernel keeps two sets of tables and as hosts store them
(`iptables-save > rules.v4`, `ip6tables-save > rules.v6`, Debian's iptables-persistent, the snapshot's
iptables.rules beside ip6tables.rules). `--rules FILE` names the IPv6 file (`ip6tables-save -c` text,
default `$NATBOX_RULES6`); messages, listings and exit codes are those of ip6tables v1.8.9 (nf_tables).
"""

from __future__ import annotations

from typing import TextIO

from natbox.cli.iptables import iptables_main, iptables_restore_main, iptables_save_main, tool_help
from natbox.rules.evaluate import Ruleset
from natbox.rules.model import NFPROTO_IPV6

__all__ = ["IP6TABLES_HELP", "ip6tables_main", "ip6tables_restore_main", "ip6tables_save_main"]

IP6TABLES_HELP = tool_help("ip6tables", ipv6=True)  # `ip6tables -h` of ip6tables v1.8.9 (nf_tables)


def ip6tables_main(argv: list[str], *, rules_path: str | None = None, stdin: TextIO | None = None,
                   stdout: TextIO | None = None, stderr: TextIO | None = None, ruleset: Ruleset | None = None) -> int:
    """`ip6tables ARGS...` on the IPv6 rules file (or on `ruleset`); returns ip6tables' exit status."""
    return iptables_main(argv, rules_path=rules_path, stdin=stdin, stdout=stdout, stderr=stderr, ruleset=ruleset,
                         family=NFPROTO_IPV6, help_text=IP6TABLES_HELP)


def ip6tables_save_main(argv: list[str], *, rules_path: str | None = None, stdin: TextIO | None = None,
                        stdout: TextIO | None = None, stderr: TextIO | None = None,
                        ruleset: Ruleset | None = None) -> int:
    """`ip6tables-save [-c] [-t TABLE]`."""
    return iptables_save_main(argv, rules_path=rules_path, stdin=stdin, stdout=stdout, stderr=stderr,
                              ruleset=ruleset, family=NFPROTO_IPV6)


def ip6tables_restore_main(argv: list[str], *, rules_path: str | None = None, stdin: TextIO | None = None,
                           stdout: TextIO | None = None, stderr: TextIO | None = None,
                           ruleset: Ruleset | None = None) -> int:
    """`ip6tables-restore [--noflush] [-c] [-t] [-T TABLE] [FILE]`."""
    return iptables_restore_main(argv, rules_path=rules_path, stdin=stdin, stdout=stdout, stderr=stderr,
                                 ruleset=ruleset, family=NFPROTO_IPV6)
