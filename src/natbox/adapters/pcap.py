"""Streaming pcap / pcapng reader and writer (the only capture-file I/O in natbox).

Reading
-------
`CaptureReader(path_or_file)` sniffs the first four bytes and raises `CaptureError` (one line naming the
file) when the input is not a capture at all; iterating it yields one `PcapRecord` (a NamedTuple, so no
per-packet object construction beyond a tuple) per packet, streaming: memory is bounded by the largest
single block, never the file.

Supported formats:

* classic pcap, both byte orders, microsecond (0xa1b2c3d4) and nanosecond (0xa1b23c4d) magic;
* pcapng: any number of sections (SHB in either byte order; interfaces are per section), IDB with
  `if_name`, `if_tsresol` and `if_tsoffset`, EPB (with `opt_comment`), SPB, the obsolete OPB; every other
  block type (NRB, ISB, DSB, custom…) is skipped.

Malformed input (a truncated file end, a bad block length, an absurd caplen, a packet on an undeclared
interface…) *ends* iteration after every good packet has been yielded; the reason is stored in
`CaptureReader.error` (one clear line naming the file, the byte offset and the packet count), or raised
as `CaptureFormatError` (a `CaptureError`) at that point when the reader was made with `strict=True`.
No packet already read is ever lost, and no other exception escapes.

Link types (`LINKTYPE_*` from https://www.tcpdump.org/linktypes.html): 1 Ethernet (up to two 802.1Q /
802.1ad tags are skipped in the normalised view), 113 Linux SLL, 276 Linux SLL2, 0 BSD loopback
(host-order AF), 108 OpenBSD loopback, 101 / 12 / 14 raw IP (IPv4 or IPv6 by the version nibble),
228 raw IPv4, 229 raw IPv6. Anything else (e.g. 9 PPP) is yielded with `foreign="foreign link type N"`
so that a replay can count it per packet. In classic pcap the header's link-type field also carries FCS
bits; as in libpcap's `LT_LINKTYPE()` only the low 26 bits name the link type.

Writing
-------
`PcapWriter` (classic pcap, one link type: Ethernet or raw IPv4 228, micro- or nanosecond resolution)
and `PcapngWriter` (one section, one IDB per interface with `if_name` and `if_tsresol`, EPBs with an
optional `opt_comment`). Both write each packet as it comes (streaming).

The writers live in `pcap_write.py` and the format constants and link-layer normalisation in
`pcapfmt.py`; this module re-exports what callers use.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from types import TracebackType
from typing import IO, NamedTuple

from natbox.adapters.pcap_write import PcapngWriter, PcapWriter
from natbox.adapters.pcapfmt import (
    BT_EPB,
    BT_IDB,
    BT_OPB,
    BT_SPB,
    EPB_DATA,
    IF_NAME,
    IF_TSOFFSET,
    IF_TSRESOL,
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_RAW,
    LT_LINKTYPE_MASK,
    MAX_BLOCK_LEN,
    MAX_CAPLEN,
    MAX_INTERFACES,
    NS,
    OPT_COMMENT,
    OPT_ENDOFOPT,
    PCAP_MAGIC_NS,
    PCAP_MAGIC_US,
    PCAPNG_BOM,
    PCAPNG_SHB,
    SPB_DATA,
    normalise,
)
from natbox.errors import NatboxError

__all__ = [
    "LINKTYPE_ETHERNET",
    "LINKTYPE_IPV4",
    "LINKTYPE_IPV6",
    "LINKTYPE_LINUX_SLL",
    "LINKTYPE_LINUX_SLL2",
    "LINKTYPE_RAW",
    "MAX_BLOCK_LEN",
    "MAX_CAPLEN",
    "MAX_INTERFACES",
    "CaptureError",
    "CaptureFormatError",
    "CaptureReader",
    "PcapRecord",
    "PcapWriter",
    "PcapngWriter",
    "iter_capture",
]

# Chunk size used when skipping an unknown block.
_SKIP_CHUNK = 65536


class CaptureError(NatboxError):
    """The input is not a capture file (or cannot be opened). str() is one line naming the file."""


class CaptureFormatError(CaptureError):
    """A capture file is malformed after its header (raised only by strict readers)."""


class PcapRecord(NamedTuple):
    """One packet of a capture, with a normalised view of its network layer.

    `ipv4` is the IPv4 datagram from its header on, exactly as captured after the link-layer header
    (Ethernet padding included: trimming to the IP total length is `ip_rcv_core`'s job), or None when the
    packet does not carry IPv4 (ARP, IPv6, a foreign link type, a link header cut short).
    `ethertype` is the final Ethernet/SLL protocol (after VLAN tags), or 0x0800/0x86DD synthesised for raw
    link types, or None. `src_mac`/`dst_mac` are 6-byte strings for Ethernet (SLL gives only the source).
    """

    ts: float                 # seconds since the epoch
    ts_ns: int                # the same, exact, in integer nanoseconds
    ifindex: int              # pcapng interface id within its section; 0 for classic pcap
    ifname: str | None        # pcapng if_name, if any
    linktype: int
    data: bytes               # the captured bytes (caplen of them)
    wirelen: int              # original length on the wire
    truncated: bool           # caplen < wirelen
    ipv4: bytes | None
    ethertype: int | None
    src_mac: bytes | None
    dst_mac: bytes | None
    foreign: str | None       # "foreign link type N" for link types we cannot normalise
    comment: str | None       # pcapng opt_comment of the packet, if any


def _make_record(ts_ns: int, ifindex: int, ifname: str | None, linktype: int, data: bytes,
                 wirelen: int, comment: str | None) -> PcapRecord:
    ip, etype, src, dst, foreign = normalise(linktype, data)
    sec, frac = divmod(ts_ns, NS)
    return PcapRecord(sec + frac / 1e9, ts_ns, ifindex, ifname, linktype, data, wirelen,
                      len(data) < wirelen, ip, etype, src, dst, foreign, comment)


class _Iface(NamedTuple):
    linktype: int
    snaplen: int
    name: str | None
    # timestamp units → ns: ns = units * mul // div (exact integers)
    mul: int
    div: int
    offset_ns: int


def _tsresol(value: int) -> tuple[int, int]:
    """(mul, div) converting if_tsresol units to nanoseconds."""
    exp = value & 0x7F
    if value & 0x80:
        return NS, 1 << exp
    if exp <= 9:
        return 10 ** (9 - exp), 1
    return 1, 10 ** (exp - 9)


def _parse_options(buf: bytes, off: int, end: int, e: str) -> dict[int, bytes] | None:
    """Options of a pcapng block (first occurrence of each code); None if they overrun the block."""
    opts: dict[int, bytes] = {}
    hdr = struct.Struct(e + "HH")
    while off + 4 <= end:
        code, length = hdr.unpack_from(buf, off)
        off += 4
        if code == OPT_ENDOFOPT:
            break
        if off + length > end:
            return None
        opts.setdefault(code, bytes(buf[off:off + length]))
        off += (length + 3) & ~3
    return opts


def _opt_str(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    return raw.rstrip(b"\x00").decode("utf-8", "replace")


class CaptureReader:
    """Streaming reader of a pcap or pcapng file; iterate it for `PcapRecord`s (see the module doc).

    `source` is a path or a binary file object (then `name` names it in messages). Construction raises
    `CaptureError` if the file cannot be opened or does not start like a capture.
    """

    def __init__(self, source: str | os.PathLike[str] | IO[bytes], *, name: str | None = None,
                 strict: bool = False) -> None:
        self._own = False
        if isinstance(source, (str, os.PathLike)):
            self.name = name or os.fspath(source)
            try:
                self._f: IO[bytes] = open(source, "rb")  # noqa: SIM115 - closed by close()/__exit__
            except OSError as exc:
                raise CaptureError(f"{self.name}: cannot open: {exc.strerror or exc}") from None
            self._own = True
        else:
            self.name = name or str(getattr(source, "name", "<stream>"))
            self._f = source
        self.strict = strict
        self.error: str | None = None
        self.packets = 0
        self._pos = 0
        head = self._read(4)
        if len(head) < 4:
            self.close()
            what = "empty" if not head else f"only {len(head)} bytes"
            raise CaptureError(f"{self.name}: not a pcap or pcapng file ({what})")
        magic_be = int.from_bytes(head, "big")
        magic_le = int.from_bytes(head, "little")
        self.linktype: int | None = None
        self.snaplen: int | None = None
        self.nanosecond = False
        if magic_be == PCAPNG_SHB:
            self.format = "pcapng"
            self._head = head
        elif PCAP_MAGIC_US in (magic_be, magic_le) or PCAP_MAGIC_NS in (magic_be, magic_le):
            self.format = "pcap"
            self._e = ">" if magic_be in (PCAP_MAGIC_US, PCAP_MAGIC_NS) else "<"
            magic = magic_be if self._e == ">" else magic_le
            self.nanosecond = magic == PCAP_MAGIC_NS
            rest = self._read(20)
            if len(rest) < 20:
                self.close()
                raise CaptureError(f"{self.name}: truncated pcap file header ({4 + len(rest)} of 24 bytes)")
            _vmaj, _vmin, _zone, _sigfigs, snaplen, lt = struct.unpack(self._e + "HHiIII", rest)
            self.snaplen = snaplen
            self.linktype = lt & LT_LINKTYPE_MASK
        else:
            self.close()
            raise CaptureError(f"{self.name}: not a pcap or pcapng file (starts with 0x{magic_be:08x})")

    @property
    def bytes_read(self) -> int:
        """How far into the file reading has got (for progress: `natbox replay` shows % done and ETA)."""
        return self._pos

    # -- plumbing ---------------------------------------------------------------------------------------
    def _read(self, n: int) -> bytes:
        b = self._f.read(n)
        self._pos += len(b)
        return b

    def close(self) -> None:
        if self._own:
            self._f.close()
            self._own = False

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _fail(self, offset: int, why: str) -> None:
        self.error = f"{self.name}: {why} at byte offset {offset} (after {self.packets} packets)"
        if self.strict:
            raise CaptureFormatError(self.error)

    def __iter__(self) -> Iterator[PcapRecord]:
        if self.format == "pcap":
            return self._iter_pcap()
        return self._iter_pcapng()

    # -- classic pcap -----------------------------------------------------------------------------------
    def _iter_pcap(self) -> Iterator[PcapRecord]:
        hdr = struct.Struct(self._e + "IIII")
        lt = self.linktype if self.linktype is not None else LINKTYPE_ETHERNET
        frac_mul = 1 if self.nanosecond else 1000
        while True:
            start = self._pos
            h = self._read(16)
            if not h:
                return
            if len(h) < 16:
                self._fail(start, f"truncated record header ({len(h)} of 16 bytes)")
                return
            sec, frac, caplen, wirelen = hdr.unpack(h)
            if caplen > MAX_CAPLEN:
                self._fail(start, f"absurd caplen {caplen} (> {MAX_CAPLEN})")
                return
            data = self._read(caplen)
            if len(data) < caplen:
                self._fail(start, f"truncated record ({len(data)} of {caplen} captured bytes)")
                return
            self.packets += 1
            yield _make_record(sec * NS + frac * frac_mul, 0, None, lt, data, wirelen, None)

    # -- pcapng -----------------------------------------------------------------------------------------
    def _iter_pcapng(self) -> Iterator[PcapRecord]:
        ifaces: list[_Iface] = []
        e = "<"
        first = True
        while True:
            start = self._pos
            if first:
                head = self._head
                first = False
            else:
                head = self._read(4)
                if not head:
                    return
                if len(head) < 4:
                    self._fail(start, "truncated block header")
                    return
            lenb = self._read(4)
            if len(lenb) < 4:
                self._fail(start, "truncated block header")
                return
            if int.from_bytes(head, "big") == PCAPNG_SHB:
                bom = self._read(4)
                if len(bom) < 4:
                    self._fail(start, "truncated section header block")
                    return
                if int.from_bytes(bom, "big") == PCAPNG_BOM:
                    e = ">"
                elif int.from_bytes(bom, "little") == PCAPNG_BOM:
                    e = "<"
                else:
                    self._fail(start, f"bad section header byte-order magic 0x{bom.hex()}")
                    return
                blen = struct.unpack(e + "I", lenb)[0]
                if blen < 28 or blen % 4 or blen > MAX_BLOCK_LEN:
                    self._fail(start, f"bad section header block length {blen}")
                    return
                body = self._read(blen - 12)
                if len(body) < blen - 12:
                    self._fail(start, "truncated section header block")
                    return
                if struct.unpack_from(e + "I", body, blen - 16)[0] != blen:
                    self._fail(start, "section header block trailing length mismatch")
                    return
                ifaces = []
                continue
            btype = struct.unpack(e + "I", head)[0]
            blen = struct.unpack(e + "I", lenb)[0]
            if blen < 12 or blen % 4:
                self._fail(start, f"bad block length {blen} (block type 0x{btype:08x})")
                return
            if btype not in (BT_IDB, BT_EPB, BT_SPB, BT_OPB):
                # Unknown / uninteresting block: skip it in bounded chunks, then check the trailer.
                remaining = blen - 12
                while remaining:
                    chunk = self._read(min(remaining, _SKIP_CHUNK))
                    if not chunk:
                        self._fail(start, f"truncated block (type 0x{btype:08x}, length {blen})")
                        return
                    remaining -= len(chunk)
                trailer = self._read(4)
                if len(trailer) < 4 or struct.unpack(e + "I", trailer)[0] != blen:
                    self._fail(start, f"block trailing length mismatch (type 0x{btype:08x})")
                    return
                continue
            if blen > MAX_BLOCK_LEN:
                self._fail(start, f"absurd block length {blen} (> {MAX_BLOCK_LEN})")
                return
            body = self._read(blen - 8)
            if len(body) < blen - 8:
                self._fail(start, f"truncated block (type 0x{btype:08x}, length {blen})")
                return
            if struct.unpack_from(e + "I", body, blen - 12)[0] != blen:
                self._fail(start, f"block trailing length mismatch (type 0x{btype:08x})")
                return
            end = blen - 12  # body[0:end] is the block content
            if btype == BT_IDB:
                if end < 8:
                    self._fail(start, "interface description block too short")
                    return
                if len(ifaces) >= MAX_INTERFACES:
                    self._fail(start, f"more than {MAX_INTERFACES} interfaces in a section")
                    return
                lt, _res, snaplen = struct.unpack_from(e + "HHI", body, 0)
                opts = _parse_options(body, 8, end, e)
                if opts is None:
                    self._fail(start, "interface description block options overrun")
                    return
                mul, div = _tsresol(opts[IF_TSRESOL][0] if opts.get(IF_TSRESOL) else 6)
                off_ns = 0
                raw_off = opts.get(IF_TSOFFSET)
                if raw_off is not None and len(raw_off) == 8:
                    off_ns = struct.unpack(e + "q", raw_off)[0] * NS
                ifaces.append(_Iface(lt, snaplen, _opt_str(opts.get(IF_NAME)), mul, div, off_ns))
                continue
            if btype in (BT_EPB, BT_OPB):
                if end < EPB_DATA:
                    self._fail(start, "packet block too short")
                    return
                if btype == BT_EPB:
                    ifid, ts_hi, ts_lo, caplen, wirelen = struct.unpack_from(e + "IIIII", body, 0)
                else:
                    ifid, _drops, ts_hi, ts_lo, caplen, wirelen = struct.unpack_from(e + "HHIIII", body, 0)
                if caplen > MAX_CAPLEN:
                    self._fail(start, f"absurd caplen {caplen} (> {MAX_CAPLEN})")
                    return
                if EPB_DATA + caplen > end:
                    self._fail(start, f"caplen {caplen} overruns its block (length {blen})")
                    return
                if ifid >= len(ifaces):
                    self._fail(start, f"packet on undeclared interface {ifid}")
                    return
                iface = ifaces[ifid]
                opts = _parse_options(body, EPB_DATA + ((caplen + 3) & ~3), end, e) or {}
                units = (ts_hi << 32) | ts_lo
                ts_ns = units * iface.mul // iface.div + iface.offset_ns
                data = bytes(body[EPB_DATA:EPB_DATA + caplen])
                self.packets += 1
                yield _make_record(ts_ns, ifid, iface.name, iface.linktype, data, wirelen,
                                   _opt_str(opts.get(OPT_COMMENT)))
                continue
            # Simple Packet Block: interface 0, no timestamp.
            if end < SPB_DATA:
                self._fail(start, "simple packet block too short")
                return
            if not ifaces:
                self._fail(start, "simple packet block before any interface description")
                return
            iface = ifaces[0]
            wirelen = struct.unpack_from(e + "I", body, 0)[0]
            caplen = min(wirelen, end - SPB_DATA)
            if iface.snaplen:
                caplen = min(caplen, iface.snaplen)
            self.packets += 1
            yield _make_record(0, 0, iface.name, iface.linktype, bytes(body[SPB_DATA:SPB_DATA + caplen]), wirelen, None)


def iter_capture(path: str | os.PathLike[str], *, strict: bool = False) -> Iterator[PcapRecord]:
    """Iterate the packets of a pcap/pcapng file (CaptureError if it is not one; see `CaptureReader`)."""
    with CaptureReader(path, strict=strict) as reader:
        yield from reader
