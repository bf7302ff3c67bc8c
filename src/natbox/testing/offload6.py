"""Test helpers for the IPv6 side of the kernel data path (tests/offload, tests/engine): a NAT66 router's engine.

The router has eth0 on the LAN (fd00:1::1/64, the client fd00:1::2 behind it) and eth1 on the WAN
(2001:db8:1::1/64, the server 2001:db8:1::2), ip6tables MASQUERADE out of eth1, and static neighbours.
Feeding it a flow's packets (a UDP exchange, a TCP handshake and data, ICMPv6 echoes) makes it compile both
directions (engine/fastpath6.py); `flow_plans` returns those plans, original direction first (offload.RouterFlowsBase,
which the IPv4 router shares).

For the live tests: `capture6` (offload.capture for IPv6 frames: a packet socket in a namespace that says which
frames are CHECKSUM_PARTIAL) and `check_frame6` (addresses, hop limit and the L4 checksum of a frame on the wire,
full or partial).
"""

from __future__ import annotations

import contextlib
import socket
import struct

from natbox.engine.engine import Engine
from natbox.engine.host import Host, Interface, Neighbour
from natbox.netfilter import NFPROTO_IPV6
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore
from natbox.testing.offload import RouterFlowsBase, capture, received
from natbox.wire import ethernet, tcp, udp
from natbox.wire.checksum import csum_fold, csum_partial
from natbox.wire.icmpv6 import build_icmpv6_echo
from natbox.wire.ipv6 import build_ipv6, parse_addr6, pseudo6_sum
from natbox.wire.layout import (
    ETH_HDR_LEN,
    ICMP6H_CKSUM,
    ICMP6H_IDENTIFIER,
    IP6H_HOP_LIMIT,
    IP6H_LEN,
    IP6H_NEXTHDR,
    IP6H_PAYLOAD_LEN,
    IP6H_SADDR,
    TCPH_CHECK,
    UDPH_CHECK,
)

CLIENT6 = parse_addr6("fd00:1::2")
LAN6 = parse_addr6("fd00:1::1")
PUBLIC6 = parse_addr6("2001:db8:1::1")
SERVER6 = parse_addr6("2001:db8:1::2")
RULES6 = ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
          "-A POSTROUTING -s fd00:1::/64 -o eth1 -j MASQUERADE\nCOMMIT\n")
# DNAT of the router's own port 6000/6001 to the server's 5000/5001 and SNAT to a port range: both manips
# change addresses and ports
PORTMAP_RULES6 = ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                  ":POSTROUTING ACCEPT [0:0]\n"
                  "-A PREROUTING -i eth0 -d fd00:1::1 -p udp --dport 6000 -j DNAT --to-destination "
                  "[2001:db8:1::2]:5000\n"
                  "-A PREROUTING -i eth0 -d fd00:1::1 -p tcp --dport 6001 -j DNAT --to-destination "
                  "[2001:db8:1::2]:5001\n"
                  "-A POSTROUTING -o eth1 -p udp -j SNAT --to-source [2001:db8:1::1]:30000-30099\n"
                  "-A POSTROUTING -o eth1 -p tcp -j SNAT --to-source [2001:db8:1::1]:30000-30099\n"
                  "-A POSTROUTING -o eth1 -j MASQUERADE\nCOMMIT\n")
_ACK = 0x10
_L4 = ETH_HDR_LEN + IP6H_LEN
_CSUM_AT = {6: TCPH_CHECK, 17: UDPH_CHECK, 58: ICMP6H_CKSUM}
_PORTS = struct.Struct("!HH")


def l4_checksum6(src: int, dst: int, proto: int, seg: bytes | bytearray, *, partial: bool = False) -> bytes:
    """`seg` with its TCP/UDP/ICMPv6 checksum set for the IPv6 pseudo-header (UDP: 0 sent as 0xFFFF); with
    `partial`, the folded pseudo-header sum a CHECKSUM_PARTIAL sender leaves there (uncomplemented)."""
    out = bytearray(seg)
    at = _CSUM_AT[proto]
    out[at:at + 2] = b"\0\0"
    total = pseudo6_sum(src, dst, proto, len(out))
    if partial:
        check = ~csum_fold(total) & 0xFFFF
    else:
        check = csum_fold(csum_partial(out, total)) or (0xFFFF if proto == 17 else 0)
    out[at:at + 2] = check.to_bytes(2, "big")
    return bytes(out)


def datagram6(src: int, dst: int, proto: int, sport: int, dport: int, *, seq: int = 0, ack: int = 0,
              flags: int = _ACK, payload: bytes = b"", partial: bool = False, reply: bool = False) -> bytes:
    """An IPv6 datagram: TCP, UDP, or an ICMPv6 echo (`sport` the id, `dport` the sequence; `reply`)."""
    if proto == 58:
        return build_icmpv6_echo(src, dst, sport, dport, payload, reply=reply)
    if proto == 6:
        seg = tcp.build_tcp(src, dst, sport, dport, seq=seq, ack=ack, flags=flags, payload=payload)
    else:
        seg = udp.build_udp(src, dst, sport, dport, payload)
    return bytes(build_ipv6(src, dst, proto, l4_checksum6(src, dst, proto, seg, partial=partial)))


class RouterFlows6(RouterFlowsBase):
    """An engine for the NAT66 router above with the given MACs (offload.RouterFlowsBase: the flows fed)."""

    ETHERTYPE = ethernet.ETH_P_IPV6
    ICMP = 58
    CLIENT = CLIENT6
    SERVER = SERVER6
    SPORT_AT = slice(32, 34)
    ID_AT = slice(34, 36)
    datagram = staticmethod(datagram6)

    def __init__(self, lan_mac: bytes, wan_mac: bytes, client_mac: bytes, server_mac: bytes, *,
                 wan_mtu: int = 1500, rules: str = RULES6, offload: bool = False) -> None:
        host = Host(name="router", ipv6_forward=True)
        host.add_interface(Interface("eth0", mac=lan_mac))
        host.add_interface(Interface("eth1", mac=wan_mac, mtu=wan_mtu))
        host.add_address6("eth0", LAN6, 64)
        host.add_address6("eth1", PUBLIC6, 64)
        host.neighbours.append(Neighbour("eth0", CLIENT6, client_mac))
        host.neighbours.append(Neighbour("eth1", SERVER6, server_mac))
        rs = Ruleset(NFPROTO_IPV6)
        rs.restore(parse_restore(rules, file="offload6-test", family=NFPROTO_IPV6))
        super().__init__(Engine(host, ruleset6=rs, seed=1, offload=offload), (lan_mac, wan_mac, client_mac, server_mac))

    @staticmethod
    def translated(frame: bytes) -> tuple[int, int, int, int]:
        """saddr, daddr, sport, dport (ICMPv6 echo: the id twice) of an emitted frame."""
        ip = frame[ETH_HDR_LEN:]
        saddr = int.from_bytes(ip[IP6H_SADDR:IP6H_SADDR + 16], "big")
        daddr = int.from_bytes(ip[IP6H_SADDR + 16:IP6H_LEN], "big")
        if ip[IP6H_NEXTHDR] == 58:
            ident = int.from_bytes(ip[IP6H_LEN + ICMP6H_IDENTIFIER:IP6H_LEN + ICMP6H_IDENTIFIER + 2], "big")
            return saddr, daddr, ident, ident
        sport, dport = _PORTS.unpack_from(ip, IP6H_LEN)
        return saddr, daddr, sport, dport


# --- on the wire (live tests) -------------------------------------------------------------------------------

def capture6(ns: str, dev: str, rcvbuf: int = 8 << 20) -> contextlib.AbstractContextManager[socket.socket]:
    """A packet socket for the IPv6 frames `dev` receives in namespace `ns` (offload.capture)."""
    return capture(ns, dev, ethernet.ETH_P_IPV6, rcvbuf)


received6 = received


def check_frame6(frame: bytes, partial: bool, saddr: int, daddr: int, hop: int = 63) -> int:
    """Assert a translated IPv6 frame is well formed: addresses, hop limit, and its L4 checksum valid as a full
    sum or, CHECKSUM_PARTIAL, equal to the folded pseudo-header sum of the addresses on the wire (what the
    rewrite must leave for whoever completes it). Returns its next header."""
    ip = frame[ETH_HDR_LEN:]
    ip = ip[:IP6H_LEN + int.from_bytes(ip[IP6H_PAYLOAD_LEN:IP6H_PAYLOAD_LEN + 2], "big")]
    assert int.from_bytes(ip[IP6H_SADDR:IP6H_SADDR + 16], "big") == saddr
    assert int.from_bytes(ip[IP6H_SADDR + 16:IP6H_LEN], "big") == daddr
    assert ip[IP6H_HOP_LIMIT] == hop
    proto = ip[IP6H_NEXTHDR]
    seg = ip[IP6H_LEN:]
    pseudo = pseudo6_sum(saddr, daddr, proto, len(seg))
    if partial:
        at = _CSUM_AT[proto]
        field = int.from_bytes(seg[at:at + 2], "big")
        assert (field - (~csum_fold(pseudo) & 0xFFFF)) % 0xFFFF == 0, f"partial checksum {field:#06x}"
    else:
        assert proto != 17 or seg[UDPH_CHECK:UDPH_CHECK + 2] != b"\0\0", "a zero UDP checksum on IPv6"
        assert csum_fold(csum_partial(seg, pseudo)) == 0, f"{proto} checksum"
    return proto
