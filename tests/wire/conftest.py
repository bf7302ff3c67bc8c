"""Shared helpers for the wire tests: read Ethernet frames from the external sample captures."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from natbox.testing.paths import PCAPS

PCAP_DIR = PCAPS


def read_pcap(path: Path) -> list[bytes]:
    """Frames of a classic little/big-endian pcap file (no pcapng)."""
    raw = path.read_bytes()
    magic = raw[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    pos = 24
    frames: list[bytes] = []
    while pos + 16 <= len(raw):
        _sec, _usec, incl, _orig = struct.unpack(endian + "IIII", raw[pos : pos + 16])
        pos += 16
        frames.append(raw[pos : pos + incl])
        pos += incl
    return frames


@pytest.fixture
def pcap_frames() -> Callable[[str], list[bytes]]:
    """`pcap_frames("name.pcap")` → its frames; skips the test when the captures are not present."""

    def load(name: str) -> list[bytes]:
        path = PCAP_DIR / name
        if not path.exists():
            pytest.skip(f"{path} not present")
        return read_pcap(path)

    return load
