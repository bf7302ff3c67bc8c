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
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from types import TracebackType
from typing import IO, NamedTuple

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

# --- bounds --------------------------------------------------------------------------------------------
# Largest caplen accepted in a record: libpcap's MAXIMUM_SNAPLEN (262144 = 256 KiB). A larger caplen is
# treated as file corruption ("absurd caplen") and ends iteration, as libpcap does.
MAX_CAPLEN = 262144
# Largest pcapng block we read into memory (EPB/SPB/OPB/IDB/SHB): the packet plus 64 KiB of options.
# Blocks we skip (unknown types) may be any size up to 2**32 - 4: they are skipped in chunks.
MAX_BLOCK_LEN = MAX_CAPLEN + 65536
# Interfaces per pcapng section (IDBs beyond this end iteration as malformed).
MAX_INTERFACES = 65536
# Chunk size used when skipping an unknown block.
_SKIP_CHUNK = 65536

# --- link types ----------------------------------------------------------------------------------------
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_PPP = 9
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
_VLAN_TPIDS = frozenset({0x8100, 0x88A8, 0x9100})
# Link types whose payload is a bare IP datagram; the value is the single IP version it may carry
# (None: decide by the version nibble). DLT 12 and 14 are the historical raw-IP DLTs (OpenBSD/BSD/OS).
_RAW_LINKTYPES: dict[int, int | None] = {LINKTYPE_RAW: None, 12: None, 14: None, LINKTYPE_IPV4: 4,
                                         LINKTYPE_IPV6: 6}
# BSD loopback address families meaning IPv4 / IPv6 (AF_INET is 2 everywhere; AF_INET6 varies by OS).
_AF_INET = 2
_AF_INET6 = frozenset({10, 24, 28, 30})

# --- file format constants -----------------------------------------------------------------------------
_PCAP_MAGIC_US = 0xA1B2C3D4
_PCAP_MAGIC_NS = 0xA1B23C4D
_PCAPNG_SHB = 0x0A0D0D0A
_PCAPNG_BOM = 0x1A2B3C4D
_BT_IDB = 0x00000001
_BT_OPB = 0x00000002
_BT_SPB = 0x00000003
_BT_EPB = 0x00000006
_OPT_ENDOFOPT = 0
_OPT_COMMENT = 1
_IF_NAME = 2
_IF_TSRESOL = 9
_IF_TSOFFSET = 14
_LT_LINKTYPE_MASK = 0x03FFFFFF  # libpcap LT_LINKTYPE(): the rest of the field is FCS information

_NS = 1_000_000_000


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


def _normalise(linktype: int, data: bytes) -> tuple[bytes | None, int | None, bytes | None, bytes | None,
                                                      str | None]:
    """(ipv4, ethertype, src_mac, dst_mac, foreign) for one packet; never raises."""
    n = len(data)
    if linktype == LINKTYPE_ETHERNET:
        if n < 14:
            return None, None, None, None, None
        dst, src = data[0:6], data[6:12]
        off = 12
        etype = (data[12] << 8) | data[13]
        for _ in range(2):
            if etype in _VLAN_TPIDS and off + 6 <= n:
                off += 4
                etype = (data[off] << 8) | data[off + 1]
        off += 2
        return (data[off:] if etype == ETH_P_IP else None), etype, src, dst, None
    if linktype in _RAW_LINKTYPES:
        want = _RAW_LINKTYPES[linktype]
        ver = data[0] >> 4 if n else want
        if want == 4 or (want is None and ver == 4):
            return data, ETH_P_IP, None, None, None
        if want == 6 or ver == 6:
            return None, ETH_P_IPV6, None, None, None
        return None, None, None, None, None
    if linktype == LINKTYPE_LINUX_SLL:
        if n < 16:
            return None, None, None, None, None
        alen = (data[4] << 8) | data[5]
        sll_src = data[6:12] if alen == 6 else None
        etype = (data[14] << 8) | data[15]
        return (data[16:] if etype == ETH_P_IP else None), etype, sll_src, None, None
    if linktype == LINKTYPE_LINUX_SLL2:
        if n < 20:
            return None, None, None, None, None
        etype = (data[0] << 8) | data[1]
        sll2_src = data[12:18] if data[11] == 6 else None
        return (data[20:] if etype == ETH_P_IP else None), etype, sll2_src, None, None
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if n < 4:
            return None, None, None, None, None
        if linktype == LINKTYPE_LOOP:
            af = int.from_bytes(data[0:4], "big")
        else:
            # Host byte order of the writer: the family is small, so whichever order gives a small value.
            af = int.from_bytes(data[0:4], "little")
            if af > 0xFFFF:
                af = int.from_bytes(data[0:4], "big")
        if af == _AF_INET:
            return data[4:], ETH_P_IP, None, None, None
        if af in _AF_INET6:
            return None, ETH_P_IPV6, None, None, None
        return None, None, None, None, None
    return None, None, None, None, f"foreign link type {linktype}"


def _make_record(ts_ns: int, ifindex: int, ifname: str | None, linktype: int, data: bytes,
                 wirelen: int, comment: str | None) -> PcapRecord:
    ip, etype, src, dst, foreign = _normalise(linktype, data)
    sec, frac = divmod(ts_ns, _NS)
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
        return _NS, 1 << exp
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
        if code == _OPT_ENDOFOPT:
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
        if magic_be == _PCAPNG_SHB:
            self.format = "pcapng"
            self._head = head
        elif _PCAP_MAGIC_US in (magic_be, magic_le) or _PCAP_MAGIC_NS in (magic_be, magic_le):
            self.format = "pcap"
            self._e = ">" if magic_be in (_PCAP_MAGIC_US, _PCAP_MAGIC_NS) else "<"
            magic = magic_be if self._e == ">" else magic_le
            self.nanosecond = magic == _PCAP_MAGIC_NS
            rest = self._read(20)
            if len(rest) < 20:
                self.close()
                raise CaptureError(f"{self.name}: truncated pcap file header ({4 + len(rest)} of 24 bytes)")
            _vmaj, _vmin, _zone, _sigfigs, snaplen, lt = struct.unpack(self._e + "HHiIII", rest)
            self.snaplen = snaplen
            self.linktype = lt & _LT_LINKTYPE_MASK
        else:
            self.close()
            raise CaptureError(f"{self.name}: not a pcap or pcapng file (starts with 0x{magic_be:08x})")

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
            yield _make_record(sec * _NS + frac * frac_mul, 0, None, lt, data, wirelen, None)

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
            if int.from_bytes(head, "big") == _PCAPNG_SHB:
                bom = self._read(4)
                if len(bom) < 4:
                    self._fail(start, "truncated section header block")
                    return
                if int.from_bytes(bom, "big") == _PCAPNG_BOM:
                    e = ">"
                elif int.from_bytes(bom, "little") == _PCAPNG_BOM:
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
            if btype not in (_BT_IDB, _BT_EPB, _BT_SPB, _BT_OPB):
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
            if btype == _BT_IDB:
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
                mul, div = _tsresol(opts[_IF_TSRESOL][0] if opts.get(_IF_TSRESOL) else 6)
                off_ns = 0
                raw_off = opts.get(_IF_TSOFFSET)
                if raw_off is not None and len(raw_off) == 8:
                    off_ns = struct.unpack(e + "q", raw_off)[0] * _NS
                ifaces.append(_Iface(lt, snaplen, _opt_str(opts.get(_IF_NAME)), mul, div, off_ns))
                continue
            if btype in (_BT_EPB, _BT_OPB):
                if end < 20:
                    self._fail(start, "packet block too short")
                    return
                if btype == _BT_EPB:
                    ifid, ts_hi, ts_lo, caplen, wirelen = struct.unpack_from(e + "IIIII", body, 0)
                else:
                    ifid, _drops, ts_hi, ts_lo, caplen, wirelen = struct.unpack_from(e + "HHIIII", body, 0)
                if caplen > MAX_CAPLEN:
                    self._fail(start, f"absurd caplen {caplen} (> {MAX_CAPLEN})")
                    return
                if 20 + caplen > end:
                    self._fail(start, f"caplen {caplen} overruns its block (length {blen})")
                    return
                if ifid >= len(ifaces):
                    self._fail(start, f"packet on undeclared interface {ifid}")
                    return
                iface = ifaces[ifid]
                opts = _parse_options(body, 20 + ((caplen + 3) & ~3), end, e) or {}
                units = (ts_hi << 32) | ts_lo
                ts_ns = units * iface.mul // iface.div + iface.offset_ns
                data = bytes(body[20:20 + caplen])
                self.packets += 1
                yield _make_record(ts_ns, ifid, iface.name, iface.linktype, data, wirelen,
                                   _opt_str(opts.get(_OPT_COMMENT)))
                continue
            # Simple Packet Block: interface 0, no timestamp.
            if end < 4:
                self._fail(start, "simple packet block too short")
                return
            if not ifaces:
                self._fail(start, "simple packet block before any interface description")
                return
            iface = ifaces[0]
            wirelen = struct.unpack_from(e + "I", body, 0)[0]
            caplen = min(wirelen, end - 4)
            if iface.snaplen:
                caplen = min(caplen, iface.snaplen)
            self.packets += 1
            yield _make_record(0, 0, iface.name, iface.linktype, bytes(body[4:4 + caplen]), wirelen, None)


def iter_capture(path: str | os.PathLike[str], *, strict: bool = False) -> Iterator[PcapRecord]:
    """Iterate the packets of a pcap/pcapng file (CaptureError if it is not one; see `CaptureReader`)."""
    with CaptureReader(path, strict=strict) as reader:
        yield from reader


# --- writers ---------------------------------------------------------------------------------------------

def _ts_to_ns(ts: float | None, ts_ns: int | None) -> int:
    if ts_ns is not None:
        return ts_ns
    if ts is None:
        return 0
    sec = int(ts // 1)
    return sec * _NS + round((ts - sec) * 1e9)


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
        magic = _PCAP_MAGIC_NS if nanosecond else _PCAP_MAGIC_US
        self._f.write(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))
        self._rec = struct.Struct("<IIII")

    def __enter__(self) -> PcapWriter:
        return self

    def write(self, data: bytes | bytearray | memoryview, *, ts: float | None = None, ts_ns: int | None = None,
              wirelen: int | None = None) -> None:
        """Append one packet; `data` beyond snaplen is cut (wirelen keeps the full length)."""
        n = _ts_to_ns(ts, ts_ns)
        sec, frac = divmod(n, _NS)
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
        body = struct.pack("<IHHq", _PCAPNG_BOM, 1, 0, -1)
        self._block(_PCAPNG_SHB, body)

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
            opts += self._opt(_IF_NAME, name.encode("utf-8"))
        opts += self._opt(_IF_TSRESOL, bytes([9 if self.nanosecond else 6]))
        opts += struct.pack("<HH", _OPT_ENDOFOPT, 0)
        self._block(_BT_IDB, struct.pack("<HHI", linktype, 0, self.snaplen) + opts)
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
            body += self._opt(_OPT_COMMENT, comment.encode("utf-8")) + struct.pack("<HH", _OPT_ENDOFOPT, 0)
        self._block(_BT_EPB, body)
        self.packets += 1
