"""Running iptables' own listing shell tests (iptables/tests/shell/testcases, 1.8.9) against natbox.

The scripts are a few shell forms only, which `run_script` interprets in order:
- `NAME='text'` / `NAME="text"`: a variable (`echo -e` escapes and `\\`` undone when it is used);
- `$XT_MULTI PROG ARGS`: a command that must succeed (its output is not checked);
- `diff -u [-Z] <(echo [-e] "$NAME") <($XT_MULTI PROG ARGS)`: PROG's stdout must be NAME's text (with -Z,
  trailing blanks of each line ignored);
- `$XT_MULTI PROG-restore <<EOF ... EOF`: restore input;
- `$XT_MULTI PROG ARGS && {` (after `set +e`): a command that must fail; `ARGS || {`: one that must succeed.
`run` is called as `run(prog, argv, stdin)` and returns (exit status, stdout).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from pathlib import Path

__all__ = ["Runner", "run_script"]

Runner = Callable[[str, list[str], str], tuple[int, str]]

_ASSIGN = re.compile(r"^([A-Z0-9_]+)=(['\"])(.*?)\2$", re.S)
_DIFF = re.compile(r'^diff -u (-Z )?<\(echo (-e )?"\$([A-Z0-9_]+)"\) <\(\$XT_MULTI (\S+) (.*)\)$')
_DIFF_LITERAL = re.compile(r'^diff -u (-Z )?<\(echo "(.*)"\) <\(\$XT_MULTI (\S+) (.*)\)$')


def _expand(text: str, env: dict[str, str]) -> str:
    return re.sub(r"\$([A-Z0-9_]+)", lambda m: env.get(m.group(1), ""), text)


def _statements(text: str) -> list[str]:
    """Script lines with multi-line quoted assignments and here-documents joined."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        m = re.match(r"^[A-Z0-9_]+=(['\"])", line)
        if m and line.count(m.group(1)) < 2:
            while i < len(lines) and m.group(1) not in lines[i]:
                line += "\n" + lines[i]
                i += 1
            line += "\n" + lines[i]
            i += 1
        elif line.endswith("<<EOF"):
            while i < len(lines) and lines[i] != "EOF":
                line += "\n" + lines[i]
                i += 1
            i += 1
        out.append(line)
    return out


def _same(want: str, got: str, ignore_blanks: bool) -> bool:
    if ignore_blanks:
        return [x.rstrip() for x in want.splitlines()] == [x.rstrip() for x in got.splitlines()]
    return want.splitlines() == got.splitlines()


def run_script(path: Path, run: Runner) -> list[str]:
    """Run one listing script; returns the differences found (empty: the script passes)."""
    env: dict[str, str] = {}
    errors: list[str] = []
    for stmt in _statements(path.read_text()):
        s = stmt.strip()
        if not s or s.startswith(("#", "set ", "echo ")) or s in ("}", "exit 1"):
            continue
        if m := _ASSIGN.match(s):
            value = m.group(3)
            if m.group(2) == '"':
                value = value.replace("\\`", "`")
            env[m.group(1)] = value
            continue
        if m := _DIFF.match(s):
            want = env.get(m.group(3), "")
            if m.group(2):
                want = want.replace("\\n", "\n")
            argv = shlex.split(_expand(m.group(5), env))
            rc, got = run(m.group(4), argv, "")
            if rc != 0 or not _same(want, got, bool(m.group(1))):
                errors.append(f"{m.group(4)} {' '.join(argv)}: exit {rc}, got {got!r}, want {want!r}")
            continue
        if m := _DIFF_LITERAL.match(s):
            want = m.group(2).replace("\\`", "`")
            argv = shlex.split(_expand(m.group(4), env))
            rc, got = run(m.group(3), argv, "")
            if rc != 0 or not _same(want, got, bool(m.group(1))):
                errors.append(f"{m.group(3)} {' '.join(argv)}: exit {rc}, got {got!r}, want {want!r}")
            continue
        if s.startswith("$XT_MULTI "):
            head, _, body = s.partition("\n")
            words = shlex.split(_expand(head.removeprefix("$XT_MULTI "), env))
            must_fail = words[-2:] == ["&&", "{"]
            if words[-2:] in (["&&", "{"], ["||", "{"]):
                words = words[:-2]
            if words and words[-1] == "<<EOF":
                words = words[:-1]
            rc, _out = run(words[0], words[1:], body + "\n" if body else "")
            if (rc == 0) == must_fail:
                errors.append(f"{' '.join(words)}: exit {rc}, want {'failure' if must_fail else 'success'}")
            continue
        errors.append(f"statement not understood: {s!r}")
    return errors
