"""`natbox nfacct ARGS...`: nfacct 1.0.2 on an accounting objects file, or on a running gateway's objects.

The objects live in a file (`--acct FILE`, default `$NATBOX_NFACCT`) holding `nfacct list` text; each command
loads it, runs (natbox.rules.xtstate.nfacct.NfacctSession: nfacct's commands, output and messages) and writes
it back when the objects changed (created when missing). With `--control SOCKET` the command runs on a
running gateway's objects instead, which the gateway's `-m nfacct` rules count into. Rules naming an object
(`-m nfacct` in the ruleset file named by `--rules FILE` or `$NATBOX_RULES`) hold a reference on it: it
cannot be deleted, and `flush` keeps it. `natbox iptables --acct FILE` (or `$NATBOX_NFACCT`) checks `-m
nfacct` rules against the file's objects.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from natbox.cli.ipset import _take
from natbox.errors import UsageError
from natbox.rules.xtstate.nfacct import (
    NFACCT_VERSION,
    NfAcct,
    NfacctSession,
    enter_nfacct,
    format_list,
    load_objects,
    rule_acct_refs,
)

__all__ = ["enter_nfacct_scope", "load_acct_file", "nfacct_main"]


def load_acct_file(path: str | None) -> dict[str, NfAcct]:
    """The objects an objects file holds (none when it is missing). OSError when it cannot be read,
    ValueError when a line is not `nfacct list` output."""
    if path is None or not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        return load_objects(text)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def enter_nfacct_scope(argv: list[str]) -> list[str]:
    """For the iptables commands: the objects of `--acct FILE` (else $NATBOX_NFACCT) become the ones `-m
    nfacct` rules may name; returns argv without `--acct`. A bad objects file is a UsageError."""
    argv, path = _take(argv, "--acct")
    path = path if path is not None else os.environ.get("NATBOX_NFACCT")
    if path is None:
        return argv
    try:
        enter_nfacct(load_acct_file(path))
    except (OSError, ValueError) as e:
        raise UsageError(f"bad nfacct objects file: {e}") from None
    return argv


def nfacct_main(argv: list[str], *, stdin: TextIO | None = None, stdout: TextIO | None = None,
                stderr: TextIO | None = None) -> int:
    """`nfacct ARGS...` on the objects file; returns nfacct's exit status."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    argv, control = _take(argv, "--control")
    if control is not None:  # a running gateway's objects, which its rules count into
        from natbox.adapters.control import forward_command

        reads = bool(argv) and argv[0] != "" and "restore".startswith(argv[0])
        return forward_command(control, "nfacct", argv, (stdin or sys.stdin) if reads else None, out, err, "nfacct")
    argv, path = _take(argv, "--acct")
    argv, rules_path = _take(argv, "--rules")
    path = path if path is not None else os.environ.get("NATBOX_NFACCT")
    rules_path = rules_path if rules_path is not None else os.environ.get("NATBOX_RULES")
    try:
        objects = load_acct_file(path)
        refs: dict[str, int] = {}
        if rules_path is not None and os.path.exists(rules_path):
            with open(rules_path, encoding="utf-8") as f:
                refs = rule_acct_refs(f.read())
    except (OSError, ValueError) as e:
        err.write(f"natbox: bad nfacct objects file: {e}\n")
        return 2
    before = format_list(objects)
    reads = bool(argv) and "restore".startswith(argv[0]) and argv[0] != ""
    rc, o, e_text = NfacctSession(objects, refs).run(argv, (stdin or sys.stdin).read() if reads else "")
    out.write(o)
    err.write(e_text)
    after = format_list(objects)
    if path is not None and (after != before or not os.path.exists(path)) and (after or os.path.exists(path)):
        try:
            tmp = path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(after)
            os.replace(tmp, path)
        except OSError as ex:
            err.write(f"nfacct v{NFACCT_VERSION}: natbox: cannot write {path}: {ex.strerror}\n")
            return 1
    elif path is None and after != before:
        err.write(f"nfacct v{NFACCT_VERSION}: natbox: no objects file (--acct FILE or $NATBOX_NFACCT): "
                  "the change is not kept\n")
        return 1
    return rc
