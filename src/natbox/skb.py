"""`struct sk_buff`, reduced to what netfilter's IPv4 path reads and writes.

`data` is a `bytearray` holding one IPv4 datagram from its IP header to the end of its payload (the
link-layer header has been pulled off, as `eth_type_trans` does). Code that rewrites the datagram
does so in place. `ihl` is the IP header length in bytes, so the transport header starts at
`data[ihl]`.

The skb is checked once by `ip_rcv_core` (or built by natbox itself for local output), so its IP
header is always complete and `len(data) == tot_len`. The transport header is **not** guaranteed:
readers must check `len(data) >= ihl + n` before reading n bytes of it.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Final

from natbox.netfilter import NFPROTO_IPV4, NFPROTO_IPV6, CtInfo, Hook
from natbox.wire.ipv6 import ipv6_skip_exthdr
from natbox.wire.layout import (
    IP6H_DADDR,
    IP6H_HOP_LIMIT,
    IP6H_LEN,
    IP6H_NEXTHDR,
    IP6H_SADDR,
    IP6H_VER_TC_FL,
    IPH_ADDRS_END,
    IPH_DADDR,
    IPH_FRAG_OFF,
    IPH_ID,
    IPH_PROTOCOL,
    IPH_SADDR,
    IPH_TOS,
    IPH_TTL,
    IPH_VER_IHL,
)

if TYPE_CHECKING:
    from natbox.conntrack.conn import Conn

__all__ = ["NfBridge", "PacketType", "Skb", "Skb6"]


class PacketType(enum.IntEnum):
    """`skb->pkt_type` (uapi if_packet.h), matched by `-m pkttype`."""

    HOST = 0
    BROADCAST = 1
    MULTICAST = 2
    OTHERHOST = 3
    OUTGOING = 4
    LOOPBACK = 5


class NfBridge:
    """`struct nf_bridge_info` (include/linux/skbuff.h), what br_netfilter attaches to a packet that entered
    through a bridge port: the port it came in on (`physindev`, set by `setup_pre_routing`) and, once the
    bridge forwards it, the port it leaves by (`physoutdev`, set by `br_nf_forward_ip`; "" when the
    packet is delivered locally or routed). `-m physdev` and ipset's `physdev:` entries read these."""

    __slots__ = ("physindev", "physoutdev")

    def __init__(self, physindev: str, physoutdev: str = "") -> None:
        self.physindev = physindev
        self.physoutdev = physoutdev


# the defaults Skb.__init__ writes, as module constants: `Enum.MEMBER` costs a lookup through EnumType per use
_HOOK_PRE_ROUTING: Final = Hook.PRE_ROUTING
_CTINFO_INVALID: Final = CtInfo.INVALID
_PKT_HOST: Final = PacketType.HOST


class Skb:
    """One IPv4 packet on its way through the host."""

    family = NFPROTO_IPV4  # the class's address family (NFPROTO_*): Skb6 says NFPROTO_IPV6

    __slots__ = (
        "csum_partial",
        "ct",
        "ct_zone",
        "ctinfo",
        "data",
        "dst_mac",
        "fast_key",
        "frag_list",
        "frag_max_size",
        "frag_pmtu",
        "gso_size",
        "gso_type",
        "hook",
        "ihl",
        "iif",
        "mark",
        "nexthop",
        "nf_bridge",
        "note",
        "oif",
        "pkt_id",
        "pkt_type",
        "priority",
        "rt_flags",
        "secmark",
        "sk",
        "src_mac",
        "trace",
        "untracked",
    )

    def __init__(self, data: bytearray, *, iif: str = "", pkt_id: int = 0) -> None:
        self.data = data
        self.ihl = (data[IPH_VER_IHL] & 0x0F) * 4 if data else 0
        self.iif = iif  # input device name ("" for locally generated)
        self.oif = ""  # output device name, set by routing ("" before)
        self.hook = _HOOK_PRE_ROUTING
        self.ct: Conn | None = None
        self.ctinfo = _CTINFO_INVALID
        self.untracked = False  # raw NOTRACK / CT --notrack
        self.ct_zone = 0  # the conntrack zone of the template -j CT --zone attached (nf_ct_zone_tmpl)
        self.mark = 0
        self.pkt_type = _PKT_HOST
        self.priority = 0  # skb->priority (tc class), set by -j CLASSIFY
        self.secmark = 0  # skb->secmark, set by -j SECMARK / CONNSECMARK --restore
        self.sk: tuple[int, int] | None = None  # skb->sk assigned by -j TPROXY: (protocol, port) of the socket
        self.src_mac = b""
        self.dst_mac = b""
        self.nf_bridge: NfBridge | None = None  # skb->nf_bridge: set when the packet entered by a bridge port
        self.frag_max_size = 0  # largest fragment received, when this skb was reassembled
        self.frag_pmtu = False  # IPSKB_FRAG_PMTU: every fragment had DF
        self.frag_list: list[int] | None = None  # the received fragments' sizes, for ip_do_fragment
        self.nexthop = 0  # routing's next hop (gateway, or daddr when on-link)
        # the flags of the route the skb carries (skb_dst), where they decide its way: IPv4's rtable rt_flags
        # (RTCF_LOCAL: an output route out lo, whose dst.input is ip_local_deliver) and IPv6's rt6i_flags
        # (RTF_REJECT: a reject route, whose dst.output is ip6_pkt_discard_out); set by output routing
        self.rt_flags = 0
        self.pkt_id = pkt_id  # the input packet this skb came from (for explanations)
        self.trace: list[str] | None = None  # explanation steps, when tracing is on
        self.note = ""
        self.fast_key: tuple[str, bytes, int, bytes] | None = None  # the engine's flow-cache key
        # offloads (a packet from a vnet-header device): `skb_shinfo(skb)->gso_size/gso_type` (a GSO
        # super-packet of gso_size-byte segments) and `ip_summed == CHECKSUM_PARTIAL` (the TCP/UDP checksum
        # field holds only the pseudo-header sum; whoever transmits finishes it)
        self.gso_size = 0
        self.gso_type = 0
        self.csum_partial = False

    # --- IPv4 header fields (RFC 791 figure 4) -------------------------------------------------

    @property
    def saddr(self) -> int:
        return int.from_bytes(self.data[IPH_SADDR:IPH_DADDR], "big")

    @property
    def daddr(self) -> int:
        return int.from_bytes(self.data[IPH_DADDR:IPH_ADDRS_END], "big")

    @property
    def protocol(self) -> int:
        return self.data[IPH_PROTOCOL]

    @property
    def ttl(self) -> int:
        return self.data[IPH_TTL]

    @property
    def tos(self) -> int:
        return self.data[IPH_TOS]

    @property
    def ip_id(self) -> int:
        return (self.data[IPH_ID] << 8) | self.data[IPH_ID + 1]

    @property
    def frag_off(self) -> int:
        """The 16-bit flags+offset word (flags in the top 3 bits, offset in 8-byte units)."""
        return (self.data[IPH_FRAG_OFF] << 8) | self.data[IPH_FRAG_OFF + 1]

    @property
    def is_fragment(self) -> bool:
        """MF set or a non-zero offset."""
        return bool(self.frag_off & 0x3FFF)

    @property
    def is_later_fragment(self) -> bool:
        """A non-first fragment: the transport header is not in it (`-f`)."""
        return bool(self.frag_off & 0x1FFF)

    @property
    def l4_len(self) -> int:
        return len(self.data) - self.ihl

    def l4_u16(self, offset: int) -> int | None:
        """Big-endian u16 at `offset` bytes into the transport header, or None if truncated."""
        pos = self.ihl + offset
        if len(self.data) < pos + 2:
            return None
        return (self.data[pos] << 8) | self.data[pos + 1]

    def add_trace(self, step: str) -> None:
        if self.trace is not None:
            self.trace.append(step)


class Skb6(Skb):
    """One IPv6 packet (ipv6-semantics.md; /work/briefs/ipv6-interface.md).

    `data` holds the datagram from its IPv6 header on (40 + payload_len bytes after `ip6_rcv_core`).
    `ihl` is the transport offset as `ipv6_skip_exthdr` finds it (§1.6: Hop-by-Hop, Routing, Destination
    options, AH and a first Fragment header skipped), `nexthdr` the protocol there (44 at a non-first
    fragment, -1 when the walk fails, `ihl` then being `len(data)`), `frag_off6` the byte offset of the
    fragment crossed (0 if none or first). `reparse()` sets the three again after the chain changed."""

    __slots__ = ("frag_off6", "fragmented", "nexthdr")

    family = NFPROTO_IPV6

    def __init__(self, data: bytearray, *, iif: str = "", pkt_id: int = 0) -> None:
        super().__init__(data, iif=iif, pkt_id=pkt_id)
        self.nexthdr = -1
        self.frag_off6 = 0
        self.fragmented = False
        self.reparse()

    def reparse(self) -> None:
        """Walk the extension headers again (`ipv6_skip_exthdr` from the fixed header)."""
        data = self.data
        if len(data) < IP6H_LEN:
            self.ihl, self.nexthdr, self.frag_off6, self.fragmented = len(data), -1, 0, False
            return
        off, nexthdr, frag_off = ipv6_skip_exthdr(data, IP6H_LEN, data[IP6H_NEXTHDR])
        self.fragmented = bool(frag_off)
        self.frag_off6 = frag_off & ~0x7
        if off < 0:
            self.ihl, self.nexthdr = len(data), -1
        else:
            self.ihl, self.nexthdr = off, nexthdr

    # --- IPv6 header fields (RFC 8200 §3) --------------------------------------------------------

    @property
    def saddr(self) -> int:
        return int.from_bytes(self.data[IP6H_SADDR:IP6H_DADDR], "big")

    @property
    def daddr(self) -> int:
        return int.from_bytes(self.data[IP6H_DADDR:IP6H_DADDR + 16], "big")

    @property
    def protocol(self) -> int:
        return self.nexthdr

    @property
    def ttl(self) -> int:
        return self.data[IP6H_HOP_LIMIT]

    @property
    def tos(self) -> int:
        """The traffic class."""
        return ((self.data[IP6H_VER_TC_FL] & 0x0F) << 4) | (self.data[IP6H_VER_TC_FL + 1] >> 4)

    @property
    def is_fragment(self) -> bool:
        """A Fragment header was crossed (MF set or a non-zero offset)."""
        return self.fragmented or bool(self.frag_off6)

    @property
    def is_later_fragment(self) -> bool:
        return bool(self.frag_off6)
