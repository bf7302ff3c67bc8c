"""IPv4 options (net/ipv4/ip_options.c): validation of a received header's options and the option
rewrite before fragmentation.

| natbox | kernel |
|---|---|
| `ip_options_compile` | `__ip_options_compile()` (validation; no option rewriting) |
| `ip_options_fragment` | `ip_options_fragment()` |

Malformed options make `__ip_options_compile` fail: the packet is dropped (IPSTATS_MIB_INHDRERRORS)
and `ip_options_compile` sends ICMP PARAMETERPROB with `info = htonl(pointer << 24)`, the pointer
being the offset of the bad octet from the start of the IP header. `ipv4.ip_rcv_options` (ip_input.c)
runs the validation after the input route and applies the source-route policy.

Total on any bytes: a malformed option gives a pointer, never an exception.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from natbox.wire.layout import IPH_MIN_LEN, IPH_VER_IHL

__all__ = [
    "IPOPT_CIPSO",
    "IPOPT_COPY",
    "IPOPT_END",
    "IPOPT_LSRR",
    "IPOPT_NOOP",
    "IPOPT_RA",
    "IPOPT_RR",
    "IPOPT_SEC",
    "IPOPT_SID",
    "IPOPT_SSRR",
    "IPOPT_TIMESTAMP",
    "IPOPT_TS_PRESPEC",
    "IPOPT_TS_TSANDADDR",
    "IPOPT_TS_TSONLY",
    "IpOptions",
    "ip_options_compile",
    "ip_options_fragment",
]

# uapi linux/ip.h option types; IPOPT_COPIED(o) = o & 0x80
IPOPT_END: Final = 0
IPOPT_NOOP: Final = 1
IPOPT_SEC: Final = 130
IPOPT_LSRR: Final = 131
IPOPT_TIMESTAMP: Final = 68
IPOPT_CIPSO: Final = 134
IPOPT_RR: Final = 7
IPOPT_SID: Final = 136
IPOPT_SSRR: Final = 137
IPOPT_RA: Final = 148
IPOPT_TS_TSONLY: Final = 0
IPOPT_TS_TSANDADDR: Final = 1
IPOPT_TS_PRESPEC: Final = 3
IPOPT_COPY: Final = 0x80

_IPHDR_LEN: Final = IPH_MIN_LEN


class IpOptions(NamedTuple):
    """What `__ip_options_compile` records in `struct ip_options` (offsets from the IP header start, 0 = absent)."""

    optlen: int
    srr: int
    is_strictroute: bool
    rr: int
    ts: int
    router_alert: int
    cipso: int


def ip_options_compile(data: bytes | bytearray | memoryview) -> tuple[IpOptions | None, int]:
    """Validate the options of a received datagram; mirrors `__ip_options_compile()` (skb != NULL).

    Returns `(options, 0)` or `(None, pointer)` where `pointer` is the offset of the offending
    octet from the start of the IP header, which the kernel sends in ICMP PARAMETERPROB
    (`info = htonl(pointer << 24)`). Checks: option length < 2 or past the header; LSRR/SSRR
    length < 3, pointer < 4, or a second source route; RR length < 3, pointer < 4, a second RR, or a
    pointer with no room for an address; TIMESTAMP length < 4, pointer < 5, a second TS, no room, a
    timestamp-and-address or prespecified entry without 8 bytes of room, or overflow counter at 15
    when full; RA length < 4; CIPSO twice. A CIPSO option is validated as `cipso_v4_validate` does
    with CONFIG_NETLABEL=y and no DOI configured: length < 8 fails at +1, anything else at +2 (the
    DOI lookup fails). What the kernel *writes* into RR/TS options (the receiving address,
    timestamps) is not reproduced; the datagram is only read.
    """
    ihl = (data[IPH_VER_IHL] & 0x0F) * 4
    if ihl > len(data):
        return None, 0
    srr = rr = ts = ra = cipso = 0
    strict = False
    pos = _IPHDR_LEN
    left = ihl - _IPHDR_LEN
    while left > 0:
        kind = data[pos]
        if kind == IPOPT_END:
            break
        if kind == IPOPT_NOOP:
            left -= 1
            pos += 1
            continue
        if left < 2:
            return None, pos
        optlen = data[pos + 1]
        if optlen < 2 or optlen > left:
            return None, pos
        ptr = data[pos + 2] if optlen >= 3 else 0
        if kind in (IPOPT_SSRR, IPOPT_LSRR):
            if optlen < 3:
                return None, pos + 1
            if ptr < 4:
                return None, pos + 2
            if srr:
                return None, pos
            strict = kind == IPOPT_SSRR
            srr = pos
        elif kind == IPOPT_RR:
            if rr:
                return None, pos
            if optlen < 3:
                return None, pos + 1
            if ptr < 4:
                return None, pos + 2
            if ptr <= optlen and ptr + 3 > optlen:
                return None, pos + 2
            rr = pos
        elif kind == IPOPT_TIMESTAMP:
            if ts:
                return None, pos
            if optlen < 4:
                return None, pos + 1
            if ptr < 5:
                return None, pos + 2
            flags = data[pos + 3]
            if ptr <= optlen:
                if ptr + 3 > optlen:
                    return None, pos + 2
                if flags & 0x0F in (IPOPT_TS_TSANDADDR, IPOPT_TS_PRESPEC) and ptr + 7 > optlen:
                    return None, pos + 2
            elif flags & 0x0F != IPOPT_TS_PRESPEC and flags >> 4 == 15:
                return None, pos + 3
            ts = pos
        elif kind == IPOPT_RA:
            if optlen < 4:
                return None, pos + 1
            if data[pos + 2] == 0 and data[pos + 3] == 0:
                ra = pos
        elif kind == IPOPT_CIPSO:
            # cipso_v4_validate (CONFIG_NETLABEL=y, no DOI configured): always fails
            return None, pos + (1 if optlen < 8 else 2)
        # IPOPT_SEC, IPOPT_SID and unknown options are accepted on received packets
        left -= optlen
        pos += optlen
    return IpOptions(ihl - _IPHDR_LEN, srr, strict, rr, ts, ra, cipso), 0


def ip_options_fragment(header: bytearray) -> None:
    """Overwrite options whose copy flag is clear with NOOPs, in place; mirrors `ip_options_fragment()`.

    `header` is a full IP header (options included); it stops at END or at a malformed length, as
    the kernel does.
    """
    pos = _IPHDR_LEN
    left = (header[IPH_VER_IHL] & 0x0F) * 4 - _IPHDR_LEN
    while left > 0:
        kind = header[pos]
        if kind == IPOPT_END:
            return
        if kind == IPOPT_NOOP:
            left -= 1
            pos += 1
            continue
        if left < 2:
            return
        optlen = header[pos + 1]
        if optlen < 2 or optlen > left:
            return
        if not kind & IPOPT_COPY:
            header[pos : pos + optlen] = bytes((IPOPT_NOOP,)) * optlen
        left -= optlen
        pos += optlen
