"""`natbox ip6tables`, `natbox ip6tables-save`, `natbox ip6tables-restore`: the ip6tables tools on a rules file.

The same commands as natbox.cli.iptables for family NFPROTO_IPV6, on their own ruleset file: IPv4 and IPv6
rulesets are kept in two files, as the kernel keeps two sets of tables and as hosts store them
(`iptables-save > rules.v4`, `ip6tables-save > rules.v6`, Debian's iptables-persistent, the snapshot's
iptables.rules beside ip6tables.rules). `--rules FILE` names the IPv6 file (`ip6tables-save -c` text,
default `$NATBOX_RULES6`); messages, listings and exit codes are those of ip6tables v1.8.9 (nf_tables).
"""

from __future__ import annotations

from typing import TextIO

from natbox.cli.iptables import iptables_main, iptables_restore_main, iptables_save_main
from natbox.rules.evaluate import Ruleset
from natbox.rules.model import NFPROTO_IPV6

__all__ = ["IP6TABLES_HELP", "ip6tables_main", "ip6tables_restore_main", "ip6tables_save_main"]

# `ip6tables -h` of ip6tables v1.8.9 (nf_tables), recorded (stdout, exit 0)
IP6TABLES_HELP = """\
ip6tables v1.8.9 (nf_tables)

Usage: ip6tables -[ACD] chain rule-specification [options]
       ip6tables -I chain [rulenum] rule-specification [options]
       ip6tables -R chain rulenum rule-specification [options]
       ip6tables -D chain rulenum [options]
       ip6tables -[LS] [chain [rulenum]] [options]
       ip6tables -[FZ] [chain] [options]
       ip6tables -[NX] chain
       ip6tables -E old-chain-name new-chain-name
       ip6tables -P chain target [options]
       ip6tables -h (print this help information)

Commands:
Either long or short options are allowed.
  --append  -A chain\t\tAppend to chain
  --check   -C chain\t\tCheck for the existence of a rule
  --delete  -D chain\t\tDelete matching rule from chain
  --delete  -D chain rulenum
\t\t\t\tDelete rule rulenum (1 = first) from chain
  --insert  -I chain [rulenum]
\t\t\t\tInsert in chain as rulenum (default 1=first)
  --replace -R chain rulenum
\t\t\t\tReplace rule rulenum (1 = first) in chain
  --list    -L [chain [rulenum]]
\t\t\t\tList the rules in a chain or all chains
  --list-rules -S [chain [rulenum]]
\t\t\t\tPrint the rules in a chain or all chains
  --flush   -F [chain]\t\tDelete all rules in  chain or all chains
  --zero    -Z [chain [rulenum]]
\t\t\t\tZero counters in chain or all chains
  --new     -N chain\t\tCreate a new user-defined chain
  --delete-chain
            -X [chain]\t\tDelete a user-defined chain
  --policy  -P chain target
\t\t\t\tChange policy on chain to target
  --rename-chain
            -E old-chain new-chain
\t\t\t\tChange chain name, (moving any references)

Options:
    --ipv4\t-4\t\tError (line is ignored by ip6tables-restore)
    --ipv6\t-6\t\tNothing (line is ignored by iptables-restore)
[!] --protocol\t-p proto\tprotocol: by number or name, eg. `tcp'
[!] --source\t-s address[/mask][...]
\t\t\t\tsource specification
[!] --destination -d address[/mask][...]
\t\t\t\tdestination specification
[!] --in-interface -i input name[+]
\t\t\t\tnetwork interface name ([+] for wildcard)
 --jump\t-j target
\t\t\t\ttarget for rule (may load target extension)
  --goto      -g chain
\t\t\t       jump to chain with no return
  --match\t-m match
\t\t\t\textended match (may load extension)
  --numeric\t-n\t\tnumeric output of addresses and ports
[!] --out-interface -o output name[+]
\t\t\t\tnetwork interface name ([+] for wildcard)
  --table\t-t table\ttable to manipulate (default: `filter')
  --verbose\t-v\t\tverbose mode
  --wait\t-w [seconds]\tmaximum wait to acquire xtables lock before give up
  --line-numbers\t\tprint line numbers when listing
  --exact\t-x\t\texpand numbers (display exact values)
  --modprobe=<command>\t\ttry to insert modules using this command
  --set-counters -c PKTS BYTES\tset the counter during insert/append
[!] --version\t-V\t\tprint package version.
"""


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
