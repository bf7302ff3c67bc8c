"""The dissection state the tcpdump printers share: the packet cursor (`Packet`), the truncation
signals (tcpdump's nd_trunc_longjmp and early returns), the relative-sequence table, timestamps and
hex_and_ascii_print."""

from __future__ import annotations

from natbox.wire.ipv6 import format_addr6
from natbox.wire.layout import IP6H_DADDR, IP6H_NEXTHDR, IP6H_SADDR, IPH_DADDR, IPH_SADDR


class Truncated(Exception):
    """The capture ends inside a field (tcpdump's nd_trunc_longjmp)."""


class Packet:
    """Per-packet dissection state: buffer, snap end, output pieces and current protocol name."""

    __slots__ = ("b", "eflag", "end", "out", "proto", "seqs")

    def __init__(self, b: bytes, eflag: bool, seqs: SeqTable | None) -> None:
        self.b = b
        self.end = len(b)
        self.out: list[str] = []
        self.proto = ""
        self.eflag = eflag
        self.seqs = seqs

    def has(self, off: int, n: int) -> bool:
        return off >= 0 and off + n <= self.end

    def need(self, off: int, n: int) -> None:
        if off < 0 or off + n > self.end:
            raise Truncated

    def u8(self, off: int) -> int:
        if off < 0 or off >= self.end:
            raise Truncated
        return self.b[off]

    def u16(self, off: int) -> int:
        if off < 0 or off + 2 > self.end:
            raise Truncated
        return (self.b[off] << 8) | self.b[off + 1]

    def u32(self, off: int) -> int:
        if off < 0 or off + 4 > self.end:
            raise Truncated
        return int.from_bytes(self.b[off:off + 4], "big")

    def ip(self, off: int) -> str:
        self.need(off, 4)
        b = self.b
        return f"{b[off]}.{b[off + 1]}.{b[off + 2]}.{b[off + 3]}"

    def mac(self, off: int) -> str:
        self.need(off, 6)
        return self.b[off:off + 6].hex(":")

    def w(self, s: str) -> None:
        self.out.append(s)


def ip6_addr(p: Packet, off: int) -> str:
    """ip6addr_string of the 16 bytes at `off`."""
    p.need(off, 16)
    return format_addr6(int.from_bytes(p.b[off:off + 16], "big"))


def ip_pair(p: Packet, iph: int, proto: int) -> tuple[str, str] | None:
    """The source and destination of the IP header at `iph` as a transport printer shows them: IPv4 always;
    IPv6 only when its next header is `proto` itself (tcp_print/udp_print test `ip6_nxt`), else None."""
    if p.u8(iph) >> 4 == 6:
        if p.u8(iph + IP6H_NEXTHDR) != proto:
            return None
        return ip6_addr(p, iph + IP6H_SADDR), ip6_addr(p, iph + IP6H_DADDR)
    return p.ip(iph + IPH_SADDR), p.ip(iph + IPH_DADDR)


class SeqTable:
    """tcpdump's tcp_seq_hash4: conversation → (seq, ack) bases, bounded (insertion order eviction)."""

    __slots__ = ("d", "limit")

    def __init__(self, limit: int) -> None:
        self.d: dict[tuple[bytes, bytes, int], tuple[int, int]] = {}
        self.limit = limit

    def put(self, key: tuple[bytes, bytes, int], val: tuple[int, int]) -> None:
        d = self.d
        if key in d:
            d[key] = val
            return
        if len(d) >= self.limit:
            del d[next(iter(d))]
        d[key] = val


def format_timestamp(ts: float | None = None, *, ts_ns: int | None = None) -> str:
    """`HH:MM:SS.ffffff` in UTC of `ts_ns` (exact; sub-microseconds truncated, as libpcap's default
    microsecond precision does) or of the float `ts` (rounded to the nearest microsecond: a float of
    ~1.7e9 seconds only carries ~0.2 µs of precision)."""
    if ts_ns is not None:
        sec, usec = divmod(ts_ns // 1000, 1_000_000)
    else:
        usec_total = round((ts or 0.0) * 1e6)
        sec, usec = divmod(usec_total, 1_000_000)
    day = sec % 86400
    return f"{day // 3600:02d}:{day % 3600 // 60:02d}:{day % 60:02d}.{usec:06d}"



def hexdump(p: Packet, off: int, length: int) -> None:
    """hex_and_ascii_print(ndo, "\\n\\t", …): 16 bytes a line, then a truncation marker if cut."""
    avail = max(0, p.end - off)
    truncated = length > avail
    if truncated:
        length = avail
    b = p.b
    for base in range(0, length, 16):
        chunk = b[off + base:off + min(base + 16, length)]
        hexpart = "".join(
            f" {chunk[i]:02x}{chunk[i + 1]:02x}" if i + 1 < len(chunk) else f" {chunk[i]:02x}"
            for i in range(0, len(chunk), 2))
        asc = "".join(chr(c) if 0x21 <= c <= 0x7E else "." for c in chunk)
        p.w(f"\n\t0x{base:04x}: {hexpart:<40s}  {asc}")
    if truncated:
        raise Truncated



class Stop(Exception):
    """The printer returned early with its own text already written."""

