"""Replaying captures taken somewhere else than on the modelled host: one side only, or without MACs.

- `DirectionSplit` (`natbox replay --lan-net PREFIX`): a capture taken on the LAN side of a gateway (on a
  client, or on the LAN link) holds both directions of each connection, but the server's replies in it are
  addressed to the client's private address, as they leave the gateway, not as they reach it. A packet
  whose source is inside a `--lan-net` prefix enters on its input's interface as usual; any other packet
  is a reply: the connection it belongs to is found in the host's conntrack table by the tuple it answers
  (`nf_ct_invert_tuple` of the packet's tuple is the connection's ORIGINAL tuple), the packet is given the
  connection's REPLY tuple, as it would have arrived from the WAN (`nf_nat_ipv4_manip_pkt` on source and
  destination, checksums updated), and enters on the WAN interface. A packet from outside the prefixes
  that answers no tracked connection cannot be placed (it was not a reply to this host's NAT) and is
  skipped with its reason.
- `synthetic_mac(host_name, iface)`: an interface modelled without a MAC accepts every unicast frame (the
  way to replay captures from another machine), but frames it sends must not leave with source
  00:00:00:00:00:00: the replay writes a stable, locally administered MAC derived from the names instead
  (in the Ethernet header, and in an ARP message's sender hardware address).

Sans-IO: both work on bytes and the engine's table; the driver calls them.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from natbox.conntrack.tuple import ConnTuple, invert
from natbox.nat.manip import manip_pkt
from natbox.netfilter import IPPROTO_ICMP, ManipType
from natbox.wire.arp import ARP_LEN
from natbox.wire.checksum import csum_replace2, internet_checksum
from natbox.wire.ethernet import ETH_P_ARP
from natbox.wire.layout import (
    ETH_HDR_LEN,
    ETH_PROTO,
    ETH_SOURCE,
    ICMPH_CHECKSUM,
    ICMPH_LEN,
    ICMPH_TYPE,
    IPH_CHECK,
    IPH_DADDR,
    IPH_MIN_LEN,
    IPH_PROTOCOL,
    IPH_SADDR,
    IPH_TTL,
)

if TYPE_CHECKING:
    from natbox.engine.engine import Engine
    from natbox.engine.output import Output

__all__ = ["NO_MAC", "DirectionSplit", "MacFixer", "synthetic_mac"]

NO_MAC = b"\x00" * 6
ICMP_ERRORS = frozenset({3, 4, 5, 11, 12})  # unreachable, source quench, redirect, time exceeded, parameter problem
_ARP_SHA = 8  # arphdr (8 bytes), then the sender hardware address


def synthetic_mac(host_name: str, iface: str) -> bytes:
    """A stable locally administered unicast MAC for `iface` of `host_name` (02:xx:xx:xx:xx:xx)."""
    digest = hashlib.sha256(f"natbox/{host_name}/{iface}".encode()).digest()
    return bytes([0x02]) + digest[:5]


def _undo_hop(data: bytearray) -> None:
    """The reply was captured after the host forwarded it (`ip_decrease_ttl`): give back the hop, so that
    replaying it through the host gives the TTL the capture shows."""
    if data[IPH_TTL] < 255:
        old = data[IPH_TTL] << 8 | data[IPH_PROTOCOL]
        data[IPH_TTL] += 1
        new = data[IPH_TTL] << 8 | data[IPH_PROTOCOL]
        check = csum_replace2(data[IPH_CHECK] << 8 | data[IPH_CHECK + 1], old, new)
        data[IPH_CHECK:IPH_CHECK + 2] = check.to_bytes(2, "big")


class MacFixer:
    """Gives the frames an interface without a MAC sends its synthetic MAC (see the module doc)."""

    def __init__(self, host_name: str, ifaces: list[str]) -> None:
        self.macs = {name: synthetic_mac(host_name, name) for name in ifaces}

    def fix(self, out: Output) -> None:
        for em in out.emitted:
            mac = self.macs.get(em.iface)
            if mac is None or len(em.frame) < ETH_HDR_LEN or em.frame[ETH_SOURCE:ETH_SOURCE + 6] != NO_MAC:
                continue
            frame = bytearray(em.frame)
            frame[ETH_SOURCE:ETH_SOURCE + 6] = mac
            proto = frame[ETH_PROTO] << 8 | frame[ETH_PROTO + 1]
            sha = ETH_HDR_LEN + _ARP_SHA
            if proto == ETH_P_ARP and len(frame) >= ETH_HDR_LEN + ARP_LEN and frame[sha:sha + 6] == NO_MAC:
                frame[sha:sha + 6] = mac
            em.frame = bytes(frame)


class DirectionSplit:
    """`--lan-net`: which packets of a one-sided capture are replies, and how they reach the WAN side."""

    def __init__(self, engine: Engine, lan_nets: list[tuple[int, int]], wan_iface: str) -> None:
        self.engine = engine
        self.lan_nets = lan_nets
        self.wan_iface = wan_iface
        self.moved = 0  # replies given to the WAN interface
        self.own = {a.addr for i in engine.host.interfaces.values() for a in i.addresses}

    def is_lan(self, addr: int) -> bool:
        return any(addr & mask == net for net, mask in self.lan_nets)

    def place(self, datagram: bytes, now: float) -> tuple[str, bytes] | str | None:
        """None: the packet is from the LAN side (enter as captured). A (WAN interface, datagram as it
        reaches the WAN) pair for a reply; a str: why a packet from outside cannot be placed."""
        if len(datagram) < IPH_MIN_LEN:
            return None
        src = int.from_bytes(datagram[IPH_SADDR:IPH_SADDR + 4], "big")
        if src in self.own:
            return "sent by the host itself (--lan-net: its own packets are its output, not input)"
        if self.is_lan(src):
            return None
        from natbox.conntrack.core import get_tuplepr

        if datagram[IPH_PROTOCOL] == IPPROTO_ICMP and len(datagram) > (datagram[0] & 0x0F) * 4 + ICMPH_TYPE \
                and datagram[(datagram[0] & 0x0F) * 4 + ICMPH_TYPE] in ICMP_ERRORS:
            return self._place_error(bytearray(datagram), now)
        seen = get_tuplepr(datagram, 0)
        answered = invert(seen) if seen is not None else None
        hit = self.engine.table.lookup(answered, now) if answered is not None else None
        if hit is None:
            return "from outside --lan-net, answering no tracked connection (not placed on the WAN side)"
        conn, _direction = hit
        reply: ConnTuple = conn.tuples[1]
        data = bytearray(datagram)
        ihl = (data[0] & 0x0F) * 4
        if seen is not None and (seen.src, seen.sport) != (reply.src, reply.sport) \
                and not manip_pkt(data, ihl, reply, ManipType.SRC):
            return "reply too short to rewrite"
        if seen is not None and (seen.dst, seen.dport) != (reply.dst, reply.dport) \
                and not manip_pkt(data, ihl, reply, ManipType.DST):
            return "reply too short to rewrite"
        _undo_hop(data)
        self.moved += 1
        return self.wan_iface, bytes(data)

    def _place_error(self, data: bytearray, now: float) -> tuple[str, bytes] | str:
        """An ICMP error from outside about a packet the client sent: as it reached the WAN, the error is
        addressed to the connection's REPLY destination and quotes the packet as the NAT sent it (the
        inverse of `nf_nat_icmp_reply_translation`: inner source from the REPLY tuple, ICMP checksum
        recomputed, outer destination rewritten)."""
        from natbox.conntrack.core import get_tuplepr

        ihl = (data[0] & 0x0F) * 4
        inner_off = ihl + ICMPH_LEN
        quoted = get_tuplepr(data, inner_off) if len(data) >= inner_off + IPH_MIN_LEN else None
        hit = self.engine.table.lookup(quoted, now) if quoted is not None else None
        if hit is None:
            return "ICMP error from outside --lan-net about no tracked connection (not placed on the WAN side)"
        reply: ConnTuple = hit[0].tuples[1]
        as_sent = invert(reply)
        if as_sent is not None and as_sent != quoted:
            manip_pkt(data, (data[inner_off] & 0x0F) * 4, as_sent, ManipType.SRC, iphdroff=inner_off)
        data[ihl + ICMPH_CHECKSUM:ihl + ICMPH_CHECKSUM + 2] = b"\x00\x00"
        data[ihl + ICMPH_CHECKSUM:ihl + ICMPH_CHECKSUM + 2] = internet_checksum(data[ihl:]).to_bytes(2, "big")
        data[IPH_DADDR:IPH_DADDR + 4] = reply.dst.to_bytes(4, "big")
        if data[IPH_TTL] < 255:
            data[IPH_TTL] += 1  # as _undo_hop does
        data[IPH_CHECK:IPH_CHECK + 2] = b"\x00\x00"
        data[IPH_CHECK:IPH_CHECK + 2] = internet_checksum(data[:ihl]).to_bytes(2, "big")
        self.moved += 1
        return self.wan_iface, bytes(data)
