"""`natbox iptables`, `natbox iptables-save`, `natbox iptables-restore`: the iptables tools on a rules file.

The ruleset lives in a file (`--rules FILE`, default `$NATBOX_RULES`) in `iptables-save -c` form; each
command loads it, applies the change and writes it back (created when missing). Messages and exit codes
are those of iptables v1.8.9 (nf_tables). With `--control SOCKET` the same commands run on a running
gateway's live ruleset instead (natbox.adapters.control); new rules apply to new connections only, as
in Linux.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

from natbox.adapters.control import forward_command
from natbox.cli.ipset import enter_sets_scope
from natbox.cli.nfacct import enter_nfacct_scope
from natbox.rules.evaluate import Ruleset
from natbox.rules.lazy import load_stamped, stamp
from natbox.rules.model import NFPROTO_IPV4, NFPROTO_IPV6, OTHER_PROBLEM, PARAMETER_PROBLEM, RulesError
from natbox.rules.parser import parse_argv, parse_restore
from natbox.rules.printer import SAVE_VERSION, save_tables

__all__ = ["iptables_main", "iptables_restore_main", "iptables_save_main", "load_ruleset", "store_ruleset"]

# `iptables -h` / `ip6tables -h` of v1.8.9 (nf_tables), recorded (stdout, exit 0): one text, as xshared.c's
# print_help prints it for both families (the program name, which of -4/-6 is an error, and -f for IPv4 only)
_HELP_TEMPLATE = """\
{prog} v1.8.9 (nf_tables)

Usage: {prog} -[ACD] chain rule-specification [options]
       {prog} -I chain [rulenum] rule-specification [options]
       {prog} -R chain rulenum rule-specification [options]
       {prog} -D chain rulenum [options]
       {prog} -[LS] [chain [rulenum]] [options]
       {prog} -[FZ] [chain] [options]
       {prog} -[NX] chain
       {prog} -E old-chain-name new-chain-name
       {prog} -P chain target [options]
       {prog} -h (print this help information)

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
    --ipv4\t-4\t\t{ipv4} (line is ignored by ip6tables-restore)
    --ipv6\t-6\t\t{ipv6} (line is ignored by iptables-restore)
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
{fragment}  --modprobe=<command>\t\ttry to insert modules using this command
  --set-counters -c PKTS BYTES\tset the counter during insert/append
[!] --version\t-V\t\tprint package version.
"""


def tool_help(prog: str, *, ipv6: bool) -> str:
    """`PROG -h` (xshared.c print_help) for iptables (IPv4) or ip6tables (IPv6)."""
    return _HELP_TEMPLATE.format(
        prog=prog, ipv4="Error" if ipv6 else "Nothing", ipv6="Nothing" if ipv6 else "Error",
        fragment="" if ipv6 else "[!] --fragment\t-f\t\tmatch second or further fragments only\n")


IPTABLES_HELP = tool_help("iptables", ipv6=False)

# `iptables-restore -h` (stderr, exit 0)
RESTORE_HELP = """\
Usage: iptables-restore [-c] [-v] [-V] [-t] [-h] [-n] [-T table] [-M command] [-4] [-6] [file]
\t   [ --counters ]
\t   [ --verbose ]
\t   [ --version]
\t   [ --test ]
\t   [ --help ]
\t   [ --noflush ]
\t   [ --table=<TABLE> ]
\t   [ --modprobe=<command> ]
\t   [ --ipv4 ]
\t   [ --ipv6 ]
"""

NATBOX_NOTE = """\

natbox: these commands act on a ruleset file, not on the kernel:
  --rules FILE       the ruleset, as iptables-save -c text (created when missing); default: $NATBOX_RULES
  --control SOCKET   the live ruleset of a running `natbox gateway` instead
"""

NO_RULESET = ("natbox {prog}: no ruleset given: use --rules FILE or set NATBOX_RULES (a ruleset file), "
              "or --control SOCKET (a running gateway)\n")


def _no_ruleset(prog: str) -> str:
    """NO_RULESET for `prog` (the ip6tables tools name NATBOX_RULES6)."""
    text = NO_RULESET.format(prog=prog)
    return text.replace("NATBOX_RULES", "NATBOX_RULES6") if prog.startswith("ip6tables") else text


def _date() -> str:
    """ctime(3)-style date as iptables-save prints it (`%3d` day: "Sun Nov  2 02:34:32 2026")."""
    return time.strftime("%a %b %e %H:%M:%S %Y", time.localtime())


class RulesFileError(Exception):
    """The rules file cannot be read or written: one line naming it (exit 2)."""


def _prog(family: int) -> str:
    return "ip6tables" if family == NFPROTO_IPV6 else "iptables"


def load_ruleset(path: str | None, family: int = NFPROTO_IPV4) -> Ruleset:
    """Read the rules file (`iptables-save -c` text, `ip6tables-save -c` for NFPROTO_IPV6); a missing file is an
    empty ruleset."""
    rs = Ruleset(family)
    if path is None or not os.path.exists(path):
        return rs
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise RulesFileError(f"natbox: cannot read rules file {path}: {_reason(e)}") from None
    stamped = load_stamped(text, path, family)  # a file natbox wrote: rule lines parsed only where needed
    if stamped is not None:
        return stamped
    try:
        rs.restore(parse_restore(text, file=path, with_counters=True, family=family))
    except RulesError as e:
        e.file = path  # a command of the file refused: name the file, not <stdin>
        raise
    return rs


def _reason(e: Exception) -> str:
    if isinstance(e, UnicodeDecodeError):
        return f"not UTF-8 text (byte {e.start})"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e)


def store_ruleset(rs: Ruleset, path: str | None) -> None:
    if path is None:
        return
    text = stamp(save_tables(rs.saved_tables(), _date(), counters=True, prog=_prog(rs.family) + "-save"))
    tmp = path + ".tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        raise RulesFileError(f"natbox: cannot write rules file {path}: {_reason(e)}") from None


def _report(e: RulesError, prog: str, stderr: TextIO, *, restore: bool = False) -> int:
    head = "" if e.bare else f"{prog} {SAVE_VERSION}: "
    if not e.message and e.exit_code == PARAMETER_PROBLEM:  # xtables_error with no message: the hint alone
        stderr.write(f"Try `{prog} -h' or '{prog} --help' for more information.\n")
    elif e.plain:
        stderr.write(f"{prog}: {e.message}\n")
    elif restore and e.exit_code == PARAMETER_PROBLEM:
        stderr.write(f"{head}{e.message}\n")
        if e.line is not None:
            stderr.write(f"Error occurred at line: {e.line}\n")
        stderr.write(f"Try `{prog} -h' or '{prog} --help' for more information.\n")
    elif e.exit_code == PARAMETER_PROBLEM:
        stderr.write(f"{head}{e.message}\nTry `{prog} -h' or '{prog} --help' for more information.\n")
    elif restore and e.exit_code == OTHER_PROBLEM:
        stderr.write(f"{prog}: {e.message.removeprefix('iptables-restore: ')}\n")
    else:
        stderr.write(f"{head}{e.message}\n")
    return e.exit_code


def _take_option(argv: list[str], name: str) -> tuple[list[str], str | None]:
    """Take natbox's own `--NAME VALUE` / `--NAME=VALUE` out of iptables' arguments (the last one wins)."""
    out: list[str] = []
    value = None
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == name and i + 1 < len(argv):
            value = argv[i + 1]
            i += 2
            continue
        if a.startswith(name + "="):
            value = a.split("=", 1)[1]
        else:
            out.append(a)
        i += 1
    return out, value


def _control_path(argv: list[str]) -> tuple[list[str], str | None]:
    """`--control PATH`: a running gateway's control socket."""
    return _take_option(argv, "--control")


def _rules_path(argv: list[str], rules_path: str | None, family: int = NFPROTO_IPV4) -> tuple[list[str], str | None]:
    """`--rules FILE`, else the caller's default, else $NATBOX_RULES ($NATBOX_RULES6 for ip6tables)."""
    out, given = _take_option(argv, "--rules")
    path = given if given is not None else rules_path
    env = "NATBOX_RULES6" if family == NFPROTO_IPV6 else "NATBOX_RULES"
    return out, path if path is not None else os.environ.get(env)


def _subcommand_help(name: str) -> str:
    from natbox.cli.main import SUBCOMMAND_HELP

    return SUBCOMMAND_HELP[name]


def _help_or_version(args: list[str]) -> str | None:
    """`-h`/`--help` or `-V`/`--version`, whichever comes first (iptables stops parsing at either)."""
    for a in args:
        if a in ("-h", "--help"):
            return "h"
        if a in ("-V", "--version"):
            return "V"
    return None


def iptables_main(argv: list[str], *, rules_path: str | None = None, stdin: TextIO | None = None,
                  stdout: TextIO | None = None, stderr: TextIO | None = None, ruleset: Ruleset | None = None,
                  family: int = NFPROTO_IPV4, help_text: str = IPTABLES_HELP) -> int:
    """`iptables ARGS...` on the rules file (or on `ruleset`, a live engine's); returns iptables' exit status.
    `family` NFPROTO_IPV6 makes it `ip6tables` (natbox.cli.ip6tables).

    With `--control PATH` the command runs on the gateway listening there instead.
    """
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    prog = _prog(family)
    argv, control = _control_path(argv)
    if control is not None:
        return forward_command(control, prog, argv, None, out, err, prog)
    args, path = _rules_path(enter_nfacct_scope(enter_sets_scope(argv)), rules_path, family)
    asked = _help_or_version(args)
    if asked is not None:
        note = NATBOX_NOTE if family == NFPROTO_IPV4 else NATBOX_NOTE.replace(
            "$NATBOX_RULES", "$NATBOX_RULES6").replace("as iptables-save -c", "as ip6tables-save -c")
        out.write(f"{prog} {SAVE_VERSION}\n" if asked == "V" else help_text + note)
        return 0
    if ruleset is not None:
        rs, path = ruleset, None
    elif path is None:
        err.write(_no_ruleset(prog))
        return PARAMETER_PROBLEM
    else:
        try:
            rs = load_ruleset(path, family)
        except RulesFileError as e:
            err.write(f"{e}\n")
            return PARAMETER_PROBLEM
        except RulesError as e:
            err.write(f"natbox: bad rules file: {e}\n")
            return e.exit_code
    try:
        cmd = parse_argv(args, family=family)
        err.writelines(w + "\n" for w in cmd.warnings)
        text = rs.execute(cmd)
    except RulesError as e:
        return _report(e, prog, err)
    out.write(text)
    if cmd.op not in ("L", "S", "C") or cmd.zero:
        try:
            store_ruleset(rs, path)
        except RulesFileError as e:
            err.write(f"{e}\n")
            return PARAMETER_PROBLEM
    return 0


def _save_usage_error(arg: str, err: TextIO, prog: str = "iptables-save") -> int:
    """iptables-save's getopt messages (exit 1)."""
    if arg.startswith("--"):
        err.write(f"{prog}: unrecognized option '{arg}'\n")
    elif arg.startswith("-") and len(arg) > 1:
        err.write(f"{prog}: invalid option -- '{arg[1]}'\n")
    else:
        err.write("Unknown arguments found on commandline\n")
        return OTHER_PROBLEM
    err.write(f"Look at manual page `{prog}.8' for more information.\n")
    return OTHER_PROBLEM


def iptables_save_main(argv: list[str], *, rules_path: str | None = None, stdin: TextIO | None = None,
                       stdout: TextIO | None = None, stderr: TextIO | None = None,
                       ruleset: Ruleset | None = None, family: int = NFPROTO_IPV4) -> int:
    """`iptables-save [-c] [-t TABLE]` (of the rules file, of `ruleset`, or of the gateway at --control);
    `ip6tables-save` with `family` NFPROTO_IPV6."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    prog = _prog(family) + "-save"
    argv, control = _control_path(argv)
    if control is not None:
        return forward_command(control, prog, argv, None, out, err, prog)
    args, path = _rules_path(enter_nfacct_scope(enter_sets_scope(argv)), rules_path, family)
    counters = False
    table: str | None = None
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-c", "--counters"):
            counters = True
        elif a in ("-t", "--table") and i + 1 < len(args):
            table = args[i + 1]
            i += 1
        elif a in ("-V", "--version"):
            out.write(f"{prog} {SAVE_VERSION}\n")
            return 0
        elif a == "--help":  # natbox's page: iptables-save itself has no help option
            out.write(_subcommand_help(prog))
            return 0
        elif a in ("-M", "--modprobe") and i + 1 < len(args):
            i += 1
        else:  # iptables-save 1.8.9's getopt string has no 4 (nor 6): `-4` and `--ipv4` are refused
            return _save_usage_error(a, err, prog)
        i += 1
    if ruleset is None and path is None:
        err.write(_no_ruleset(prog))
        return PARAMETER_PROBLEM
    try:
        rs = ruleset if ruleset is not None else load_ruleset(path, family)
    except RulesFileError as e:
        err.write(f"{e}\n")
        return PARAMETER_PROBLEM
    except RulesError as e:
        return _report(e, prog, err)
    if table is not None and table not in rs.tables:
        err.write(f"{prog}: Table '{table}' does not exist\n")
        return OTHER_PROBLEM
    out.write(save_tables(rs.saved_tables(table), _date(), counters=counters, prog=prog))
    return 0


def iptables_restore_main(argv: list[str], *, rules_path: str | None = None, stdin: TextIO | None = None,
                          stdout: TextIO | None = None, stderr: TextIO | None = None,
                          ruleset: Ruleset | None = None, family: int = NFPROTO_IPV4) -> int:
    """`iptables-restore [--noflush] [-c] [-t] [-T TABLE] [FILE]` (into the rules file, `ruleset`, or
    --control); `-t`/`--test` parses and validates without changing anything, FILE is read instead of stdin.
    `ip6tables-restore` with `family` NFPROTO_IPV6."""
    inp = stdin or sys.stdin
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    prog = _prog(family) + "-restore"
    argv, control = _control_path(argv)
    if control is not None:
        return forward_command(control, prog, argv, inp, out, err, prog)
    args, path = _rules_path(enter_nfacct_scope(enter_sets_scope(argv)), rules_path, family)
    if ruleset is not None:
        path = None
    noflush = counters = test = False
    table: str | None = None
    source: str | None = None
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-n", "--noflush"):
            noflush = True
        elif a in ("-c", "--counters"):
            counters = True
        elif a in ("-t", "--test"):
            test = True
        elif a in ("-T", "--table", "-M", "--modprobe", "-W", "--wait-interval") and i + 1 < len(args):
            if a in ("-T", "--table"):
                table = args[i + 1]
            i += 1
        elif a in ("-w", "--wait", "-v", "--verbose"):
            pass
        elif a in ("--ipv4", "--ipv6"):  # in xtables-restore's long options but not its getopt string
            err.write(f"Try `{prog} -h' for more information.\n")
            return OTHER_PROBLEM
        elif a == "-h":
            err.write(RESTORE_HELP.replace("iptables-restore", prog))
            return 0
        elif a == "--help":  # natbox's page, as `natbox iptables-restore --help` gives it
            out.write(_subcommand_help(prog))
            return 0
        elif a in ("-V", "--version"):
            out.write(f"{prog} {SAVE_VERSION}\n")
            return 0
        elif a.startswith("-") and len(a) > 1:
            what = f"unrecognized option '{a}'" if a.startswith("--") else f"invalid option -- '{a[1]}'"
            err.write(f"{prog}: {what}\nTry `{prog} -h' for more information.\n")
            return OTHER_PROBLEM
        elif source is None:
            source = a
        else:
            err.write("Unknown arguments found on commandline\n")
            return OTHER_PROBLEM
        i += 1
    if ruleset is None and path is None and not test:
        err.write(_no_ruleset(prog))
        return PARAMETER_PROBLEM
    if source is not None:
        try:
            with open(source, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            err.write(f"Can't open {source}: {_reason(e)}\n")
            return OTHER_PROBLEM
    else:
        text = inp.read()
    try:
        rs = ruleset if ruleset is not None and not test else load_ruleset(path, family)
        blocks = parse_restore(text, with_counters=counters, table_filter=table, family=family)
        err.writelines(w + "\n" for b in blocks for _ln, c in b.commands for w in c.warnings)
        rs.restore(blocks, noflush=noflush)
    except RulesFileError as e:
        err.write(f"{e}\n")
        return PARAMETER_PROBLEM
    except RulesError as e:
        return _report(e, prog, err, restore=True)
    if test:
        return 0
    try:
        store_ruleset(rs, path)
    except RulesFileError as e:
        err.write(f"{e}\n")
        return PARAMETER_PROBLEM
    return 0
