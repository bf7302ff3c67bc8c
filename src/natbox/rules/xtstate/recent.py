"""xt_recent's lists (net/netfilter/xt_recent.c), one `RecentTable` per `--name` in a namespace.

A table holds at most `IP_LIST_TOT` addresses (the module parameter ip_list_tot, default 100): adding one
more first evicts the least recently updated (`recent_entry_init`). Each address keeps the jiffies of its
last `nstamps_max_mask + 1` hits in a ring (`recent_entry_update`). `proc_lines()` is what
/proc/net/xt_recent/NAME prints (`recent_seq_show`), in LRU order where the kernel walks its hash buckets
(randomly seeded), see docs/differences.md.

The lists are shared by iptables and ip6tables rules. A table's `mask` is the `union nf_inet_addr` of the
rule that created it as a 128-bit int (an IPv4 rule's mask is its first word, the rest all ones); an entry
is keyed by its masked address, with 1 << 128 added for an IPv6 one (`recent_entry_lookup` compares the
family too).
"""

from __future__ import annotations

from typing import Final

__all__ = ["IP_LIST_TOT", "XT_RECENT_MAX_NSTAMPS", "RecentEntry", "RecentTable", "nstamp_mask", "recent_attach"]

IP_LIST_TOT: Final = 100  # module parameter ip_list_tot: addresses remembered per list
IP_PKT_LIST_TOT: Final = 0  # module parameter ip_pkt_list_tot (kept for compatibility; 0 by default)
XT_RECENT_MAX_NSTAMPS: Final = 65536


def nstamp_mask(hit_count: int) -> int:
    """The ring size a rule asks for, minus one (`recent_mt_check`)."""
    if IP_PKT_LIST_TOT and hit_count < IP_PKT_LIST_TOT:
        return (1 << (IP_PKT_LIST_TOT - 1).bit_length()) - 1
    if hit_count:
        return (1 << (hit_count - 1).bit_length()) - 1  # roundup_pow_of_two(hit_count) - 1
    return 32 - 1


class RecentEntry:
    """`struct recent_entry`: one (masked) address, its TTL and its ring of hit times."""

    __slots__ = ("addr", "index", "nstamps", "stamps", "ttl")

    def __init__(self, addr: int, ttl: int, now: int, size: int) -> None:
        self.addr, self.ttl = addr, ttl  # addr: the key (an IPv6 address has 1 << 128 added)
        self.stamps = [0] * size
        self.stamps[0] = now
        self.nstamps = 1
        self.index = 1


class RecentTable:
    """`struct recent_table`: addresses in LRU order (a dict keeps insertion order; the head is the oldest)."""

    __slots__ = ("entries", "mask", "name", "nstamps_max_mask")

    def __init__(self, name: str, mask: int, nstamps_max_mask: int) -> None:
        self.name, self.mask, self.nstamps_max_mask = name, mask, nstamps_max_mask
        self.entries: dict[int, RecentEntry] = {}

    def lookup(self, addr: int, ttl: int) -> RecentEntry | None:
        """`recent_entry_lookup`: the address, if its TTL agrees (0 on either side matches any)."""
        e = self.entries.get(addr)
        if e is not None and (ttl in (e.ttl, 0) or e.ttl == 0):
            return e
        return None

    def remove(self, e: RecentEntry) -> None:
        """`recent_entry_remove`."""
        del self.entries[e.addr]

    def init(self, addr: int, ttl: int, now: int) -> RecentEntry:
        """`recent_entry_init`: a new entry, evicting the least recently updated one when the list is full."""
        if len(self.entries) >= IP_LIST_TOT:
            del self.entries[next(iter(self.entries))]
        e = RecentEntry(addr, ttl, now, self.nstamps_max_mask + 1)
        self.entries[addr] = e
        return e

    def update(self, e: RecentEntry, now: int) -> None:
        """`recent_entry_update`: one more hit in the ring, and the entry becomes the most recent."""
        e.index &= self.nstamps_max_mask
        e.stamps[e.index] = now
        e.index += 1
        e.nstamps = max(e.nstamps, e.index)
        del self.entries[e.addr]
        self.entries[e.addr] = e

    def reap(self, time: int, working: RecentEntry, update: bool) -> None:
        """`recent_entry_reap`: drop the oldest entry when its last hit is before `time`."""
        head = self.entries[next(iter(self.entries))]
        if head is working and update:
            return
        if time > head.stamps[head.index - 1]:
            self.remove(head)

    def flush(self) -> None:
        """`recent_table_flush` (also what writing "/" to the /proc file does)."""
        self.entries.clear()

    def proc_lines(self) -> list[str]:
        """/proc/net/xt_recent/NAME (`recent_seq_show`)."""
        out = []
        for e in self.entries.values():
            a = e.addr
            last = e.stamps[(e.index - 1) & self.nstamps_max_mask]
            stamps = "".join(f"{',' if i else ''} {e.stamps[i]}" for i in range(e.nstamps))
            if a >> 128:  # %pI6: eight groups of four hex digits
                h = f"{a & ((1 << 128) - 1):032x}"
                src = ":".join(h[i:i + 4] for i in range(0, 32, 4))
            else:
                src = f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}"
            out.append(f"src={src} ttl: {e.ttl} last_seen: {last} oldest_pkt: {e.index}{stamps}")
        return out


def recent_attach(tables: dict[str, RecentTable], name: str, mask: int, hit_count: int) -> RecentTable:
    """`recent_mt_check`'s table part: find the list `name` (flushed when this rule needs a larger ring,
    whose size it then takes) or create it with this rule's mask."""
    want = nstamp_mask(hit_count)
    t = tables.get(name)
    if t is None:
        t = tables[name] = RecentTable(name, mask, want)
    elif want > t.nstamps_max_mask:
        t.flush()
        t.nstamps_max_mask = want
    return t
