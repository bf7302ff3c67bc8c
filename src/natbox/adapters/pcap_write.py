"""Streaming pcap and pcapng writers (see natbox.adapters.pcap for the formats).

`PcapWriter` (classic pcap, one link type: Ethernet or raw IPv4 228, micro- or nanosecond resolution)
and `PcapngWriter` (one section, one IDB per interface with `if_name` and `if_tsresol`, EPBs with an
optional `opt_comment`). Both write each packet as it comes.
"""

from __future__ import annotations

import os
import struct
from types import TracebackType
from typing import IO

from natbox.adapters.pcapfmt import (
    BT_EPB,
    BT_IDB,
    IF_NAME,
    IF_TSRESOL,
    LINKTYPE_ETHERNET,
    MAX_CAPLEN,
    NS,
    OPT_COMMENT,
    OPT_ENDOFOPT,
    PCAP_MAGIC_NS,
    PCAP_MAGIC_US,
    PCAPNG_BOM,
    PCAPNG_SHB,
)

__all__ = ["PcapWriter", "PcapngWriter"]


def _ts_to_ns(ts: float | None, ts_ns: int | None) -> int:
    if ts_ns is not None:
        return ts_ns
    if ts is None:
        return 0
    sec = int(ts // 1)
    return sec * NS + round((ts - sec) * 1e9)


class _Writer:
    def __init__(self, dest: str | os.PathLike[str] | IO[bytes]) -> None:
        if isinstance(dest, (str, os.PathLike)):
            self._f: IO[bytes] = open(dest, "wb")  # noqa: SIM115 - closed by close()/__exit__
            self._own = True
        else:
            self._f = dest
            self._own = False
        self.packets = 0

    def close(self) -> None:
        self._f.flush()
        if self._own:
            self._f.close()
            self._own = False

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class PcapWriter(_Writer):
    """Classic pcap writer (little-endian), one link type, micro- or nanosecond timestamps.

    `linktype` is 1 (Ethernet) or 228 (raw IPv4) in practice; any value is written as given.
    """

    def __init__(self, dest: str | os.PathLike[str] | IO[bytes], *, linktype: int = LINKTYPE_ETHERNET,
                 nanosecond: bool = False, snaplen: int = MAX_CAPLEN) -> None:
        super().__init__(dest)
        self.nanosecond = nanosecond
        self.snaplen = snaplen
        magic = PCAP_MAGIC_NS if nanosecond else PCAP_MAGIC_US
        self._f.write(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))
        self._rec = struct.Struct("<IIII")

    def __enter__(self) -> PcapWriter:
        return self

    def write(self, data: bytes | bytearray | memoryview, *, ts: float | None = None, ts_ns: int | None = None,
              wirelen: int | None = None) -> None:
        """Append one packet; `data` beyond snaplen is cut (wirelen keeps the full length)."""
        n = _ts_to_ns(ts, ts_ns)
        sec, frac = divmod(n, NS)
        if not self.nanosecond:
            frac //= 1000
        wl = len(data) if wirelen is None else wirelen
        if len(data) > self.snaplen:
            data = bytes(data[:self.snaplen])
        self._f.write(self._rec.pack(sec & 0xFFFFFFFF, frac, len(data), wl))
        self._f.write(data)
        self.packets += 1


class PcapngWriter(_Writer):
    """pcapng writer: one SHB, one IDB per `add_interface()`, EPBs with an optional comment.

    IDBs may be added at any time (before the first packet on that interface), as pcapng allows.
    """

    def __init__(self, dest: str | os.PathLike[str] | IO[bytes], *, nanosecond: bool = True,
                 snaplen: int = MAX_CAPLEN) -> None:
        super().__init__(dest)
        self.nanosecond = nanosecond
        self.snaplen = snaplen
        self._names: dict[str, int] = {}
        self._count = 0
        # SHB: BOM, version 1.0, section length unknown (-1), no options.
        body = struct.pack("<IHHq", PCAPNG_BOM, 1, 0, -1)
        self._block(PCAPNG_SHB, body)

    def __enter__(self) -> PcapngWriter:
        return self

    def _block(self, btype: int, body: bytes) -> None:
        blen = 12 + len(body)
        self._f.write(struct.pack("<II", btype, blen) + body + struct.pack("<I", blen))

    @staticmethod
    def _opt(code: int, value: bytes) -> bytes:
        pad = (-len(value)) % 4
        return struct.pack("<HH", code, len(value)) + value + b"\x00" * pad

    def add_interface(self, name: str | None = None, *, linktype: int = LINKTYPE_ETHERNET) -> int:
        """Write an IDB; return its interface id (0, 1, …)."""
        opts = b""
        if name is not None:
            opts += self._opt(IF_NAME, name.encode("utf-8"))
        opts += self._opt(IF_TSRESOL, bytes([9 if self.nanosecond else 6]))
        opts += struct.pack("<HH", OPT_ENDOFOPT, 0)
        self._block(BT_IDB, struct.pack("<HHI", linktype, 0, self.snaplen) + opts)
        idx = self._count
        self._count += 1
        if name is not None:
            self._names.setdefault(name, idx)
        return idx

    def interface_id(self, name: str) -> int | None:
        return self._names.get(name)

    def write(self, data: bytes | bytearray | memoryview, *, interface: int | str = 0, ts: float | None = None,
              ts_ns: int | None = None, wirelen: int | None = None, comment: str | None = None) -> None:
        """Append one EPB on `interface` (an id, or a name; an unknown name gets a new Ethernet IDB, so
        call `add_interface(name, linktype=228)` first for a raw-IPv4 interface)."""
        if isinstance(interface, str):
            ifid = self._names.get(interface)
            if ifid is None:
                ifid = self.add_interface(interface)
        else:
            ifid = interface
            if ifid >= self._count:
                raise ValueError(f"interface {ifid} has not been added")
        n = _ts_to_ns(ts, ts_ns)
        units = n if self.nanosecond else n // 1000
        wl = len(data) if wirelen is None else wirelen
        if len(data) > self.snaplen:
            data = bytes(data[:self.snaplen])
        body = struct.pack("<IIIII", ifid, (units >> 32) & 0xFFFFFFFF, units & 0xFFFFFFFF, len(data), wl)
        body += bytes(data) + b"\x00" * ((-len(data)) % 4)
        if comment is not None:
            body += self._opt(OPT_COMMENT, comment.encode("utf-8")) + struct.pack("<HH", OPT_ENDOFOPT, 0)
        self._block(BT_EPB, body)
        self.packets += 1
