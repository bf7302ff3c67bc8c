"""Fuzzing the command line: damaged files through every command that reads one (see natbox.testing.fuzz).

Every kind of file a command reads — iptables-save rulesets, ipset sets files, host files, replay scenarios,
lab files, difftest scenarios, pcap and pcapng captures — is taken from the examples and the shared
conformance material, damaged at the byte, line or TOML-value level, and given to the real command line
(`natbox.cli.main.main`, in-process, with its output captured). Checked: nothing but a normal exit (an exit
status from 0 to 4) comes out, and no output contains a traceback.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import sys
import tempfile
import tomllib
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from natbox.testing.fuzz import FuzzReport
from natbox.testing.paths import EXAMPLES, LAB_EXAMPLES, PCAPS, REPO, SHARED

__all__ = ["fuzz_files"]


def _mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        how = rng.randrange(6)
        if how == 0 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif how == 1:
            del b[rng.randrange(len(b) + 1):]
        elif how == 2:
            i = rng.randrange(len(b) + 1)
            b[i:i] = rng.choice((b"\x00", b"\xff\xfe", b"\n", b"[", b'"', b"=", b"-", b" -j ", rng.randbytes(8)))
        elif how == 3 and b:
            i, j = sorted((rng.randrange(len(b)), rng.randrange(len(b))))
            b[i:i] = b[i:j]
        elif how == 4 and b:
            i, j = sorted((rng.randrange(len(b)), rng.randrange(len(b))))
            del b[i:j]
        elif how == 5:
            b[rng.randrange(len(b) + 1):rng.randrange(len(b) + 1)] = b""
    return bytes(b)


def _mutate_lines(rng: random.Random, text: str) -> str:
    lines = text.splitlines()
    for _ in range(rng.randint(1, 4)):
        if not lines:
            lines.append(rng.choice(("*nat", "COMMIT", ":X - [0:0]", "-A X -j X", "[x]", "a = 1")))
            continue
        i = rng.randrange(len(lines))
        how = rng.randrange(5)
        if how == 0:
            del lines[i]
        elif how == 1:
            lines.insert(i, lines[rng.randrange(len(lines))])
        elif how == 2:
            words = lines[i].split(" ")
            words.insert(rng.randrange(len(words) + 1), rng.choice(("-j", "!", "--dport", "0", "-1", "99999",
                                                                    "-m", "nat", '"', "[", "=", "{", "}")))
            lines[i] = " ".join(words)
        elif how == 3:
            lines[i] = lines[i][: rng.randrange(len(lines[i]) + 1)]
        else:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines) + rng.choice(("\n", ""))


_ODD_VALUES: list[object] = [[], {}, 0, -1, 2**40, "", "\u0000", "x" * 300, True, 1.5, [1, "a"], {"a": []},
                             "default", "eth0", "10.0.0.0/8", "999.1.1.1"]


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\x00", "\\u0000") + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    return '""'


def _toml_dump(doc: dict[str, object]) -> str:
    """A small TOML writer for what the example files hold (tables, arrays of tables, plain values)."""
    out: list[str] = []
    plain = {k: v for k, v in doc.items() if not isinstance(v, dict) and not (
        isinstance(v, list) and v and all(isinstance(x, dict) for x in v))}
    out += [f"{k} = {_toml_value(v)}" for k, v in plain.items()]
    for k, v in doc.items():
        if isinstance(v, dict):
            out.append(f"\n[{k}]")
            out += [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items()]
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for item in v:
                assert isinstance(item, dict)
                out.append(f"\n[[{k}]]")
                out += [f"{kk} = {_toml_value(vv)}" for kk, vv in item.items()]
    return "\n".join(out) + "\n"


def _mutate_toml(rng: random.Random, text: str) -> str:
    """The same document with values of the wrong type or range, keys removed or unknown keys added."""
    try:
        doc: dict[str, object] = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return _mutate_lines(rng, text)
    tables: list[dict[str, object]] = [doc]
    for v in doc.values():
        if isinstance(v, dict):
            tables.append(v)
        elif isinstance(v, list):
            tables += [x for x in v if isinstance(x, dict)]
    for _ in range(rng.randint(1, 3)):
        table = rng.choice(tables)
        if table and rng.random() < 0.8:
            key = rng.choice(list(table))
            if rng.random() < 0.2:
                del table[key]
            else:
                table[key] = rng.choice(_ODD_VALUES)
        else:
            table[rng.choice(("bogus", "dev", "node", "file", "dst"))] = rng.choice(_ODD_VALUES)
    return _toml_dump(doc)


@dataclass
class _FileKind:
    name: str
    seeds: list[Path]
    suffix: str
    argv: Callable[[str, Path], list[str]] | None  # (mutated file, scratch dir) -> natbox argv
    toml: bool = False
    binary: bool = False
    stdin: bool = False


_IPSET_SEED = """\
create blocked hash:net family inet hashsize 1024 maxelem 65536 timeout 600 counters comment
add blocked 10.0.0.0/8 timeout 300 packets 5 bytes 300 comment "lan"
add blocked 192.168.7.0/24 timeout 0 nomatch
create web hash:ip,port family inet hashsize 1024 maxelem 65536
add web 10.1.1.1,tcp:80
add web 10.1.1.2,udp:53
create ports bitmap:port range 1-1024
add ports 22
create hosts bitmap:ip range 10.0.0.0/24 netmask 28
create macs hash:mac hashsize 1024 maxelem 65536
add macs 02:00:00:00:00:01
create ifs hash:net,iface family inet hashsize 1024 maxelem 65536
add ifs 10.2.0.0/16,eth0
create all list:set size 8
add all blocked
add all web
"""


def _file_kinds(scratch: Path) -> list[_FileKind]:
    ipset_seed = scratch / "seed.ipset"
    ipset_seed.write_text(_IPSET_SEED)
    host = str(EXAMPLES / "masquerade-host.toml")
    scenario = str(EXAMPLES / "masquerade-scenario.toml")
    rulesets = sorted((SHARED / "conformance" / "rulesets").glob("*"))[:40] if SHARED.is_dir() else []
    captures = sorted(p for p in PCAPS.glob("*") if p.suffix in (".pcap", ".pcapng")) if PCAPS.is_dir() else []
    rules = [*sorted(EXAMPLES.glob("*.rules")), *(p for p in rulesets if p.is_file())]
    return [
        _FileKind("rules", rules, ".rules", lambda f, _d: ["iptables-save", "--rules", f]),
        _FileKind("rules-list", rules, ".rules", lambda f, _d: ["iptables", "--rules", f, "-t", "nat", "-nvL"]),
        _FileKind("restore", rules, ".rules", lambda f, d: ["iptables-restore", "--rules", str(d / "r.v4")],
                  stdin=True),
        _FileKind("host", sorted(EXAMPLES.glob("*-host.toml")), ".toml",
                  lambda f, d: ["replay", "--host", f, "--scenario", scenario, "--out", str(d / "out")], toml=True),
        _FileKind("scenario", sorted(EXAMPLES.glob("*-scenario.toml")), ".toml",
                  lambda f, d: ["replay", "--host", host, "--scenario", f, "--out", str(d / "out")], toml=True),
        _FileKind("lab", sorted(LAB_EXAMPLES.glob("*.toml")), ".toml", lambda f, _d: ["lab", f, "plan"], toml=True),
        # `natbox difftest` runs a valid scenario on the kernel (root, seconds each): its parser is called alone
        _FileKind("difftest", sorted((REPO / "scenarios").glob("*.toml"))[:30], ".toml", None, toml=True),
        _FileKind("ipset", [ipset_seed], ".ipset", lambda f, _d: ["ipset", "--sets", f, "list"]),
        _FileKind("ipset-restore", [ipset_seed], ".ipset",
                  lambda f, d: ["ipset", "--sets", str(d / "r.ipset"), "restore"], stdin=True),
        _FileKind("capture", captures, ".pcap",
                  lambda f, d: ["replay", "--host", host, "--in", f"eth0={f}", "--out", str(d / "out")], binary=True),
    ]


def _run_cli(argv: list[str], stdin: bytes) -> tuple[int | None, str, BaseException | None]:
    """Run `natbox ARGV` in this process: (exit status, stdout+stderr, the exception if one escaped)."""
    from natbox.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    old_stdin = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code: int | None = main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException as exc:
                return None, out.getvalue() + err.getvalue(), exc
    finally:
        sys.stdin = old_stdin
    return code, out.getvalue() + err.getvalue(), None


def _parse_difftest(data: bytes) -> tuple[int | None, str, BaseException | None]:
    from natbox.difftest.scenario import parse_scenario

    try:
        parse_scenario(data.decode("utf-8"), "fuzz.toml")
    except UnicodeDecodeError:
        return 2, "not UTF-8", None
    except ValueError as exc:  # the scenario errors, with file:line
        return 2, str(exc), None
    except BaseException as exc:
        return None, "", exc
    return 0, "", None


def fuzz_files(n: int, seed: int = 0, *, kinds: list[str] | None = None) -> FuzzReport:
    """Give about `n` damaged files to the commands that read them (see the module docstring)."""
    rng = random.Random(seed)
    report = FuzzReport()
    env_rules = os.environ.pop("NATBOX_RULES", None)
    env_sets = os.environ.pop("NATBOX_IPSETS", None)
    try:
        with tempfile.TemporaryDirectory(prefix="natbox-fuzz-") as tmp:
            scratch = Path(tmp)
            chosen = [k for k in _file_kinds(scratch) if k.seeds and (kinds is None or k.name in kinds)]
            for i in range(n):
                kind = chosen[i % len(chosen)]
                raw = rng.choice(kind.seeds).read_bytes()
                if kind.binary or rng.random() < 0.3:
                    data = _mutate_bytes(rng, raw)
                elif kind.toml and rng.random() < 0.7:
                    data = _mutate_toml(rng, raw.decode("utf-8", "replace")).encode()
                else:
                    data = _mutate_lines(rng, raw.decode("utf-8", "replace")).encode()
                path = scratch / f"in{i % 4}{kind.suffix}"
                path.write_bytes(data)
                (scratch / "r.v4").write_bytes(b"")
                (scratch / "r.ipset").write_bytes(b"")
                if kind.argv is None:
                    argv = ["<parse_scenario>", str(path)]
                    code, text, exc = _parse_difftest(data)
                else:
                    argv = kind.argv(str(path), scratch)
                    code, text, exc = _run_cli(argv, data if kind.stdin else b"")
                report.runs += 1
                report.count(kind.name)
                where = f"natbox {' '.join(argv)} (file: {data[:300]!r})"
                if exc is not None:
                    tb = "".join(traceback.format_exception(exc))
                    report.fail(f"{where}:\n{tb}", exception=True)
                elif "Traceback (most recent call last)" in text:
                    report.fail(f"{where}: printed a traceback:\n{text[-2000:]}", exception=True)
                elif code is None or not 0 <= code <= 4:
                    report.fail(f"{where}: exit status {code}", exception=False)
    finally:
        if env_rules is not None:
            os.environ["NATBOX_RULES"] = env_rules
        if env_sets is not None:
            os.environ["NATBOX_IPSETS"] = env_sets
    return report
