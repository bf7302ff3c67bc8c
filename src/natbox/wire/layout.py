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
