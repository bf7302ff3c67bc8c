"""Checked views of the Ethernet, IPv4, TCP, UDP and ICMP headers: length checked once, fields by name.

In the spirit of smoltcp's `Packet::new_checked`: `XxxView.new_checked(buf, off)` returns None when
`buf[off:]` is too short for the header's fixed part, and otherwise a view whose field properties read
through the offsets of `natbox.wire.layout` (the kernel's struct field names) without checking again.
A view holds the buffer and the header's start; it copies nothing and never raises on a checked view.

Parts whose length the header itself gives (IP options, TCP options, the payload) are *not* covered
by the fixed-part check: the caller compares `header_len` with the bytes it has, as the kernel does
after `skb_header_pointer()` of the fixed part (nf_log_syslog.c's `dump_ipv4_packet()`, for one).

These are for code where a readable field name is worth an attribute lookup (logging, diagnostics,
reject, defrag, difftest, adapters). The per-packet loops of engine/fastpath.py and conntrack index
the buffer directly with the `layout` names bound as locals.
"""

from __future__ import annotations

from typing import Final

from natbox.wire.layout import (
    ETH_DEST,
    ETH_HDR_LEN,
    ETH_PROTO,
    ETH_SOURCE,
    ICMPH_CHECKSUM,
    ICMPH_CODE,
    ICMPH_GATEWAY,
    ICMPH_ID,
    ICMPH_LEN,
    ICMPH_MTU,
    ICMPH_SEQUENCE,
    ICMPH_TYPE,
    IPH_CHECK,
    IPH_DADDR,
    IPH_FRAG_OFF,
    IPH_ID,
    IPH_MIN_LEN,
    IPH_PROTOCOL,
    IPH_SADDR,
    IPH_TOS,
    IPH_TOT_LEN,
    IPH_TTL,
    IPH_VER_IHL,
    TCPH_ACK_SEQ,
    TCPH_CHECK,
    TCPH_DEST,
    TCPH_DOFF,
    TCPH_FLAGS,
    TCPH_MIN_LEN,
    TCPH_SEQ,
    TCPH_SOURCE,
    TCPH_URG_PTR,
    TCPH_WINDOW,
    UDPH_CHECK,
    UDPH_DEST,
    UDPH_LEN,
    UDPH_LEN_BYTES,
    UDPH_SOURCE,
)

__all__ = ["EthernetView", "IcmpView", "Ipv4View", "TcpView", "UdpView"]

Buffer = bytes | bytearray | memoryview

# frag_off bits (include/net/ip.h)
_IP_OFFSET: Final = 0x1FFF


def _u16(b: Buffer, at: int) -> int:
    return (b[at] << 8) | b[at + 1]


def _u32(b: Buffer, at: int) -> int:
    return (b[at] << 24) | (b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3]


class EthernetView:
    """struct ethhdr at `buf[off:]`."""

    __slots__ = ("buf", "off")

    def __init__(self, buf: Buffer, off: int = 0) -> None:
        self.buf = buf
        self.off = off

    @classmethod
    def new_checked(cls, buf: Buffer, off: int = 0) -> EthernetView | None:
        """The view, or None when fewer than ETH_HLEN bytes follow `off`."""
        if off < 0 or len(buf) < off + ETH_HDR_LEN:
            return None
        return cls(buf, off)

    @property
    def dest(self) -> bytes:
        return bytes(self.buf[self.off + ETH_DEST:self.off + ETH_SOURCE])

    @property
    def source(self) -> bytes:
        return bytes(self.buf[self.off + ETH_SOURCE:self.off + ETH_PROTO])

    @property
    def proto(self) -> int:
        """h_proto: the ethertype (or an 802.3 length below 0x0600)."""
        return _u16(self.buf, self.off + ETH_PROTO)

    @property
    def payload_offset(self) -> int:
        """Where the network header starts in `buf`."""
        return self.off + ETH_HDR_LEN


class Ipv4View:
    """struct iphdr at `buf[off:]` (the fixed 20 bytes checked; options are `header_len` - 20 more)."""

    __slots__ = ("buf", "off")

    def __init__(self, buf: Buffer, off: int = 0) -> None:
        self.buf = buf
        self.off = off

    @classmethod
    def new_checked(cls, buf: Buffer, off: int = 0) -> Ipv4View | None:
        """The view, or None when fewer than 20 bytes follow `off` (no version or IHL check: callers
        that validate a received header use `ipv4.ip_rcv_core`)."""
        if off < 0 or len(buf) < off + IPH_MIN_LEN:
            return None
        return cls(buf, off)

    @property
    def version(self) -> int:
        return self.buf[self.off + IPH_VER_IHL] >> 4

    @property
    def header_len(self) -> int:
        """ihl * 4, in bytes."""
        return (self.buf[self.off + IPH_VER_IHL] & 0x0F) * 4

    @property
    def tos(self) -> int:
        return self.buf[self.off + IPH_TOS]

    @property
    def tot_len(self) -> int:
        return _u16(self.buf, self.off + IPH_TOT_LEN)

    @property
    def id(self) -> int:
        return _u16(self.buf, self.off + IPH_ID)

    @property
    def frag_off(self) -> int:
        """The whole 16-bit field: flags (IP_CE, IP_DF, IP_MF) and the offset in 8-byte units."""
        return _u16(self.buf, self.off + IPH_FRAG_OFF)

    @property
    def fragment_offset(self) -> int:
        """frag_off & IP_OFFSET, in 8-byte units (non-zero: not the first fragment)."""
        return _u16(self.buf, self.off + IPH_FRAG_OFF) & _IP_OFFSET

    @property
    def ttl(self) -> int:
        return self.buf[self.off + IPH_TTL]

    @property
    def protocol(self) -> int:
        return self.buf[self.off + IPH_PROTOCOL]

    @property
    def check(self) -> int:
        return _u16(self.buf, self.off + IPH_CHECK)

    @property
    def saddr(self) -> int:
        return _u32(self.buf, self.off + IPH_SADDR)

    @property
    def daddr(self) -> int:
        return _u32(self.buf, self.off + IPH_DADDR)

    @property
    def addrs(self) -> bytes:
        """saddr and daddr as the 8 bytes the pseudo-header starts with."""
        return bytes(self.buf[self.off + IPH_SADDR:self.off + IPH_DADDR + 4])

    @property
    def options(self) -> bytes:
        """The option bytes (may be short if the buffer ends inside them: compare with header_len)."""
        return bytes(self.buf[self.off + IPH_MIN_LEN:self.off + self.header_len])

    @property
    def payload_offset(self) -> int:
        """Where the transport header starts in `buf` (off + ihl * 4)."""
        return self.off + self.header_len


class TcpView:
    """struct tcphdr at `buf[off:]` (the fixed 20 bytes checked; options are `header_len` - 20 more)."""

    __slots__ = ("buf", "off")

    def __init__(self, buf: Buffer, off: int = 0) -> None:
        self.buf = buf
        self.off = off

    @classmethod
    def new_checked(cls, buf: Buffer, off: int = 0) -> TcpView | None:
        """The view, or None when fewer than 20 bytes follow `off`."""
        if off < 0 or len(buf) < off + TCPH_MIN_LEN:
            return None
        return cls(buf, off)

    @property
    def source(self) -> int:
        return _u16(self.buf, self.off + TCPH_SOURCE)

    @property
    def dest(self) -> int:
        return _u16(self.buf, self.off + TCPH_DEST)

    @property
    def seq(self) -> int:
        return _u32(self.buf, self.off + TCPH_SEQ)

    @property
    def ack_seq(self) -> int:
        return _u32(self.buf, self.off + TCPH_ACK_SEQ)

    @property
    def header_len(self) -> int:
        """doff * 4, in bytes."""
        return (self.buf[self.off + TCPH_DOFF] >> 4) * 4

    @property
    def flags(self) -> int:
        """The flag byte (CWR ECE URG ACK PSH RST SYN FIN, wire.tcp's constants)."""
        return self.buf[self.off + TCPH_FLAGS]

    @property
    def flag_word(self) -> int:
        """tcp_flag_word() & 0x0FFF: the reserved bits and AE (0x100) above the flag byte."""
        return _u16(self.buf, self.off + TCPH_DOFF) & 0x0FFF

    @property
    def window(self) -> int:
        return _u16(self.buf, self.off + TCPH_WINDOW)

    @property
    def check(self) -> int:
        return _u16(self.buf, self.off + TCPH_CHECK)

    @property
    def urg_ptr(self) -> int:
        return _u16(self.buf, self.off + TCPH_URG_PTR)

    @property
    def options(self) -> bytes:
        """The option bytes (may be short if the buffer ends inside them: compare with header_len)."""
        return bytes(self.buf[self.off + TCPH_MIN_LEN:self.off + self.header_len])

    @property
    def payload_offset(self) -> int:
        return self.off + self.header_len


class UdpView:
    """struct udphdr at `buf[off:]` (also UDP-Lite, whose `len` is the checksum coverage)."""

    __slots__ = ("buf", "off")

    def __init__(self, buf: Buffer, off: int = 0) -> None:
        self.buf = buf
        self.off = off

    @classmethod
    def new_checked(cls, buf: Buffer, off: int = 0) -> UdpView | None:
        """The view, or None when fewer than 8 bytes follow `off`."""
        if off < 0 or len(buf) < off + UDPH_LEN_BYTES:
            return None
        return cls(buf, off)

    @property
    def source(self) -> int:
        return _u16(self.buf, self.off + UDPH_SOURCE)

    @property
    def dest(self) -> int:
        return _u16(self.buf, self.off + UDPH_DEST)

    @property
    def len(self) -> int:
        return _u16(self.buf, self.off + UDPH_LEN)

    @property
    def check(self) -> int:
        return _u16(self.buf, self.off + UDPH_CHECK)

    @property
    def payload_offset(self) -> int:
        return self.off + UDPH_LEN_BYTES


class IcmpView:
    """struct icmphdr at `buf[off:]` (8 bytes: type, code, checksum and the 4-byte `un`)."""

    __slots__ = ("buf", "off")

    def __init__(self, buf: Buffer, off: int = 0) -> None:
        self.buf = buf
        self.off = off

    @classmethod
    def new_checked(cls, buf: Buffer, off: int = 0) -> IcmpView | None:
        """The view, or None when fewer than 8 bytes follow `off`."""
        if off < 0 or len(buf) < off + ICMPH_LEN:
            return None
        return cls(buf, off)

    @property
    def type(self) -> int:
        return self.buf[self.off + ICMPH_TYPE]

    @property
    def code(self) -> int:
        return self.buf[self.off + ICMPH_CODE]

    @property
    def checksum(self) -> int:
        return _u16(self.buf, self.off + ICMPH_CHECKSUM)

    @property
    def id(self) -> int:
        """un.echo.id (echo, timestamp, information, address mask)."""
        return _u16(self.buf, self.off + ICMPH_ID)

    @property
    def sequence(self) -> int:
        """un.echo.sequence."""
        return _u16(self.buf, self.off + ICMPH_SEQUENCE)

    @property
    def gateway(self) -> int:
        """un.gateway (redirect); for parameter problem its first byte is the pointer."""
        return _u32(self.buf, self.off + ICMPH_GATEWAY)

    @property
    def mtu(self) -> int:
        """un.frag.mtu (fragmentation needed)."""
        return _u16(self.buf, self.off + ICMPH_MTU)

    @property
    def rest(self) -> bytes:
        """The 4 bytes of `un` as they are."""
        return bytes(self.buf[self.off + ICMPH_ID:self.off + ICMPH_LEN])

    @property
    def payload_offset(self) -> int:
        """Where the body starts (for an error: the quoted IP header)."""
        return self.off + ICMPH_LEN
