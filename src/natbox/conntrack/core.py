"""Connection tracking's entry points: classify a packet and confirm its ct (§2.3, §2.5, §2.7).

Mirrors, in nf_conntrack_core.c: `ipv4_get_l4proto`, `nf_ct_get_tuple`, `nf_ct_get_tuplepr`,
`resolve_normal_ct` + `init_conntrack` + `__nf_conntrack_alloc` (table-full handling), `nf_conntrack_in`
(one function for both families: IPv6's layer-3 part is core6.py's `ipv6_conntrack_in`),
`__nf_conntrack_confirm` with `nf_ct_resolve_clash`, `__nf_ct_resolve_clash` and
`nf_ct_resolve_clash_harder`.

Order inside `nf_conntrack_in` (§2.3):

1. An skb that already has a ct (loopback reuse) or is untracked (raw NOTRACK) is left alone; a template
   ct (SYNPROXY's) is taken off, and a new ct gets its seqadj and synproxy extensions.
2. No transport header (a non-first fragment, or a header length beyond the data) → INVALID (`invalid`).
3. ICMP runs the error tracker first; a tracked error gets RELATED / RELATED_REPLY and stops here, a bad
   one is INVALID (`error`).
4. Tuple → lookup (confirmed, unexpired entries only). No hit → a new, **unconfirmed** ct attached to the
   skb only: ORIGINAL = the packet's tuple, REPLY = its inversion. If the table is full (count + 1 > max),
   `early_drop` must free an unassured entry, else the packet is dropped (`drop`).
5. The protocol tracker runs. A negative verdict detaches the ct (INVALID, `invalid`); `-NF_REPEAT` (TCP
   reopen) looks the packet up again.
6. On ESTABLISHED_REPLY, SEEN_REPLY is set. An UPDATE event is emitted for a confirmed ct whose status
   bits (SEEN_REPLY, ASSURED) or TCP state changed, as ctnetlink's event cache would deliver.

Clash resolution at confirm (§2.5), as Linux 6.17+ does it (`nf_ct_can_merge`):

| clash | allow_clash (UDP, UDP-Lite, GRE) | outcome |
|---|---|---|
| none | – | insert both directions, NEW event |
| yes | no (TCP, ICMP, generic) | drop, `insert_failed` + `drop` |
| yes | yes; the existing ct has the same tuples (or reversed) | skb re-attached to it, `clash_resolve` |
| yes | yes; only ORIGINAL clashes | reply-only insert, NAT_CLASH, 1 s FIXED_TIMEOUT, `clash_resolve` |
| yes | yes; otherwise | drop, `insert_failed` + `drop` |

(Kernels before 6.17 also re-attached when the existing ct had no NAT done; for flows without NAT both
rules agree, because such a ct's tuples are then identical to the new one's.)

Zones are not part of the table key here (the table is keyed by the 5-tuple only).
"""

from __future__ import annotations

from typing import Final

from natbox.conntrack.config import ConntrackConfig
from natbox.conntrack.conn import Conn
from natbox.conntrack.l4proto import ALLOW_CLASH, GENERIC, L4PROTOS, PORT_PROTOS, L4Proto, nf_ct_get_tuplepr
from natbox.conntrack.proto.generic import NF_REPEAT_LOOKUP
from natbox.conntrack.proto.icmp import ICMP_ERROR_TRACKED, icmpv4_error
from natbox.conntrack.proto.tcp import tcp_packet
from natbox.conntrack.proto.udp import udp_packet
from natbox.conntrack.seqadj import NfConnSeqadj
from natbox.conntrack.synproxy import NfConnSynproxy
from natbox.conntrack.table import ConntrackTable, CtEventType, zone_id_dir, zone_key
from natbox.conntrack.tuple import ConnTuple, _new_tuple, invert
from natbox.netfilter import (
    IPPROTO_ICMP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    NF_ACCEPT,
    NF_DROP,
    CtInfo,
    CtStatus,
    Direction,
    Hook,
)
from natbox.skb import Skb
from natbox.wire.ipv4 import IP_OFFSET
from natbox.wire.layout import (
    IPH_DADDR,
    IPH_FRAG_OFF,
    IPH_MIN_LEN,
    IPH_PROTOCOL,
    IPH_SADDR,
    IPH_VER_IHL,
    L4_DPORT,
    L4_PORTS_END,
    L4_SPORT,
)

# enum members as module constants: `Enum.MEMBER` costs an attribute lookup through EnumType per use
_CTINFO_ESTABLISHED: Final = CtInfo.ESTABLISHED
_CTINFO_ESTABLISHED_REPLY: Final = CtInfo.ESTABLISHED_REPLY
_CTINFO_INVALID: Final = CtInfo.INVALID
_CTINFO_NEW: Final = CtInfo.NEW
_CTINFO_RELATED: Final = CtInfo.RELATED
_CTINFO_RELATED_REPLY: Final = CtInfo.RELATED_REPLY
_CTINFO_UNTRACKED: Final = CtInfo.UNTRACKED
_DIRN_REPLY: Final = Direction.REPLY

__all__ = [
    "ALLOW_CLASH",
    "EVENT_PROTOINFO",
    "L3Result",
    "get_tuple",
    "get_tuplepr",
    "nf_conntrack_confirm",
    "nf_conntrack_in",
]

# `reason` of an UPDATE event whose ctnetlink message carries CTA_PROTOINFO (the TCP state changed), so
# `conntrack -E` prints the state (see format.format_event).
EVENT_PROTOINFO: Final = "protoinfo"

# Re-lookups after -NF_REPEAT for one packet. The kernel loops until the tracker stops asking; one repeat is
# the normal case (the old ct is gone), so this bound is never reached by a consistent table.
MAX_REPEAT: Final = 8

_PORT_PROTOS: Final = PORT_PROTOS  # tuples with ports (nf_ct_get_tuple_ports), from the l4proto records
_IP_OFFSET_HI: Final = IP_OFFSET >> 8  # IP_OFFSET's bits in the first byte of frag_off
_FRAG_OFF_LO: Final = IPH_FRAG_OFF + 1  # its second byte
_SADDR_END: Final = IPH_SADDR + 4
_DADDR_END: Final = IPH_DADDR + 4
_SEEN_REPLY: Final = CtStatus.SEEN_REPLY
_CONFIRMED: Final = CtStatus.CONFIRMED
_DYING: Final = CtStatus.DYING
_REPLY_CTINFO: Final = frozenset({_CTINFO_ESTABLISHED_REPLY, _CTINFO_RELATED_REPLY})  # CtInfo.direction == REPLY
_EXPECTED: Final = CtStatus.EXPECTED
_TEMPLATE: Final = CtStatus.TEMPLATE
_EVENT_BITS: Final = CtStatus.SEEN_REPLY | CtStatus.ASSURED


def get_tuplepr(data: bytes | bytearray, nhoff: int) -> ConnTuple | None:
    """`nf_ct_get_tuplepr()` (natbox.conntrack.l4proto): the tuple of the IPv4 datagram at `data[nhoff]`."""
    return nf_ct_get_tuplepr(data, nhoff)


def get_tuple(skb: Skb) -> ConnTuple | None:
    """The skb's ORIGINAL-direction tuple (`nf_ct_get_tuple`), or None for a non-first fragment or a
    transport header too short to hold the tuple's fields."""
    return nf_ct_get_tuplepr(skb.data, 0)


# what `ipv6_conntrack_in` (core6.py) hands `nf_conntrack_in`: the packet's tuple, its l4proto, the dataoff
L3Result = tuple[ConnTuple, L4Proto, int]


def nf_conntrack_in(skb: Skb, hook: Hook, now: float, table: ConntrackTable, cfg: ConntrackConfig,
                    l3: L3Result | None = None) -> int:
    """Mirrors `nf_conntrack_in()` (§2.3) with `resolve_normal_ct()`: attach a ct and ctinfo to `skb`; returns
    NF_ACCEPT or NF_DROP.

    Both families run this one function, as in the kernel. The layer-3 part (`get_l4proto`, the ICMP error
    check, `nf_ct_get_tuple`) is IPv4's, inline, unless `l3` gives IPv6's result (`ipv6_conntrack_in` does
    that part and calls this). From the tuple on: look it up (or create an unconfirmed ct), set ctinfo,
    run the protocol's tracker (re-looking up on -NF_REPEAT) and send the UPDATE event.

    An INVALID packet is accepted with `skb.ct = None`, `skb.ctinfo = CtInfo.INVALID` and `skb.note` saying
    why. Never raises on malformed bytes.
    """
    tmpl = skb.ct
    if tmpl is not None:
        if not tmpl.status & _TEMPLATE:
            return NF_ACCEPT  # previously seen (loopback): keep the ct from LOCAL_OUT
        skb.ct = None  # a template (SYNPROXY's, engine/synproxy.py): a new ct takes its extensions
    if skb.untracked:
        skb.ctinfo = _CTINFO_UNTRACKED
        return NF_ACCEPT
    skb.ctinfo = _CTINFO_INVALID
    stats = table.stats
    # the packet's tuple as `key` (`t` the same as a ConnTuple, or None to make one only for a new ct)
    key: tuple[int, int, int, int, int] | None
    t: ConnTuple | None
    if l3 is None:
        data = skb.data
        # ipv4_get_l4proto(data, 0), inline
        # (the fragment offset: the low 5 bits of the flags byte and the byte after it, IP_OFFSET)
        n = len(data)
        if n < IPH_MIN_LEN or data[IPH_FRAG_OFF] & _IP_OFFSET_HI or data[_FRAG_OFF_LO] \
                or (dataoff := (data[IPH_VER_IHL] & 0x0F) * 4) > n or dataoff <= 0:
            stats.invalid += 1
            skb.note = "conntrack: no transport header (fragment or bad header length)"
            return NF_ACCEPT
        proto = data[IPH_PROTOCOL]
        l4proto: L4Proto | None = None  # L4PROTOS' record, looked up only for protocols other than TCP and UDP

        if proto == IPPROTO_ICMP:
            ret = icmpv4_error(skb, dataoff, hook, now, table, cfg, nf_ct_get_tuplepr)
            if ret <= 0:
                stats.error += 1
                skb.ct = None
                skb.ctinfo = _CTINFO_INVALID
                return -ret if ret < 0 else NF_DROP
            if ret == ICMP_ERROR_TRACKED:
                return NF_ACCEPT  # RELATED / RELATED_REPLY error

        if proto in _PORT_PROTOS and n >= dataoff + L4_PORTS_END:
            # ports_pkt_to_tuple as a plain tuple (equal to, and hashed like, the ConnTuple): a ConnTuple is
            # made only for a new ct
            key = (int.from_bytes(data[IPH_SADDR:_SADDR_END], "big"),
                   (data[dataoff + L4_SPORT] << 8) | data[dataoff + L4_SPORT + 1],
                   int.from_bytes(data[IPH_DADDR:_DADDR_END], "big"),
                   (data[dataoff + L4_DPORT] << 8) | data[dataoff + L4_DPORT + 1], proto)
            t = None
        else:
            l4proto = L4PROTOS.get(proto, GENERIC)
            key = t = l4proto.pkt_to_tuple(data, int.from_bytes(data[IPH_SADDR:IPH_SADDR + 4], "big"),
                                           int.from_bytes(data[IPH_DADDR:IPH_DADDR + 4], "big"), dataoff, proto)
            if key is None:
                stats.invalid += 1
                skb.note = "conntrack: transport header too short for a tuple"
                return NF_ACCEPT
    else:
        t, l4proto, dataoff = l3
        key = t
        proto = t[4]

    # resolve_normal_ct (the same tuple for every re-lookup)
    zone = skb.ct_zone  # the zone of the template -j CT --zone attached (raw), else 0
    for _ in range(MAX_REPEAT):
        hit = table.lookup(key, now) if not zone else table.find_in_zone(key, zone, now)
        if hit is None:
            if t is None:
                t = _new_tuple(ConnTuple, key)
            # init_conntrack: the reply tuple first, then the allocation (which may early_drop)
            repl = invert(t)
            if repl is None:
                stats.invalid += 1
                skb.note = f"conntrack: cannot invert the tuple (icmp type {t.dport >> 8} has no reply type)"
                return NF_ACCEPT
            # __nf_conntrack_alloc: nf_conntrack_max 0 means no limit
            if table.max_entries and len(table) + 1 > table.max_entries and not table.early_drop(now):
                table.gc_early_drop = True
                stats.drop += 1
                skb.note = "conntrack: table full, dropping packet"
                return NF_DROP
            conn = Conn(t, repl, now=now, ct_id=table.new_id(), zone=zone)
            if tmpl is not None and tmpl.synproxy is not None:  # init_conntrack: nfct_synproxy_ext_add
                conn.seqadj, conn.synproxy = NfConnSeqadj(), NfConnSynproxy()
            ctinfo = _CTINFO_NEW
            direction = 0
        else:
            conn, found = hit
            if found == _DIRN_REPLY:
                ctinfo = _CTINFO_ESTABLISHED_REPLY
                direction = 1
            else:
                status = conn.status
                if status & _SEEN_REPLY:
                    ctinfo = _CTINFO_ESTABLISHED
                elif status & _EXPECTED:
                    ctinfo = _CTINFO_RELATED
                else:
                    ctinfo = _CTINFO_NEW
                direction = 0
        skb.ct = conn
        skb.ctinfo = ctinfo
        events = table.events_enabled
        if events:  # what an UPDATE event compares with (below)
            tcp = conn.tcp
            before = (conn.status & _EVENT_BITS,
                      tcp.state if tcp is not None else sc.state if (sc := conn.sctp) is not None else -1)

        # nf_conntrack_handle_packet: the protocol's tracker (the ct's protocol is the packet's: its tuple
        # holds it); TCP and UDP called directly, the commonest cases
        if proto == IPPROTO_TCP:
            ret = tcp_packet(conn, skb, dataoff, direction, hook, now, table, cfg)
        elif proto == IPPROTO_UDP:
            ret = udp_packet(conn, skb, dataoff, direction, hook, now, cfg)
        else:
            ret = (l4proto or L4PROTOS.get(proto, GENERIC)).packet(conn, skb, dataoff, direction, hook, now, table, cfg)
        if ret > 0:
            break
        skb.ct = None
        skb.ctinfo = _CTINFO_INVALID
        if ret == NF_REPEAT_LOOKUP:
            continue
        stats.invalid += 1
        if ret == NF_DROP:
            stats.drop += 1
            return NF_DROP
        return NF_ACCEPT
    else:
        stats.invalid += 1
        skb.note = "conntrack: too many re-lookups"
        return NF_ACCEPT

    if ctinfo == _CTINFO_ESTABLISHED_REPLY:
        conn.status |= _SEEN_REPLY
    if events and conn.status & _CONFIRMED and not conn.status & _DYING:
        tcp = conn.tcp
        state = tcp.state if tcp is not None else sc.state if (sc := conn.sctp) is not None else -1
        if (conn.status & _EVENT_BITS, state) != before:
            table.event(CtEventType.UPDATE, conn, now, EVENT_PROTOINFO if state != before[1] else "")
    return NF_ACCEPT


def _can_merge(ct: Conn, loser: Conn) -> bool:
    """Mirrors `nf_ct_can_merge()`: same tuples (and zone), or the same flow seen from the other side."""
    if ct.zone != loser.zone:
        return False
    if ct.tuples[0] == loser.tuples[0] and ct.tuples[1] == loser.tuples[1]:
        return True  # nf_ct_match
    return ct.tuples[0] == loser.tuples[1] and ct.tuples[1] == loser.tuples[0]  # nf_ct_match_reverse


def _merge(skb: Skb, ct: Conn, loser: Conn, table: ConntrackTable) -> int:
    """Mirrors the merge branch of `__nf_ct_resolve_clash()`: the skb continues with the existing ct."""
    direction = skb.ctinfo.direction
    if loser.acct_packets[direction]:  # nf_ct_acct_merge: the loser had an acct extension
        ct.acct_packets[direction] += 1
        ct.acct_bytes[direction] += loser.acct_bytes[direction]
    table.destroy_unconfirmed(loser)  # nf_ct_put(loser): DYING, destroy hooks
    skb.ct = ct
    table.stats.clash_resolve += 1
    return NF_ACCEPT


def nf_conntrack_confirm(skb: Skb, now: float, table: ConntrackTable) -> int:
    """Mirrors `nf_conntrack_confirm()` / `__nf_conntrack_confirm()` (§2.5): insert the skb's new ct.

    Only an unconfirmed ct with an ORIGINAL-direction ctinfo is inserted. Returns NF_ACCEPT or NF_DROP
    (with `skb.note` saying why). A ct that lost a clash, or whose packet is dropped, dies
    (`ConntrackTable.destroy_unconfirmed`: DYING, and the destroy hooks unlink it from NAT's bysource).
    """
    conn = skb.ct
    if conn is None or conn.status & _CONFIRMED:
        return NF_ACCEPT
    if skb.ctinfo in _REPLY_CTINFO:  # CTINFO2DIR(ctinfo) != IP_CT_DIR_ORIGINAL
        return NF_ACCEPT  # REJECT's attached reply-direction packets
    stats = table.stats
    if conn.status & CtStatus.DYING:
        stats.insert_failed += 1
        skb.note = "conntrack: confirm of a dying ct"
        return NF_DROP
    hit = table.clash(conn, now)
    if hit is None:
        table.insert(conn, now)
        return NF_ACCEPT
    winner = hit[0]
    if winner.tuples[0].proto in ALLOW_CLASH:
        if _can_merge(winner, conn):
            return _merge(skb, winner, conn, table)
        # nf_ct_resolve_clash_harder: the reply direction must never clash, unless identical.
        reply = conn.tuples[1]
        rhit = table.lookup(reply if not conn.zone else zone_key(reply, zone_id_dir(conn.zone, 1)), now)
        if rhit is None or rhit[0] is conn:
            table.insert_reply_only(conn, now)
            stats.clash_resolve += 1
            return NF_ACCEPT
        if _can_merge(rhit[0], conn):
            return _merge(skb, rhit[0], conn, table)
    stats.drop += 1
    stats.insert_failed += 1
    table.destroy_unconfirmed(conn)  # the packet is dropped and the ct with it: DYING, destroy hooks
    skb.note = f"conntrack: insert failed, tuple clash with ct #{winner.ct_id}"
    return NF_DROP
