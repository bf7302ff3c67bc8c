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
from natbox.rules.evaluate import Ruleset
from natbox.rules.lazy import load_stamped, stamp
from natbox.rules.model import OTHER_PROBLEM, PARAMETER_PROBLEM, RulesError
from natbox.rules.parser import parse_argv, parse_restore
from natbox.rules.printer import SAVE_VERSION, save_tables

__all__ = ["iptables_main", "iptables_restore_main", "iptables_save_main", "load_ruleset", "store_ruleset"]


def _date() -> str:
    """ctime(3)-style date as iptables-save prints it (`%3d` day: "Sun Nov  2 02:34:32 2026")."""
    return time.strftime("%a %b %e %H:%M:%S %Y", time.localtime())


def load_ruleset(path: str | None) -> Ruleset:
    """Read the rules file (`iptables-save -c` text); a missing file is an empty ruleset."""
    rs = Ruleset()
    if path is None or not os.path.exists(path):
        return rs
    with open(path, encoding="utf-8") as f:
        text = f.read()
    stamped = load_stamped(text, path)  # a file natbox wrote: rule lines parsed only where needed
    if stamped is not None:
        return stamped
    try:
        rs.restore(parse_restore(text, file=path, with_counters=True))
    except RulesError as e:
        e.file = path  # a command of the file refused: name the file, not <stdin>
        raise
    return rs


def store_ruleset(rs: Ruleset, path: str | None) -> None:
    if path is None:
        return
    text = stamp(save_tables(rs.saved_tables(), _date(), counters=True))
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _report(e: RulesError, prog: str, stderr: TextIO, *, restore: bool = False) -> int:
    head = "" if e.bare else f"{prog} {SAVE_VERSION}: "
    if e.plain:
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


def _rules_path(argv: list[str], rules_path: str | None) -> tuple[list[str], str | None]:
    """`--rules FILE`, else the caller's default, else $NATBOX_RULES."""
    out, given = _take_option(argv, "--rules")
    path = given if given is not None else rules_path
    return out, path if path is not None else os.environ.get("NATBOX_RULES")


def iptables_main(argv: list[str], *, rules_path: str | None = None, stdin: TextIO | None = None,
                  stdout: TextIO | None = None, stderr: TextIO | None = None, ruleset: Ruleset | None = None) -> int:
    """`iptables ARGS...` on the rules file (or on `ruleset`, a live engine's); returns iptables' exit status.

    With `--control PATH` the command runs on the gateway listening there instead.
    """
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    argv, control = _control_path(argv)
    if control is not None:
        return forward_command(control, "iptables", argv, None, out, err, "iptables")
    args, path = _rules_path(enter_sets_scope(argv), rules_path)
    if ruleset is not None:
        rs, path = ruleset, None
    else:
        try:
            rs = load_ruleset(path)
        except RulesError as e:
            err.write(f"natbox: bad rules file: {e}\n")
            return e.exit_code
    try:
        cmd = parse_argv(args)
        text = rs.execute(cmd)
    except RulesError as e:
        return _report(e, "iptables", err)
    out.write(text)
    if cmd.op not in ("L", "S", "C"):
        store_ruleset(rs, path)
    return 0


def iptables_save_main(argv: list[str], *, rules_path: str | None = None, stdin: TextIO | None = None,
                       stdout: TextIO | None = None, stderr: TextIO | None = None,
                       ruleset: Ruleset | None = None) -> int:
    """`iptables-save [-c] [-t TABLE]` (of the rules file, of `ruleset`, or of the gateway at --control)."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    argv, control = _control_path(argv)
    if control is not None:
        return forward_command(control, "iptables-save", argv, None, out, err, "iptables-save")
    args, path = _rules_path(enter_sets_scope(argv), rules_path)
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
        else:
            err.write("Unknown arguments found on commandline\n")
            return PARAMETER_PROBLEM
        i += 1
    try:
        rs = ruleset if ruleset is not None else load_ruleset(path)
    except RulesError as e:
        return _report(e, "iptables-save", err)
    if table is not None and table not in rs.tables:
        err.write(f"iptables-save: Table '{table}' does not exist\n")
        return OTHER_PROBLEM
    out.write(save_tables(rs.saved_tables(table), _date(), counters=counters))
    return 0


def iptables_restore_main(argv: list[str], *, rules_path: str | None = None, stdin: TextIO | None = None,
                          stdout: TextIO | None = None, stderr: TextIO | None = None,
                          ruleset: Ruleset | None = None) -> int:
    """`iptables-restore [--noflush] [-c] [-T TABLE] < dump` (into the rules file, `ruleset`, or --control)."""
    inp = stdin or sys.stdin
    err = stderr or sys.stderr
    argv, control = _control_path(argv)
    if control is not None:
        return forward_command(control, "iptables-restore", argv, inp, stdout or sys.stdout, err,
                               "iptables-restore")
    args, path = _rules_path(enter_sets_scope(argv), rules_path)
    if ruleset is not None:
        path = None
    noflush = counters = False
    table: str | None = None
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-n", "--noflush"):
            noflush = True
        elif a in ("-c", "--counters"):
            counters = True
        elif a in ("-T", "--table") and i + 1 < len(args):
            table = args[i + 1]
            i += 1
        elif a in ("-w", "--wait", "-v", "--verbose"):
            pass
        else:
            err.write("Unknown arguments found on commandline\n")
            return PARAMETER_PROBLEM
        i += 1
    try:
        rs = ruleset if ruleset is not None else load_ruleset(path)
        blocks = parse_restore(inp.read(), with_counters=counters, table_filter=table)
        rs.restore(blocks, noflush=noflush)
    except RulesError as e:
        return _report(e, "iptables-restore", err, restore=True)
    store_ruleset(rs, path)
    return 0
