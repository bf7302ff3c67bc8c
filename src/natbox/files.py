"""Reading the files a command is given (host files, rules files, lab files, scenarios), one way.

`read_text(path)` returns a file's text or raises one error whose message is one line naming the file:
missing (and whether its directory is missing too), a directory, unreadable, not UTF-8 text (a binary
file), or a name that cannot be a file name (an empty string, a NUL character). Commands print that line
and exit 2 instead of a traceback. `check_parent_dir(path)` refuses an output path whose directory does
not exist, so no command creates directories the user did not ask for.
"""

from __future__ import annotations

import os

from natbox.errors import NatboxError, UsageError

__all__ = ["check_parent_dir", "read_text"]


def _why_missing(path: str) -> str:
    parent = os.path.dirname(path)
    if parent and not os.path.isdir(parent):
        return f"no such file (directory {parent} does not exist)"
    return "no such file"


def read_text(path: str | os.PathLike[str], what: str = "", *, error: type[NatboxError] = UsageError) -> str:
    """The text (UTF-8) of the file at `path`; `error("[what ]PATH: reason")` if it cannot be read."""
    name = os.fspath(path)
    label = f"{what} {name}" if what else name
    if not name or "\0" in name:
        raise error(f"{what + ' ' if what else ''}{name!r}: not a file name")
    try:
        with open(name, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise error(f"{label}: {_why_missing(name)}") from None
    except IsADirectoryError:
        raise error(f"{label}: is a directory, not a file") from None
    except OSError as exc:
        raise error(f"{label}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{label}: not a text file (byte {exc.start} is not UTF-8; is it a binary file?)") from None


def check_parent_dir(path: str | os.PathLike[str], what: str = "") -> None:
    """Refuse an output path whose directory does not exist (UsageError naming it)."""
    name = os.fspath(path)
    label = f"{what} {name}" if what else name
    if not name or "\0" in name:
        raise UsageError(f"{what + ' ' if what else ''}{name!r}: not a file name")
    parent = os.path.dirname(os.path.abspath(name))
    if not os.path.isdir(parent):
        raise UsageError(f"{label}: directory {parent} does not exist (create it first)")
