"""The gateway's diagnostics: one line each on stderr, written so they also read well in the journal.

On a terminal or in a file every line starts with `natbox gateway: `. Under systemd, when stderr is the
journal (`JOURNAL_STREAM` names stderr's device and inode, sd_journal_stream_fd(3)), that prefix is left
out (the journal shows the unit and pid already) and each line starts with its syslog priority
(`<3>` error, `<4>` warning, `<6>` info: the journal's SyslogLevelPrefix), so `journalctl -p warning`
shows exactly the warnings and errors.
"""

from __future__ import annotations

import os
import sys
from typing import Final, TextIO

__all__ = ["ERR", "INFO", "WARNING", "journal_stream", "say"]

ERR: Final = 3
WARNING: Final = 4
INFO: Final = 6
PREFIX = "natbox gateway: "


def journal_stream(stream: TextIO, environ: dict[str, str] | os._Environ[str] | None = None) -> bool:
    """Whether `stream` is connected to the systemd journal ($JOURNAL_STREAM is its "dev:inode")."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(stream.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError, AttributeError):
        return False


_JOURNAL: list[bool] = []


def _priority(text: str) -> int:
    if text.startswith("warning:"):
        return WARNING
    if text.startswith(("error", "refusing")):
        return ERR
    return INFO


def say(text: str, priority: int | None = None, stream: TextIO | None = None) -> None:
    """Write one diagnostic line (its priority guessed from a `warning:`/`error`/`refusing` start)."""
    out = sys.stderr if stream is None else stream
    if stream is None and not _JOURNAL:
        _JOURNAL.append(journal_stream(out))
    journal = _JOURNAL[0] if stream is None else journal_stream(out)
    level = _priority(text) if priority is None else priority
    line = f"<{level}>{text}" if journal else PREFIX + text
    out.write(line.replace("\n", "\n" + (f"<{level}>" if journal else "  ")) + "\n")
    out.flush()
