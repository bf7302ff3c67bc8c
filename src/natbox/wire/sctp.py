"""SCTP packets (RFC 9260): the common header, chunks, and the CRC32c that covers them (§6.8, appendix A)."""

from __future__ import annotations

from natbox.wire.checksum import crc32c
from natbox.wire.layout import SCTPH_CHECKSUM, SCTPH_LEN

__all__ = ["build_chunk", "build_init", "build_sctp", "sctp_checksum_ok"]

# chunk types (RFC 9260 §3.2)
DATA, INIT, INIT_ACK, SACK, HEARTBEAT, HEARTBEAT_ACK, ABORT, SHUTDOWN, SHUTDOWN_ACK = range(9)
ERROR, COOKIE_ECHO, COOKIE_ACK, SHUTDOWN_COMPLETE = 9, 10, 11, 14


def build_chunk(ctype: int, value: bytes | bytearray = b"", flags: int = 0) -> bytes:
    """One chunk: type, flags, length (header + value, before padding), the value padded to 4 bytes."""
    length = 4 + len(value)
    return bytes((ctype, flags)) + length.to_bytes(2, "big") + bytes(value) + b"\0" * (-length % 4)


def build_init(ctype: int, init_tag: int, *, tsn: int = 1, rwnd: int = 65536, streams: int = 10,
               params: bytes = b"") -> bytes:
    """An INIT or INIT_ACK chunk: initiate tag, a_rwnd, outbound/inbound streams, initial TSN, parameters."""
    body = (init_tag.to_bytes(4, "big") + rwnd.to_bytes(4, "big") + streams.to_bytes(2, "big")
            + streams.to_bytes(2, "big") + tsn.to_bytes(4, "big") + params)
    return build_chunk(ctype, body)


def build_sctp(sport: int, dport: int, vtag: int, chunks: bytes | bytearray) -> bytes:
    """An SCTP packet (common header + chunks) with its CRC32c."""
    seg = bytearray(sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + vtag.to_bytes(4, "big") + b"\0\0\0\0")
    seg += chunks
    seg[SCTPH_CHECKSUM:SCTPH_LEN] = crc32c(seg).to_bytes(4, "little")
    return bytes(seg)


def sctp_checksum_ok(seg: bytes | bytearray) -> bool:
    """Whether the CRC32c of an SCTP packet (from its common header on) verifies."""
    if len(seg) < SCTPH_LEN:
        return False
    zeroed = bytes(seg[:SCTPH_CHECKSUM]) + b"\0\0\0\0" + bytes(seg[SCTPH_LEN:])
    return crc32c(zeroed).to_bytes(4, "little") == bytes(seg[SCTPH_CHECKSUM:SCTPH_LEN])
