// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * natbox's kernel data path for established flows (issue #16): a tc cls_bpf program, direct-action, on
 * clsact ingress. natbox's engine decides everything (rules, conntrack, NAT bindings, routes, neighbours)
 * and installs one entry per flow direction in nb_flows, made from the engine's FlowPlan
 * (natbox/offload/entry.py builds and encodes it; the layouts below are checked against entry.py by
 * tests/offload/test_entry.py). A packet whose key is in the map is rewritten and redirected here,
 * everything else goes up to the stack (TC_ACT_OK), where natbox's packet socket or the kernel sees it.
 *
 * Per packet, in the order of the kernel's flowtable (nf_flow_offload_ip_hook, nf_flow_tuple_ip):
 *   a frame for this host (PACKET_HOST, no VLAN tag), Ethernet II carrying IPv4 with IHL 5, not a
 *   fragment, TTL > 1, a valid header checksum and a total length within the frame; TCP with ACK and none of SYN/FIN/RST (those go up: conntrack must see them),
 *   UDP with a sane length, or ICMP echo; a map hit; the packet fits the out MTU, a GSO packet by its
 *   segments (bpf_check_mtu with BPF_MTU_CHK_SEGS: tc redirect checks no MTU itself). Then: addresses,
 *   ports (ICMP: the echo id), checksums, TTL and MACs rewritten, counters bumped, bpf_redirect to the
 *   out device. L4 checksums are not verified (the flowtable does not either; an incremental update
 *   keeps a bad sum bad).
 *
 * Checksums. The plan's one's-complement differences are applied with the by-difference form of the
 * csum helpers (size 0), which handle both kinds of skb: a full checksum gets the whole difference; a
 * CHECKSUM_PARTIAL one (veth, virtio: the field holds the pseudo-header sum) only the addresses' part,
 * so that part is applied with BPF_F_PSEUDO_HDR and the ports' part without it
 * (inet_proto_csum_replace_by_diff). UDP keeps a zero checksum and never writes one
 * (BPF_F_MARK_MANGLED_0, as udp_manip_pkt).
 *
 * IPv6 (nb_ipv6, as nf_flow_offload_ipv6_hook / nf_flow_tuple_ipv6): maps of their own (nb_flows6,
 * nb_stats6: 128-bit addresses in the key, the IPv4 key stays small) filled from the engine's IPv6 plans
 * (engine/fastpath6.py). Carried: a frame for this host, no VLAN tag, version 6, TCP, UDP or ICMPv6 echo
 * right after the fixed header (any extension header goes up: fragments, hop-by-hop, jumbograms), hop limit
 * > 1, 40 + payload_len within the frame; TCP with ACK and none of SYN/FIN/RST, UDP with a sane length and
 * a checksum (a zero one is not allowed on IPv6: RFC 8200 §8.1), ICMPv6 echo of 8 bytes; a map hit; the
 * out MTU as for IPv4 (too big: up, natbox sends Packet Too Big). Then addresses, ports (ICMPv6: the id),
 * the L4 checksum (no header checksum; the addresses' part with BPF_F_PSEUDO_HDR, ICMPv6's too, since its
 * checksum covers the pseudo-header), the hop limit, MACs, counters, bpf_redirect.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define NB_MAX_FLOWS 65536 /* entries of nb_flows and nb_stats: natbox's FLOW_CACHE_MAX */
#define NB_F_L4_REWRITE 1  /* NAT changes the L4 checksum */
#ifdef NB_NEW_FLOWS
#define NEW_FLOWS 1
#else
#define NEW_FLOWS 0
#endif /* the new-connections build: see its section below */

#define IP_OFF ETH_HLEN
#define L4_OFF (ETH_HLEN + sizeof(struct iphdr))
#define IP_CSUM_OFF (IP_OFF + offsetof(struct iphdr, check))
#define IP_TTL_OFF (IP_OFF + offsetof(struct iphdr, ttl))
#define IP_ADDRS_OFF (IP_OFF + offsetof(struct iphdr, saddr))
#define ICMP_ECHOREPLY 0
#define ICMP_ECHO 8
#define PACKET_HOST 0 /* linux/if_packet.h */
#define IP_MF_OFFSET 0x3FFF /* IP_MF | IP_OFFSET */
#define TCP_FLAG_BYTE 13    /* tcphdr's flags byte, after doff */
#define TH_FIN 0x01
#define TH_SYN 0x02
#define TH_RST 0x04
#define TH_ACK 0x10
#define IP6_OFF ETH_HLEN
#define L4_OFF6 (ETH_HLEN + sizeof(struct ipv6hdr))
#define IP6_HOP_OFF (IP6_OFF + offsetof(struct ipv6hdr, hop_limit))
#define IP6_ADDRS_OFF (IP6_OFF + offsetof(struct ipv6hdr, saddr))
#define IPPROTO_ICMPV6_ 58 /* linux/in6.h's IPPROTO_ICMPV6 is an enum member of some libc headers */
#define ICMPV6_ECHO_REQUEST 128
#define ICMPV6_ECHO_REPLY 129

/* an ICMP echo header (linux/icmp.h's icmphdr drags in libc headers a BPF build cannot use) */
struct nb_icmp_echo {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be16 id;
	__be16 sequence;
};

/* one direction of a flow as it arrives: 20 bytes; addresses and ports in network order */
struct nb_key {
	__u32 ifindex;  /* the device it arrives on */
	__be32 saddr;
	__be32 daddr;
	__be16 sport;   /* ICMP echo: the id */
	__be16 dport;   /* ICMP echo: type << 8 | code (conntrack's tuple keeps them there) */
	__u8 proto;
	__u8 pad[3];
};

/* what to do with it: 48 bytes */
struct nb_action {
	__u32 oif;          /* the device it leaves by (bpf_redirect to its egress) */
	__u32 mtu;          /* that device's MTU when natbox planned the flow */
	__u8 dmac[ETH_ALEN];
	__u8 smac[ETH_ALEN];
	__be32 saddr;       /* after both NAT manips */
	__be32 daddr;
	__be16 sport;       /* ICMP echo: the id */
	__be16 dport;
	__u32 l3_diff;      /* __wsum subtracted from the IP checksum: NAT's addresses less the TTL decrement */
	__u32 l4_addr_diff; /* __wsum subtracted from the L4 checksum, the pseudo-header's part */
	__u32 l4_port_diff; /* __wsum subtracted from the L4 checksum, the ports' (ICMP: id's) part */
	__u32 flags;        /* NB_F_* */
};

/* IPv6: one direction of a flow as it arrives, 44 bytes */
struct nb_key6 {
	__u32 ifindex;
	struct in6_addr saddr;
	struct in6_addr daddr;
	__be16 sport;   /* ICMPv6 echo: the id */
	__be16 dport;   /* ICMPv6 echo: type << 8 | code */
	__u8 proto;
	__u8 pad[3];
};

/* IPv6: what to do with it, 68 bytes (no header checksum: no l3_diff) */
struct nb_action6 {
	__u32 oif;
	__u32 mtu;
	__u8 dmac[ETH_ALEN];
	__u8 smac[ETH_ALEN];
	struct in6_addr saddr;
	struct in6_addr daddr;
	__be16 sport;       /* ICMPv6 echo: the id */
	__be16 dport;
	__u32 l4_addr_diff; /* the pseudo-header's part (ICMPv6's checksum covers one too) */
	__u32 l4_port_diff;
	__u32 flags;
};

/* per CPU; natbox sums them (last_seen: the largest) */
struct nb_stats {
	__u64 packets;
	__u64 bytes;        /* IP total lengths, as conntrack's accounting counts */
	__u64 last_seen_ns; /* bpf_ktime_get_ns: CLOCK_MONOTONIC */
};

/* the sizes and offsets natbox/offload/entry.py packs (tests/offload/test_entry.py reads these lines) */
_Static_assert(sizeof(struct nb_key) == 20, "nb_key");
_Static_assert(sizeof(struct nb_action) == 48, "nb_action");
_Static_assert(__builtin_offsetof(struct nb_action, saddr) == 20, "nb_action.saddr");
_Static_assert(__builtin_offsetof(struct nb_action, l3_diff) == 32, "nb_action.l3_diff");
_Static_assert(__builtin_offsetof(struct nb_action, flags) == 44, "nb_action.flags");
_Static_assert(sizeof(struct nb_stats) == 24, "nb_stats");
_Static_assert(sizeof(struct nb_key6) == 44, "nb_key6");
_Static_assert(sizeof(struct nb_action6) == 68, "nb_action6");
_Static_assert(__builtin_offsetof(struct nb_action6, saddr) == 20, "nb_action6.saddr");
_Static_assert(__builtin_offsetof(struct nb_action6, l4_addr_diff) == 56, "nb_action6.l4_addr_diff");
_Static_assert(__builtin_offsetof(struct nb_action6, flags) == 64, "nb_action6.flags");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NB_MAX_FLOWS);
	__type(key, struct nb_key);
	__type(value, struct nb_action);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nb_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, NB_MAX_FLOWS);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* natbox adds the elements; the program only looks them up */
	__type(key, struct nb_key);
	__type(value, struct nb_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nb_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NB_MAX_FLOWS);
	__type(key, struct nb_key6);
	__type(value, struct nb_action6);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nb_flows6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, NB_MAX_FLOWS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct nb_key6);
	__type(value, struct nb_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nb_stats6 SEC(".maps");

static __always_inline int ip_header_ok(struct iphdr *iph)
{
	/* ip_rcv_core's checksum test: the 20 bytes sum to 0xFFFF */
	__s64 sum = bpf_csum_diff(0, 0, (__be32 *)iph, sizeof(*iph), 0);
	__u32 s;

	if (sum < 0)
		return 0;
	s = (__u32)sum;
	s = (s & 0xFFFF) + (s >> 16);
	s = (s & 0xFFFF) + (s >> 16);
	return s == 0xFFFF;
}

/*
 * The steps both branches share (nf_flow_offload_ip_hook and nf_flow_offload_ipv6_hook run the same ones:
 * nf_flow_tuple_ip's ports, nf_flow_exceeds_mtu, nf_flow_nat_port, the neighbour's MACs, flow_offload_refresh's
 * accounting), for the IPv4 branch's or the IPv6 branch's offsets, maps and action fields.
 */

/* the L4 header's part of the key (nf_flow_tuple_ip / nf_flow_tuple_ipv6) at l4_off, behind an l3_len-byte
 * network header in a tot_len-byte datagram: the L4 checksum's offset, or 0: up. TCP: ACK and none of
 * SYN/FIN/RST; otherwise the IPv4 branch of the new-connections build takes it as *unusual (flags | 0x100),
 * every other build goes up. UDP: a sane length (IPv6: and a checksum, a zero one is not allowed: RFC 8200
 * §8.1), *mm0 = BPF_F_MARK_MANGLED_0. ICMP or ICMPv6 echo: the id and type << 8 | code as the ports. */
static __always_inline __u32 nb_l4_key(void *data, void *data_end, __u32 l4_off, __u32 l3_len, __u32 tot_len,
				       __u8 proto, int ipv6, __be16 ports[2], __u64 *mm0, __u32 *unusual)
{
	if (proto == IPPROTO_TCP) {
		struct tcphdr *th = data + l4_off;
		__u8 flags;

		if ((void *)(th + 1) > data_end || tot_len < l3_len + sizeof(*th) || th->doff < 5)
			return 0;
		flags = ((__u8 *)th)[TCP_FLAG_BYTE];
		if (flags & (TH_SYN | TH_FIN | TH_RST) || !(flags & TH_ACK)) {
			if (ipv6 || !NEW_FLOWS)
				return 0;
			*unusual = flags | 0x100; /* only a TRACKED entry (or a template, a SYN) takes it */
		}
		ports[0] = th->source;
		ports[1] = th->dest;
		return l4_off + offsetof(struct tcphdr, check);
	}
	if (proto == IPPROTO_UDP) {
		struct udphdr *uh = data + l4_off;
		__u32 ulen;

		if ((void *)(uh + 1) > data_end || (ipv6 && !uh->check))
			return 0;
		ulen = bpf_ntohs(uh->len);
		if (ulen < sizeof(*uh) || ulen > tot_len - l3_len)
			return 0;
		ports[0] = uh->source;
		ports[1] = uh->dest;
		*mm0 = BPF_F_MARK_MANGLED_0;
		return l4_off + offsetof(struct udphdr, check);
	}
	if (proto == (ipv6 ? IPPROTO_ICMPV6_ : IPPROTO_ICMP)) {
		struct nb_icmp_echo *ih = data + l4_off;
		__u8 echo = ipv6 ? ICMPV6_ECHO_REQUEST : ICMP_ECHO;
		__u8 echo_reply = ipv6 ? ICMPV6_ECHO_REPLY : ICMP_ECHOREPLY;

		if ((void *)(ih + 1) > data_end || tot_len < l3_len + sizeof(*ih)
		    || (ih->type != echo && ih->type != echo_reply))
			return 0;
		ports[0] = ih->id;
		ports[1] = bpf_htons((__u16)ih->type << 8 | ih->code);
		return l4_off + offsetof(struct nb_icmp_echo, checksum);
	}
	return 0; /* IPv6's extension headers and other protocols: the stack's */
}

/* ip_forward's / ip6_forward's MTU test (nf_flow_exceeds_mtu): 1 when the packet may leave by oif. Over the
 * MTU (a GSO packet: a segment, bpf_check_mtu with BPF_MTU_CHK_SEGS; tc redirect checks no MTU itself) it
 * goes up for the stack's fragmentation, frag-needed or Packet Too Big. Ethernet padding is trimmed as
 * ip_rcv_core / ip6_rcv_core trim it (that invalidates the packet pointers: call it after the last read). */
static __always_inline int nb_fits(struct __sk_buff *skb, __u32 oif, __u32 mtu, __u32 tot_len)
{
	__u32 mtu_len = 0;

	if (!skb->gso_size && tot_len > mtu)
		return 0;
	if (bpf_check_mtu(skb, oif, &mtu_len, 0, BPF_MTU_CHK_SEGS))
		return 0;
	if (skb->len > ETH_HLEN + tot_len && !skb->gso_size && bpf_skb_change_tail(skb, ETH_HLEN + tot_len, 0))
		return 0;
	return 1;
}

/* nf_flow_nat_port: the ports (ICMP, ICMPv6 echo: the id) of the header at l4_off from `ports` (the
 * action's sport and dport, adjacent), then its checksum at
 * csum_off by the plan's differences (the top comment: the addresses' part with BPF_F_PSEUDO_HDR); 0, or
 * -1: the packet is half rewritten, shot */
static __always_inline int nb_rewrite_l4(struct __sk_buff *skb, __u32 l4_off, __u32 csum_off, int echo,
					 const __be16 *ports, __u32 flags, __u32 addr_diff, __u32 port_diff, __u64 mm0)
{
	if (echo) {
		if (bpf_skb_store_bytes(skb, l4_off + offsetof(struct nb_icmp_echo, id), ports, sizeof(__be16), 0))
			return -1;
	} else if (bpf_skb_store_bytes(skb, l4_off, ports, 2 * sizeof(__be16), 0)) {
		return -1;
	}
	if (flags & NB_F_L4_REWRITE) {
		if (addr_diff && bpf_l4_csum_replace(skb, csum_off, 0, addr_diff, BPF_F_PSEUDO_HDR | mm0))
			return -1;
		if (port_diff && bpf_l4_csum_replace(skb, csum_off, 0, port_diff, mm0))
			return -1;
	}
	return 0;
}

/* the last step: the neighbour's MACs (dmac, then smac), the flow's counters in `stats` (nb_stats or
 * nb_stats6) under `key`, and out by oif's egress */
static __always_inline int nb_xmit(struct __sk_buff *skb, const __u8 *dmac, void *stats, const void *key,
				   __u32 tot_len, __u32 oif)
{
	struct nb_stats *st;

	if (bpf_skb_store_bytes(skb, 0, dmac, 2 * ETH_ALEN, 0))
		return TC_ACT_SHOT;
	st = bpf_map_lookup_elem(stats, key);
	if (st) {
		st->packets++;
		st->bytes += tot_len;
		st->last_seen_ns = bpf_ktime_get_ns();
	}
	return bpf_redirect(oif, 0);
}

/* the IPv6 branch (see the top comment): nf_flow_offload_ipv6_hook's checks and rewrite */
static __always_inline int nb_ipv6(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct nb_key6 key = {};
	struct nb_action6 *act;
	struct ethhdr *eth;
	struct ipv6hdr *ip6;
	__u32 need = L4_OFF6 + sizeof(struct tcphdr);
	__u32 tot_len, csum_off, unusual = 0;
	__u8 hop, proto;
	__u64 mm0 = 0;

	if (skb->pkt_type != PACKET_HOST || skb->vlan_present || skb->len < L4_OFF6 + sizeof(struct udphdr))
		return TC_ACT_OK;
	if (data + need > data_end) {
		if (skb->len < need)
			need = L4_OFF6 + sizeof(struct udphdr); /* UDP and ICMPv6 echo headers are 8 bytes */
		if (bpf_skb_pull_data(skb, need))
			return TC_ACT_OK;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		if (data + L4_OFF6 + sizeof(struct udphdr) > data_end)
			return TC_ACT_OK;
	}
	eth = data;
	ip6 = data + IP6_OFF;
	/* ip6_forward: hop limit 1 gets Time Exceeded from the stack; payload_len 0 is a jumbogram (hop-by-hop) */
	if (eth->h_proto != bpf_htons(ETH_P_IPV6) || ip6->version != 6 || ip6->hop_limit <= 1 || !ip6->payload_len)
		return TC_ACT_OK;
	tot_len = sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
	if (tot_len > skb->len - ETH_HLEN)
		return TC_ACT_OK;
	key.ifindex = skb->ingress_ifindex;
	__builtin_memcpy(&key.saddr, &ip6->saddr, sizeof(key.saddr));
	__builtin_memcpy(&key.daddr, &ip6->daddr, sizeof(key.daddr));
	key.proto = proto = ip6->nexthdr;
	csum_off = nb_l4_key(data, data_end, L4_OFF6, sizeof(*ip6), tot_len, proto, 1, &key.sport, &mm0, &unusual);
	if (!csum_off)
		return TC_ACT_OK;
	act = bpf_map_lookup_elem(&nb_flows6, &key);
	if (!act)
		return TC_ACT_OK;
	hop = ip6->hop_limit - 1;
	/* ip6_forward's ip6_pkt_too_big: up, for natbox's Packet Too Big */
	if (!nb_fits(skb, act->oif, act->mtu, tot_len))
		return TC_ACT_OK;

	/* committed: from here on the packet leaves by act->oif */
	if (bpf_skb_store_bytes(skb, IP6_ADDRS_OFF, &act->saddr, 2 * sizeof(struct in6_addr), 0)
	    || bpf_skb_store_bytes(skb, IP6_HOP_OFF, &hop, 1, 0)
	    || nb_rewrite_l4(skb, L4_OFF6, csum_off, proto == IPPROTO_ICMPV6_, &act->sport, act->flags, act->l4_addr_diff,
			     act->l4_port_diff, mm0))
		return TC_ACT_SHOT;
	return nb_xmit(skb, act->dmac, &nb_stats6, &key, tot_len, act->oif);
}


/*
 * New connections (issue #16, `natbox gateway --offload-new`; built with -DNB_NEW_FLOWS, without it none of
 * this is in the object). natbox's engine makes a template of a template-safe SYN's decision
 * (engine/template.py): nb_tmpl maps (ifindex, saddr, daddr, dport, proto; sport 0) to both directions'
 * actions with the client's port a wildcard. A SYN (flags exactly SYN) that misses nb_flows and hits a
 * template: the tuples the ct would hold are claimed in nb_ct (BPF_NOEXIST; natbox keeps every ct's tuples
 * there, so a clash goes up; when the SYN's own tuple is marked NB_CT_REOPEN, a closed ct's of a flow the
 * program carried that conntrack's TCP reopen would replace, both tuples are claimed over the marks, which
 * come back when the flow cannot be made: the reply tuple of such a ct is the one the template gives), both directions' entries are created flagged NB_F_TRACKED, and the SYN is
 * copied to the nb_events ring buffer (NB_EV_CREATED) and forwarded. Every later packet of a TRACKED entry
 * (any flags) is copied and forwarded; natbox feeds the copies to its conntrack (gateway/newconn.py) and
 * removes the entries when the connection closes. No room in the ring buffer: the packet goes up to the
 * stack instead (natbox's own path), never forwarded untracked; a SYN goes up already when natbox is
 * NB_EVENTS_BACKLOG behind. A FIN or RST meeting an entry natbox installed
 * for an established connection makes both its directions TRACKED (nb_track_both).
 */
#define NB_F_TRACKED 2          /* action flag: every packet is copied to nb_events */
#define NB_MAX_TEMPLATES 4096   /* engine/template.py TEMPLATE_MAX */
#define NB_MAX_CTS 524288       /* nb_ct: both tuples of 262144 cts (nf_conntrack_max's default) */
#define NB_CT_CLAIMED 1         /* nb_ct value: the program claimed the tuple for a new flow */
#define NB_CT_REOPEN 3          /* nb_ct value: natbox's ct in TIME_WAIT or CLOSE that a SYN would reopen */
#define NB_EVENTS_SIZE (1 << 20) /* bytes of the ring buffer: 8192 copies, a few hundred ms of natbox's work */
#define NB_EV_COPY 96           /* bytes of a packet copied: Ethernet, IPv4 without options, TCP with options */
#define NB_EV_CREATED 1         /* event flag: the SYN that created the entries */
/* new flows only while natbox is less than this far behind (bytes of copies waiting): the rest of the ring
 * buffer is for the packets of the flows already open, which would otherwise go up half-tracked, and a SYN
 * that goes up waits behind at most this much of natbox's work */
#define NB_EVENTS_BACKLOG (NB_EVENTS_SIZE / 4)

struct nb_tmpl {
	struct nb_action orig;  /* sport: each SYN's own */
	struct nb_action reply; /* dport: the SYN's sport */
	struct nb_key reply_key; /* dport: the SYN's sport */
};

struct nb_ct_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct nb_event {
	__u32 ifindex;  /* the device the packet arrived on */
	__u16 copied;   /* bytes in data */
	__u16 flags;    /* NB_EV_* */
	__u32 len;      /* skb->len: the frame's length */
	__u32 pad;
	__u64 ts_ns;    /* bpf_ktime_get_ns */
	__u8 data[NB_EV_COPY];
};

/* natbox/offload/newflows.py packs these (tests/offload/test_newflows.py reads the values) */
#define NB_TMPL_SIZE 116
#define NB_CT_KEY_SIZE 16
#define NB_EVENT_SIZE 120
_Static_assert(sizeof(struct nb_tmpl) == NB_TMPL_SIZE, "nb_tmpl");
_Static_assert(sizeof(struct nb_ct_key) == NB_CT_KEY_SIZE, "nb_ct_key");
_Static_assert(sizeof(struct nb_event) == NB_EVENT_SIZE, "nb_event");

#ifdef NB_NEW_FLOWS
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NB_MAX_TEMPLATES);
	__type(key, struct nb_key);
	__type(value, struct nb_tmpl);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nb_tmpl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NB_MAX_CTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct nb_ct_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nb_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, NB_EVENTS_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nb_events SEC(".maps");

/* the packet as it arrived, to the ring buffer; 0 when it is there */
static __always_inline int nb_copy(struct __sk_buff *skb, __u32 ifindex, __u16 flags)
{
	struct nb_event *ev = bpf_ringbuf_reserve(&nb_events, sizeof(*ev), 0);
	__u64 n = skb->len; /* 64 bits: the verifier keeps its bounds for bpf_skb_load_bytes */

	if (!ev)
		return -1;
	if (n > NB_EV_COPY)
		n = NB_EV_COPY;
	if (n < L4_OFF + sizeof(struct tcphdr) || bpf_skb_load_bytes(skb, 0, ev->data, n)) {
		bpf_ringbuf_discard(ev, 0);
		return -1;
	}
	ev->ifindex = ifindex;
	ev->copied = n;
	ev->flags = flags;
	ev->len = skb->len;
	ev->pad = 0;
	ev->ts_ns = bpf_ktime_get_ns();
	bpf_ringbuf_submit(ev, 0);
	return 0;
}

/* claim tuple `k` for a new flow: free, or (`reopen`) held by a closed ct of natbox's that the SYN reopens
 * (its mark NB_CT_REOPEN, set by natbox once the ct's own entries were gone); 0 when claimed, *was the mark
 * found */
static __always_inline int nb_claim(struct nb_ct_key *k, __u32 *was, int reopen)
{
	__u32 mine = NB_CT_CLAIMED, *cur;

	*was = 0;
	if (!bpf_map_update_elem(&nb_ct, k, &mine, BPF_NOEXIST))
		return 0;
	if (!reopen)
		return -1;
	cur = bpf_map_lookup_elem(&nb_ct, k);
	if (!cur || *cur != NB_CT_REOPEN || bpf_map_update_elem(&nb_ct, k, &mine, BPF_EXIST))
		return -1;
	*was = NB_CT_REOPEN;
	return 0;
}

/* undo nb_claim: the mark back, or the tuple free again */
static __always_inline void nb_unclaim(struct nb_ct_key *k, __u32 was)
{
	if (was)
		bpf_map_update_elem(&nb_ct, k, &was, BPF_EXIST);
	else
		bpf_map_delete_elem(&nb_ct, k);
}

/* a SYN that missed nb_flows: its template's entries, created and claimed (the entry of `key`), or NULL: up */
static __always_inline struct nb_action *nb_new_flow(struct __sk_buff *skb, struct nb_key *key, struct iphdr *iph,
						     __u32 tot_len)
{
	struct nb_key tk = *key, rkey;
	struct nb_ct_key ok = {}, rk = {};
	struct nb_action a;
	struct nb_tmpl *t;
	__u32 ok_was, rk_was, mtu_len = 0;

	tk.sport = 0;
	t = bpf_map_lookup_elem(&nb_tmpl, &tk);
	if (!t || bpf_ringbuf_query(&nb_events, BPF_RB_AVAIL_DATA) > NB_EVENTS_BACKLOG || !ip_header_ok(iph) || tot_len > t->orig.mtu
	    || bpf_check_mtu(skb, t->orig.oif, &mtu_len, 0, BPF_MTU_CHK_SEGS))
		return NULL;
	ok.saddr = key->saddr;
	ok.daddr = key->daddr;
	ok.sport = key->sport;
	ok.dport = key->dport;
	ok.proto = key->proto;
	rkey = t->reply_key;
	rkey.dport = key->sport;
	rk.saddr = rkey.saddr;
	rk.daddr = rkey.daddr;
	rk.sport = rkey.sport;
	rk.dport = rkey.dport;
	rk.proto = rkey.proto;
	if (nb_claim(&ok, &ok_was, 1))
		return NULL;
	if (nb_claim(&rk, &rk_was, ok_was == NB_CT_REOPEN)) /* a reply tuple marked: only the same ct's */
		goto unclaim;
	a = t->reply;
	a.dport = key->sport;
	a.flags |= NB_F_TRACKED;
	if (bpf_map_update_elem(&nb_flows, &rkey, &a, BPF_NOEXIST))
		goto unclaim_both;
	a = t->orig;
	a.sport = key->sport;
	a.flags |= NB_F_TRACKED;
	if (bpf_map_update_elem(&nb_flows, key, &a, BPF_NOEXIST))
		goto unreply;
	if (nb_copy(skb, key->ifindex, NB_EV_CREATED))
		goto unorig;
	return bpf_map_lookup_elem(&nb_flows, key);
unorig:
	bpf_map_delete_elem(&nb_flows, key);
unreply:
	bpf_map_delete_elem(&nb_flows, &rkey);
unclaim_both:
	nb_unclaim(&rk, rk_was);
unclaim:
	nb_unclaim(&ok, ok_was);
	return NULL;
}

/* a FIN or RST of an ordinary entry (a connection natbox offloaded): both directions become TRACKED, so the
 * close reaches natbox's conntrack packet by packet (the kernel's flowtable tears the flow down at once,
 * nf_flow_state_check; natbox removes the entries when it has seen the FIN). The other direction's key is
 * the inverse of what this entry writes, arriving by its out device. */
static __always_inline void nb_track_both(struct nb_action *act, struct nb_key *key)
{
	struct nb_key back = {};
	struct nb_action *other;

	back.ifindex = act->oif;
	back.saddr = act->daddr;
	back.daddr = act->saddr;
	back.sport = act->dport;
	back.dport = act->sport;
	back.proto = key->proto;
	act->flags |= NB_F_TRACKED; /* no 32-bit atomics before -mcpu=v3; natbox rewrites whole values */
	other = bpf_map_lookup_elem(&nb_flows, &back);
	if (other)
		other->flags |= NB_F_TRACKED;
}
#else
static __always_inline void nb_track_both(struct nb_action *act, struct nb_key *key)
{
}

static __always_inline int nb_copy(struct __sk_buff *skb, __u32 ifindex, __u16 flags)
{
	return -1;
}

static __always_inline struct nb_action *nb_new_flow(struct __sk_buff *skb, struct nb_key *key, struct iphdr *iph,
						     __u32 tot_len)
{
	return NULL;
}
#endif

SEC("tc")
int natbox_offload(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct nb_key key = {};
	struct nb_action *act;
	struct ethhdr *eth;
	struct iphdr *iph;
	__u32 need = L4_OFF + sizeof(struct tcphdr);
	__u32 tot_len, csum_off;
	__u8 ttl, proto;
	__u64 mm0 = 0;
	__u32 unusual = 0, created = 0;

	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return nb_ipv6(skb);
	if (data + need > data_end) {
		if (skb->len < L4_OFF + sizeof(struct udphdr))
			return TC_ACT_OK;
		if (skb->len < need)
			need = L4_OFF + sizeof(struct udphdr); /* UDP and ICMP headers are 8 bytes */
		if (bpf_skb_pull_data(skb, need))
			return TC_ACT_OK;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		if (data + L4_OFF + sizeof(struct udphdr) > data_end)
			return TC_ACT_OK;
	}
	eth = data;
	iph = data + IP_OFF;
	/* ip_rcv drops what is not for this host (PACKET_OTHERHOST); broadcasts, multicasts and a VLAN tag
	 * held beside the frame (vlan_present) are the stack's business too */
	if (skb->pkt_type != PACKET_HOST || skb->vlan_present)
		return TC_ACT_OK;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || *(__u8 *)iph != 0x45 || iph->frag_off & bpf_htons(IP_MF_OFFSET)
	    || iph->ttl <= 1)
		return TC_ACT_OK;
	key.ifindex = skb->ingress_ifindex;
	key.saddr = iph->saddr;
	key.daddr = iph->daddr;
	key.proto = proto = iph->protocol;
	tot_len = bpf_ntohs(iph->tot_len);
	if (tot_len > skb->len - ETH_HLEN)
		return TC_ACT_OK;
	csum_off = nb_l4_key(data, data_end, L4_OFF, sizeof(*iph), tot_len, proto, 0, &key.sport, &mm0, &unusual);
	if (!csum_off)
		return TC_ACT_OK;
	act = bpf_map_lookup_elem(&nb_flows, &key);
	if (!act) {
		if (!NEW_FLOWS || unusual != (TH_SYN | 0x100))
			return TC_ACT_OK;
		act = nb_new_flow(skb, &key, iph, tot_len); /* copied to the ring buffer already */
		if (!act)
			return TC_ACT_OK;
		created = 1;
	} else if (unusual && !(act->flags & NB_F_TRACKED)) {
		if (!(unusual & (TH_FIN | TH_RST)))
			return TC_ACT_OK;
		nb_track_both(act, &key);
	}
	if (!ip_header_ok(iph))
		return TC_ACT_OK; /* the stack drops it and counts why */
	ttl = iph->ttl - 1;
	/* ip_forward's MTU test: up for the stack's fragmentation or frag-needed */
	if (!nb_fits(skb, act->oif, act->mtu, tot_len))
		return TC_ACT_OK;

	if (NEW_FLOWS && act->flags & NB_F_TRACKED && !created
	    && (skb->gso_size || nb_copy(skb, key.ifindex, 0)))
		return TC_ACT_OK; /* natbox sees every packet of a TRACKED flow: up when it cannot have a copy */

	/* committed: from here on the packet leaves by act->oif */
	if (bpf_skb_store_bytes(skb, IP_ADDRS_OFF, &act->saddr, 2 * sizeof(__be32), 0)
	    || bpf_skb_store_bytes(skb, IP_TTL_OFF, &ttl, 1, 0)
	    || bpf_l3_csum_replace(skb, IP_CSUM_OFF, 0, act->l3_diff, 0)
	    || nb_rewrite_l4(skb, L4_OFF, csum_off, proto == IPPROTO_ICMP, &act->sport, act->flags, act->l4_addr_diff,
			     act->l4_port_diff, mm0))
		return TC_ACT_SHOT;
	return nb_xmit(skb, act->dmac, &nb_stats, &key, tot_len, act->oif);
}

char _license[] SEC("license") = "GPL";
