"""The link layer: print-ether.c (Ethernet II with 802.1Q tags), print-sll.c (Linux cooked v1) and
print-arp.c at default verbosity."""

from __future__ import annotations

from natbox.render.dissect import Packet, Truncated, hexdump
from natbox.render.ip import ip_print
from natbox.render.ip6 import ip6_print
from natbox.wire.layout import (
    ARPH_HLN,
    ARPH_HRD,
    ARPH_LEN,
    ARPH_OP,
    ARPH_PLN,
    ARPH_PRO,
    ETH_DEST,
    ETH_HDR_LEN,
    ETH_PROTO,
    ETH_SOURCE,
    VLAN_ENCAP_PROTO,
    VLAN_HLEN,
    VLAN_TCI,
)

# tcpdump's ethertype.h names
ETHERTYPE_NAMES: dict[int, str] = {
    0x0800: "IPv4", 0x0806: "ARP", 0x86DD: "IPv6", 0x8100: "802.1Q", 0x88A8: "802.1Q-QinQ",
    0x9100: "802.1Q-9100", 0x9200: "802.1Q-9200", 0x8847: "MPLS unicast", 0x8848: "MPLS multicast",
    0x9000: "Loopback", 0x88CC: "LLDP", 0x8863: "PPPoE D", 0x8864: "PPPoE S", 0x8035: "Reverse ARP",
    0x809B: "Appletalk", 0x80F3: "Appletalk ARP", 0x8137: "IPX", 0x888E: "EAPOL", 0x8809: "Slow Protocols",
    0x88E5: "802.1AE MACsec", 0x8902: "CFM", 0x22F0: "AVTP", 0x88F7: "PTP", 0x6002: "DEC MOP Remote Console",
    0x6003: "DN", 0x6004: "LAT", 0x0200: "PUP", 0x0500: "Sprite", 0x8808: "MAC control", 0x876B: "TCP/IP compression",
    0x880B: "PPP", 0x9001: "3Com XNS", 0x8914: "FCoE Initialization", 0x8906: "FCoE", 0x88A2: "AoE",
    0x8915: "RoCE",
}
_ARPOP: dict[int, str] = {1: "Request", 2: "Reply", 3: "Reverse Request", 4: "Reverse Reply",
                          8: "InArp Request", 9: "InArp Reply"}


def ether_print(p: Packet, length: int) -> None:
    """ether_common_print() for plain Ethernet II (with 802.1Q tags)."""
    p.proto = "ether"
    caplen = p.end
    if length < caplen:
        p.w(f"[length {length} < caplen {caplen}] (invalid)")
        return
    if caplen < ETH_HDR_LEN:
        raise Truncated
    orig_length = length
    if p.eflag:
        p.w(f"{p.mac(ETH_SOURCE)} > {p.mac(ETH_DEST)}, ")
    length -= ETH_HDR_LEN
    etype = p.u16(ETH_PROTO)
    off = ETH_HDR_LEN
    printed_length = False
    while etype in (0x8100, 0x88A8, 0x9100, 0x9200):
        if p.end - off < VLAN_HLEN or length < VLAN_HLEN:
            p.proto = "vlan"
            raise Truncated
        if p.eflag:
            tci = p.u16(off + VLAN_TCI)
            p.w(f"ethertype {ETHERTYPE_NAMES.get(etype, 'Unknown')} (0x{etype:04x})")
            if not printed_length:
                p.w(f", length {orig_length}: ")
                printed_length = True
            else:
                p.w(", ")
            dei = ", DEI" if tci & 0x1000 else ""
            p.w(f"vlan {tci & 0xFFF}, p {tci >> 13}{dei}, ")
        etype = p.u16(off + VLAN_ENCAP_PROTO)
        off += VLAN_HLEN
        length -= VLAN_HLEN
    if etype <= 1500:
        # 802.3 + LLC: not decoded here (tcpdump prints LLC/SNAP/STP…).
        length = min(length, etype)
        if p.eflag:
            p.w("802.3")
            if not printed_length:
                p.w(f", length {length}: ")
        p.end = min(p.end, off + length)
        hexdump(p, off, length)
        return
    if p.eflag:
        p.w(f"ethertype {ETHERTYPE_NAMES.get(etype, 'Unknown')} (0x{etype:04x})")
        p.w(f", length {orig_length}: " if not printed_length else ", ")
    if etype == 0x0800:
        ip_print(p, off, length)
    elif etype == 0x86DD:
        ip6_print(p, off, length)
    elif etype == 0x0806:
        arp_print(p, off, length)
    else:
        if not p.eflag:
            p.w(f"{p.mac(ETH_SOURCE)} > {p.mac(ETH_DEST)}, ethertype {ETHERTYPE_NAMES.get(etype, 'Unknown')} "
                f"(0x{etype:04x}), length {orig_length}: ")
        hexdump(p, off, p.end - off)


def sll_print(p: Packet, length: int) -> None:
    """sll_print() (Linux cooked v1) for the common unicast/outgoing cases, with -e."""
    p.proto = "sll"
    if p.end < 16:
        raise Truncated
    pkttype = p.u16(0)
    names = {0: "In", 1: "B", 2: "M", 3: "P", 4: "Out"}
    alen = p.u16(4)
    etype = p.u16(14)
    if p.eflag:
        p.w(names.get(pkttype, f"Unknown ({pkttype})"))
        if alen == 6:
            p.w(f" {p.mac(6)}")
        p.w(f" ethertype {ETHERTYPE_NAMES.get(etype, 'Unknown')} (0x{etype:04x}), length {length}: ")
    if etype == 0x0800:
        ip_print(p, 16, length - 16)
    elif etype == 0x86DD:
        ip6_print(p, 16, length - 16)
    elif etype == 0x0806:
        arp_print(p, 16, length - 16)
    else:
        hexdump(p, 16, p.end - 16)


def arp_print(p: Packet, off: int, length: int) -> None:
    """arp_print() for Ethernet/IPv4 ARP at default verbosity."""
    p.proto = "arp"
    p.need(off, ARPH_LEN)
    hrd, pro = p.u16(off + ARPH_HRD), p.u16(off + ARPH_PRO)
    hln, pln = p.b[off + ARPH_HLN], p.b[off + ARPH_PLN]
    op = p.u16(off + ARPH_OP)
    sha = off + ARPH_LEN
    spa = sha + hln
    tha = spa + pln
    tpa = tha + hln
    p.need(tpa, pln)
    if not p.eflag:
        p.w("ARP, ")
    if (pro not in (0x0800, 0x1000)) or pln != 4 or hln == 0:
        hrdname = {1: "Ethernet", 6: "IEEE 802", 7: "ARCNET", 15: "Frame Relay", 16: "ATM", 19: "ATM",
                   23: "Strip", 24: "IEEE 1394", 32: "InfiniBand", 513: "Tunnel"}.get(hrd,
                                                                                   f"Unknown Hardware ({hrd})")
        proname = ETHERTYPE_NAMES.get(pro, f"Unknown Protocol (0x{pro:04x})")
        p.w(f"{hrdname} (len {hln}), {proname} (len {pln}), length {length}")
        return

    def lladdr(at: int) -> str:
        p.need(at, hln)
        return p.b[at:at + hln].hex(":")

    p.w(f"{_ARPOP.get(op, f'Unknown ({op})')} ")
    if op == 1:
        p.w(f"who-has {p.ip(tpa)}")
        p.need(tha, hln)
        if any(p.b[tha:tha + hln]):
            p.w(f" ({lladdr(tha)})")
        p.w(f" tell {p.ip(spa)}")
    elif op == 2:
        p.w(f"{p.ip(spa)} is-at {lladdr(sha)}")
    elif op in (3, 8):
        p.w(f"who-is {lladdr(tha)} tell {lladdr(sha)}")
    elif op == 4:
        p.w(f"{lladdr(tha)} at {p.ip(tpa)}")
    elif op == 9:
        p.w(f"{lladdr(sha)} at {p.ip(spa)}")
    else:
        hexdump(p, off, p.end - off)
        return
    p.w(f", length {length}")

