"""`natbox snapshot`: save what a real Linux host (or one of its network namespaces) reports about itself.

`take_snapshot(dir, netns=None)` runs the commands of `natbox.engine.snapshot.SNAPSHOT_FILES` (prefixed by
`ip netns exec NAME` when a namespace is given) and writes their output to those fixed file names.
`load_host(path)` reads either a TOML host file or such a directory and returns the host model; every
command that takes a host accepts both.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from natbox.engine.hostfile import HostFile, HostFileError, parse_host_toml
from natbox.engine.snapshot import OPTIONAL_FILES, SNAPSHOT_FILES, SnapshotError, host_from_snapshot
from natbox.errors import NatboxError, UsageError
from natbox.files import check_parent_dir, read_text

__all__ = ["SNAPSHOT_COMMANDS", "SnapshotCommandError", "build_parser", "cli_snapshot", "load_host", "take_snapshot"]

COMMAND_TIMEOUT = 20.0  # seconds; bounds each command a snapshot runs
# The sysctls natbox models (§3.1, §5.2): forwarding, route_localnet, the conntrack knobs; br_netfilter's
# bridge-nf-call-iptables has a file of its own (br_netfilter.txt: empty when the module is not loaded).
SYSCTL_PATTERN = (r"^net\.(ipv4\.ip_forward$|ipv4\.conf\.[^.]+\.(forwarding|route_localnet)$"
                  r"|netfilter\.nf_conntrack_)")
BR_NETFILTER_PATTERN = r"^net\.bridge\.bridge-nf-call-iptables$"
SYSCTL6_PATTERN = r"^net\.ipv6\.conf\.all\.forwarding$"  # what ip6_forward reads (IPv6 §1.3)
# file name -> argv (same order and names as SNAPSHOT_FILES)
SNAPSHOT_COMMANDS: dict[str, list[str]] = {
    "link.json": ["ip", "-d", "-j", "link"],
    "addr.json": ["ip", "-j", "addr"],
    "route.json": ["ip", "-4", "-j", "route", "show", "table", "all"],
    "neigh.json": ["ip", "-4", "-j", "neigh"],
    "sysctl.txt": ["sysctl", "-a", "-r", SYSCTL_PATTERN],
    "iptables.rules": ["iptables-save", "-c"],
    "ipset.save": ["ipset", "save"],
    "route6.json": ["ip", "-6", "-j", "route", "show", "table", "main"],
    "neigh6.json": ["ip", "-6", "-j", "neigh"],
    "sysctl6.txt": ["sysctl", "-a", "-r", SYSCTL6_PATTERN],
    "ip6tables.rules": ["ip6tables-save", "-c"],
    "br_netfilter.txt": ["sysctl", "-a", "-r", BR_NETFILTER_PATTERN],
    "nfacct.list": ["nfacct", "list"],
}
# optional files whose command may fail on a host that has the program: then there is nothing to record
# (nfacct without the kernel's nfnetlink_acct)
_MAY_FAIL = ("nfacct.list",)
assert list(SNAPSHOT_COMMANDS) == list(SNAPSHOT_FILES)
_REQUIRED_PROGRAMS = sorted({argv[0] for name, argv in SNAPSHOT_COMMANDS.items() if name not in OPTIONAL_FILES})


class SnapshotCommandError(NatboxError, RuntimeError):
    """A command the snapshot needs failed (message: the command and its stderr)."""


def _run(argv: list[str], netns: str | None) -> str:
    full = (["ip", "netns", "exec", netns, *argv]) if netns else argv
    try:
        proc = subprocess.run(full, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)
    except FileNotFoundError:
        raise SnapshotCommandError(f"{full[0]}: not found on PATH (a snapshot runs "
                                   f"{', '.join(_REQUIRED_PROGRAMS)})") from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SnapshotCommandError(f"{' '.join(full)}: {exc}") from None
    if proc.returncode != 0:
        raise SnapshotCommandError(f"{' '.join(full)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def take_snapshot(dest_dir: str | os.PathLike[str], *, netns: str | None = None) -> None:
    """Run the snapshot commands (in `netns` if given) and write their output into `dest_dir`."""
    dest = Path(dest_dir)
    outputs: dict[str, str] = {}
    for name, argv in SNAPSHOT_COMMANDS.items():
        if name in OPTIONAL_FILES and shutil.which(argv[0]) is None:
            continue
        try:
            outputs[name] = _run(argv, netns)
        except SnapshotCommandError:
            if name not in _MAY_FAIL:
                raise
    dest.mkdir(exist_ok=True)  # once every command ran; only DIR itself: a missing parent is not created
    for name, text in outputs.items():
        (dest / name).write_text(text)
    (dest / "hostname").write_text((netns or _run(["hostname"], None).strip()) + "\n")


def read_snapshot_files(path: str | os.PathLike[str]) -> dict[str, str]:
    """The snapshot files present in a directory (name -> text). SnapshotError if one cannot be read."""
    base = Path(path)
    files: dict[str, str] = {}
    for name in (*SNAPSHOT_FILES, "hostname"):
        p = base / name
        if p.is_file():
            files[name] = read_text(p, error=SnapshotError)
    return files


def load_host(path: str | os.PathLike[str]) -> HostFile:
    """A host from a TOML host file (its `[rules] file`, `[rules6] file` and `[ipsets] file` read relative to
    it) or a snapshot directory.
    Raises HostFileError / SnapshotError, one line naming the file."""
    p = Path(path)
    if p.is_dir():
        hf = host_from_snapshot(read_snapshot_files(p), str(p))
        hf.rules6_origin = str(p / "ip6tables.rules")
        return hf
    hf = parse_host_toml(read_text(p, error=HostFileError), str(p))
    if hf.rules_file is not None:
        rules_path = p.parent / hf.rules_file
        hf.host.rules_text = read_text(rules_path, f"{p}: rules.file", error=HostFileError)
        hf.host.rules_origin = str(rules_path)
    if hf.rules6_file is not None:
        rules6_path = p.parent / hf.rules6_file
        hf.host.rules6_text = read_text(rules6_path, f"{p}: rules6.file", error=HostFileError)
        hf.rules6_origin = str(rules6_path)
    if hf.ipsets_file is not None:
        sets_path = p.parent / hf.ipsets_file
        hf.ipsets_text = read_text(sets_path, f"{p}: ipsets.file", error=HostFileError)
        hf.ipsets_origin = str(sets_path)
    return hf


def build_parser() -> argparse.ArgumentParser:
    from natbox.cli.common import parser

    p = parser("natbox snapshot", """\
Save a real host's configuration into DIR, for `natbox replay --host DIR` (and natbox gateway): the
output of the commands below, run on this host (or in network namespace NAME), as files:
""" + "\n".join(f"  {name:<15} {' '.join(argv)}" for name, argv in SNAPSHOT_COMMANDS.items()) + """
  hostname        the host's name""", """\
DIR is created if it does not exist, but its parent directory must exist. Needs ip, sysctl and
iptables-save on PATH (and root for --netns); ipset.save is written when ipset is on PATH, nfacct.list
when nfacct is (and the kernel answers it).

exit status: 0 written; 1 a command failed (its message is printed); 2 bad usage.

example: sudo natbox snapshot --netns router /tmp/router && natbox replay --host /tmp/router --in eth0=lan.pcap""")
    p.add_argument("dir", metavar="DIR", help="where to write the snapshot")
    p.add_argument("--netns", metavar="NAME", help="take the snapshot inside network namespace NAME")
    return p


def cli_snapshot(argv: Sequence[str]) -> int:
    """`natbox snapshot [--netns NAME] DIR`: 0 on success, 1 if a command failed, 2 on bad usage."""
    from natbox.cli.common import parse

    args = parse(build_parser(), argv)
    if isinstance(args, int):
        return args
    dest: str = args.dir
    netns: str | None = args.netns
    try:
        check_parent_dir(dest)
        if os.path.exists(dest) and not os.path.isdir(dest):
            raise UsageError(f"{dest}: exists and is not a directory")
    except UsageError as exc:
        sys.stderr.write(f"natbox snapshot: {exc}\n")
        return 2
    try:
        take_snapshot(dest, netns=netns)
        host_from_snapshot(read_snapshot_files(dest), dest)  # check it loads
    except (SnapshotCommandError, SnapshotError, OSError) as exc:
        sys.stderr.write(f"natbox snapshot: {exc}\n")
        return 1
    print(f"snapshot written to {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_snapshot(sys.argv[1:]))
