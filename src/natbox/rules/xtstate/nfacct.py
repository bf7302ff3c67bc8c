"""nfnetlink_acct's accounting objects (net/netfilter/nfnetlink_acct.c) and the nfacct 1.0.2 command on them.

An object counts packets and bytes under a name (at most NFACCT_NAME_MAX - 1 = 31 characters: libnetfilter_acct
cuts longer names), optionally with a quota in bytes or packets. `-m nfacct --nfacct-name NAME` rules count
into it (`nfnl_acct_update`) and match unless the object has a quota it has not yet passed
(`nfnl_acct_overquota`); a rule can only name an existing object (ENOENT), and an object a rule names cannot be
deleted (EBUSY; `flush` deletes only the unused ones). Objects are listed in creation order.

`NfacctSession.run(argv, stdin)` is the `nfacct` program (nfacct.c of nfacct 1.0.2): list/add/delete/get/
flush/restore/version/help, commands and options matched by prefix as it matches them, its output formats
(plain and xml) and its messages, recorded on Linux 6.18 (tests/rules/data/nfacct_1.0.2.json). `monitor`
(quota notifications over netlink multicast) is not available.

The objects of the namespace the rules are checked against are in scope (`using_nfacct`, a context variable
like natbox.ipset.scope's): `natbox iptables` puts a file's objects there, the live gateway its own. Bounded by
MAX_OBJECTS (nfnetlink_acct has no limit but memory).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Final

__all__ = ["MAX_OBJECTS", "NFACCT_NAME_MAX", "NFACCT_NO_QUOTA", "NFACCT_OVERQUOTA", "NFACCT_UNDERQUOTA",
           "NFACCT_VERSION", "NfAcct", "NfacctError", "NfacctSession", "enter_nfacct", "format_list",
           "load_objects", "nfacct_in_scope", "rule_acct_refs", "using_nfacct"]

NFACCT_NAME_MAX: Final = 32
NFACCT_VERSION: Final = "1.0.2"
MAX_OBJECTS: Final = 65536
NFACCT_NO_QUOTA, NFACCT_UNDERQUOTA, NFACCT_OVERQUOTA = -1, 0, 1
_U64: Final = (1 << 64) - 1
_PFX: Final = f"nfacct v{NFACCT_VERSION}: "
_USAGE: Final = "Usage: nfacct command [parameters]...\n"
HELP = (f"nfacct v{NFACCT_VERSION}: utility for the Netfilter extended accounting infrastructure\n" + _USAGE + "\n"
        "Commands:\n  list [reset]\t\tList the accounting object table (and reset)\n"
        "  add object-name\tAdd new accounting object to table\n"
        "  delete object-name\tDelete existing accounting object\n"
        "  get object-name\tGet existing accounting object\n"
        "  flush\t\t\tFlush accounting object table\n"
        "  restore\t\tRestore accounting object table reading 'list' output from stdin\n"
        "  monitor\t\tListens for quota attainment notifications\n"
        "  version\t\tDisplay version and disclaimer\n"
        "  help\t\t\tDisplay this help message\n")
VERSION_TEXT: Final = (f"nfacct v{NFACCT_VERSION}: utility for the Netfilter extended accounting infrastructure\n"
                "Copyright (C) 2011 Pablo Neira Ayuso <pablo@netfilter.org>\n"
                "Copyright (C) 2011 Intra2net AG <http://www.intra2net.com>\n"
                "This program comes with ABSOLUTELY NO WARRANTY.\n"
                "This is free software, and you are welcome to redistribute it under certain \n"
                "conditions; see LICENSE file distributed in this package for details.\n")
EBUSY, ENOENT = "Device or resource busy", "No such file or directory"


class NfAcct:
    """`struct nf_acct`: the counters, and the quota (`NFACCT_F_QUOTA_PKTS`/`_BYTES`, `NFACCT_OVERQUOTA_BIT`)."""

    __slots__ = ("bytes", "name", "overquota", "pkts", "quota", "quota_pkts")

    def __init__(self, name: str, pkts: int = 0, nbytes: int = 0, quota: int | None = None,
                 quota_pkts: bool = False) -> None:
        self.name, self.pkts, self.bytes = name, pkts, nbytes
        self.quota, self.quota_pkts, self.overquota = quota, quota_pkts, False

    def update(self, length: int) -> None:
        """`nfnl_acct_update()`."""
        self.pkts = (self.pkts + 1) & _U64
        self.bytes = (self.bytes + length) & _U64

    def check_quota(self) -> int:
        """`nfnl_acct_overquota()`: NFACCT_NO_QUOTA, or whether the count is past the quota (the overquota
        flag is set once it reaches it)."""
        if self.quota is None:
            return NFACCT_NO_QUOTA
        now = self.pkts if self.quota_pkts else self.bytes
        if now >= self.quota:
            self.overquota = True
        return NFACCT_OVERQUOTA if now > self.quota else NFACCT_UNDERQUOTA

    def line(self) -> str:
        """nfacct's plain line (`nfacct_snprintf`, NFACCT_SNPRINTF_F_FULL)."""
        head = f"{{ pkts = {self.pkts:020d}, bytes = {self.bytes:020d}"
        if self.quota is not None:
            head += (f", quota = {self.quota:020d}, mode = {'packet' if self.quota_pkts else 'byte'}, "
                     f"overquota = {'yes' if self.overquota else 'no'}")
        return head + f" }} = {self.name};\n"

    def xml(self) -> str:
        return (f"<obj><name>{self.name}</name><pkts>{self.pkts:020d}</pkts><bytes>{self.bytes:020d}</bytes>"
                "</obj>\n")


_ACCT: ContextVar[dict[str, NfAcct] | None] = ContextVar("natbox_nfacct", default=None)


def nfacct_in_scope() -> dict[str, NfAcct] | None:
    return _ACCT.get()


@contextmanager
def using_nfacct(objects: dict[str, NfAcct] | None) -> Iterator[None]:
    token = _ACCT.set(objects)
    try:
        yield
    finally:
        _ACCT.reset(token)


def enter_nfacct(objects: dict[str, NfAcct] | None) -> None:
    """Make `objects` the ones in scope from now on (a command-line process's whole run)."""
    _ACCT.set(objects)


_NAME_OPT: Final = re.compile(r"--nfacct-name\s+(\"(?:[^\"\\]|\\.)*\"|\S+)")


def rule_acct_refs(rules_text: str) -> dict[str, int]:
    """How many rules of an iptables-save text name each object (`nfacct_mt_checkentry`'s references)."""
    refs: dict[str, int] = {}
    for line in rules_text.splitlines():
        if "--nfacct-name" in line and (line.startswith("-A ") or (line.startswith("[") and "] -A " in line)):
            for name in _NAME_OPT.findall(line):
                n = name[1:-1].replace('\\"', '"') if name.startswith('"') else name
                refs[n] = refs.get(n, 0) + 1
    return refs


def format_list(objects: dict[str, NfAcct]) -> str:
    return "".join(a.line() for a in objects.values())


_LINE: Final = re.compile(r"\{ pkts = (\d+), bytes = (\d+)(?:, quota = (\d+), mode = (byte|packet), "
                   r"overquota = (yes|no))? \} = (\S+);")


def load_objects(text: str) -> dict[str, NfAcct]:
    """Objects from `nfacct list` text (the quota lines too, which `nfacct restore` cannot read); ValueError
    names the first line that is not one."""
    out: dict[str, NfAcct] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _LINE.fullmatch(line.strip())
        if m is None or len(out) >= MAX_OBJECTS:
            raise ValueError(f"line {n}: not an `nfacct list` line")
        quota = None if m.group(3) is None else int(m.group(3)) & _U64
        a = NfAcct(m.group(6), int(m.group(1)) & _U64, int(m.group(2)) & _U64, quota, m.group(4) == "packet")
        a.overquota = m.group(5) == "yes"
        out[a.name] = a
    return out


def _scan_u64(text: str) -> int | None:
    """sscanf("%llu"): blanks, an optional sign, decimal digits; a minus wraps as strtoull does."""
    m = re.match(r"\s*([+-]?)(\d+)", text)
    if m is None:
        return None
    v = int(m.group(2))
    v = _U64 if v > _U64 else v
    return (-v) & _U64 if m.group(1) == "-" else v


class NfacctError(Exception):
    """One of nfacct's messages (exit status 1)."""


def _prefix_of(word: str, full: str) -> bool:
    """nfacct's `strncmp(word, full, strlen(word)) == 0`."""
    return full.startswith(word)


class NfacctSession:
    """The nfacct command on one namespace's objects, with the references the rules hold on them."""

    def __init__(self, objects: dict[str, NfAcct], refs: dict[str, int] | None = None) -> None:
        self.objects, self.refs = objects, refs or {}

    def run(self, argv: list[str], stdin: str = "") -> tuple[int, str, str]:
        """(exit status, stdout, stderr) of `nfacct ARGV...`."""
        if not argv:
            return 1, "", _USAGE
        cmd = argv[0]
        for name, fn in (("list", self._list), ("add", self._add), ("delete", self._delete), ("get", self._get),
                         ("flush", self._flush), ("restore", self._restore)):
            if _prefix_of(cmd, name):
                try:
                    return 0, fn(argv, stdin), ""
                except NfacctError as e:
                    return 1, "", _PFX + str(e) + "\n"
        if _prefix_of(cmd, "monitor"):
            return 1, "", _PFX + "monitor: quota notifications are not available in natbox\n"
        if _prefix_of(cmd, "version"):
            return 0, VERSION_TEXT, ""
        if _prefix_of(cmd, "help"):
            return 0, HELP, ""
        return 1, "", _PFX + f"Unknown command: {cmd}\n" + _USAGE

    @staticmethod
    def _flags(words: list[str]) -> tuple[bool, bool]:
        reset = xml = False
        for w in words:
            if _prefix_of(w, "reset"):
                reset = True
            elif _prefix_of(w, "xml"):
                xml = True
            else:
                raise NfacctError("unknown argument")
        return reset, xml

    @staticmethod
    def _show(objs: list[NfAcct], reset: bool, xml: bool) -> str:
        text = "".join(a.xml() if xml else a.line() for a in objs)
        if xml:
            text = '<?xml version="1.0" encoding="utf-8"?>\n<nfacct>\n' + text + "</nfacct>\n"
        if reset:  # NFNL_MSG_ACCT_GET_CTRZERO: the values before, then zero (and the overquota flag cleared)
            for a in objs:
                a.pkts = a.bytes = 0
                a.overquota = False
        return text

    def _list(self, argv: list[str], stdin: str) -> str:
        reset, xml = self._flags(argv[1:])
        return self._show(list(self.objects.values()), reset, xml)

    def _get(self, argv: list[str], stdin: str) -> str:
        if len(argv) < 2:
            raise NfacctError("missing object name")
        reset, xml = self._flags(argv[2:])
        a = self.objects.get(argv[1][:NFACCT_NAME_MAX - 1])
        if a is None:
            raise NfacctError(f"error: {ENOENT}")
        return self._show([a], reset, xml)

    def _new(self, a: NfAcct) -> None:
        """`nfnl_acct_new()` with NLM_F_CREATE|NLM_F_EXCL: EBUSY for a name in use."""
        if a.name in self.objects or len(self.objects) >= MAX_OBJECTS:
            raise NfacctError(f"error: {EBUSY}")
        self.objects[a.name] = a

    def _add(self, argv: list[str], stdin: str) -> str:
        if len(argv) < 2:
            raise NfacctError("missing object name")
        if len(argv) > 4:
            raise NfacctError("too many arguments")
        quota, pkts = None, False
        if len(argv) > 2:
            if len(argv) == 3:
                raise NfacctError("missing quota value")
            if argv[2] not in ("byte", "packet"):
                raise NfacctError('argument must "byte" or "packet"')
            quota, pkts = _scan_u64(argv[3]), argv[2] == "packet"
            if quota is None:
                raise NfacctError("error reading quota")
        self._new(NfAcct(argv[1][:NFACCT_NAME_MAX - 1], quota=quota, quota_pkts=pkts))
        return ""

    def _delete(self, argv: list[str], stdin: str) -> str:
        if len(argv) < 2:
            raise NfacctError("missing object name")
        if len(argv) > 2:
            raise NfacctError("too many arguments")
        name = argv[1][:NFACCT_NAME_MAX - 1]
        if name not in self.objects:
            raise NfacctError(f"error: {ENOENT}")
        if self.refs.get(name, 0):
            raise NfacctError(f"error: {EBUSY}")
        del self.objects[name]
        return ""

    def _flush(self, argv: list[str], stdin: str) -> str:
        """`nfnl_acct_del` without a name: every object no rule uses."""
        if len(argv) > 1:
            raise NfacctError("too many arguments")
        for name in [n for n in self.objects if not self.refs.get(n, 0)]:
            del self.objects[name]
        return ""

    def _restore(self, argv: list[str], stdin: str) -> str:
        """`nfacct_cmd_restore`: each line up to its `;` read as `{ pkts = %llu, bytes = %llu } = %s`; the
        first bad line or refused object ends it (the objects before it stay)."""
        for line in stdin.splitlines(keepends=True):
            if ";" not in line:
                raise NfacctError("invalid line")
            m = re.match(r"\{ pkts = (\S+), bytes = (\S+) \} = (\S+)", line[:line.index(";")])
            pkts = _scan_u64(m.group(1)) if m else None
            nbytes = _scan_u64(m.group(2)) if m else None
            if m is None or pkts is None or nbytes is None:
                raise NfacctError("error reading input")
            self._new(NfAcct(m.group(3)[:NFACCT_NAME_MAX - 1], pkts, nbytes))
        return ""
