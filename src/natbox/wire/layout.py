"""Field offsets of the headers natbox reads and writes: the one place that knows where a field is.

Code outside `natbox.wire` never indexes a header by a bare number: it adds one of these names to the
header's start (`data[thoff + TCPH_FLAGS]`), so the layout lives here once and an IPv6 header can get
its own table beside these. Names follow the kernel's structs (`struct iphdr`, `struct tcphdr`,
`struct udphdr`, `struct icmphdr`, `struct ethhdr`); each constant is the byte offset of the field from
the start of its header, and `*_END` names the first byte past a multi-byte field where slicing needs it.

Offsets are plain ints (module constants) rather than methods on a view so the per-packet paths can
bind them as locals at no cost; `tests/test_architecture.py` checks that nothing outside wire/ slices a
layer-4 header by absolute offset.
"""

from __future__ import annotations

from typing import Final

# struct ethhdr (uapi linux/if_ether.h)
ETH_DEST: Final = 0
ETH_SOURCE: Final = 6
ETH_PROTO: Final = 12
ETH_HDR_LEN: Final = 14

# struct iphdr (uapi linux/ip.h)
IPH_VER_IHL: Final = 0
IPH_TOS: Final = 1
IPH_TOT_LEN: Final = 2
IPH_ID: Final = 4
IPH_FRAG_OFF: Final = 6
IPH_TTL: Final = 8
IPH_PROTOCOL: Final = 9
IPH_CHECK: Final = 10
IPH_SADDR: Final = 12
IPH_DADDR: Final = 16
IPH_ADDRS_END: Final = 20
IPH_MIN_LEN: Final = 20

# struct ipv6hdr (uapi linux/ipv6.h): version, traffic class and flow label share the first 4 bytes
IP6H_VER_TC_FL: Final = 0
IP6H_PAYLOAD_LEN: Final = 4
IP6H_NEXTHDR: Final = 6
IP6H_HOP_LIMIT: Final = 7
IP6H_SADDR: Final = 8
IP6H_DADDR: Final = 24
IP6H_ADDRS_END: Final = 40
IP6H_LEN: Final = 40

# struct ipv6_opt_hdr (Hop-by-Hop, Routing, Destination options; AH's length is counted differently)
IP6OPT_NEXTHDR: Final = 0
IP6OPT_HDRLEN: Final = 1
# struct frag_hdr (include/net/ipv6.h)
FRAGH_NEXTHDR: Final = 0
FRAGH_OFF: Final = 2  # offset in 8-byte units << 3 | reserved | M
FRAGH_ID: Final = 4
FRAGH_LEN: Final = 8
# struct ipv6_rt_hdr: after nexthdr and hdrlen
IP6RT_TYPE: Final = 2
IP6RT_SEGMENTS_LEFT: Final = 3
FRAGH_RESERVED: Final = 1  # the byte after nexthdr (ip6t_frag's --fragres)
# struct rt0_hdr: a reserved word after struct ipv6_rt_hdr, then the addresses (ip6t_rt)
IP6RT0_RESERVED: Final = 4
IP6RT0_ADDR: Final = 8
# struct ipv6_sr_hdr (Segment Routing Header, routing type 4; ip6t_srh)
IP6SRH_LAST_ENTRY: Final = 4
IP6SRH_TAG: Final = 6
IP6SRH_SEGMENTS: Final = 8
# struct ip_auth_hdr (AH; length (hdrlen + 2) * 4 bytes)
AUTH_HDRLEN: Final = 1
AUTH_RESERVED: Final = 2
AUTH_SPI: Final = 4
AUTH_MIN_LEN: Final = 12
# struct ip6_mh (Mobility Header)
IP6MH_PROTO: Final = 0
IP6MH_TYPE: Final = 2
IP6MH_MIN_LEN: Final = 6

# struct tcphdr (uapi linux/tcp.h)
TCPH_SOURCE: Final = 0
TCPH_DEST: Final = 2
TCPH_SEQ: Final = 4
TCPH_ACK_SEQ: Final = 8
TCPH_DOFF: Final = 12  # data offset in the high nibble
TCPH_FLAGS: Final = 13
TCPH_WINDOW: Final = 14
TCPH_CHECK: Final = 16
TCPH_URG_PTR: Final = 18
TCPH_MIN_LEN: Final = 20

# struct udphdr (uapi linux/udp.h); UDP-Lite keeps the layout with `len` read as the checksum coverage
UDPH_SOURCE: Final = 0
UDPH_DEST: Final = 2
UDPH_LEN: Final = 4
UDPH_CHECK: Final = 6
UDPH_LEN_BYTES: Final = 8

# struct icmphdr (uapi linux/icmp.h): un.echo.{id,sequence}, un.gateway, un.frag.mtu
ICMPH_TYPE: Final = 0
ICMPH_CODE: Final = 1
ICMPH_CHECKSUM: Final = 2
ICMPH_ID: Final = 4
ICMPH_SEQUENCE: Final = 6
ICMPH_GATEWAY: Final = 4
ICMPH_MTU: Final = 6
ICMPH_LEN: Final = 8

# struct icmp6hdr (uapi linux/icmpv6.h): the same first 8 bytes as struct icmphdr
ICMP6H_TYPE: Final = 0
ICMP6H_CODE: Final = 1
ICMP6H_CKSUM: Final = 2
ICMP6H_IDENTIFIER: Final = 4
ICMP6H_SEQUENCE: Final = 6
ICMP6H_MTU: Final = 4  # Packet Too Big: 32-bit MTU
ICMP6H_POINTER: Final = 4  # Parameter Problem: 32-bit pointer
ICMP6H_LEN: Final = 8
# struct nd_msg (Neighbour Solicitation/Advertisement): the target after the 8-byte header, then options
ND_FLAGS: Final = 4  # NA: R S O bits in the first byte
ND_TARGET: Final = 8
ND_TARGET_END: Final = 24
ND_OPT_TYPE: Final = 0
ND_OPT_LEN: Final = 1  # in units of 8 bytes
ND_OPT_DATA: Final = 2
# struct rd_msg (Redirect): target and destination after the header
RD_TARGET: Final = 8
RD_DEST: Final = 24
RD_OPTS: Final = 40

# GRE with the PPTP key (struct gre_base_hdr + pptp call id, nf_conntrack_proto_gre.c)
GREH_FLAGS: Final = 0
GREH_PROTOCOL: Final = 2
GREH_CALL_ID: Final = 6

# ports sit at the same place in TCP, UDP, UDP-Lite, SCTP and DCCP (what nf_nat_proto's l4 manip relies on)
L4_SPORT: Final = 0
L4_DPORT: Final = 2
L4_PORTS_END: Final = 4

# struct vlan_hdr (include/linux/if_vlan.h): the 4 bytes after an 802.1Q/802.1ad TPID
VLAN_TCI: Final = 0
VLAN_ENCAP_PROTO: Final = 2
VLAN_HLEN: Final = 4

# Capture link headers (libpcap's pcap/sll.h; LINKTYPE_NULL/LOOP): what the pcap adapter reads
# struct sll_header (LINKTYPE_LINUX_SLL)
SLL_PKTTYPE: Final = 0
SLL_HATYPE: Final = 2
SLL_HALEN: Final = 4
SLL_ADDR: Final = 6  # 8 bytes, the first sll_halen of them used
SLL_PROTOCOL: Final = 14
SLL_HDR_LEN: Final = 16
# struct sll2_header (LINKTYPE_LINUX_SLL2)
SLL2_PROTOCOL: Final = 0
SLL2_IF_INDEX: Final = 4
SLL2_HATYPE: Final = 8
SLL2_PKTTYPE: Final = 10
SLL2_HALEN: Final = 11
SLL2_ADDR: Final = 12
SLL2_HDR_LEN: Final = 20
# BSD loopback: a 4-byte address family (host order for NULL, network order for LOOP)
LOOP_FAMILY: Final = 0
LOOP_HDR_LEN: Final = 4

# struct arphdr (uapi linux/if_arp.h); the addresses follow at ARPH_LEN (sha, spa, tha, tpa)
ARPH_HRD: Final = 0
ARPH_PRO: Final = 2
ARPH_HLN: Final = 4
ARPH_PLN: Final = 5
ARPH_OP: Final = 6
ARPH_LEN: Final = 8

# struct sctphdr and struct sctp_chunkhdr (uapi linux/sctp.h)
SCTPH_SOURCE: Final = 0
SCTPH_DEST: Final = 2
SCTPH_VTAG: Final = 4
SCTPH_CHECKSUM: Final = 8
SCTPH_LEN: Final = 12
SCTP_CHUNK_TYPE: Final = 0
SCTP_CHUNK_FLAGS: Final = 1
SCTP_CHUNK_LENGTH: Final = 2
SCTP_CHUNK_HDR_LEN: Final = 4
