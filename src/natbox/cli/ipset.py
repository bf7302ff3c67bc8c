"""`natbox ipset ARGS...`: ipset 7.17 on a sets file.

The sets live in a file (`--sets FILE`, default `$NATBOX_IPSETS`) holding `ipset save` text; each command
loads it, runs, and writes it back when the sets changed (created when missing). Output, messages and exit
codes are ipset's (natbox.ipset.command). Rules using a set (`-m set`, `-j SET` in the ruleset file named
by `--rules FILE` or `$NATBOX_RULES`) hold a reference on it: it cannot be destroyed, renamed or swapped
away, and `ipset list` counts them under References, as the kernel does for iptables' rules.

Timeouts: `ipset save` text says how many seconds an element has left; the file's modification time is when
that was true, so an element added with `timeout 60` is gone 60 s later, between commands too. The
commands' clock runs on whole seconds (store_sets), so nothing is lost from one command to the next.
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from collections.abc import Callable
from typing import TextIO

from natbox.errors import UsageError
from natbox.ipset.command import IpsetSession
from natbox.ipset.core import IpsetRegistry
from natbox.ipset.errors import IPSET_VERSION
from natbox.ipset.scope import enter_sets, rule_set_refs

__all__ = ["enter_sets_scope", "ipset_live", "ipset_main", "load_sets", "rule_set_refs", "store_sets"]


def _take(argv: list[str], name: str) -> tuple[list[str], str | None]:
    out: list[str] = []
    value = None
    i = 0
    while i < len(argv):
        if argv[i] == name and i + 1 < len(argv):
            value = argv[i + 1]
            i += 2
            continue
        if argv[i].startswith(name + "="):
            value = argv[i].split("=", 1)[1]
        else:
            out.append(argv[i])
        i += 1
    return out, value


def load_sets(path: str | None, rules_path: str | None = None) -> IpsetRegistry:
    """The registry a sets file describes (empty when the file is missing), with the rules' references.

    Raises OSError when a file exists but cannot be read, ValueError when the file is not restorable.
    """
    reg = IpsetRegistry()
    if path is not None and os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        written = os.stat(path).st_mtime
        rc, _, err = IpsetSession(reg, written, _rng).run(["restore"], text)
        if rc:
            raise ValueError(f"{path}: {err.strip()}")
    if rules_path is not None and os.path.exists(rules_path):
        with open(rules_path, encoding="utf-8") as f:
            for name, n in rule_set_refs(f.read()).items():
                s = reg.get(name)
                if s is not None:
                    s.ref += n
    return reg


def enter_sets_scope(argv: list[str]) -> list[str]:
    """For the iptables commands: the sets of `--sets FILE` (else $NATBOX_IPSETS) become the ones rules
    may name (natbox.ipset.scope; with neither, the scope is left as the caller set it: none, or a live
    gateway's sets); returns argv without `--sets`. A bad sets file is a UsageError."""
    argv, path = _take(argv, "--sets")
    path = path if path is not None else os.environ.get("NATBOX_IPSETS")
    if path is None:
        return argv
    try:
        reg = load_sets(path)
    except (OSError, ValueError) as e:
        raise UsageError(f"bad sets file: {e}") from None
    enter_sets(reg)
    return argv


def ipset_live(registry: IpsetRegistry, rules_text: str, argv: list[str], stdin: str, now: float,
               stdout: TextIO, stderr: TextIO) -> int:
    """`ipset ARGS` on a running gateway's sets (natbox.gateway.commands): its rules (`rules_text`, their
    iptables-save text) hold references while the command runs, so a set they use cannot be destroyed."""
    refs = rule_set_refs(rules_text)
    held = [(s, refs[s.name]) for s in registry.ordered() if s.name in refs]
    for s, n in held:
        s.ref += n
    try:
        rc, o, e = IpsetSession(registry, now, _rng).run(argv, stdin)
    finally:
        for s, n in held:
            s.ref -= n
    stdout.write(o)
    stderr.write(e)
    return rc


def _save_all(reg: IpsetRegistry, now: float) -> str:
    return "".join(reg.save_text(s, now) for s in reg.ordered())


def store_sets(reg: IpsetRegistry, path: str, now: float) -> None:
    """Write the sets as `ipset save` text, remaining timeouts counted from the whole second `now` falls
    in, which becomes the file's modification time: expiries on whole seconds survive unchanged."""
    ref = float(math.floor(now))
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(_save_all(reg, ref))
    os.replace(tmp, path)
    os.utime(path, (ref, ref))


def _rng() -> int:
    return random.getrandbits(32)


def ipset_main(argv: list[str], *, stdin: TextIO | None = None, stdout: TextIO | None = None,
               stderr: TextIO | None = None, clock: Callable[[], float] = time.time) -> int:
    """`ipset ARGS...` on the sets file; returns ipset's exit status (`clock`: the wall clock, for tests)."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    argv, control = _take(argv, "--control")
    if control is not None:
        from natbox.adapters.control import forward_command

        reads = any(a in ("restore", "-R") for a in argv) and not any(a in ("-file", "-f") for a in argv)
        return forward_command(control, "ipset", argv, (stdin or sys.stdin) if reads else None, out, err, "ipset")
    argv, sets_path = _take(argv, "--sets")
    argv, rules_path = _take(argv, "--rules")
    sets_path = sets_path if sets_path is not None else os.environ.get("NATBOX_IPSETS")
    rules_path = rules_path if rules_path is not None else os.environ.get("NATBOX_RULES")
    try:
        reg = load_sets(sets_path, rules_path)
    except (OSError, ValueError) as e:
        err.write(f"natbox: bad sets file: {e}\n")
        return 1
    # The commands' clock runs on whole seconds (plus a millisecond, as a command never runs at the very
    # instant of the previous one): every expiry an add sets lies on a whole second once written, so the
    # file's whole-second timeouts lose nothing from one command to the next.
    now = math.floor(clock()) + 0.001
    before = _save_all(reg, now)

    def read_file(name: str) -> str:
        try:
            with open(name, encoding="utf-8") as f:
                return f.read()
        except OSError as e:
            from natbox.ipset.errors import IpsetError

            raise IpsetError(f"Cannot open {name} for reading: {e.strerror}") from None

    needs_stdin = any(a in ("restore", "-R") for a in argv) and not any(a in ("-file", "-f") for a in argv)
    text = (stdin or sys.stdin).read() if needs_stdin else ""
    rc, o, e_text = IpsetSession(reg, now, _rng, read_file).run(argv, text)
    out.write(o)
    err.write(e_text)
    if sets_path is not None and _save_all(reg, now) != before:
        try:
            store_sets(reg, sets_path, now)
        except OSError as ex:
            err.write(f"ipset {IPSET_VERSION}: natbox: cannot write {sets_path}: {ex.strerror}\n")
            return 1
    return rc
