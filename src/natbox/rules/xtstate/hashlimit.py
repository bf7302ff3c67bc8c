"""xt_hashlimit's tables (net/netfilter/xt_hashlimit.c, revision 3), one `HashlimitTable` per `--hashlimit-name`.

Each table is a token bucket per hashed key (`dsthash_dst`: the masked addresses and the ports the mode
names) in the kernel's units: credits per jiffy `CREDITS_PER_JIFFY` (64-bit, revision 2 and 3), the cost
and cap from `user2credits`, bytes mode in `CREDITS_PER_JIFFY_BYTES` chunks of 16 bytes, and the rate-match
windows of revision 3. u64 arithmetic wraps as in C (`U64`), so the overflow check of
`hashlimit_mt_check_common` refuses what the kernel refuses.

Bounds: a table holds at most `max` entries (`--hashlimit-htable-max`, else 8 x the bucket count, which is
`--hashlimit-htable-size` or 8192 on a host with more than 1 GiB of RAM); a new key beyond it is not
tracked (the kernel hotdrops the packet, natbox does not match it: docs/differences.md). The garbage
collector (`htable_gc`, every `gc_interval` ms from the table's creation) runs lazily: before a packet or a
listing, every entry that a run of the kernel's collector would have removed by then is removed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from natbox.rules.xtstate.clock import HZ, msecs_to_jiffies

__all__ = [
    "CREDITS_PER_JIFFY",
    "CREDITS_PER_JIFFY_BYTES",
    "DEFAULT_SIZE",
    "HASHLIMIT_MAX_SIZE",
    "IP6T_SUFFIX",
    "U64",
    "XT_HASHLIMIT_BYTES",
    "XT_HASHLIMIT_HASH_DIP",
    "XT_HASHLIMIT_HASH_DPT",
    "XT_HASHLIMIT_HASH_SIP",
    "XT_HASHLIMIT_HASH_SPT",
    "XT_HASHLIMIT_INVERT",
    "XT_HASHLIMIT_RATE_MATCH",
    "XT_HASHLIMIT_SCALE_V2",
    "DstEnt",
    "HashlimitCfg",
    "HashlimitTable",
    "hashlimit_attach",
    "user2credits",
    "user2credits_byte",
]

U64: Final = (1 << 64) - 1
U32: Final = (1 << 32) - 1
# xt_hashlimit.h
XT_HASHLIMIT_HASH_DIP, XT_HASHLIMIT_HASH_DPT, XT_HASHLIMIT_HASH_SIP, XT_HASHLIMIT_HASH_SPT = 1, 2, 4, 8
XT_HASHLIMIT_INVERT, XT_HASHLIMIT_BYTES, XT_HASHLIMIT_RATE_MATCH = 16, 32, 64
XT_HASHLIMIT_SCALE_V2: Final = 1000000
XT_HASHLIMIT_BYTE_SHIFT: Final = 4
HASHLIMIT_MAX_SIZE: Final = 1048576
DEFAULT_SIZE: Final = 8192  # htable_create without --hashlimit-htable-size on a host with more than 1 GiB of RAM


def _pow2_below(x: int) -> int:
    return 1 << (x.bit_length() - 1)


CREDITS_PER_JIFFY: Final = _pow2_below(U64 // (HZ * 60 * 60 * 24))  # POW2_BELOW64(MAX_CPJ)
CREDITS_PER_JIFFY_BYTES: Final = _pow2_below(U32 // HZ)  # POW2_BELOW32(MAX_CPJ_BYTES)


def user2credits(user: int) -> int:
    """`user2credits()` for revisions 2 and 3 (u64)."""
    scale, cpj = XT_HASHLIMIT_SCALE_V2, CREDITS_PER_JIFFY
    if scale >= HZ * cpj:
        return (user // (scale // (HZ * cpj))) & U64
    return (user * ((HZ * cpj) // scale)) & U64


def user2credits_byte(user: int) -> int:
    """`user2credits_byte()`: the cost of one 16-byte chunk."""
    return (((user & U32) * HZ * CREDITS_PER_JIFFY_BYTES) >> 32) & U32


@dataclass
class HashlimitCfg:
    """`struct hashlimit_cfg3`."""

    mode: int = 0
    avg: int = 0
    burst: int = 5
    size: int = 0
    max: int = 0
    gc_interval: int = 1000
    expire: int = 0
    srcmask: int = 32
    dstmask: int = 32
    interval: int = 0


class DstEnt:
    """`struct dsthash_ent`: one key's bucket (`rateinfo`)."""

    __slots__ = ("burst", "cost", "credit", "credit_cap", "current_rate", "expires", "interval", "prev",
                 "prev_window", "rate")

    def __init__(self) -> None:
        self.expires = self.prev = 0
        self.credit = self.credit_cap = self.cost = 0
        self.interval = self.prev_window = self.current_rate = self.rate = self.burst = 0


class HashlimitTable:
    """`struct xt_hashlimit_htable`: the config of the rule that created it, and its entries by key."""

    __slots__ = ("cfg", "entries", "max", "name", "next_gc", "ratematch", "size", "v6")

    def __init__(self, name: str, cfg: HashlimitCfg, now: int) -> None:
        self.name = name
        self.v6 = False  # an ip6tables table (htable_find_get keys tables by name and family)
        self.cfg = replace(cfg)  # a copy (the rule keeps its own)
        self.size = min(cfg.size, HASHLIMIT_MAX_SIZE) if cfg.size else DEFAULT_SIZE
        mx = min(cfg.max, HASHLIMIT_MAX_SIZE)
        self.max = 8 * self.size if mx == 0 else max(mx, self.size)
        self.ratematch = bool(cfg.mode & XT_HASHLIMIT_RATE_MATCH)
        self.entries: dict[tuple[int, int, int, int], DstEnt] = {}
        self.next_gc = now + msecs_to_jiffies(cfg.gc_interval)

    def gc(self, now: int) -> None:
        """`htable_gc` runs due by `now`: the last one removes every entry expired at its time."""
        if now < self.next_gc:
            return
        step = max(msecs_to_jiffies(self.cfg.gc_interval), 1)
        last = self.next_gc + (now - self.next_gc) // step * step
        self.next_gc = last + step
        for key in [k for k, e in self.entries.items() if last >= e.expires]:
            del self.entries[key]

    def rateinfo_init(self, dh: DstEnt, now: int) -> None:
        """`rateinfo_init()` (revision 3)."""
        cfg = self.cfg
        dh.prev = now
        if cfg.mode & XT_HASHLIMIT_RATE_MATCH:
            dh.prev_window = dh.current_rate = 0
            if cfg.mode & XT_HASHLIMIT_BYTES:
                r = U32 // (cfg.avg & U32) if cfg.avg & U32 else U32
                dh.rate = ((r - 1) << XT_HASHLIMIT_BYTE_SHIFT) & U64  # user2rate_bytes
                dh.burst = cfg.burst * dh.rate if cfg.burst else dh.rate
            else:
                dh.rate = XT_HASHLIMIT_SCALE_V2 // cfg.avg if cfg.avg else 0  # user2rate
                dh.burst = cfg.burst + dh.rate
            dh.interval = cfg.interval
        elif cfg.mode & XT_HASHLIMIT_BYTES:
            dh.credit = CREDITS_PER_JIFFY_BYTES * HZ
            dh.cost = user2credits_byte(cfg.avg)
            dh.credit_cap = cfg.burst
        else:
            dh.credit = user2credits((cfg.avg * cfg.burst) & U64)
            dh.cost = user2credits(cfg.avg)
            dh.credit_cap = dh.credit

    def rateinfo_recalc(self, dh: DstEnt, now: int) -> None:
        """`rateinfo_recalc()` (revision 3)."""
        delta = now - dh.prev
        if delta == 0:
            return
        mode = self.cfg.mode
        if mode & XT_HASHLIMIT_RATE_MATCH:
            interval = dh.interval * HZ
            if delta < interval:
                return
            dh.prev = now
            dh.prev_window = int(((dh.current_rate * interval) & U64) > ((delta * dh.rate) & U64))
            dh.current_rate = 0
            return
        dh.prev = now
        if mode & XT_HASHLIMIT_BYTES:
            tmp = dh.credit
            dh.credit = (dh.credit + CREDITS_PER_JIFFY_BYTES * delta) & U64
            cap = CREDITS_PER_JIFFY_BYTES * HZ
            if tmp >= dh.credit:  # overflow
                dh.credit = cap
                return
        else:
            dh.credit = (dh.credit + delta * CREDITS_PER_JIFFY) & U64
            cap = dh.credit_cap
        dh.credit = min(dh.credit, cap)

    def proc_lines(self, now: int) -> list[str]:
        """/proc/net/ipt_hashlimit/NAME (`dl_seq_real_show`: each entry recalculated, then printed)."""
        self.gc(now)
        out = []
        for (src, dst, sport, dport), e in self.entries.items():
            self.rateinfo_recalc(e, now)
            left = int((e.expires - now) / HZ)
            s, d = (_full6(src), _full6(dst)) if self.v6 else (_dotted(src), _dotted(dst))
            out.append(f"{left} {s}:{sport}->{d}:{dport} {e.credit} {e.credit_cap} {e.cost}")
        return out


def _full6(a: int) -> str:
    """%pI6: eight groups of four hex digits."""
    h = f"{a:032x}"
    return ":".join(h[i:i + 4] for i in range(0, 32, 4))


def _dotted(a: int) -> str:
    return f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}"


IP6T_SUFFIX: Final = "/ip6t"  # ends the key of an ip6tables table in XtState.hashlimit (a name never holds a "/")


def hashlimit_attach(tables: dict[str, HashlimitTable], name: str, cfg: HashlimitCfg,
                     now: int) -> HashlimitTable | None:
    """`hashlimit_mt_check_common`'s table part: the table `name` (created with this rule's config if new),
    or None when it exists with the other kind of rate matching (the kernel refuses the rule)."""
    t = tables.get(name)
    if t is None:
        t = tables[name] = HashlimitTable(name.removesuffix(IP6T_SUFFIX), cfg, now)
        t.v6 = name.endswith(IP6T_SUFFIX)
    elif t.ratematch != bool(cfg.mode & XT_HASHLIMIT_RATE_MATCH):
        return None
    return t
