"""The NAT core: binding decisions and per-packet rewriting (§1.3, §4).

Mirrors net/netfilter/nf_nat_core.c (`nf_nat_setup_info`, `get_unique_tuple`, `find_appropriate_src`,
`find_best_ips_proto`, `nf_nat_l4proto_unique_tuple`, the `nf_nat_used_tuple*` tests,
`nf_nat_alloc_null_binding`, `nf_nat_packet`, `nf_nat_inet_fn`) and `nf_nat_ipv4_fn`/`nf_nat_ipv6_fn` from
nf_nat_proto.c (one `nf_nat_inet_fn` method for the three), at the 6.x revision the reference describes
(with `nf_nat_used_tuple_new`, the TIME_WAIT eviction of `nf_nat_used_tuple_harder`, and "lowest free
port" for DST manip without --random).

A binding is made once per ct and manip type, on the first packet (§4.1): the nat chain for the hook
runs, a NAT target calls `setup_info`, and if nothing did, `alloc_null_binding`. After that every
packet of the ct is rewritten by `nat_packet` alone.

**bysource** (`find_appropriate_src`, §4.5 step 1b): every ct that went through SRC `setup_info` is
indexed by its ORIGINAL (src addr, src port/id, protocol, zone), newest last. `forget()` is the
kernel's `nf_nat_cleanup_conntrack`: it is registered with the conntrack table's destroy hook
(`ConntrackTable.register_destroy`, done by the constructor or by the first binding made against a
table), so a ct leaves the index the moment it leaves the table (delete, flush, expiry, gc,
early_drop) or dies unconfirmed (`ConntrackTable.destroy_unconfirmed`: a clash at confirm, a NAT
drop). Bound: the index holds the table's SRC-bound entries plus the ct in flight. A walk of a chain
still skips (and unlinks) a ct that is DYING or not confirmed, in case one died by a path that does not
call the hook.

Explanations: when a trace list is given (the skb's `trace`), each decision appends one short line
("SNAT: port 40010 kept", "DNAT: address 203.0.113.15 chosen by jhash2 ...").

Deliberate simplifications: no helpers, so GRE keys never change (PPTP needs a master ct) and no
seqadj; zones are compared by their id in the direction concerned (nf_ct_zone_id); the `found` statistic of
`nf_conntrack_tuple_taken` is left to the conntrack table.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Final

from natbox.conntrack.conn import Conn
from natbox.conntrack.l4proto import nf_ct_l4proto_find
from natbox.conntrack.table import ConntrackTable, zone_id_dir
from natbox.conntrack.tuple import ConnTuple, format_addr, invert
from natbox.nat.choose import (
    LABEL,
    find_best_ips_proto,
    in_range,
    key_name,
    key_of,
    l4proto_in_range,
    part,
    search_note,
    with_key,
)
from natbox.nat.icmp import icmp_reply_translation
from natbox.nat.icmpv6 import icmpv6_reply_translation
from natbox.nat.l4proto import NAT_L4PROTOS, NAT_SEARCH_ID, NAT_SEARCH_PORTS, PORT_CLASSES, nf_nat_l4proto_find
from natbox.nat.manip import manip_pkt, manip_pkt_ports
from natbox.nat.manip6 import nf_nat_ipv6_manip_other
from natbox.nat.range import NatRange, RangeFlags
from natbox.netfilter import (
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    NF_ACCEPT,
    NF_DROP,
    NFPROTO_IPV6,
    CtInfo,
    CtStatus,
    Direction,
    DropReason,
    Hook,
    ManipType,
    TcpState,
)
from natbox.rand import RandomSource
from natbox.skb import Skb
from natbox.wire.icmp import ICMP_REDIRECT
from natbox.wire.icmpv6 import NDISC_REDIRECT
from natbox.wire.layout import ICMPH_TYPE, L4_DPORT, L4_SPORT

# enum members as module constants: `Enum.MEMBER` costs an attribute lookup through EnumType per use
_CTINFO_ESTABLISHED_REPLY: Final = CtInfo.ESTABLISHED_REPLY
_CTINFO_NEW: Final = CtInfo.NEW
_CTINFO_RELATED: Final = CtInfo.RELATED
_CTINFO_RELATED_REPLY: Final = CtInfo.RELATED_REPLY
_DIRN_ORIGINAL: Final = Direction.ORIGINAL
_HOOK_POST_ROUTING: Final = Hook.POST_ROUTING
_MANIP_DST: Final = ManipType.DST
_MANIP_SRC: Final = ManipType.SRC
_NFPROTO_IPV6: Final = NFPROTO_IPV6
_TCPS_SYN_SENT: Final = TcpState.SYN_SENT
_TCPS_TIME_WAIT: Final = TcpState.TIME_WAIT

__all__ = [
    "NF_NAT_HARDER_THRESH",
    "NF_NAT_MAX_ATTEMPTS",
    "NatCore",
    "find_best_ips_proto",
    "in_range",
    "l4proto_in_range",
]

NF_NAT_MAX_ATTEMPTS: Final = 128  # probes in the first round of nf_nat_l4proto_unique_tuple
NF_NAT_HARDER_THRESH: Final = NF_NAT_MAX_ATTEMPTS // 4  # last probes that may evict a closing TCP entry
_MIN_ROUND: Final = 16  # another round is tried only while attempts >= 16: rounds 128, 64, 32, 16, 8

# Each protocol's manip part and search are its NAT record (natbox.nat.l4proto); `.allow_clash`, which
# nf_nat_used_tuple_new asks through nf_ct_l4proto_find like the kernel, is conntrack's record.

_USES_NAT: Final = CtStatus.NAT_MASK | CtStatus.SEQ_ADJUST
_MAY_KILL_REFUSE: Final = CtStatus.FIXED_TIMEOUT | CtStatus.DYING
_OFFLOAD: Final = CtStatus.OFFLOAD | CtStatus.HW_OFFLOAD
_M32: Final = 0xFFFFFFFF
_RANDOM_ALL: Final = int(RangeFlags.PROTO_RANDOM_ALL)
# the range flags as plain ints: `flags & RangeFlags.X` on an IntFlag runs enum.Flag.__and__ and builds a
# new RangeFlags member every time; the tests below read `int(rng.flags)` instead
_MAP_IPS: Final = int(RangeFlags.MAP_IPS)
_PROTO_SPECIFIED: Final = int(RangeFlags.PROTO_SPECIFIED)
_PERSISTENT: Final = int(RangeFlags.PERSISTENT)
_PROTO_OFFSET: Final = int(RangeFlags.PROTO_OFFSET)
_DONE_BIT: Final = {_MANIP_SRC: CtStatus.SRC_NAT_DONE, _MANIP_DST: CtStatus.DST_NAT_DONE}
_DONE_INT: Final = {m: int(bit) for m, bit in _DONE_BIT.items()}
_DST_NAT_DONE: Final = int(CtStatus.DST_NAT_DONE)
_CONFIRMED: Final = CtStatus.CONFIRMED
_NAT_BIT: Final = {_MANIP_SRC: CtStatus.SRC_NAT, _MANIP_DST: CtStatus.DST_NAT}
_LABEL: Final = LABEL
# HOOK2MANIP (§1.3)
_HOOK2MANIP: Final = {hook: ManipType.for_hook(hook) for hook in Hook}
# nf_nat_packet's statusbit, by manip type and packet direction (swapped for REPLY packets, §4.7).
_STATUSBIT: Final = {
    _MANIP_SRC: (int(CtStatus.SRC_NAT), int(CtStatus.DST_NAT)),
    _MANIP_DST: (int(CtStatus.DST_NAT), int(CtStatus.SRC_NAT)),
}
_REPLY_CTINFO: Final = frozenset({_CTINFO_ESTABLISHED_REPLY, _CTINFO_RELATED_REPLY})
_FIRST_CTINFO: Final = frozenset({_CTINFO_NEW, _CTINFO_RELATED, _CTINFO_RELATED_REPLY})  # may still need a binding
_RELATED_CTINFO: Final = frozenset({_CTINFO_RELATED, _CTINFO_RELATED_REPLY})
_TCP_UDP: Final = frozenset({IPPROTO_TCP, IPPROTO_UDP})
# the protocols whose NAT record's manip part is a port (`nf_nat_l4proto_find(p).has_ports`), as a set
_PORT_SEARCH: Final = frozenset(p for p, rec in NAT_L4PROTOS.items() if rec.has_ports)

_BySrcKey = tuple[int, int, int, int]  # (orig src addr, orig src port/id, protocol, zone)


class NatCore:
    """NAT state shared by all hooks: the bysource index, plus the reason of the last DROP."""

    __slots__ = ("_bysource", "_member", "_tables", "drop_reason")

    def __init__(self, table: ConntrackTable | None = None) -> None:
        # bysource chains, oldest first (the kernel adds at the head and walks newest first): the ct itself
        # while a source has one (most have), a list from the second on
        self._bysource: dict[_BySrcKey, Conn | list[Conn]] = {}
        self._member: dict[Conn, _BySrcKey] = {}
        self._tables: list[ConntrackTable] = []  # the tables whose destroy hook runs forget()
        # Why the last NF_DROP returned by nf_nat_ipv4_fn/masquerade happened (None: a rule's DROP).
        self.drop_reason: DropReason | None = None
        if table is not None:
            self.attach(table)

    def __len__(self) -> int:
        """Entries in the bysource index."""
        return len(self._member)

    # --- bysource ----------------------------------------------------------------------------------

    def forget(self, ct: Conn) -> None:
        """`nf_nat_cleanup_conntrack()`: unlink a dead ct from bysource (a no-op if it is not there)."""
        key = self._member.pop(ct, None)
        if key is None:
            return
        chain = self._bysource.get(key)
        if chain is ct:
            del self._bysource[key]
        elif isinstance(chain, list):
            with contextlib.suppress(ValueError):
                chain.remove(ct)
            if not chain:
                del self._bysource[key]

    def attach(self, table: ConntrackTable) -> None:
        """Register `forget` (nf_nat_cleanup_conntrack) with `table`'s destroy hook, once per table."""
        if not any(t is table for t in self._tables):
            self._tables.append(table)
            table.register_destroy(self.forget)

    def restore(self, ct: Conn, table: ConntrackTable) -> None:
        """Index a ct restored from a saved table (natbox.conntrack.persist) as setup_info would have."""
        if ct.status & CtStatus.SRC_NAT_DONE:
            self._bysource_add(ct, table)

    def _bysource_add(self, ct: Conn, table: ConntrackTable) -> None:
        if not self._tables or self._tables[0] is not table:
            self.attach(table)
        orig = ct.tuples[0]
        key = (orig.src, orig.sport, orig.proto, zone_id_dir(ct.zone, 0) if ct.zone else 0)  # zone 0: no call
        bysource = self._bysource
        chain = bysource.get(key)
        if chain is None:
            bysource[key] = ct
        elif isinstance(chain, list):
            chain.append(ct)
        else:
            bysource[key] = [chain, ct]
        self._member[ct] = key

    def find_appropriate_src(self, orig: ConnTuple, rng: NatRange, ct: Conn) -> tuple[ConnTuple, Conn] | None:
        """Mirrors `find_appropriate_src()`: the newest live ct with the same source whose mapping,
        with our destination, is in range (endpoint-independent mapping, §4.5 step 1b)."""
        chain = self._bysource.get((orig.src, orig.sport, orig.proto, zone_id_dir(ct.zone, 0) if ct.zone else 0))
        if chain is None:
            return None
        for other in reversed(chain[:]) if isinstance(chain, list) else (chain,):
            if other.status & CtStatus.DYING or not other.confirmed:
                self.forget(other)
                continue
            mapped = invert(other.tuples[1])
            if mapped is None:
                continue
            result = ConnTuple(mapped.src, mapped.sport, orig.dst, orig.dport, orig.proto)
            if in_range(result, rng):
                return result, other
        return None

    # --- "used" tests (§4.4) -------------------------------------------------------------------------

    @staticmethod
    def _used(t: ConnTuple, ct: Conn, now: float, table: ConntrackTable) -> Conn | None:
        """`nf_nat_used_tuple()`: the other ct that already holds `t`'s future reply tuple, if any."""
        reply = invert(t)
        if reply is None:
            return None
        hit = table.find_taken(reply, ct, now)
        return None if hit is None else hit[0]

    def _used_new(self, t: ConnTuple, ct: Conn, now: float, table: ConntrackTable) -> Conn | None:
        """`nf_nat_used_tuple_new()`: as `_used`, but a non-NAT reverse-direction twin is not a clash."""
        other = self._used(t, ct, now, table)
        if other is None:
            return None
        if not nf_ct_l4proto_find(t.proto).allow_clash or ct.status & _USES_NAT:  # nf_nat_allow_clash
            return other
        hit = table.find_in_zone(t, ct.zone, now)
        if hit is None:
            return None
        clash = hit[0]
        if clash.status & _USES_NAT:
            return other
        if clash.tuples[0] == ct.tuples[1]:
            return None
        return other

    def _used_harder(
        self, t: ConnTuple, ct: Conn, attempts_left: int, *, now: float, table: ConntrackTable,
        trace: list[str] | None,
    ) -> Conn | None:
        """`nf_nat_used_tuple_harder()`: in the last 32 probes, a TCP SYN_SENT ct may evict a closing
        SRC-NATed entry (TIME_WAIT, CLOSE, SYN_SENT2) that holds the port, if its sequence has advanced."""
        tcp = ct.tcp
        if attempts_left > NF_NAT_HARDER_THRESH or t.proto != IPPROTO_TCP or tcp is None \
                or tcp.state != _TCPS_SYN_SENT:
            return self._used(t, ct, now, table)
        reply = invert(t)
        if reply is None:
            return None
        hit = table.find_in_zone(reply, ct.zone, now, Direction.REPLY)
        if hit is None:
            return None
        other, direction = hit
        if direction == _DIRN_ORIGINAL or other is ct:
            return other
        flags = other.status
        otcp = other.tcp
        if otcp is None or otcp.state < _TCPS_TIME_WAIT or flags & _MAY_KILL_REFUSE \
                or not flags & CtStatus.SRC_NAT:
            return other
        advance = (tcp.seen[0].td_end - otcp.seen[0].td_end) & _M32
        if advance == 0 or advance >= 0x80000000:  # (__s32)(new - old) > 0
            return other
        table.delete(other, now, reason="nat_evict")  # nf_ct_kill (the destroy hook unlinks it from bysource)
        if trace is not None:
            trace.append(
                f"{_LABEL[_MANIP_SRC]}: evicted {TcpState(otcp.state).name} ct #{other.ct_id} "
                f"(nf_nat_used_tuple_harder) to reuse {part(t, _MANIP_SRC)}"
            )
        return other if flags & _OFFLOAD else None

    # --- tuple selection -------------------------------------------------------------------------------

    def get_unique_tuple(
        self, orig: ConnTuple, rng: NatRange, ct: Conn, manip: ManipType, *, now: float,
        table: ConntrackTable, rnd: RandomSource, trace: list[str] | None = None,
    ) -> ConnTuple:
        """Mirrors `get_unique_tuple()` (§4.5): the tuple `orig` becomes under `rng` for this manip.

        It may return a tuple that is still in use when the search space is exhausted; the ct then
        fails to confirm (`insert_failed`), as in the kernel.
        """
        flags = int(rng.flags)
        label = _LABEL[manip]
        clash: Conn | None = None
        # 1) SRC manip: keep the original tuple, or reuse this source's current mapping.
        if manip == _MANIP_SRC and not flags & _RANDOM_ALL:
            if in_range(orig, rng):
                clash = self._used_new(orig, ct, now, table)
                if clash is None:
                    if trace is not None:
                        trace.append(f"{label}: {part(orig, manip)} kept (in range, no clash)")
                    return orig
            else:
                found = self.find_appropriate_src(orig, rng, ct)
                if found is not None:
                    cand, owner = found
                    clash = self._used(cand, ct, now, table)
                    if clash is None:
                        if trace is not None:
                            trace.append(f"{label}: reused mapping {part(cand, manip)} of ct #{owner.ct_id} "
                                         "(find_appropriate_src)")
                        return cand
                    if trace is not None:
                        trace.append(f"{label}: mapping {part(cand, manip)} of ct #{owner.ct_id} clashes "
                                     f"with ct #{clash.ct_id}; not reused")

        # 2) the address.
        t = find_best_ips_proto(orig, rng, ct.zone & 0xFFFF, manip)  # zone->id
        if trace is not None and flags & _MAP_IPS and rng.min_addr != rng.max_addr:
            chosen = t.src if manip == _MANIP_SRC else t.dst
            how = "jhash2 of the source (--persistent)" if flags & _PERSISTENT else "jhash2"
            trace.append(f"{label}: address {format_addr(chosen)} chosen by {how} from "
                         f"{format_addr(rng.min_addr)}-{format_addr(rng.max_addr)}")

        # 3) keep the port/id if it is in range and free.
        name = key_name(t.proto) if trace is not None else ""  # (for the trace lines only)
        clash = None
        if not flags & _RANDOM_ALL:
            if flags & _PROTO_SPECIFIED:
                if not flags & _PROTO_OFFSET and l4proto_in_range(t, manip, rng.min_proto, rng.max_proto):
                    if rng.min_proto == rng.max_proto:
                        if trace is not None:
                            trace.append(f"{label}: {name} {key_of(t, manip)} is the single {name} of the range "
                                         "(taken without a clash check)")
                        return t
                    clash = self._used(t, ct, now, table)
                    if clash is None:
                        if trace is not None:
                            trace.append(f"{label}: {name} {key_of(t, manip)} kept (in "
                                         f"{rng.min_proto}-{rng.max_proto}, no clash)")
                        return t
            else:
                clash = self._used(t, ct, now, table)
                if clash is None:
                    if trace is not None:
                        trace.append(f"{label}: {name} {key_of(t, manip)} kept")
                    return t

        # 4) last chance: search the protocol's range.
        return self._l4proto_unique_tuple(t, rng, manip, ct, clash=clash, now=now, table=table, rnd=rnd, trace=trace)

    def _l4proto_unique_tuple(
        self, t: ConnTuple, rng: NatRange, manip: ManipType, ct: Conn, *, clash: Conn | None, now: float,
        table: ConntrackTable, rnd: RandomSource, trace: list[str] | None,
    ) -> ConnTuple:
        """Mirrors `nf_nat_l4proto_unique_tuple()` (§4.5 step 4)."""
        flags = int(rng.flags)
        proto = t.proto
        label = _LABEL[manip]
        name = key_name(proto)
        key = key_of(t, manip)
        search = nf_nat_l4proto_find(proto).search
        if search == NAT_SEARCH_ID:
            if flags & _PROTO_SPECIFIED:
                lo = rng.min_proto
                size = (rng.max_proto - lo + 1) & _M32  # no swap for ICMP; reversed bounds wrap (u32)
            else:
                lo, size = 0, 65536
        elif search == NAT_SEARCH_PORTS:
            if not flags & _PROTO_SPECIFIED:
                if manip == _MANIP_DST:
                    if trace is not None:
                        if clash is not None:
                            trace.append(f"{label}: {part(t, manip)} clashes with ct #{clash.ct_id}; DNAT without "
                                         "a port range never changes the port (confirm will drop it)")
                        else:
                            trace.append(f"{label}: port {key} kept (DNAT without a port range never changes it)")
                    return t
                lo, size = next((lo_, size_) for end, lo_, size_ in PORT_CLASSES if key < end)
            else:
                lo, hi = rng.min_proto, rng.max_proto
                if hi < lo:
                    lo, hi = hi, lo
                size = hi - lo + 1
        else:
            # GRE keys change only for PPTP (a ct with a master); other protocols have no manip part.
            if trace is not None and clash is not None:
                trace.append(f"{label}: {part(t, manip)} clashes with ct #{clash.ct_id}; protocol {proto} has "
                             "nothing else to change (confirm will drop it)")
            return t
        if size == 0:  # only reachable with reversed ICMP id bounds (the kernel would divide by zero)
            return t

        if flags & _PROTO_OFFSET:
            off = (key - rng.base_proto) & 0xFFFF
        elif flags & _RANDOM_ALL or manip != _MANIP_DST:
            off = rnd.getrandbits(16)
        else:
            off = 0
        attempts = min(size, NF_NAT_MAX_ATTEMPTS)
        probes = 0
        cand = t
        while True:
            for i in range(attempts):
                cand = with_key(t, manip, (lo + off % size) & 0xFFFF)
                probes += 1
                if self._used_harder(cand, ct, attempts - i, now=now, table=table, trace=trace) is None:
                    if trace is not None:
                        trace.append(search_note(rng, manip, key=key, clash=clash, lo=lo, size=size, cand=cand,
                                                  probes=probes))
                    return cand
                off = (off + 1) & 0xFFFF
            if attempts >= size or attempts < _MIN_ROUND:
                break
            attempts //= 2
            off = rnd.getrandbits(16)
        if trace is not None:
            plural = "probe" if probes == 1 else "probes"
            trace.append(f"{label}: no free {name} in {lo}-{lo + size - 1} after {probes} {plural}; keeping "
                         f"clashing {part(cand, manip)} (confirm will drop it: insert_failed)")
        return cand

    # --- bindings ----------------------------------------------------------------------------------------

    def setup_info(
        self, ct: Conn, rng: NatRange, manip: ManipType, *, now: float, table: ConntrackTable,
        rnd: RandomSource, trace: list[str] | None = None,
    ) -> int:
        """Mirrors `nf_nat_setup_info()` (§4.2): bind `manip` for an unconfirmed ct; returns NF_ACCEPT.

        A confirmed ct is left alone (NF_ACCEPT); binding a manip twice is the kernel's WARN_ON (NF_DROP).
        """
        if ct.status & _CONFIRMED:
            return NF_ACCEPT
        done = _DONE_BIT[manip]
        if ct.status & done:
            return NF_DROP
        curr = invert(ct.tuples[1])
        if curr is None:  # a tracked ct always inverts; never raise on it
            return NF_DROP
        new = self.get_unique_tuple(curr, rng, ct, manip, now=now, table=table, rnd=rnd, trace=trace)
        if new != curr:
            reply = invert(new)
            if reply is None:
                return NF_DROP
            ct.tuples[1] = reply
            ct.status |= _NAT_BIT[manip]
            if trace is not None:
                trace.append(f"{_LABEL[manip]}: ct #{ct.ct_id} {part(curr, manip)} -> {part(new, manip)}; "
                             f"reply tuple now {reply}")
        if manip == _MANIP_SRC:
            self._bysource_add(ct, table)
        ct.status |= done
        return NF_ACCEPT

    def alloc_null_binding(
        self, ct: Conn, manip: ManipType, *, now: float, table: ConntrackTable, rnd: RandomSource,
        trace: list[str] | None = None,
    ) -> int:
        """Mirrors `__nf_nat_alloc_null_binding()`: MAP_IPS to the current address, ports left to §4.5.

        The current address is the REPLY tuple's dst for SRC manip and its src for DST manip (the reply
        tuple already reflects earlier manips, e.g. a DNAT before this SNAT).
        """
        reply = ct.tuples[1]
        if trace is None and manip == _MANIP_DST and reply[4] in _PORT_SEARCH and not ct.status & _CONFIRMED:
            # setup_info for a DST null binding of a port protocol, where the tuple cannot change:
            # find_best_ips_proto maps the destination to itself, and get_unique_tuple keeps the port
            # whether or not nf_nat_used_tuple finds a clash (DST manip without a port range never
            # changes it, §4.5 step 4). What remains is that clash test (its lookup reaps expired
            # entries and counts `found`) and the DONE bit.
            if ct.status & _DST_NAT_DONE:
                return NF_DROP  # setup_info: a manip bound twice
            curr = invert(reply)
            if curr is None:
                return NF_DROP
            self._used(curr, ct, now, table)
            ct.status |= _DST_NAT_DONE
            return NF_ACCEPT
        addr = reply.dst if manip == _MANIP_SRC else reply.src
        if trace is not None:
            side = "source" if manip == _MANIP_SRC else "destination"
            trace.append(f"null binding ({_LABEL[manip]} to the current {side} {format_addr(addr)}: "
                         "no nat rule bound this flow)")
        return self.setup_info(ct, NatRange.null_binding(addr), manip, now=now, table=table, rnd=rnd, trace=trace)

    # --- per packet ----------------------------------------------------------------------------------------

    def nat_packet(self, skb: Skb, ct: Conn, ctinfo: CtInfo, hook: Hook) -> int:
        """Mirrors `nf_nat_packet()` → `nf_nat_manip_pkt()` (§4.7): rewrite the skb if this hook's
        manip applies to its direction; NF_DROP if the headers it needs are truncated."""
        manip = _HOOK2MANIP[hook]
        direction = 1 if ctinfo in _REPLY_CTINFO else 0
        if not ct.status & _STATUSBIT[manip][direction]:
            return NF_ACCEPT
        trace = skb.trace
        before = "" if trace is None else self._pkt_part(skb, manip)
        # nf_nat_manip_pkt, one rewrite whether or not the packet is traced: the target is
        # invert(ct->tuplehash[!dir].tuple). For TCP and UDP (not CHECKSUM_PARTIAL) its manip half is the other
        # tuple's opposite half, written without building the target (manip_pkt_ports: byte for byte manip_pkt)
        other = ct.tuples[1 - direction]
        proto = other[4]
        if skb.family == _NFPROTO_IPV6:
            ok = nf_nat_ipv6_manip_other(skb.data, other, manip, skb.csum_partial)
        elif proto in _TCP_UDP and not skb.csum_partial:
            if manip == _MANIP_SRC:
                ok = manip_pkt_ports(skb.data, skb.ihl, proto, manip, other[2], other[3])
            else:
                ok = manip_pkt_ports(skb.data, skb.ihl, proto, manip, other[0], other[1])
        else:
            target = invert(other)
            ok = target is not None and manip_pkt(skb.data, skb.ihl, target, manip, partial=skb.csum_partial)
        if ok:
            if trace is not None:
                side = "source" if manip == _MANIP_SRC else "destination"
                trace.append(f"{hook.chain_name} nat: {side} {before} -> {self._pkt_part(skb, manip)} (ct #{ct.ct_id})")
            return NF_ACCEPT
        self.drop_reason = DropReason.NAT_MANIP_FAILED
        skb.note = "nat: transport header truncated"
        if trace is not None:
            trace.append(f"{hook.chain_name} nat: {skb.note}; dropped")
        return NF_DROP

    @staticmethod
    def _pkt_part(skb: Skb, manip: ManipType) -> str:
        addr = skb.saddr if manip == _MANIP_SRC else skb.daddr
        if nf_nat_l4proto_find(skb.protocol).has_ports:
            port = skb.l4_u16(L4_SPORT if manip == _MANIP_SRC else L4_DPORT)
            if port is not None:
                return f"{format_addr(addr)}:{port}"
        return format_addr(addr)

    def nf_nat_inet_fn(
        self, skb: Skb, hook: Hook, *, now: float, table: ConntrackTable, rnd: RandomSource,
        run_chain: Callable[[Skb], int],
    ) -> int:
        """Mirrors the NAT hook function of one of the four NAT hooks, for both families (§1.3, §4.1; IPv6 §3.1):
        `nf_nat_ipv4_fn()` (RELATED ICMP translated) or `nf_nat_ipv6_fn()` (RELATED ICMPv6), then the
        `nf_nat_inet_fn()` both call: the chain or a null binding, the masquerade oif check, `nf_nat_packet`.
        (One function, the family branch taken for RELATED packets only: no call between the two layers.)

        `run_chain(skb)` runs the nat table's chain for `hook` and returns its verdict; the NAT targets
        in it call `setup_info`. The caller handles what the per-hook wrappers do after this returns
        (re-routing when PREROUTING/OUTPUT changed the destination). On NF_DROP, `drop_reason` says why
        (None: a DROP verdict from the chain itself).
        """
        self.drop_reason = None
        ct = skb.ct
        if ct is None:
            return NF_ACCEPT
        ctinfo = skb.ctinfo
        if ctinfo in _RELATED_CTINFO:
            if skb.family != _NFPROTO_IPV6:
                if skb.protocol == IPPROTO_ICMP:  # nf_nat_ipv4_fn
                    verdict = icmp_reply_translation(skb, ct, ctinfo, hook)
                    if verdict != NF_ACCEPT:
                        ihl = skb.ihl
                        redirect = len(skb.data) > ihl + ICMPH_TYPE and skb.data[ihl + ICMPH_TYPE] == ICMP_REDIRECT
                        self.drop_reason = DropReason.NAT_REDIRECT_DROPPED if redirect else DropReason.NAT_ICMP_BAD
                    return verdict
            elif skb.protocol == IPPROTO_ICMPV6:  # nf_nat_ipv6_fn
                verdict = icmpv6_reply_translation(skb, ct, ctinfo, hook, skb.ihl)
                if verdict != NF_ACCEPT:
                    self.drop_reason = DropReason.NAT_REDIRECT_DROPPED if len(skb.data) > skb.ihl and \
                        skb.data[skb.ihl] == NDISC_REDIRECT else DropReason.NAT_ICMP_BAD
                return verdict
        # nf_nat_inet_fn
        manip = _HOOK2MANIP[hook]
        done = _DONE_INT[manip]
        if ctinfo in _FIRST_CTINFO:
            if not ct.status & done:
                verdict = run_chain(skb)
                if verdict != NF_ACCEPT:
                    return verdict
                if not ct.status & done:
                    verdict = self.alloc_null_binding(ct, manip, now=now, table=table, rnd=rnd, trace=skb.trace)
                    if verdict != NF_ACCEPT:
                        return verdict
                return self.nat_packet(skb, ct, ctinfo, hook)
        if (ct.masq_index is not None and hook == _HOOK_POST_ROUTING and ct.masq_index != skb.oif
                and ctinfo not in _REPLY_CTINFO):  # CTINFO2DIR(ctinfo) == IP_CT_DIR_ORIGINAL
            # nf_nat_oif_changed → nf_ct_kill_acct
            direction = int(_DIRN_ORIGINAL)
            ct.acct_packets[direction] += 1
            ct.acct_bytes[direction] += len(skb.data)
            table.delete(ct, now, reason="nat_oif_changed")  # the destroy hook unlinks it from bysource
            ct.status |= CtStatus.DYING
            self.forget(ct)  # (a no-op unless the ct was no longer in the table)
            self.drop_reason = DropReason.NAT_OIF_CHANGED
            skb.note = f"nat: masqueraded via {ct.masq_index}, now leaving via {skb.oif or '(none)'}"
            skb.add_trace(f"POSTROUTING nat: {skb.note}; ct #{ct.ct_id} killed, packet dropped")
            return NF_DROP
        return self.nat_packet(skb, ct, ctinfo, hook)

