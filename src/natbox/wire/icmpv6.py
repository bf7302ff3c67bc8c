"""ICMPv6 (RFC 4443) and Neighbour Discovery (RFC 4861) messages: constants, the checksum with the IPv6
pseudo-header, and the builders the host needs (errors, echo replies, NS/NA).

`build_icmpv6_error` mirrors the body `icmp6_send()` (net/ipv6/icmp.c, ipv6-semantics.md §4.1) puts in an
error: the offending packet from its IPv6 header, cut so the whole error datagram fits in 1280 bytes
(`IPV6_MIN_MTU`, 1232 bytes of quote). `icmpv6_is_ineligible` is `is_ineligible()`: no error about an
ICMPv6 error or about a packet whose extension-header chain is truncated.
"""

from __future__ import annotations

from typing import Final

from natbox.wire.checksum import csum_fold, csum_partial
from natbox.wire.ipv6 import IPV6_MIN_MTU, NEXTHDR_ICMP, build_ipv6, ipv6_skip_exthdr, pseudo6_sum
from natbox.wire.layout import (
    ICMP6H_CKSUM,
    ICMP6H_CODE,
    ICMP6H_LEN,
    ICMP6H_TYPE,
    IP6H_LEN,
    IP6H_NEXTHDR,
    ND_OPT_DATA,
)

__all__ = [
    "ICMPV6_DEST_UNREACH",
    "ICMPV6_ECHO_REPLY",
    "ICMPV6_ECHO_REQUEST",
    "ICMPV6_PARAMPROB",
    "ICMPV6_PKT_TOOBIG",
    "ICMPV6_TIME_EXCEED",
    "NDISC_NEIGHBOUR_ADVERTISEMENT",
    "NDISC_NEIGHBOUR_SOLICITATION",
    "NDISC_REDIRECT",
    "build_icmpv6",
    "build_icmpv6_echo",
    "build_icmpv6_error",
    "build_na",
    "build_ns",
    "build_redirect",
    "icmpv6_checksum",
    "icmpv6_is_ineligible",
    "set_icmpv6_checksum",
]

# uapi linux/icmpv6.h
ICMPV6_DEST_UNREACH: Final = 1
ICMPV6_PKT_TOOBIG: Final = 2
ICMPV6_TIME_EXCEED: Final = 3
ICMPV6_PARAMPROB: Final = 4
ICMPV6_ECHO_REQUEST: Final = 128
ICMPV6_ECHO_REPLY: Final = 129
ICMPV6_MGM_QUERY: Final = 130
ICMPV6_MGM_REPORT: Final = 131
ICMPV6_MGM_REDUCTION: Final = 132
ICMPV6_NI_QUERY: Final = 139
ICMPV6_NI_REPLY: Final = 140
ICMPV6_MLD2_REPORT: Final = 143
ICMPV6_MRDISC_ADV: Final = 151
ICMPV6_MRDISC_SOL: Final = 152
# include/net/ndisc.h
NDISC_ROUTER_SOLICITATION: Final = 133
NDISC_ROUTER_ADVERTISEMENT: Final = 134
NDISC_NEIGHBOUR_SOLICITATION: Final = 135
NDISC_NEIGHBOUR_ADVERTISEMENT: Final = 136
NDISC_REDIRECT: Final = 137
ND_OPT_SOURCE_LL_ADDR: Final = 1
ND_OPT_TARGET_LL_ADDR: Final = 2
ND_OPT_REDIRECT_HDR = 4
NDISC_HOP_LIMIT: Final = 255  # every ND message (RFC 4861 §7.1.1)

# codes: destination unreachable
ICMPV6_NOROUTE: Final = 0
ICMPV6_ADM_PROHIBITED: Final = 1
ICMPV6_NOT_NEIGHBOUR: Final = 2  # beyond scope of source address
ICMPV6_ADDR_UNREACH: Final = 3
ICMPV6_PORT_UNREACH: Final = 4
ICMPV6_POLICY_FAIL: Final = 5
ICMPV6_REJECT_ROUTE: Final = 6
# time exceeded
ICMPV6_EXC_HOPLIMIT: Final = 0
ICMPV6_EXC_FRAGTIME: Final = 1
# parameter problem
ICMPV6_HDR_FIELD: Final = 0
ICMPV6_UNK_NEXTHDR: Final = 1
ICMPV6_UNK_OPTION: Final = 2

# NA flags (first byte of the 32-bit field after the checksum)
NA_ROUTER: Final = 0x80
NA_SOLICITED: Final = 0x40
NA_OVERRIDE: Final = 0x20


def icmpv6_is_error(icmp_type: int) -> bool:
    """`icmpv6_is_err`: types below 128."""
    return icmp_type < 128


def icmpv6_checksum(saddr: int, daddr: int, msg: bytes | bytearray | memoryview) -> int:
    """The ICMPv6 checksum of `msg` (checksum field zeroed) with the pseudo-header (RFC 4443 §2.3)."""
    return csum_fold(csum_partial(msg, pseudo6_sum(saddr, daddr, NEXTHDR_ICMP, len(msg))))


def set_icmpv6_checksum(saddr: int, daddr: int, msg: bytearray, off: int = 0) -> None:
    """Recompute in place the checksum of the ICMPv6 message starting at `msg[off]` (to its end)."""
    msg[off + ICMP6H_CKSUM] = msg[off + ICMP6H_CKSUM + 1] = 0
    check = icmpv6_checksum(saddr, daddr, memoryview(msg)[off:])
    msg[off + ICMP6H_CKSUM] = check >> 8
    msg[off + ICMP6H_CKSUM + 1] = check & 0xFF


def build_icmpv6(saddr: int, daddr: int, icmp_type: int, code: int, rest: bytes, body: bytes = b"") -> bytes:
    """An ICMPv6 message: type, code, checksum (computed), the 4-byte `rest` and `body`."""
    msg = bytearray(ICMP6H_LEN) + body
    msg[ICMP6H_TYPE] = icmp_type
    msg[ICMP6H_CODE] = code
    msg[ICMP6H_LEN - 4:ICMP6H_LEN] = rest
    set_icmpv6_checksum(saddr, daddr, msg)
    return bytes(msg)


def icmpv6_is_ineligible(data: bytes | bytearray) -> bool:
    """Mirrors `is_ineligible()` (net/ipv6/icmp.c): True for an ICMPv6 error (type < 128) or an ICMPv6 packet
    whose type cannot be read (but a fragment without the ICMPv6 header is eligible); a chain the walk cannot
    follow is eligible too."""
    if len(data) < IP6H_LEN:
        return True
    off, nexthdr, frag_off = ipv6_skip_exthdr(data, IP6H_LEN, data[IP6H_NEXTHDR])
    if off < 0:
        return False  # the kernel: `len < 0` → not ineligible (errors may still be sent)
    if nexthdr == NEXTHDR_ICMP:
        if off + 1 > len(data):
            return frag_off == 0  # RFC 8200 §4.5: a fragment without the ICMPv6 type is eligible
        return icmpv6_is_error(data[off + ICMP6H_TYPE])
    return False


def build_icmpv6_error(saddr: int, daddr: int, icmp_type: int, code: int, offending: bytes | bytearray,
                       info: int = 0, hop_limit: int = 64) -> bytes:
    """The error datagram `icmp6_send` builds: quote of the offending packet cut so the datagram is at most
    1280 bytes, `info` (MTU, pointer) in the 4 bytes after the checksum."""
    room = IPV6_MIN_MTU - IP6H_LEN - ICMP6H_LEN
    msg = build_icmpv6(saddr, daddr, icmp_type, code, (info & 0xFFFFFFFF).to_bytes(4, "big"),
                       bytes(offending[:room]))
    return bytes(build_ipv6(saddr, daddr, NEXTHDR_ICMP, msg, hop_limit=hop_limit))


def build_icmpv6_echo(saddr: int, daddr: int, ident: int, seq: int, payload: bytes, *, reply: bool,
                      hop_limit: int = 64) -> bytes:
    """An echo request (128) or reply (129) datagram."""
    rest = ident.to_bytes(2, "big") + seq.to_bytes(2, "big")
    msg = build_icmpv6(saddr, daddr, ICMPV6_ECHO_REPLY if reply else ICMPV6_ECHO_REQUEST, 0, rest, payload)
    return bytes(build_ipv6(saddr, daddr, NEXTHDR_ICMP, msg, hop_limit=hop_limit))


def _lladdr_opt(kind: int, mac: bytes) -> bytes:
    return bytes([kind, 1]) + mac  # 8 bytes: type, length 1 (×8), 6-byte MAC


def build_ns(saddr: int, daddr: int, target: int, src_mac: bytes | None) -> bytes:
    """`ndisc_send_ns`: a Neighbour Solicitation datagram for `target` (with the Source Link-Layer option
    unless the source is ::), hop limit 255."""
    body = target.to_bytes(16, "big")
    if src_mac is not None and saddr:
        body += _lladdr_opt(ND_OPT_SOURCE_LL_ADDR, src_mac)
    msg = build_icmpv6(saddr, daddr, NDISC_NEIGHBOUR_SOLICITATION, 0, bytes(4), body)
    return bytes(build_ipv6(saddr, daddr, NEXTHDR_ICMP, msg, hop_limit=NDISC_HOP_LIMIT))


def build_na(saddr: int, daddr: int, target: int, flags: int, tgt_mac: bytes | None) -> bytes:
    """`ndisc_send_na`: a Neighbour Advertisement datagram (R/S/O `flags`, Target Link-Layer option when
    `tgt_mac`), hop limit 255."""
    body = target.to_bytes(16, "big")
    if tgt_mac is not None:
        body += _lladdr_opt(ND_OPT_TARGET_LL_ADDR, tgt_mac)
    msg = build_icmpv6(saddr, daddr, NDISC_NEIGHBOUR_ADVERTISEMENT, 0, bytes([flags, 0, 0, 0]), body)
    return bytes(build_ipv6(saddr, daddr, NEXTHDR_ICMP, msg, hop_limit=NDISC_HOP_LIMIT))


ND_OPT_REDIRECT_HDR = 4
RD_MSG_LEN: Final = 40  # sizeof(struct rd_msg): the ICMPv6 header, target, destination


def build_redirect(saddr: int, daddr: int, target: int, dest: int, tgt_mac: bytes | None,
                   offending: bytes | bytearray) -> bytes:
    """`ndisc_send_redirect`'s message: type 137 with `target` and `dest`, the Target Link-Layer option when
    the target's neighbour entry is valid, then the Redirected Header option (type 4) quoting the offending
    packet, `rd_len = min(1280 - 40 - 40, len + 8) & ~7` bytes with its 8-byte option header; hop limit 255."""
    body = target.to_bytes(16, "big") + dest.to_bytes(16, "big")
    if tgt_mac is not None:
        body += _lladdr_opt(ND_OPT_TARGET_LL_ADDR, tgt_mac)
    rd_len = min(IPV6_MIN_MTU - IP6H_LEN - RD_MSG_LEN, len(offending) + 8) & ~7
    if rd_len:
        body += bytes([ND_OPT_REDIRECT_HDR, rd_len >> 3]) + bytes(6) + bytes(offending[:rd_len - 8])
    msg = build_icmpv6(saddr, daddr, NDISC_REDIRECT, 0, bytes(4), body)
    return bytes(build_ipv6(saddr, daddr, NEXTHDR_ICMP, msg, hop_limit=NDISC_HOP_LIMIT))


def nd_option(opts: bytes | bytearray, kind: int) -> bytes | None:
    """The data of the first ND option of type `kind` in `opts` (None if absent or the options are
    malformed: a zero length ends the walk as `ndisc_parse_options` refuses it)."""
    off = 0
    n = len(opts)
    while off + 2 <= n:
        olen = opts[off + 1] * 8
        if olen == 0 or off + olen > n:
            return None
        if opts[off] == kind:
            return bytes(opts[off + ND_OPT_DATA:off + olen])
        off += olen
    return None
