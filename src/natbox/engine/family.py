"""The address-family-specific parts of the packet path, behind one small interface.

The stages (engine/ip_input.py, route_input.py, forward.py, local.py, ip_output.py, icmp_send.py) and
the compiled flows (engine/fastpath.py) ask an `AddressFamily` for everything that depends on the
network header: the flow key of a frame, `ip_rcv_core`'s checks, whether an address is on a device's
link or a subnet broadcast of it, the ICMP errors and echo replies the host builds, and the checksum
fix-up when the stack picks a source address. `IPV4` implements it for IPv4 (net/ipv4/*). The IPv6
path (engine/ip6_input.py and its neighbours) has its own stages; what it shares with the compiled flows
here is its flow key, `flow_key6`.
"""

from __future__ import annotations

from typing import Final, Protocol

from natbox.conntrack.tuple import format_addr
from natbox.engine.host import Interface
from natbox.netfilter import DropReason
from natbox.skb import Skb
from natbox.wire import icmp, ipv4
from natbox.wire.checksum import csum_replace4
from natbox.wire.layout import (
    ETH_HDR_LEN,
    ETH_PROTO,
    ICMP6H_CKSUM,
    ICMP6H_IDENTIFIER,
    ICMP6H_SEQUENCE,
    ICMP6H_TYPE,
    ICMPH_CHECKSUM,
    ICMPH_CODE,
    ICMPH_ID,
    ICMPH_SEQUENCE,
    ICMPH_TYPE,
    IP6H_ADDRS_END,
    IP6H_LEN,
    IP6H_NEXTHDR,
    IP6H_SADDR,
    IP6H_VER_TC_FL,
    IPH_ADDRS_END,
    IPH_FRAG_OFF,
    IPH_MIN_LEN,
    IPH_PROTOCOL,
    IPH_SADDR,
    IPH_VER_IHL,
    L4_DPORT,
    L4_PORTS_END,
    L4_SPORT,
    TCPH_CHECK,
    UDPH_CHECK,
)

__all__ = ["IPV4", "AddressFamily", "FlowKey", "Ipv4", "flow_key", "flow_key6"]

FlowKey = tuple[str, bytes, int, bytes]  # (input device, Ethernet header, protocol, addresses + ports or echo id)

# where the flow key's fields sit in an Ethernet frame carrying IPv4 without options
_IP: Final = ETH_HDR_LEN
_L4: Final = ETH_HDR_LEN + IPH_MIN_LEN
_VER_IHL: Final = _IP + IPH_VER_IHL
_FRAG_HI, _FRAG_LO = _IP + IPH_FRAG_OFF, _IP + IPH_FRAG_OFF + 1
_PROTO: Final = _IP + IPH_PROTOCOL
_ADDRS, _ADDRS_END = _IP + IPH_SADDR, _IP + IPH_ADDRS_END
_PORTS_END: Final = _L4 + L4_PORTS_END
_ICMP_TYPE: Final = _L4 + ICMPH_TYPE
_ICMP_CSUM: Final = _L4 + ICMPH_CHECKSUM  # the end of type and code
_ICMP_ID, _ICMP_ID_END = _L4 + ICMPH_ID, _L4 + ICMPH_SEQUENCE
_KEY_MIN: Final = _L4 + 8  # the shortest frame with a key: TCP/UDP ports, or an ICMP header

# `Address.mask` by prefix length, so the per-packet subnet tests below need no property calls
_MASKS: Final = tuple((0xFFFFFFFF << (32 - p)) & 0xFFFFFFFF if p else 0 for p in range(33))
_HOSTMASKS: Final = tuple(~m & 0xFFFFFFFF for m in _MASKS)
_CSUM_AT: Final = {6: TCPH_CHECK, 17: UDPH_CHECK}  # where the L4 checksum is, for a source filled in later

# the same for an Ethernet frame carrying IPv6 with no extension header (the only kind a tier takes)
_ETH_P_IPV6_BYTES: Final = b"\x86\xdd"
_IP6_VER: Final = ETH_HDR_LEN + IP6H_VER_TC_FL
_NEXTHDR6: Final = ETH_HDR_LEN + IP6H_NEXTHDR
_ADDRS6, _ADDRS6_END = ETH_HDR_LEN + IP6H_SADDR, ETH_HDR_LEN + IP6H_ADDRS_END
_L4_6: Final = ETH_HDR_LEN + IP6H_LEN
_PORTS6_END: Final = _L4_6 + L4_PORTS_END
_ICMP6_TYPE, _ICMP6_CSUM = _L4_6 + ICMP6H_TYPE, _L4_6 + ICMP6H_CKSUM
_ICMP6_ID, _ICMP6_ID_END = _L4_6 + ICMP6H_IDENTIFIER, _L4_6 + ICMP6H_SEQUENCE
_KEY6_MIN: Final = _L4_6 + 8


def flow_key(frame: bytes, iface: str) -> FlowKey | None:
    """The key of the flow an Ethernet frame belongs to, for every forwarding tier (the flow cache, the
    compiled flows): the input device, the Ethernet header and the IPv4 protocol, with the addresses and
    ports (TCP, UDP) or the addresses, type, code and id (ICMP echo, request or reply). None for what no
    tier handles: IP options, fragments, other protocols, frames too short to hold the fields."""
    if len(frame) < _KEY_MIN or frame[_VER_IHL] != 0x45 or frame[_FRAG_HI] & 0x3F or frame[_FRAG_LO]:
        return None
    proto = frame[_PROTO]
    if proto in (6, 17):
        return (iface, frame[:_IP], proto, frame[_ADDRS:_PORTS_END])
    if proto == 1 and frame[_ICMP_TYPE] in (0, 8):
        return (iface, frame[:_IP], 1, frame[_ADDRS:_ICMP_CSUM] + frame[_ICMP_ID:_ICMP_ID_END])
    return None


def flow_key6(frame: bytes, iface: str) -> FlowKey | None:
    """`flow_key` for an Ethernet frame carrying IPv6: the input device, the Ethernet header and the next
    header, with the addresses and ports (TCP, UDP) or the addresses, type, code and identifier (ICMPv6
    echo request or reply). None for what no tier handles: an extension header (a fragment, Hop-by-Hop
    options...), other protocols, frames too short to hold the fields, other ethertypes."""
    if (len(frame) < _KEY6_MIN or frame[ETH_PROTO:_IP] != _ETH_P_IPV6_BYTES or frame[_IP6_VER] >> 4 != 6):
        return None
    proto = frame[_NEXTHDR6]
    if proto in (6, 17):
        return (iface, frame[:_IP], proto, frame[_ADDRS6:_PORTS6_END])
    if proto == 58 and frame[_ICMP6_TYPE] in (128, 129):
        return (iface, frame[:_IP], 58, frame[_ADDRS6:_ADDRS6_END] + frame[_ICMP6_TYPE:_ICMP6_CSUM]
                + frame[_ICMP6_ID:_ICMP6_ID_END])
    return None


class AddressFamily(Protocol):
    """What the stages ask of a network protocol (see the module docstring)."""

    def flow_key(self, frame: bytes, iface: str) -> FlowKey | None: ...

    def rcv_core(self, payload: bytes | bytearray) -> tuple[bytearray | None, DropReason | None]: ...

    def on_link(self, dev: Interface, addr: int) -> bool: ...

    def subnet_broadcasts(self, dev: Interface) -> frozenset[int]: ...

    def icmp_error_allowed(self, data: bytes, icmp_type: int, *, pkt_type_host: bool, dst_broadcast: bool,
                           dst_multicast: bool) -> bool: ...

    def icmp_error(self, data: bytes, icmp_type: int, code: int, info: int = 0) -> bytes: ...

    def build_datagram(self, saddr: int, daddr: int, proto: int, payload: bytes, *, ttl: int = 64,
                       tos: int = 0) -> bytes: ...

    def error_tos(self, tos: int) -> int: ...

    def echo_reply(self, skb: Skb) -> bytes | None: ...

    def set_local_source(self, skb: Skb, src: int) -> None: ...

    def describe(self, skb: Skb) -> str: ...


class Ipv4:
    """IPv4 (net/ipv4/ip_input.c, icmp.c, route.c's address tests)."""

    flow_key = staticmethod(flow_key)  # the module function itself: no extra frame per packet
    # `ip_rcv_core`: version, IHL, header checksum, total length (trimming what lies past it); the wire
    # function itself, like flow_key
    rcv_core = staticmethod(ipv4.ip_rcv_core)

    @staticmethod
    def on_link(dev: Interface, addr: int) -> bool:
        """`any(a.contains(addr) for a in dev.addresses)`: `addr` is in a subnet of one of `dev`'s addresses."""
        for a in dev.addresses:
            p = a.prefixlen
            if 0 <= p <= 32:
                if not (addr ^ a.addr) & _MASKS[p]:
                    return True
            elif a.contains(addr):
                return True
        return False

    @staticmethod
    def subnet_broadcasts(dev: Interface) -> frozenset[int]:
        """The subnet broadcast address of each of `dev`'s addresses (`a.broadcast`): a next hop among them
        gets the broadcast MAC. A fact of the configuration: the output stage keeps it per FIB generation."""
        return frozenset(a.addr | _HOSTMASKS[a.prefixlen] if 0 <= a.prefixlen <= 32 else a.broadcast
                         for a in dev.addresses)

    @staticmethod
    def icmp_error_allowed(data: bytes, icmp_type: int, *, pkt_type_host: bool, dst_broadcast: bool,
                           dst_multicast: bool) -> bool:
        """`icmp_send`'s early returns: no error about an error, a non-first fragment, a broadcast or
        multicast, a packet not for this host at the link layer. No source test: routing's martian checks
        made it (wire/icmp.py)."""
        return icmp.icmp_error_allowed(data, icmp_type=icmp_type, pkt_type_host=pkt_type_host,
                                       dst_broadcast=dst_broadcast, dst_multicast=dst_multicast)

    @staticmethod
    def icmp_error(data: bytes, icmp_type: int, code: int, info: int = 0) -> bytes:
        """The ICMP error message about the datagram `data` (b"" when there is nothing to quote)."""
        return icmp.build_icmp_error(icmp_type, code, data, info=info)

    @staticmethod
    def build_datagram(saddr: int, daddr: int, proto: int, payload: bytes, *, ttl: int = 64,
                       tos: int = 0) -> bytes:
        return bytes(ipv4.build_ipv4(saddr, daddr, proto, payload, ttl=ttl, tos=tos))

    @staticmethod
    def error_tos(tos: int) -> int:
        return icmp.icmp_error_tos(tos)

    @staticmethod
    def echo_reply(skb: Skb) -> bytes | None:
        """`icmp_echo` → `icmp_reply`: the reply datagram to an echo request for this host, None if `skb` is
        not one."""
        data = skb.data
        l4 = skb.ihl
        if skb.l4_len < 8 or data[l4 + ICMPH_TYPE] != icmp.ICMP_ECHO:
            return None
        body = bytes(data[l4 + ICMPH_ID:])
        ident = (body[0] << 8) | body[1]
        seq = (body[ICMPH_SEQUENCE - ICMPH_ID] << 8) | body[ICMPH_SEQUENCE - ICMPH_ID + 1]
        reply = icmp.build_icmp_echo(ident, seq, body[4:], reply=True)
        return bytes(ipv4.build_ipv4(skb.daddr, skb.saddr, 1, reply, ttl=64))

    @staticmethod
    def set_local_source(skb: Skb, src: int) -> None:
        """Fill in the source the stack chose, with the IP and TCP/UDP checksums it would have written."""
        data = skb.data
        ipv4.set_saddr(data, src)
        l4 = skb.ihl
        off = _CSUM_AT.get(data[IPH_PROTOCOL])
        if off is None or skb.is_later_fragment or len(data) < l4 + off + 2:
            return
        proto = data[IPH_PROTOCOL]
        check = (data[l4 + off] << 8) | data[l4 + off + 1]
        if proto == 17 and check == 0:
            return  # no UDP checksum
        check = csum_replace4(check, 0, src)
        if proto == 17 and check == 0:
            check = 0xFFFF
        data[l4 + off:l4 + off + 2] = check.to_bytes(2, "big")

    @staticmethod
    def describe(skb: Skb) -> str:
        """One line about the packet for traces: protocol, addresses, ports or ICMP type, TTL."""
        proto = skb.protocol
        src, dst = format_addr(skb.saddr), format_addr(skb.daddr)
        if proto in (6, 17) and skb.l4_len >= 4:
            name = "TCP" if proto == 6 else "UDP"
            return f"{name} {src}:{skb.l4_u16(L4_SPORT)} > {dst}:{skb.l4_u16(L4_DPORT)} ttl {skb.ttl}"
        if proto == 1 and skb.l4_len >= 2:
            l4 = skb.ihl
            return (f"ICMP {src} > {dst} type {skb.data[l4 + ICMPH_TYPE]} code {skb.data[l4 + ICMPH_CODE]} "
                    f"ttl {skb.ttl}")
        return f"proto {proto} {src} > {dst} ttl {skb.ttl}"


IPV4: AddressFamily = Ipv4()
