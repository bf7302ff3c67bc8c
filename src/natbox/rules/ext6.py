"""Which extensions ip6tables 1.8.9 loads (its libxt_*.so and libip6t_*.so): the family-independent classes
of `matches.ALL` / `targets.ALL` less the IPv4-only ones (libipt_*.so, and the IPv4 implementation of a
name both families have, such as `ah` or `REJECT`), plus the IPv6 classes listed here. `rules.extensions`
builds ip6tables' name tables from these."""

from __future__ import annotations

from typing import Final

from natbox.rules.matches.exthdr6 import Dst, Frag, Hbh, Ipv6header, Rt
from natbox.rules.matches.icmp6 import Icmp6
from natbox.rules.matches.misc6 import Ah6, Eui64, Hl, Mh
from natbox.rules.matches.srh6 import Srh
from natbox.rules.model import Match, Target
from natbox.rules.targets.targets6 import Dnpt, HlTarget, Netmap6, Redirect6, Reject6, Snpt

__all__ = ["IP6TABLES_MATCH_NAMES", "IP6TABLES_TARGET_NAMES", "IPV4_ONLY_MATCHES", "IPV4_ONLY_TARGETS", "MATCHES6_ALL",
           "TARGETS6_ALL"]

# libipt_* extensions, and names whose IPv6 implementation is another class (not loaded by ip6tables as is)
IPV4_ONLY_MATCHES: frozenset[str] = frozenset({"ah", "icmp", "realm", "ttl", "osf"})
IPV4_ONLY_TARGETS: frozenset[str] = frozenset({"CLUSTERIP", "ECN", "TTL", "ULOG", "REJECT", "NETMAP", "REDIRECT"})

# Every match ip6tables 1.8.9 can load (lower-case libxt_*.so and libip6t_*.so), implemented or not. Not osf:
# libxt_osf is NFPROTO_IPV4 only ("Couldn't load match `osf':No such file or directory", recorded).
IP6TABLES_MATCH_NAMES: Final = frozenset({
    "addrtype", "ah", "bpf", "cgroup", "cluster", "comment", "connbytes", "connlabel", "connlimit", "connmark",
    "conntrack", "cpu", "dccp", "devgroup", "dscp", "dst", "ecn", "esp", "eui64", "frag", "hashlimit", "hbh",
    "helper", "hl", "icmp6", "ipcomp", "iprange", "ipv6header", "ipvs", "length", "limit", "mac", "mark", "mh",
    "multiport", "nfacct", "owner", "physdev", "pkttype", "policy", "quota", "rateest", "recent",
    "rpfilter", "rt", "sctp", "set", "socket", "srh", "state", "statistic", "string", "tcp", "tcpmss", "time",
    "tos", "u32", "udp",
})
# Every target ip6tables 1.8.9 can load, and the verdicts (`-N` refuses these names, recorded).
IP6TABLES_TARGET_NAMES: Final = frozenset({
    "", "standard", "ACCEPT", "DROP", "RETURN", "QUEUE", "AUDIT", "CHECKSUM", "CLASSIFY", "CONNMARK",
    "CONNSECMARK", "CT", "DNAT", "DNPT", "DSCP", "HL", "HMARK", "IDLETIMER", "LED", "LOG", "MARK", "MASQUERADE",
    "NETMAP", "NFLOG", "NFQUEUE", "NOTRACK", "RATEEST", "REDIRECT", "REJECT", "SECMARK", "SET", "SNAT", "SNPT",
    "SYNPROXY", "TCPMSS", "TCPOPTSTRIP", "TEE", "TOS", "TPROXY", "TRACE",
})

MATCHES6_ALL: tuple[type[Match], ...] = (Icmp6, Hl, Ah6, Mh, Eui64, Hbh, Dst, Rt, Frag, Ipv6header, Srh)
TARGETS6_ALL: tuple[type[Target], ...] = (HlTarget, Reject6, Redirect6, Netmap6, Snpt, Dnpt)
