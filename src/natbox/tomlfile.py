"""TOML files with error messages that name file:line and the key (host files, scenario files).

`tomllib` reports syntax errors with a position but loses line numbers once a document is parsed, so
`Locator` finds them again in the text: the line of `[[section]]` number n, or of a key inside it (or
at the top level). Pure: the caller reads the file.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

__all__ = ["Locator", "load_toml"]

_HEADER = re.compile(r"^\[\[?\s*([A-Za-z0-9_.\"-]+)\s*\]\]?")


class Locator:
    """Line numbers of `[[section]]` number n and of a key inside it, for messages."""

    def __init__(self, text: str, filename: str, error: type[ValueError]) -> None:
        self.filename = filename
        self.lines = text.splitlines()
        self._error = error

    def line_of(self, section: str | None, index: int, key: str | None) -> int:
        """The key's line; without a key (or if it is not written there) the section header's line."""
        current: str | None = None
        count = -1
        start = 1
        for lineno, raw in enumerate(self.lines, start=1):
            line = raw.strip()
            m = _HEADER.match(line)
            if m:
                current = m.group(1).strip('"')
                if current == section:
                    count += 1
                    if count == index:
                        start = lineno
                        if key is None:
                            return lineno
                continue
            if key is None:
                continue
            in_scope = (section is None and current is None) or (current == section and count == index)
            if in_scope and re.match(rf'^"?{re.escape(key)}"?\s*=', line):
                return lineno
        return start

    def error(self, section: str | None, index: int, key: str | None, message: str) -> ValueError:
        """`file:line: section[i].key: message`, as the caller's error type."""
        where = f"{self.filename}:{self.line_of(section, index, key)}"
        label = key if section is None else (f"{section}[{index}].{key}" if key else f"{section}[{index}]")
        return self._error(f"{where}: {label}: {message}")


def load_toml(text: str, filename: str, error: type[ValueError]) -> dict[str, Any]:
    """Parse TOML; a syntax error becomes `error("file:line:column: TOML syntax error: ...")`."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        where = f"{filename}:{m.group(1)}:{m.group(2)}" if m else filename
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise error(f"{where}: TOML syntax error: {msg}") from None
