"""The kernel's vocabulary: hooks, verdicts, ctinfo, status bits, manip types, TCP states.

Every name and value here mirrors a kernel or uapi definition so that code elsewhere reads like
the kernel source it reimplements. Values are the kernel's own, so they can be compared with what
`conntrack`, `/proc/net/nf_conntrack` and ctnetlink show.

References (netfilter-semantics.md): §1.1 hooks and priorities, §2.3 ctinfo, §2.4 status bits,
§3.2 TCP states, §4.3 NAT range flags.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = [
    "IPPROTO_ICMP",
    "IPPROTO_ICMPV6",
    "IPPROTO_TCP",
    "IPPROTO_UDP",
    "NFPROTO_IPV4",
    "NFPROTO_IPV6",
    "NF_ACCEPT",
    "NF_DROP",
    "CtInfo",
    "CtStatus",
    "Direction",
    "DropReason",
    "Hook",
    "ManipType",
    "NfVerdict",
    "Priority",
    "TcpState",
]

IPPROTO_ICMP: Final = 1
IPPROTO_ICMPV6: Final = 58
IPPROTO_TCP: Final = 6
IPPROTO_UDP: Final = 17
IPPROTO_GRE: Final = 47
IPPROTO_UDPLITE: Final = 136
IPPROTO_SCTP: Final = 132
IPPROTO_DCCP: Final = 33

# uapi netfilter.h: the address families netfilter hooks are registered for (`nf_conntrack_tuple.src.l3num`)
NFPROTO_IPV4: Final = 2
NFPROTO_IPV6: Final = 10


class Hook(enum.IntEnum):
    """`enum nf_inet_hooks` (uapi netfilter.h)."""

    PRE_ROUTING = 0
    LOCAL_IN = 1
    FORWARD = 2
    LOCAL_OUT = 3
    POST_ROUTING = 4

    @property
    def chain_name(self) -> str:
        """The iptables built-in chain that runs at this hook."""
        return _CHAIN_NAMES[self]


_CHAIN_NAMES: Final = {
    Hook.PRE_ROUTING: "PREROUTING",
    Hook.LOCAL_IN: "INPUT",
    Hook.FORWARD: "FORWARD",
    Hook.LOCAL_OUT: "OUTPUT",
    Hook.POST_ROUTING: "POSTROUTING",
}


class Priority(enum.IntEnum):
    """`enum nf_ip_hook_priorities` (uapi netfilter_ipv4.h), §1.1."""

    FIRST = -(2**31)
    RAW_BEFORE_DEFRAG = -450
    CONNTRACK_DEFRAG = -400
    RAW = -300
    SELINUX_FIRST = -225
    CONNTRACK = -200
    MANGLE = -150
    NAT_DST = -100
    FILTER = 0
    SECURITY = 50
    NAT_SRC = 100
    SELINUX_LAST = 225
    CONNTRACK_HELPER = 300
    CONNTRACK_CONFIRM = 2**31 - 1


class NfVerdict(enum.IntEnum):
    """Netfilter verdicts (uapi netfilter.h). STOLEN: the hook kept the packet (defrag queue)."""

    DROP = 0
    ACCEPT = 1
    STOLEN = 2
    QUEUE = 3
    REPEAT = 4
    STOP = 5


# NfVerdict.DROP and NfVerdict.ACCEPT as plain ints, the one definition every module imports: hot paths
# compare verdicts with `==` and an IntEnum member costs an attribute lookup through EnumType per use.
NF_DROP: Final = 0
NF_ACCEPT: Final = 1

class Direction(enum.IntEnum):
    """`enum ip_conntrack_dir`."""

    ORIGINAL = 0
    REPLY = 1


class CtInfo(enum.IntEnum):
    """`enum ip_conntrack_info`, §2.3. INVALID is natbox's name for "no ct attached"."""

    ESTABLISHED = 0
    RELATED = 1
    NEW = 2
    ESTABLISHED_REPLY = 3
    RELATED_REPLY = 4
    UNTRACKED = 7
    INVALID = 8  # not a kernel value: the kernel leaves skb->_nfct NULL

    @property
    def direction(self) -> Direction:
        """CTINFO2DIR: values >= IP_CT_IS_REPLY (3) are the reply direction."""
        if self in (CtInfo.ESTABLISHED_REPLY, CtInfo.RELATED_REPLY):
            return Direction.REPLY
        return Direction.ORIGINAL


class CtStatus:
    """`enum ip_conntrack_status` bits, §2.4, as plain ints (`ct->status` is an unsigned long).

    Not an IntFlag on purpose: every packet tests several bits, and IntFlag arithmetic builds a new enum
    member per operation (about ten times slower than int arithmetic).
    """

    EXPECTED: Final = 1 << 0
    SEEN_REPLY: Final = 1 << 1
    ASSURED: Final = 1 << 2
    CONFIRMED: Final = 1 << 3
    SRC_NAT: Final = 1 << 4
    DST_NAT: Final = 1 << 5
    SEQ_ADJUST: Final = 1 << 6
    SRC_NAT_DONE: Final = 1 << 7
    DST_NAT_DONE: Final = 1 << 8
    DYING: Final = 1 << 9
    FIXED_TIMEOUT: Final = 1 << 10
    TEMPLATE: Final = 1 << 11
    NAT_CLASH: Final = 1 << 12
    HELPER: Final = 1 << 13
    OFFLOAD: Final = 1 << 14
    HW_OFFLOAD: Final = 1 << 15

    NAT_MASK: Final = SRC_NAT | DST_NAT
    NAT_DONE_MASK: Final = SRC_NAT_DONE | DST_NAT_DONE

    @classmethod
    def names(cls, status: int) -> list[str]:
        """The names of the bits set in `status`, lowest first."""
        return [name for name, bit in _STATUS_BITS if status & bit]


_STATUS_BITS: Final = [(k, v) for k,
    v in vars(CtStatus).items() if k.isupper() and k[0] != '_' and not k.endswith('MASK')]


class ManipType(enum.IntEnum):
    """`enum nf_nat_manip_type`. HOOK2MANIP: POST_ROUTING/LOCAL_IN → SRC, else DST (§1.3)."""

    SRC = 0
    DST = 1

    @staticmethod
    def for_hook(hook: Hook) -> ManipType:
        return ManipType.SRC if hook in (Hook.POST_ROUTING, Hook.LOCAL_IN) else ManipType.DST


class TcpState(enum.IntEnum):
    """`enum tcp_conntrack` (the order is the kernel's; names as `conntrack -L` prints them)."""

    NONE = 0
    SYN_SENT = 1
    SYN_RECV = 2
    ESTABLISHED = 3
    FIN_WAIT = 4
    CLOSE_WAIT = 5
    LAST_ACK = 6
    TIME_WAIT = 7
    CLOSE = 8
    SYN_SENT2 = 9


class DropReason(enum.StrEnum):
    """Why a packet was dropped or marked INVALID. Every value is counted in the engine's stats.

    Names follow the kernel's drop reasons (`enum skb_drop_reason`) and conntrack's invalid-packet
    log strings where one exists.
    """

    # link and IP input (ip_rcv_core): dropped before netfilter
    SHORT_FRAME = "short_frame"
    NOT_IPV4 = "not_ipv4"
    # ip6_rcv_core (IPv6 input, before netfilter)
    IPV6_DISABLED = "ipv6_disabled"
    IP6_HDR_TRUNCATED = "ip6_hdr_truncated"
    IP6_BAD_VERSION = "ip6_bad_version"
    IP6_BAD_SADDR = "ip6_bad_saddr"  # multicast source, ::1 from the wire
    IP6_BAD_DADDR = "ip6_bad_daddr"  # ::1 from the wire, interface-local or scope-0 multicast
    IP6_BAD_PAYLOAD_LEN = "ip6_bad_payload_len"
    IP6_BAD_EXTHDR = "ip6_bad_exthdr"  # a Hop-by-Hop header ipv6_parse_hopopts refuses
    PKT_TOO_BIG = "pkt_too_big"  # ip6_forward: bigger than the out MTU (routers never fragment)
    BEYOND_SCOPE = "beyond_scope"  # a link-local source leaving its link
    IP_HDR_TRUNCATED = "ip_hdr_truncated"
    IP_BAD_VERSION = "ip_bad_version"
    IP_BAD_IHL = "ip_bad_ihl"
    IP_CSUM = "ip_csum"
    IP_BAD_TOTLEN = "ip_bad_totlen"
    IP_BAD_OPTIONS = "ip_bad_options"
    OTHERHOST = "otherhost"
    UNKNOWN_IFACE = "unknown_iface"
    LINK_DOWN = "link_down"
    # routing and forwarding
    NO_ROUTE = "no_route"
    MARTIAN_SOURCE = "martian_source"
    MARTIAN_DESTINATION = "martian_destination"
    FORWARDING_DISABLED = "forwarding_disabled"
    TTL_EXCEEDED = "ttl_exceeded"
    FRAG_NEEDED = "frag_needed"
    NEIGH_FAILED = "neigh_failed"
    NEIGH_QUEUEFULL = "neigh_queuefull"  # SKB_DROP_REASON_NEIGH_QUEUEFULL: unres_qlen_bytes exceeded
    GSO_SEGMENT = "gso_segment"  # skb_gso_segment failed: a GSO packet that does not match its gso_type
    # defragmentation
    FRAG_TIMEOUT = "frag_timeout"
    FRAG_OVERLAP = "frag_overlap"
    FRAG_TOO_BIG = "frag_too_big"
    FRAG_MEMORY = "frag_memory"
    FRAG_TOO_FAR = "frag_too_far"
    FRAG_DUP = "frag_dup"  # SKB_DROP_REASON_DUP_FRAG: a fragment wholly inside data already queued
    FRAG_INVALID = "frag_invalid"  # ip_frag_queue/ip_frag_reasm "corrupted" cases (discard_qp, ECN)
    # netfilter
    RULE_DROP = "rule_drop"
    POLICY_DROP = "policy_drop"
    REJECTED = "rejected"
    CT_TABLE_FULL = "ct_table_full"
    NAT_INSERT_FAILED = "nat_insert_failed"
    NAT_NO_ADDRESS = "nat_no_address"
    NAT_OIF_CHANGED = "nat_oif_changed"
    NAT_ICMP_BAD = "nat_icmp_bad"
    NAT_MANIP_FAILED = "nat_manip_failed"  # nf_nat_manip_pkt: headers it must rewrite are truncated
    NAT_REDIRECT_DROPPED = "nat_redirect_dropped"
    CHAIN_TOO_LONG = "chaintoolong"
    # local delivery
    NO_SOCKET = "no_socket"
