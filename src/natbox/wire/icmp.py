"""ICMP messages (RFC 792): builders, name tables, and the rules of `icmp_send()` for error messages.

`build_icmp_error` and `icmp_error_allowed` mirror `__icmp_send()` in net/ipv4/icmp.c (Linux 6.x):

- no error about a packet received as link-layer broadcast/multicast (`skb_in->pkt_type != PACKET_HOST`);
- no error when the route of the offending packet is broadcast or multicast
  (`rt->rt_flags & (RTCF_BROADCAST | RTCF_MULTICAST)`);
- only about fragment 0 (`iph->frag_off & htons(IP_OFFSET)`);
- never an error about an ICMP error: if the offending datagram is ICMP, its type must be readable
  and must be a known non-error type (`*itp > NR_ICMP_TYPES || icmp_pointers[*itp].error`, so an
  unknown type > 18 counts as an error);
- the payload is the offending datagram from its IP header on, cut so the whole reply datagram fits
  in `min(dst_mtu, 576)` bytes: `room = min(mtu, 576) - sizeof(iphdr) - optlen - sizeof(icmphdr)`;
  nothing is sent if `room <= sizeof(iphdr)`;
- the 4-byte rest of header is `info` in network order (`icmph.un.gateway = info`): the next-hop
  MTU for FRAG_NEEDED sits in the low 16 bits, the PARAMETERPROB pointer in the top 8;
- the reply's TOS is `RT_TOS(tos) | IPTOS_PREC_INTERNETCONTROL` for errors (`icmp_error_tos`).

There is no test of the offending datagram's *source*. RFC 1122 3.2.2 forbids errors about a source that
is not one host, but `__icmp_send` leaves that to routing: `ip_route_input_slow` drops a 224/4,
255.255.255.255 or 0.0.0.0 source, and a 127/8 one on any device but lo without route_localnet, as
martians before anything could answer them (engine/route_input.py). A 127/8 source that is let in (host
traffic over lo, route_localnet) and a 240/4 one get their errors. [V] Linux 6.18: a UDP datagram
127.0.0.1 -> 127.0.0.2:closed port gets a port unreachable back on lo (the socket sees ECONNREFUSED), as
does one from 127.0.0.5 in on a device with route_localnet; one from 240.0.0.1 gets it by the default
route. Rate limits (`icmp_ratelimit`, `icmp_msgs_per_sec`) are the caller's.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from natbox.wire.checksum import internet_checksum

__all__ = [
    "ICMP_ADDRESS",
    "ICMP_ADDRESSREPLY",
    "ICMP_CODE_NAMES",
    "ICMP_DEST_UNREACH",
    "ICMP_ECHO",
    "ICMP_ECHOREPLY",
    "ICMP_EXC_FRAGTIME",
    "ICMP_EXC_TTL",
    "ICMP_FRAG_NEEDED",
    "ICMP_HOST_UNREACH",
    "ICMP_INFO_REPLY",
    "ICMP_INFO_REQUEST",
    "ICMP_NET_UNREACH",
    "ICMP_PARAMETERPROB",
    "ICMP_PORT_UNREACH",
    "ICMP_PROT_UNREACH",
    "ICMP_REDIRECT",
    "ICMP_REDIR_HOST",
    "ICMP_REDIR_HOSTTOS",
    "ICMP_REDIR_NET",
    "ICMP_REDIR_NETTOS",
    "ICMP_SOURCE_QUENCH",
    "ICMP_TIMESTAMP",
    "ICMP_TIMESTAMPREPLY",
    "ICMP_TIME_EXCEEDED",
    "ICMP_TYPE_NAMES",
    "NR_ICMP_TYPES",
    "IcmpHeader",
    "build_icmp",
    "build_icmp_echo",
    "build_icmp_error",
    "icmp_error_allowed",
    "icmp_error_tos",
    "icmp_is_error",
    "parse_icmp",
]

# uapi linux/icmp.h
ICMP_ECHOREPLY: Final = 0
ICMP_DEST_UNREACH: Final = 3
ICMP_SOURCE_QUENCH: Final = 4
ICMP_REDIRECT: Final = 5
ICMP_ECHO: Final = 8
ICMP_TIME_EXCEEDED: Final = 11
ICMP_PARAMETERPROB: Final = 12
ICMP_TIMESTAMP: Final = 13
ICMP_TIMESTAMPREPLY: Final = 14
ICMP_INFO_REQUEST: Final = 15
ICMP_INFO_REPLY: Final = 16
ICMP_ADDRESS: Final = 17
ICMP_ADDRESSREPLY: Final = 18
NR_ICMP_TYPES: Final = 18

# codes for ICMP_DEST_UNREACH
ICMP_NET_UNREACH: Final = 0
ICMP_HOST_UNREACH: Final = 1
ICMP_PROT_UNREACH: Final = 2
ICMP_PORT_UNREACH: Final = 3
ICMP_FRAG_NEEDED: Final = 4
ICMP_SR_FAILED: Final = 5
ICMP_NET_UNKNOWN: Final = 6
ICMP_HOST_UNKNOWN: Final = 7
ICMP_HOST_ISOLATED: Final = 8
ICMP_NET_ANO: Final = 9
ICMP_HOST_ANO: Final = 10
ICMP_NET_UNR_TOS: Final = 11
ICMP_HOST_UNR_TOS: Final = 12
ICMP_PKT_FILTERED: Final = 13
ICMP_PREC_VIOLATION: Final = 14
ICMP_PREC_CUTOFF: Final = 15
# codes for ICMP_REDIRECT
ICMP_REDIR_NET: Final = 0
ICMP_REDIR_HOST: Final = 1
ICMP_REDIR_NETTOS: Final = 2
ICMP_REDIR_HOSTTOS: Final = 3
# codes for ICMP_TIME_EXCEEDED
ICMP_EXC_TTL: Final = 0
ICMP_EXC_FRAGTIME: Final = 1

ICMP_TYPE_NAMES: dict[int, str] = {
    0: "echo-reply",
    3: "destination-unreachable",
    4: "source-quench",
    5: "redirect",
    8: "echo-request",
    9: "router-advertisement",
    10: "router-solicitation",
    11: "time-exceeded",
    12: "parameter-problem",
    13: "timestamp-request",
    14: "timestamp-reply",
    15: "info-request",
    16: "info-reply",
    17: "address-mask-request",
    18: "address-mask-reply",
}

ICMP_CODE_NAMES: dict[tuple[int, int], str] = {
    (3, 0): "network-unreachable",
    (3, 1): "host-unreachable",
    (3, 2): "protocol-unreachable",
    (3, 3): "port-unreachable",
    (3, 4): "fragmentation-needed",
    (3, 5): "source-route-failed",
    (3, 6): "network-unknown",
    (3, 7): "host-unknown",
    (3, 8): "host-isolated",
    (3, 9): "network-prohibited",
    (3, 10): "host-prohibited",
    (3, 11): "TOS-network-unreachable",
    (3, 12): "TOS-host-unreachable",
    (3, 13): "communication-prohibited",
    (3, 14): "host-precedence-violation",
    (3, 15): "precedence-cutoff",
    (5, 0): "network-redirect",
    (5, 1): "host-redirect",
    (5, 2): "TOS-network-redirect",
    (5, 3): "TOS-host-redirect",
    (11, 0): "ttl-zero-during-transit",
    (11, 1): "ttl-zero-during-reassembly",
    (12, 0): "ip-header-bad",
    (12, 1): "required-option-missing",
}

# `icmp_pointers[].error` in icmp.c: types 1, 2, 6, 7, 9 and 10 are listed as errors there too
# (handled by icmp_discard); anything above NR_ICMP_TYPES is "assumed to be an error".
_ICMP_ERROR_TYPES: Final = frozenset({1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12})

ICMP_HLEN: Final = 8
IPTOS_PREC_INTERNETCONTROL: Final = 0xC0
_IPTOS_TOS_MASK: Final = 0x1E
_ICMP_ERROR_MAX: Final = 576  # "RFC says return as much as we can without exceeding 576 bytes"
_IPPROTO_ICMP: Final = 1


class IcmpHeader(NamedTuple):
    type: int
    code: int
    check: int
    rest: int  # the 4-byte rest of header as a big-endian int (id<<16|seq for echo, MTU, pointer<<24)


def icmp_is_error(icmp_type: int) -> bool:
    """`icmp_pointers[type].error`, with types above NR_ICMP_TYPES counted as errors (as icmp_send does)."""
    return icmp_type > NR_ICMP_TYPES or icmp_type in _ICMP_ERROR_TYPES


def build_icmp(icmp_type: int, code: int, rest_of_header: bytes, body: bytes | bytearray | memoryview = b"") -> bytes:
    """An ICMP message with a correct checksum; `rest_of_header` is the 4 bytes after the checksum."""
    msg = bytearray((icmp_type & 0xFF, code & 0xFF, 0, 0))
    msg += bytes(rest_of_header[:4]).ljust(4, b"\x00")
    msg += body
    check = internet_checksum(msg)
    msg[2] = check >> 8
    msg[3] = check & 0xFF
    return bytes(msg)


def build_icmp_echo(
    ident: int, seq: int, payload: bytes | bytearray | memoryview = b"", *, reply: bool = False
) -> bytes:
    """Echo request (type 8) or reply (type 0) with identifier and sequence number."""
    rest = (ident & 0xFFFF).to_bytes(2, "big") + (seq & 0xFFFF).to_bytes(2, "big")
    return build_icmp(ICMP_ECHOREPLY if reply else ICMP_ECHO, 0, rest, payload)


def build_icmp_error(
    icmp_type: int,
    code: int,
    offending_datagram: bytes | bytearray | memoryview,
    *,
    info: int = 0,
    mtu: int = _ICMP_ERROR_MAX,
    reply_optlen: int = 0,
) -> bytes:
    """The ICMP message `__icmp_send` builds about `offending_datagram` (its IP header on).

    The quoted part is cut to `min(mtu, 576) - 20 - reply_optlen - 8` bytes so the reply datagram is
    at most 576 bytes; `mtu` is the MTU of the route back to the sender. Returns b"" when that room
    is <= 20 (the kernel then sends nothing). `info` goes in the rest of header in network order
    (FRAG_NEEDED: the next-hop MTU; PARAMETERPROB: pointer << 24).
    """
    room = min(mtu, _ICMP_ERROR_MAX) - 20 - reply_optlen - ICMP_HLEN
    if room <= 20:
        return b""
    return build_icmp(icmp_type, code, (info & 0xFFFFFFFF).to_bytes(4, "big"), offending_datagram[:room])


def icmp_error_tos(tos: int) -> int:
    """TOS of an ICMP error reply: `RT_TOS(iph->tos) | IPTOS_PREC_INTERNETCONTROL`."""
    return (tos & _IPTOS_TOS_MASK) | IPTOS_PREC_INTERNETCONTROL


def icmp_error_allowed(
    datagram: bytes | bytearray | memoryview,
    *,
    icmp_type: int = ICMP_DEST_UNREACH,
    pkt_type_host: bool = True,
    dst_broadcast: bool = False,
    dst_multicast: bool = False,
) -> bool:
    """May an ICMP message of `icmp_type` be sent about `datagram`? The tests of `__icmp_send()`.

    `pkt_type_host` is False when the packet came in as link-layer broadcast/multicast;
    `dst_broadcast`/`dst_multicast` are the route's RTCF_BROADCAST/RTCF_MULTICAST flags (a
    directed broadcast is only known to the routing table; 224/4 and 255.255.255.255 destinations
    are also recognised here). No test of the source (see the module docstring). Never raises: a
    datagram too short to judge gives False.
    """
    if len(datagram) < 20:
        return False
    if not pkt_type_host or dst_broadcast or dst_multicast:
        return False
    daddr = int.from_bytes(datagram[16:20], "big")
    if daddr >> 28 == 0xE or daddr == 0xFFFFFFFF:
        return False
    if ((datagram[6] << 8) | datagram[7]) & 0x1FFF:
        return False
    if icmp_is_error(icmp_type) and datagram[9] == _IPPROTO_ICMP:
        ihl = (datagram[0] & 0x0F) * 4
        if len(datagram) <= ihl:
            return False
        if icmp_is_error(datagram[ihl]):
            return False
    return True


def parse_icmp(message: bytes | bytearray | memoryview) -> IcmpHeader | None:
    """The 8-byte ICMP header, or None if shorter."""
    if len(message) < ICMP_HLEN:
        return None
    return IcmpHeader(message[0], message[1], (message[2] << 8) | message[3], int.from_bytes(message[4:8], "big"))
