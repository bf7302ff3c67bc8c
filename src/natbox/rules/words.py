"""The words and names of iptables command lines (iptables/xshared.c): restore lines split into arguments
(`add_param_to_argv`), chain names checked (`assert_valid_chain_name` and iptables-restore's own checks),
interface names, `[pkts:bytes]` counters, and the message for an extension natbox does not implement."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from natbox.rules.extensions import find_target
from natbox.rules.model import (
    BUILTIN_TARGETS,
    IFNAMSIZ,
    IPTABLES_TARGET_NAMES,
    NFPROTO_IPV4,
    OTHER_PROBLEM,
    XT_CHAIN_MAXNAMELEN,
    RulesError,
)

__all__ = ["BASE_OPTS", "COMMANDS", "LONG_BASE", "LONG_COMMANDS", "check_iface", "check_new_chain_name",
           "check_restore_chain_name", "error_column", "not_implemented", "parse_counters", "tokenize_restore_line"]


# The base parser's words (xshared.c). Commands: letter -> (long name, how many mandatory args, optional args)
COMMANDS: dict[str, tuple[str, int, int]] = {
    "A": ("append", 1, 0), "C": ("check", 1, 0), "D": ("delete", 1, 1), "I": ("insert", 1, 1),
    "R": ("replace", 2, 0), "L": ("list", 0, 2), "S": ("list-rules", 0, 2), "F": ("flush", 0, 1),
    "Z": ("zero", 0, 1), "N": ("new-chain", 1, 0), "X": ("delete-chain", 0, 1), "E": ("rename-chain", 2, 0),
    "P": ("policy", 2, 0),
}
LONG_COMMANDS: Final = {v[0]: k for k, v in COMMANDS.items()}
# Options of the base parser: letter -> (long names, takes an argument)
BASE_OPTS: dict[str, tuple[tuple[str, ...], bool]] = {
    "t": (("table",), True), "p": (("protocol",), True), "s": (("source", "src"), True),
    "d": (("destination", "dst"), True), "i": (("in-interface",), True), "o": (("out-interface",), True),
    "f": (("fragment",), False), "j": (("jump",), True), "g": (("goto",), True), "m": (("match",), True),
    "n": (("numeric",), False), "v": (("verbose",), False), "x": (("exact",), False),
    "c": (("set-counters",), True), "w": (("wait",), False), "W": (("wait-interval",), True),
    "4": (("ipv4",), False), "6": (("ipv6",), False), "h": (("help",), False), "V": (("version",), False),
}
LONG_BASE = {name: letter for letter, (names, _a) in BASE_OPTS.items() for name in names}
LONG_BASE["line-numbers"] = "0"
LONG_BASE["modprobe"] = "M"

def check_iface(name: str) -> str:
    if len(name) >= IFNAMSIZ:
        raise RulesError(f"interface name `{name}' must be shorter than IFNAMSIZ ({IFNAMSIZ - 1})")
    return name



def check_new_chain_name(name: str, family: int = NFPROTO_IPV4) -> None:
    """`assert_valid_chain_name` in xshared.c (the target names of `family`'s program)."""
    if len(name) >= XT_CHAIN_MAXNAMELEN:
        raise RulesError(f"chain name `{name}' too long (must be under {XT_CHAIN_MAXNAMELEN} chars)")
    if name.startswith(("-", "!")):
        raise RulesError(f"chain name not allowed to start with `{name[0]}'")
    if family != NFPROTO_IPV4:
        from natbox.rules.ext6 import IP6TABLES_TARGET_NAMES

        if name in IP6TABLES_TARGET_NAMES or find_target(name, family) is not None:
            raise RulesError("chain name may not clash with target name")
    elif name in IPTABLES_TARGET_NAMES or find_target(name) is not None:
        raise RulesError("chain name may not clash with target name")
    if any(c.isspace() for c in name):
        raise RulesError(f"Invalid chain name `{name}'")



def not_implemented(kind: str, name: str, known: Mapping[str, object]) -> str:
    """An extension iptables 1.8.9 has and natbox does not: iptables' exit code (2), but not its "No such
    file or directory", which reads like a broken installation."""
    names = ", ".join(sorted(n for n in known if n != "standard"))
    plural = "matches" if kind == "match" else "targets"
    return (f"Couldn't load {kind} `{name}': natbox does not implement the {name} {kind}\n"
            f"(natbox implements the {plural} {names})")


def check_restore_chain_name(name: str) -> None:
    """A `:CHAIN POLICY [p:b]` line's name, as iptables-restore 1.8.9 (nf_tables) checks it (recorded): too
    long, a leading `-` or `!`, or a verdict name; other target names are accepted there."""
    if len(name) >= XT_CHAIN_MAXNAMELEN:
        raise RulesError(f"chain name `{name}' too long (must be under {XT_CHAIN_MAXNAMELEN} chars)")
    if name.startswith(("-", "!")):
        raise RulesError(f"chain name not allowed to start with `{name[0]}'")
    if name in BUILTIN_TARGETS:
        raise RulesError("chain name may not clash with target name")



_BLANK: Final = re.compile("[ \t\n\r]")


def tokenize_restore_line(line: str) -> list[str]:
    """Split a restore line into argv as `add_param_to_argv` (iptables 1.8.9 xshared.c) does.

    Double quotes group blanks into one argument and a closing quote ends the argument, even an empty one
    (`""` is an empty argument, `""x` two); inside quotes `\\` escapes the next character.
    """
    if "\\" in line:
        return _tokenize_escaped(line)
    plain = "\t" not in line and "\n" not in line and "\r" not in line  # blanks are spaces only
    if plain and '"' not in line:
        return [w for w in line.split(" ") if w]
    # no escapes: the text between quote characters alternates outside / inside quotes
    out: list[str] = []
    buf = ""
    segs = line.split('"')
    unterminated = len(segs) - 1 if len(segs) % 2 == 0 else -1  # index of a quote left open at the end
    for i, seg in enumerate(segs):
        if i & 1:
            buf += seg
            if i != unterminated:
                out.append(buf)
                buf = ""
            continue
        parts = seg.split(" ") if plain else _BLANK.split(seg)
        buf += parts[0]
        if len(parts) > 1:
            if buf:
                out.append(buf)
            out += filter(None, parts[1:-1])  # the words between blanks, not the empty ones
            buf = parts[-1]
    if buf:
        out.append(buf)
    return out


def _tokenize_escaped(line: str) -> list[str]:
    """`add_param_to_argv` character by character."""
    out: list[str] = []
    buf: list[str] = []
    quote_open = escaped = False
    for ch in line:
        if quote_open:
            if escaped:
                buf.append(ch)
                escaped = False
                continue
            if ch == "\\":
                escaped = True
                continue
            if ch == '"':
                quote_open = False
                out.append("".join(buf))  # the closing quote ends the argument, even an empty one
                buf = []
                continue
            buf.append(ch)
            continue
        if ch == '"':
            quote_open = True
            continue
        if ch in " \t\n\r":
            if buf:
                out.append("".join(buf))
                buf = []
            continue
        buf.append(ch)
    if buf:
        out.append("".join(buf))
    return out


def parse_counters(text: str, lineno: int) -> tuple[int, int]:
    """`[pkts:bytes]`."""
    if text == "[0:0]":
        return 0, 0
    if not (text.startswith("[") and text.endswith("]")) or ":" not in text:
        raise RulesError(f"invalid counters `{text}'", OTHER_PROBLEM, line=lineno)
    p, _, b = text[1:-1].partition(":")
    if not p.isdigit() or not b.isdigit():
        raise RulesError(f"invalid counters `{text}'", OTHER_PROBLEM, line=lineno)
    return int(p), int(b)


_QUOTED: Final = re.compile(r"\"([^\"]+)\"|`([^']+)'")


def error_column(line: str, message: str) -> int | None:
    """1-based column of the token an error message quotes (`"--dport"`, `` `1.2.3.256' ``), if it is there."""
    for m in _QUOTED.finditer(message):
        token = m.group(1) or m.group(2)
        idx = line.find(token)
        if idx >= 0:
            return idx + 1
    return None
