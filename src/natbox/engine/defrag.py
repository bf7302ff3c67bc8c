"""IPv4 reassembly as `nf_defrag_ipv4` does it: `ip_defrag()` with bounded memory (§9).

Mirrors net/ipv4/ip_fragment.c (`ip_defrag`, `ip_find`, `ip_frag_too_far`, `ip_frag_reinit`,
`ip_frag_queue`, `ip_frag_reasm`, `ip_expire`) and net/ipv4/inet_fragment.c (`inet_frag_find`,
`inet_frag_queue_insert`, `inet_frag_kill`) of Linux 6.x, as called by
`ipv4_conntrack_defrag()` → `nf_ct_ipv4_gather_frags()` at PRE_ROUTING and LOCAL_OUT (priority -400).

Kernel behaviour reproduced, with where it comes from:

- **Queue key** `(saddr, daddr, id, protocol, user)` (`struct frag_v4_compare_key`; `vif` is the
  l3mdev master, always 0 here). `user` is `IP_DEFRAG_CONNTRACK_IN + zone` at PRE_ROUTING and
  `IP_DEFRAG_CONNTRACK_OUT + zone` at LOCAL_OUT (`nf_ct_defrag_user`).
- **Timer** `ipfrag_time` (30 s) starts when the queue is created and is *not* pushed back by later
  fragments ("RFC791 is wrong proposing to prolongate timer each fragment arrival").
  `ip_frag_reinit` (too-far) restarts it.
- **Overlaps** (`inet_frag_queue_insert`, since 4.19/2018, RFC 5722 with errata 3089): a fragment
  lying wholly inside one already-queued *run* of adjacent fragments is a duplicate: it alone is
  dropped (`SKB_DROP_REASON_DUP_FRAG`) and the queue kept. Any other overlap kills the whole queue
  (IPSTATS_MIB_REASM_OVERLAPS). Runs are the kernel's: fragments that arrive in increasing
  order at the tail extend the last run; one inserted in the middle starts a run of its own.
- **Corrupt geometry** (`discard_qp`): a last fragment ending before data already seen or
  disagreeing with an earlier last fragment, data beyond a known end, or an empty fragment: the
  whole queue is dropped (`FRAG_INVALID`). MF fragments are trimmed to a multiple of 8 bytes.
- **Too big**: checked only at reassembly, `ihl + len > 65535` → queue dropped (`FRAG_TOO_BIG`).
- **ECN** (`ip_frag_ecn_table`, RFC 3168 §5.3): Not-ECT mixed with ECT/CE drops the queue; CE
  mixed with ECT sets CE on the reassembled datagram.
- **Memory** (`inet_frag_find`): when the memory charged to all queues is above
  `ipfrag_high_thresh` (4194304), *every* new fragment is dropped, even one that would complete a
  queue, until timers free memory. Linux 6.x has **no evictor**: the LRU evictor that pruned the
  oldest queues down to `ipfrag_low_thresh` was removed when reassembly moved to rhashtables
  (4.17+); `ipfrag_low_thresh` (3145728) is now only a bound for the sysctl. natbox does the same.
  Each queue is charged `IPQ_SIZE` and each queued fragment its skb truesize, modelled by
  `skb_truesize` (calibrated on a veth lab; the real value depends on how the skb was allocated).
  [V] with high_thresh 8192, eight one-fragment queues were admitted (8256 bytes), then every
  fragment was refused, including both fragments of a new datagram: nothing was evicted.
- **ipfrag_max_dist** (64) applies to the conntrack user too: `ip4_frag_init` takes an inet_peer
  for the source whenever `max_dist` is non-zero, whatever the user, and `ip_frag_too_far` runs
  for every fragment (`IPSKB_FRAG_COMPLETE` is clear: `ip_check_defrag`/`ip_rcv_core` zero the
  IPCB). The peer counts every fragment from that source (all queues, all users); if more than
  `max_dist` others arrived since this queue's previous fragment, the queue is purged and
  restarted with the new fragment (`ip_frag_reinit`; the old fragments are dropped as
  `FRAG_TOO_FAR`, the timer restarts).
- **Reassembled header**: the offset-0 fragment's header (options, TTL, ID kept), `tot_len`
  rewritten, `frag_off` = DF if the largest fragment had DF (IPSKB_FRAG_PMTU) else 0, `tos |= ecn`,
  checksum recomputed. `frag_max_size` = the largest fragment's total length (`max(max_df_size,
  max_size)`); `frag_list` = the payload lengths in offset order, which `ip_do_fragment`'s fast path
  reuses on output (§9: 620/620/28 in, 620/620/28 out, in order, same ID).
- **Expiry and ICMP** (`ip_expire`): the queue is dropped (REASMTIMEOUT). ICMP TIME_EXCEEDED /
  fragment-reassembly-time-exceeded is sent only if the first fragment (offset 0) was received,
  and for the conntrack PRE_ROUTING user only if the datagram was addressed to this host:
  `frag_expire_skip_icmp(user)` is true for IP_DEFRAG_AF_PACKET and the CONNTRACK_IN and
  CONNTRACK_BRIDGE_IN ranges, and then `ip_expire` skips the ICMP unless
  `rt_type == RTN_LOCAL` ("Only an end host needs to send an ICMP Fragment Reassembly Timeout
  message, per RFC792"). A router forwarding the datagram therefore sends nothing. The decision
  is returned as data (`ExpiredQueue.icmp`) for the caller, which owns routing.

[V] Checked against Linux 6.18 in a veth lab (tests/defrag/test_defrag_kernel.py): the §9
reverse-order 620/620/28 case; a straddling fragment after in-order fragments (duplicate, datagram
forwarded) versus after reverse-order ones (overlap, nothing forwarded); 64 same-source fragments
in between purge a queue, 63 do not; the memory limit refuses without evicting and the charged
memory equals /proc/net/sockstat; the timeout ICMP is sent for a local destination only.

Verdicts: the kernel hook returns NF_STOLEN for held fragments *and* for dropped ones (ip_defrag
frees them itself); natbox reports drops as DROP with a reason so they can be counted.

Bounds: at most `high_thresh + IPQ_SIZE + one fragment's truesize` bytes are charged (the check
happens before the fragment is added); every queue holds at least one fragment, so the number of
queues is at most that divided by `IPQ_SIZE + skb_truesize(21)`. The peer table holds one entry per
source address that has a live queue.
"""

from __future__ import annotations

import bisect
import enum
from collections import Counter
from collections.abc import Callable
from typing import Final, NamedTuple

from natbox.netfilter import DropReason, Hook, NfVerdict
from natbox.wire.ipv4 import IP_DF, IP_MF, IP_OFFSET, ip_send_check
from natbox.wire.layout import (
    IPH_ADDRS_END,
    IPH_DADDR,
    IPH_FRAG_OFF,
    IPH_ID,
    IPH_MIN_LEN,
    IPH_PROTOCOL,
    IPH_SADDR,
    IPH_TOS,
    IPH_TOT_LEN,
    IPH_VER_IHL,
)

__all__ = [
    "IPQ_SIZE",
    "IP_DEFRAG_AF_PACKET",
    "IP_DEFRAG_CONNTRACK_BRIDGE_IN",
    "IP_DEFRAG_CONNTRACK_IN",
    "IP_DEFRAG_CONNTRACK_OUT",
    "IP_DEFRAG_LOCAL_DELIVER",
    "DefragResult",
    "ExpiredQueue",
    "IcmpOnExpire",
    "IpDefrag",
    "frag_expire_skip_icmp",
    "nf_ct_defrag_user",
    "skb_truesize",
]

# enum ip_defrag_users (include/net/ip.h)
IP_DEFRAG_LOCAL_DELIVER: Final = 0
IP_DEFRAG_CALL_RA_CHAIN: Final = 1
IP_DEFRAG_CONNTRACK_IN: Final = 2
IP_DEFRAG_CONNTRACK_IN_END: Final = IP_DEFRAG_CONNTRACK_IN + 0xFFFF
IP_DEFRAG_CONNTRACK_OUT: Final = IP_DEFRAG_CONNTRACK_IN_END + 1
IP_DEFRAG_CONNTRACK_OUT_END: Final = IP_DEFRAG_CONNTRACK_OUT + 0xFFFF
IP_DEFRAG_CONNTRACK_BRIDGE_IN: Final = IP_DEFRAG_CONNTRACK_OUT_END + 1
IP_DEFRAG_CONNTRACK_BRIDGE_IN_END: Final = IP_DEFRAG_CONNTRACK_BRIDGE_IN + 0xFFFF
IP_DEFRAG_VS_IN: Final = IP_DEFRAG_CONNTRACK_BRIDGE_IN_END + 1
IP_DEFRAG_VS_OUT: Final = IP_DEFRAG_VS_IN + 1
IP_DEFRAG_VS_FWD: Final = IP_DEFRAG_VS_OUT + 1
IP_DEFRAG_AF_PACKET: Final = IP_DEFRAG_VS_FWD + 1
IP_DEFRAG_MACVLAN: Final = IP_DEFRAG_AF_PACKET + 1

# net.ipv4.ipfrag_* defaults (ipv4_frags_init_net; [V] on the 6.18 box)
IPFRAG_HIGH_THRESH: Final = 4 * 1024 * 1024
IPFRAG_LOW_THRESH: Final = 3 * 1024 * 1024
IPFRAG_TIME: Final = 30.0
IPFRAG_MAX_DIST: Final = 64

IPQ_SIZE: Final = 200  # sizeof(struct ipq) as quoted in ipv4_frags_init_net's comment; charged per queue

# inet_frag_queue flags
_FIRST_IN: Final = 1
_LAST_IN: Final = 2

# ip_frag_ecn_table (inet_fragment.c): index = OR of 1 << (tos & 3) over all fragments
_ECN_NOT_ECT, _ECN_ECT_1, _ECN_ECT_0, _ECN_CE = 0x01, 0x02, 0x04, 0x08
INET_ECN_MASK: Final = 3  # include/net/inet_ecn.h
_ECN_TABLE: Final = [0] * 16
for _i in range(16):
    if _i & _ECN_NOT_ECT and _i & (_ECN_CE | _ECN_ECT_0 | _ECN_ECT_1):
        _ECN_TABLE[_i] = 0xFF
    elif _i & _ECN_CE and _i & (_ECN_ECT_0 | _ECN_ECT_1):
        _ECN_TABLE[_i] = 3  # INET_ECN_CE


def skb_truesize(ip_len: int) -> int:
    """Model of `skb->truesize` of a received fragment of `ip_len` bytes, as charged by `add_frag_mem_limit`.

    Calibrated on Linux 6.18 with frames sent through a veth from an AF_PACKET socket (how scapy and
    natbox's netns labs inject crafted fragments): the skb holds LL_RESERVED_SPACE (16) + the
    Ethernet frame, SKB_DATA_ALIGN'ed to 64, plus skb_shared_info (320); heads up to 576 bytes come
    from skb_small_head_cache (576), larger ones from the kmalloc power-of-two bucket; plus the
    sk_buff (256). /proc/net/sockstat "FRAG: memory" per one-fragment queue was 1032 for 36..220
    byte datagrams, 1480 for 320..620 and 2504 for 1020..1500: exactly IPQ_SIZE + this value. Other
    senders (a local UDP socket, a NIC driver) allocate differently; pass `truesize=` to model them.
    """
    data = ((16 + 14 + ip_len + 63) & ~63) + 320
    size = 576 if data <= 576 else 1 << (data - 1).bit_length()
    return size + 256


def nf_ct_defrag_user(hook: Hook, zone: int = 0) -> int:
    """`nf_ct_defrag_user()` (nf_defrag_ipv4.c): CONNTRACK_IN + zone at PRE_ROUTING, else CONNTRACK_OUT + zone."""
    base = IP_DEFRAG_CONNTRACK_IN if hook == Hook.PRE_ROUTING else IP_DEFRAG_CONNTRACK_OUT
    return base + (zone & 0xFFFF)


def frag_expire_skip_icmp(user: int) -> bool:
    """`frag_expire_skip_icmp()` (ip_fragment.c): users that send the timeout ICMP only as an end host."""
    return (
        user == IP_DEFRAG_AF_PACKET
        or IP_DEFRAG_CONNTRACK_IN <= user <= IP_DEFRAG_CONNTRACK_IN_END
        or IP_DEFRAG_CONNTRACK_BRIDGE_IN <= user <= IP_DEFRAG_CONNTRACK_BRIDGE_IN_END
    )


class IcmpOnExpire(enum.StrEnum):
    """What `ip_expire` would send when the queue times out."""

    NONE = "none"  # the first fragment never arrived: no ICMP
    IF_LOCAL = "if_local"  # ICMP only if the head's input route is RTN_LOCAL (conntrack-in user)
    ALWAYS = "always"  # ICMP if the head's input route lookup succeeds (other users)


class DefragResult(NamedTuple):
    """The outcome of one `IpDefrag.add` call.

    - held: verdict STOLEN, datagram None, reason None;
    - completed: verdict ACCEPT, `datagram` the reassembled bytearray, `frag_max_size`,
      `frag_pmtu` (IPSKB_FRAG_PMTU) and `frag_list` for `ip_do_fragment`;
    - dropped: verdict DROP, `reason` set; `freed` counts other fragments of the queue discarded
      with it (overlap, corrupt geometry, too big, ECN) or purged by too-far reinit.
    """

    verdict: NfVerdict
    datagram: bytearray | None = None
    frag_max_size: int = 0
    frag_pmtu: bool = False
    frag_list: tuple[int, ...] = ()
    reason: DropReason | None = None
    detail: str = ""
    freed: int = 0


class ExpiredQueue(NamedTuple):
    """A queue dropped by `ip_expire`: what the caller needs to count and to send the ICMP."""

    saddr: int
    daddr: int
    ip_id: int
    protocol: int
    user: int
    fragments: int  # held fragments dropped
    icmp: IcmpOnExpire
    head: bytes | None  # the offset-0 fragment (header + its data), quoted by the ICMP; None if absent
    reason: DropReason = DropReason.FRAG_TIMEOUT

    def __str__(self) -> str:
        return str(self.reason)


class _Queue:
    """`struct ipq` + `struct inet_frag_queue`."""

    __slots__ = (
        "ecn",
        "expires",
        "flags",
        "frags",
        "head",
        "key",
        "length",
        "max_df_size",
        "max_size",
        "meat",
        "rid",
        "runs",
        "tail_end",
        "truesize",
    )

    def __init__(self, key: tuple[int, int, int, int, int], expires: float) -> None:
        self.key = key
        self.expires = expires
        self.rid = 0
        self._reset()

    def _reset(self) -> None:
        self.flags = 0
        self.length = 0  # q.len: end of the datagram's data as known so far
        self.meat = 0  # bytes queued
        self.frags: list[tuple[int, bytes]] = []  # (offset, payload), arrival order
        self.runs: list[list[int]] = []  # [start, run_len], sorted, disjoint
        self.tail_end = -1  # end of fragments_tail, -1 when empty
        self.head: bytes = b""  # offset-0 fragment, header + data
        self.max_size = 0
        self.max_df_size = 0
        self.ecn = 0
        self.truesize = 0


_DROP: Final = NfVerdict.DROP
_HELD: Final = DefragResult(NfVerdict.STOLEN)


class IpDefrag:
    """The IPv4 fragment queues of one network namespace (`net->ipv4.fqdir`)."""

    def __init__(
        self,
        *,
        high_thresh: int = IPFRAG_HIGH_THRESH,
        low_thresh: int = IPFRAG_LOW_THRESH,
        timeout: float = IPFRAG_TIME,
        max_dist: int = IPFRAG_MAX_DIST,
        truesize: Callable[[int], int] = skb_truesize,
    ) -> None:
        self.high_thresh = high_thresh
        self.low_thresh = low_thresh  # kept for sysctl parity only: 6.x has no evictor
        self.timeout = timeout
        self.max_dist = max_dist
        self.truesize = truesize
        self.mem = 0  # frag_mem_limit(fqdir): bytes charged to all queues (bounded, see module doc)
        self._queues: dict[tuple[int, int, int, int, int], _Queue] = {}
        self._peers: dict[int, list[int]] = {}  # saddr -> [rid, queues using it]
        self._expired: list[ExpiredQueue] = []  # queues found stale by add(), reported by expire()
        # IPSTATS_MIB_REASM* counters (/proc/net/snmp Ip: ReasmReqds ReasmOKs ReasmFails ...)
        self.mib: Counter[str] = Counter()
        # every fragment freed, by reason (including held ones freed with their queue)
        self.dropped: Counter[DropReason] = Counter()

    def __len__(self) -> int:
        return len(self._queues)

    # --- queue lifetime ----------------------------------------------------------------------

    def _kill(self, q: _Queue) -> int:
        """`inet_frag_kill` + destroy: unhash, uncharge, release the peer. Returns fragments freed."""
        del self._queues[q.key]
        self.mem -= IPQ_SIZE + q.truesize
        peer = self._peers.get(q.key[0])
        if peer is not None:
            peer[1] -= 1
            if peer[1] <= 0:
                del self._peers[q.key[0]]
        return len(q.frags)

    def _expire_queue(self, q: _Queue) -> ExpiredQueue:
        """`ip_expire()`."""
        n = self._kill(q)
        self.mib["ReasmFails"] += 1
        self.mib["ReasmTimeout"] += 1
        self.dropped[DropReason.FRAG_TIMEOUT] += n
        saddr, daddr, ip_id, proto, user = q.key
        if q.flags & _FIRST_IN and q.head:
            icmp = IcmpOnExpire.IF_LOCAL if frag_expire_skip_icmp(user) else IcmpOnExpire.ALWAYS
            head: bytes | None = q.head
        else:
            icmp, head = IcmpOnExpire.NONE, None
        return ExpiredQueue(saddr, daddr, ip_id, proto, user, n, icmp, head)

    def expire(self, now: float) -> list[ExpiredQueue]:
        """Run the queue timers: drop every queue whose `ipfrag_time` has elapsed (`ip_expire`)."""
        out = self._expired
        self._expired = []
        stale = [q for q in self._queues.values() if q.expires <= now]
        out.extend(self._expire_queue(q) for q in stale)
        return out

    def next_deadline(self) -> float | None:
        """When `expire` next has work: the earliest queue timer, or -inf when `add` found queues whose timer
        had passed (they wait to be reported). None: no queue."""
        if self._expired:
            return float("-inf")
        return min((q.expires for q in self._queues.values()), default=None)

    def _fail(
        self, q: _Queue | None, reason: DropReason, detail: str, *, mib: str = "", queued: bool = False
    ) -> DefragResult:
        """Drop this fragment and kill its queue (`discard_qp` / reasm failure). `queued`: it is already in q."""
        freed = self._kill(q) if q is not None else 0
        if queued:
            freed -= 1
        if mib:
            self.mib[mib] += 1
        self.mib["ReasmFails"] += 1
        self.dropped[reason] += 1 + freed
        return DefragResult(_DROP, reason=reason, detail=detail, freed=freed)

    # --- ip_defrag -----------------------------------------------------------------------------

    def add(self, data: bytes | bytearray, now: float, user: int = IP_DEFRAG_CONNTRACK_IN) -> DefragResult:
        """Queue one fragment (`ip_defrag(net, skb, user)`); the datagram must have passed `ip_rcv_core`.

        `user` defaults to IP_DEFRAG_CONNTRACK_IN (zone 0 at PRE_ROUTING); see `nf_ct_defrag_user`.
        A datagram that is not a fragment is returned unchanged as completed.
        """
        self.mib["ReasmReqds"] += 1
        n = len(data)
        ihl = (data[IPH_VER_IHL] & 0x0F) * 4 if n else 0
        if n < IPH_MIN_LEN or ihl < IPH_MIN_LEN or n < ihl:
            return self._fail(None, DropReason.FRAG_INVALID, "truncated IP header")
        frag_word = (data[IPH_FRAG_OFF] << 8) | data[IPH_FRAG_OFF + 1]
        if not frag_word & (IP_MF | IP_OFFSET):
            return DefragResult(NfVerdict.ACCEPT, bytearray(data))

        # inet_frag_find: refuse everything while over the high threshold. Timers the caller has
        # not run yet would already have freed their queues in the kernel: run them first.
        if self.mem > self.high_thresh:
            self._expired.extend(self._expire_queue(q) for q in [q for q in self._queues.values() if q.expires <= now])
        if not self.high_thresh or self.mem > self.high_thresh:
            return self._fail(None, DropReason.FRAG_MEMORY, f"frag memory {self.mem} > {self.high_thresh}")
        key = (
            int.from_bytes(data[IPH_SADDR:IPH_DADDR], "big"),
            int.from_bytes(data[IPH_DADDR:IPH_ADDRS_END], "big"),
            (data[IPH_ID] << 8) | data[IPH_ID + 1],
            data[IPH_PROTOCOL],
            user,
        )
        q = self._queues.get(key)
        if q is not None and q.expires <= now:
            self._expired.append(self._expire_queue(q))  # its timer would already have fired
            q = None
        if q is None:
            q = _Queue(key, now + self.timeout)
            self._queues[key] = q
            self.mem += IPQ_SIZE
            if self.max_dist:
                peer = self._peers.get(key[0])
                if peer is None:
                    self._peers[key[0]] = [0, 1]
                else:
                    peer[1] += 1
        return self._frag_queue(q, data, ihl, frag_word, now)

    def _frag_queue(
        self, q: _Queue, data: bytes | bytearray, ihl: int, frag_word: int, now: float
    ) -> DefragResult:
        """`ip_frag_queue()`."""
        n = len(data)
        freed = 0
        peer = self._peers.get(q.key[0]) if self.max_dist else None
        if peer is not None:  # ip_frag_too_far
            start = q.rid
            peer[0] = (peer[0] + 1) & 0xFFFFFFFF
            end_rid = peer[0]
            q.rid = end_rid
            if q.tail_end >= 0 and ((end_rid - start) & 0xFFFFFFFF) > self.max_dist:
                # ip_frag_reinit: the timer is pending (stale queues were expired above)
                freed = len(q.frags)
                self.mem -= q.truesize
                self.mib["ReasmFails"] += 1
                self.dropped[DropReason.FRAG_TOO_FAR] += freed
                q._reset()
                q.expires = now + self.timeout

        offset = (frag_word & IP_OFFSET) << 3
        end = offset + n - ihl
        if not frag_word & IP_MF:
            if end < q.length or (q.flags & _LAST_IN and end != q.length):
                return self._fail(q, DropReason.FRAG_INVALID, "last fragment disagrees with the queue")
            q.flags |= _LAST_IN
            q.length = end
        else:
            end &= ~7
            if end > q.length:
                if q.flags & _LAST_IN:
                    return self._fail(q, DropReason.FRAG_INVALID, "data beyond the last fragment")
                q.length = end
        if end == offset:
            return self._fail(q, DropReason.FRAG_INVALID, "empty fragment")
        plen = end - offset

        # inet_frag_queue_insert
        runs = q.runs
        tail_end = q.tail_end
        if tail_end < 0:
            runs.append([offset, plen])
            q.tail_end = end
        elif tail_end < end:
            if offset < tail_end:
                return self._fail(q, DropReason.FRAG_OVERLAP, "overlaps the last fragment", mib="ReasmOverlaps")
            if offset == tail_end:
                runs[-1][1] += plen
            else:
                runs.append([offset, plen])
            q.tail_end = end
        else:
            idx = bisect.bisect_left(runs, end, key=_run_start)
            if idx:
                rstart, rlen = runs[idx - 1]
                if rstart + rlen > offset:
                    if rstart <= offset and end <= rstart + rlen:
                        self.mib["ReasmDups"] += 1  # not a kernel MIB: SKB_DROP_REASON_DUP_FRAG
                        self.dropped[DropReason.FRAG_DUP] += 1
                        return DefragResult(_DROP, reason=DropReason.FRAG_DUP, detail="duplicate fragment",
                                            freed=freed)
                    return self._fail(q, DropReason.FRAG_OVERLAP, "overlapping fragment", mib="ReasmOverlaps")
            runs.insert(idx, [offset, plen])

        q.frags.append((offset, bytes(data[ihl : ihl + plen])))
        q.meat += plen
        q.ecn |= 1 << (data[IPH_TOS] & INET_ECN_MASK)
        size = self.truesize(ihl + plen)
        q.truesize += size
        self.mem += size
        if offset == 0:
            q.flags |= _FIRST_IN
            q.head = bytes(data[: ihl + plen])
        fragsize = plen + ihl
        q.max_size = max(q.max_size, fragsize)
        if frag_word & IP_DF:
            q.max_df_size = max(q.max_df_size, fragsize)
        if q.flags == _FIRST_IN | _LAST_IN and q.meat == q.length:
            return self._reasm(q, freed)
        return DefragResult(NfVerdict.STOLEN, freed=freed) if freed else _HELD

    def _reasm(self, q: _Queue, freed: int) -> DefragResult:
        """`ip_frag_reasm()`."""
        ecn = _ECN_TABLE[q.ecn]
        if ecn == 0xFF:
            return self._fail(q, DropReason.FRAG_INVALID, "invalid ECN combination (RFC 3168 5.3)", queued=True)
        head = q.head
        ihl = (head[IPH_VER_IHL] & 0x0F) * 4
        total = ihl + q.length
        if total > 65535:
            return self._fail(q, DropReason.FRAG_TOO_BIG, f"reassembled length {total} > 65535", queued=True)
        self._kill(q)
        q.frags.sort(key=_frag_offset)
        out = bytearray(head[:ihl])
        for _off, payload in q.frags:
            out += payload
        out[IPH_TOT_LEN] = total >> 8
        out[IPH_TOT_LEN + 1] = total & 0xFF
        out[IPH_TOS] |= ecn
        pmtu = q.max_df_size == q.max_size
        out[IPH_FRAG_OFF] = (IP_DF >> 8) if pmtu else 0
        out[IPH_FRAG_OFF + 1] = 0
        ip_send_check(out)
        self.mib["ReasmOKs"] += 1
        return DefragResult(
            NfVerdict.ACCEPT,
            out,
            frag_max_size=max(q.max_df_size, q.max_size),
            frag_pmtu=pmtu,
            frag_list=tuple(len(p) for _o, p in q.frags),
            freed=freed,
        )


def _run_start(run: list[int]) -> int:
    return run[0]


def _frag_offset(frag: tuple[int, bytes]) -> int:
    return frag[0]
