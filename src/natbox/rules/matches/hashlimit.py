"""`-m hashlimit` (libxt_hashlimit.c revision 3, xt_hashlimit.c `hashlimit_mt_common`): a token bucket per key.

Parsing, the final check and both print forms are libxt_hashlimit's (rates in 1/1000000 s, bytes rates as
the cost of a 16-byte chunk, `--hashlimit-burst` with k/m suffixes). The buckets live in the namespace's
tables (`XtContext.xt_state().hashlimit`, natbox.rules.xtstate.hashlimit), found by name: a table keeps the
config of the first rule that named it, as the kernel's `htable_find_get` does.
"""

from __future__ import annotations

import re
from typing import Final

from natbox.netfilter import NFPROTO_IPV6
from natbox.rules.api import XtContext
from natbox.rules.matches._common import parse_uint
from natbox.rules.matches._xtflags import XtFlags, XtOptSpec, parse_plen, parse_plen6
from natbox.rules.matches._xtopt import U32_MAX, parse_value
from natbox.rules.model import RESOURCE_PROBLEM, Match, MatchFn, Opt, Rule, RulesError
from natbox.rules.xtstate import HZ, XtState, jiffies, msecs_to_jiffies
from natbox.rules.xtstate.hashlimit import (
    CREDITS_PER_JIFFY_BYTES,
    IP6T_SUFFIX,
    U64,
    XT_HASHLIMIT_BYTES,
    XT_HASHLIMIT_HASH_DIP,
    XT_HASHLIMIT_HASH_DPT,
    XT_HASHLIMIT_HASH_SIP,
    XT_HASHLIMIT_HASH_SPT,
    XT_HASHLIMIT_INVERT,
    XT_HASHLIMIT_RATE_MATCH,
    XT_HASHLIMIT_SCALE_V2,
    DstEnt,
    HashlimitCfg,
    hashlimit_attach,
    user2credits,
    user2credits_byte,
)
from natbox.skb import Skb
from natbox.wire.layout import IPH_FRAG_OFF, L4_DPORT, L4_PORTS_END, L4_SPORT

__all__ = ["Hashlimit"]

XT_HASHLIMIT_BURST: Final = 5
XT_HASHLIMIT_BURST_MAX: Final = 1000000
XT_HASHLIMIT_BYTE_EXPIRE: Final = 15
XT_HASHLIMIT_BYTE_EXPIRE_BURST: Final = 60
XT_HASHLIMIT_GCINTERVAL: Final = 1000
XT_HASHLIMIT_NAME_LEN: Final = 255  # NAME_MAX: the name field of xt_hashlimit_mtinfo1..3
U32: Final = 0xFFFFFFFF
_PORT_PROTOS: Final = frozenset({6, 17, 33, 132, 136, 51, 50})  # proto_ports_offset() >= 0 (AH/ESP: the SPI)

(O_UPTO, O_ABOVE, O_LIMIT, O_MODE, O_SRCMASK, O_DSTMASK, O_NAME, O_BURST, O_HTABLE_SIZE, O_HTABLE_MAX,
 O_HTABLE_GCINT, O_HTABLE_EXPIRE, O_RATEMATCH, O_INTERVAL) = range(14)
F_UPTO, F_ABOVE = 1 << O_UPTO, 1 << O_ABOVE
_SPECS: Final = (
    XtOptSpec("hashlimit-upto", O_UPTO, excl=F_ABOVE), XtOptSpec("hashlimit-above", O_ABOVE, excl=F_UPTO),
    XtOptSpec("hashlimit", O_UPTO, excl=F_ABOVE), XtOptSpec("hashlimit-srcmask", O_SRCMASK),
    XtOptSpec("hashlimit-dstmask", O_DSTMASK), XtOptSpec("hashlimit-burst", O_BURST),
    XtOptSpec("hashlimit-htable-size", O_HTABLE_SIZE), XtOptSpec("hashlimit-htable-max", O_HTABLE_MAX),
    XtOptSpec("hashlimit-htable-gcinterval", O_HTABLE_GCINT),
    XtOptSpec("hashlimit-htable-expire", O_HTABLE_EXPIRE), XtOptSpec("hashlimit-mode", O_MODE),
    XtOptSpec("hashlimit-name", O_NAME, mand=True), XtOptSpec("hashlimit-rate-match", O_RATEMATCH),
    XtOptSpec("hashlimit-rate-interval", O_INTERVAL),
)
_MODES: Final = {"dstip": XT_HASHLIMIT_HASH_DIP, "srcip": XT_HASHLIMIT_HASH_SIP, "srcport": XT_HASHLIMIT_HASH_SPT,
          "dstport": XT_HASHLIMIT_HASH_DPT}
_RATES: Final = (("day", XT_HASHLIMIT_SCALE_V2 * 86400), ("hour", XT_HASHLIMIT_SCALE_V2 * 3600),
          ("min", XT_HASHLIMIT_SCALE_V2 * 60), ("sec", XT_HASHLIMIT_SCALE_V2))
_UNITS: Final = (("m", 1024 * 1024), ("k", 1024), ("", 1))


def _atoll(text: str) -> int:
    m = re.match(r"\s*([+-]?\d+)", text)
    return int(m.group(1)) if m else 0


def _factor(c: str) -> int:
    return {"m": 1024 * 1024, "k": 1024}.get(c, 1)


def cost_to_bytes(cost: int) -> int:
    r = U32 // cost if cost else U32
    return ((r - 1) << 4) & U64


def bytes_to_cost(b: int) -> int:
    r = (b >> 4) & U32
    return U32 // (r + 1)


def _bad(opt: str, arg: str) -> RulesError:
    return RulesError(f'hashlimit: Bad value for "--{opt}" option: "{arg}"')


def parse_bytes(rate: str) -> int | None:
    """`parse_bytes()`: `N[k|m]b/s` as the cost of a chunk; None when `rate` is not a bytes rate."""
    pos = rate.find("b/s")
    if pos <= 0:
        return None
    r = _atoll(rate)
    if r <= 0:
        return None
    tmp = r * _factor(rate[pos - 1])
    if tmp > U64:
        raise RulesError(f'Rate value too large "{tmp}" (max {U64})')
    cost = bytes_to_cost(tmp)
    if cost == 0:
        raise RulesError(f'Rate too high "{rate}"')
    return cost


def parse_rate(rate: str) -> tuple[int, int] | None:
    """`parse_rate()` (revision 2+): (period in 1/1000000 s, seconds of the unit), None if malformed."""
    mult = 1
    _, slash, unit = rate.partition("/")
    if slash:
        u = unit.lower()
        if not u:
            return None
        for word, m in (("second", 1), ("minute", 60), ("hour", 3600), ("day", 86400)):
            if word.startswith(u):
                mult = m
                break
        else:
            return None
    r = _atoll(rate) & U64
    if not r:
        return None
    tmp = XT_HASHLIMIT_SCALE_V2 * mult // r
    if tmp == 0:
        raise RulesError(f'Rate too fast "{rate}"')
    return tmp, mult


def print_rate(period: int) -> tuple[str, int]:
    """`print_rate()`: the text and the default expire (ms) it implies."""
    if period == 0:
        return " inf", 0
    i = 1
    while i < len(_RATES):
        mult = _RATES[i][1]
        if period > mult or mult // period < mult % period:
            break
        i += 1
    name, mult = _RATES[i - 1]
    return f" {mult // period}/{name}", (mult // XT_HASHLIMIT_SCALE_V2 * 1000) & U32


def print_bytes(avg: int, burst: int, prefix: str) -> tuple[str, int]:
    """`print_bytes()`."""
    r = cost_to_bytes(avg)
    i = 0
    while i < len(_UNITS) - 1:
        th = _UNITS[i][1]
        if r >= th and bytes_to_cost(r & ~(th - 1)) == avg:
            break
        i += 1
    out = f" {r // _UNITS[i][1]}{_UNITS[i][0]}b/s"
    if burst == 0:
        return out, XT_HASHLIMIT_BYTE_EXPIRE * 1000
    r = (r * burst) & U64
    i = 0
    while i < len(_UNITS) - 1 and r < _UNITS[i][1]:
        i += 1
    return out + f" {prefix}burst {r // _UNITS[i][1]}{_UNITS[i][0]}b", XT_HASHLIMIT_BYTE_EXPIRE_BURST * 1000


def _print_mode(mode: int, sep: str) -> str:
    names = [n for bit, n in ((XT_HASHLIMIT_HASH_SIP, "srcip"), (XT_HASHLIMIT_HASH_SPT, "srcport"),
                              (XT_HASHLIMIT_HASH_DIP, "dstip"), (XT_HASHLIMIT_HASH_DPT, "dstport")) if mode & bit]
    return " " + sep.join(names)


def parse_burst(text: str) -> int:
    """`parse_burst()` (revision 2+): a number (k/m suffix), at most 1000000 without a suffix."""
    m = re.match(r"\s*\+?(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)", text)
    err = RulesError(f'bad value for option "--hashlimit-burst", or out of range (1-{XT_HASHLIMIT_BURST_MAX}).')
    if m is None or text.lstrip().startswith("-"):
        raise err
    v = parse_uint(m.group(1), 0, U64)
    end = text[m.end():]
    if v is None or v < 1 or (not end and v > XT_HASHLIMIT_BURST_MAX):
        raise err
    v *= _factor(end[:1])
    if v > U64:
        raise RulesError(f'bad value for option "--hashlimit-burst", value "{text}" too large '
                         f'(max {U64 // 1024 // 1024}mb).')
    return v


class Hashlimit(Match):
    name = "hashlimit"
    revision = 3
    options = (Opt("hashlimit-upto", 1, True), Opt("hashlimit-above", 1, True), Opt("hashlimit", 1, True),
               Opt("hashlimit-srcmask"), Opt("hashlimit-dstmask"), Opt("hashlimit-burst"),
               Opt("hashlimit-htable-size"), Opt("hashlimit-htable-max"), Opt("hashlimit-htable-gcinterval"),
               Opt("hashlimit-htable-expire"), Opt("hashlimit-mode"), Opt("hashlimit-name"),
               Opt("hashlimit-rate-match", 0), Opt("hashlimit-rate-interval"))

    def __init__(self) -> None:
        self.cfg = HashlimitCfg()
        self.table_name = ""
        self.mult = 1  # hashlimit_mt_udata: the rate's unit in seconds
        self.flags = XtFlags("hashlimit", _SPECS)

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        e = self.flags.parse(opt)
        a, cfg = arg or "", self.cfg
        if e.id in (O_UPTO, O_ABOVE):
            if inverted == (e.id == O_UPTO):
                cfg.mode |= XT_HASHLIMIT_INVERT
            cost = parse_bytes(a)
            if cost is not None:
                cfg.avg, self.mult = cost, XT_HASHLIMIT_BYTE_EXPIRE
                cfg.mode |= XT_HASHLIMIT_BYTES
            else:
                pr = parse_rate(a)
                if pr is None:
                    raise _bad("hashlimit-upto" if e.id == O_UPTO else "hashlimit-above", a)
                cfg.avg, self.mult = pr
        elif e.id == O_BURST:
            cfg.burst = parse_burst(a)
        elif e.id in (O_SRCMASK, O_DSTMASK):
            # XTTYPE_PLEN: 0-32, or 0-128 in ip6tables
            plen = parse_plen6("hashlimit", opt, a) if rule.family == NFPROTO_IPV6 else parse_plen("hashlimit", opt, a)
            if e.id == O_SRCMASK:
                cfg.srcmask = plen
            else:
                cfg.dstmask = plen
        elif e.id == O_MODE:
            for tok in re.split(r"[,|]", a):
                if tok and tok not in _MODES:
                    raise _bad("hashlimit-mode", a)
                cfg.mode |= _MODES.get(tok, 0)
        elif e.id == O_NAME:
            if not a:
                raise RulesError("Argument must have a minimum length of 1 characters\n")
            self.table_name = a[:XT_HASHLIMIT_NAME_LEN - 1]
        elif e.id == O_RATEMATCH:
            cfg.mode |= XT_HASHLIMIT_RATE_MATCH
        elif e.id == O_INTERVAL:
            r = _atoll(a)
            if r <= 0:
                raise _bad("hashlimit-rate-interval", a)
            cfg.interval = r & U32
        else:
            v = parse_value("hashlimit", opt, a, U32_MAX)
            if e.id == O_HTABLE_SIZE:
                cfg.size = v
            elif e.id == O_HTABLE_MAX:
                cfg.max = v
            elif e.id == O_HTABLE_GCINT:
                cfg.gc_interval = v
            else:
                cfg.expire = v

    def final_check(self, rule: Rule) -> None:
        """`hashlimit_mt_check()` of libxt_hashlimit (revision 3), then libxtables' option checks
        (`xtables_option_mfcall` runs them in this order)."""
        cfg = self.cfg
        if not self.flags.has(O_UPTO) and not self.flags.has(O_ABOVE):
            raise RulesError("You have to specify --hashlimit")
        if rule.family == NFPROTO_IPV6:  # hashlimit_mt6_init: both masks 128
            cfg.srcmask = cfg.srcmask if self.flags.has(O_SRCMASK) else 128
            cfg.dstmask = cfg.dstmask if self.flags.has(O_DSTMASK) else 128
        if not self.flags.has(O_HTABLE_EXPIRE):
            cfg.expire = self.mult * 1000
        if cfg.mode & XT_HASHLIMIT_BYTES:
            burst = 0
            if self.flags.has(O_BURST):
                unit = cost_to_bytes(cfg.avg)
                if cfg.burst < unit:
                    raise RulesError(f"burst cannot be smaller than {unit}b")
                burst = (cfg.burst // unit + (1 if cfg.burst % unit else 0)) & U32
                if not self.flags.has(O_HTABLE_EXPIRE):
                    cfg.expire = XT_HASHLIMIT_BYTE_EXPIRE_BURST * 1000
            cfg.burst = burst
        elif cfg.burst > XT_HASHLIMIT_BURST_MAX:
            raise RulesError(f'bad value for option "--hashlimit-burst", or out of range (1-{XT_HASHLIMIT_BURST_MAX}).')
        if self.flags.has(O_RATEMATCH):
            if not cfg.mode & XT_HASHLIMIT_BYTES:
                cfg.avg //= self.mult
            if cfg.interval == 0:
                cfg.interval = 1 if cfg.mode & XT_HASHLIMIT_BYTES else self.mult
        self.flags.fcheck()

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        """`hashlimit_mt_check_common()` (and `xt_check_proc_name`)."""
        cfg, n = self.cfg, self.table_name
        top = 128 if rule.family == NFPROTO_IPV6 else 32
        if (n in ("", ".", "..") or "/" in n or cfg.gc_interval == 0 or cfg.expire == 0 or cfg.srcmask > top
                or cfg.dstmask > top):
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)
        if cfg.mode & XT_HASHLIMIT_RATE_MATCH:
            if cfg.avg == 0 or cfg.avg > U32:
                raise RulesError("Numerical result out of range", RESOURCE_PROBLEM, kernel=True)
            if cfg.interval == 0:
                raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)
        elif cfg.mode & XT_HASHLIMIT_BYTES:
            if user2credits_byte(cfg.avg) == 0:
                raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)
        elif cfg.burst == 0 or user2credits((cfg.avg * cfg.burst) & U64) < user2credits(cfg.avg):
            raise RulesError("Numerical result out of range", RESOURCE_PROBLEM, kernel=True)

    def _text(self, pfx: str, save: bool) -> str:
        cfg = self.cfg
        inv = cfg.mode & XT_HASHLIMIT_INVERT
        out = (f" --hashlimit-{'above' if inv else 'upto'}" if save else
               (" limit: above" if inv else " limit: up to"))
        if cfg.mode & XT_HASHLIMIT_BYTES:
            text, quantum = print_bytes(cfg.avg, cfg.burst, pfx)
            out += text
        else:
            period = cfg.avg * cfg.interval if (not save and cfg.interval) else cfg.avg
            text, quantum = print_rate(period)
            out += text + f" {pfx}burst {cfg.burst}"
        if cfg.mode & (XT_HASHLIMIT_HASH_SIP | XT_HASHLIMIT_HASH_SPT | XT_HASHLIMIT_HASH_DIP | XT_HASHLIMIT_HASH_DPT):
            out += f" {pfx}mode" + _print_mode(cfg.mode, "," if save else "-")
        if save:
            out += f" --hashlimit-name {self.table_name}"
        host = 128 if self.family == NFPROTO_IPV6 else 32
        for val, word, show in ((cfg.size, "htable-size", cfg.size != 0), (cfg.max, "htable-max", cfg.max != 0),
                                (cfg.gc_interval, "htable-gcinterval", cfg.gc_interval != XT_HASHLIMIT_GCINTERVAL),
                                (cfg.expire, "htable-expire", cfg.expire != quantum),
                                (cfg.srcmask, "srcmask", cfg.srcmask != host),
                                (cfg.dstmask, "dstmask", cfg.dstmask != host)):
            if show:
                out += f" {pfx}{word} {val}"
        if cfg.mode & XT_HASHLIMIT_RATE_MATCH:
            out += f" {pfx}rate-match"
            if cfg.interval != 1:
                out += f" {pfx}rate-interval {cfg.interval}"
        return out

    def save(self) -> str:
        return self._text("--hashlimit-", True)

    def print_list(self, numeric: bool) -> str:
        return self._text("", False)

    def _key(self) -> str:
        """The table's key in XtState.hashlimit: ip6tables' tables are apart (htable_find_get's family)."""
        return self.table_name + IP6T_SUFFIX if self.family == NFPROTO_IPV6 else self.table_name

    def xt_attach(self, state: XtState) -> tuple[str, str]:
        hashlimit_attach(state.hashlimit, self._key(), self.cfg, jiffies(state.now))
        return "hashlimit", self._key()

    def compile(self) -> MatchFn:
        cfg, name = self.cfg, self._key()
        dst_key = _dst_key6 if self.family == NFPROTO_IPV6 else _dst_key
        mode = cfg.mode
        invert = bool(mode & XT_HASHLIMIT_INVERT)
        byte_cap = CREDITS_PER_JIFFY_BYTES * HZ

        def hashlimit_mt(skb: Skb, ctx: XtContext) -> bool:
            """`hashlimit_mt_common()`."""
            now = jiffies(ctx.now)
            t = hashlimit_attach(ctx.xt_state().hashlimit, name, cfg, now)
            if t is None:
                return False
            key = dst_key(skb, t.cfg)
            if key is None:
                return False  # the kernel hotdrops a later fragment or a cut header
            t.gc(now)
            dh = t.entries.get(key)
            if dh is None:
                if len(t.entries) >= t.max:
                    return False  # "max count of %u reached": the kernel hotdrops
                dh = t.entries[key] = DstEnt()
                dh.expires = now + msecs_to_jiffies(t.cfg.expire)
                t.rateinfo_init(dh, now)
            else:
                dh.expires = now + msecs_to_jiffies(t.cfg.expire)
                t.rateinfo_recalc(dh, now)
            if mode & XT_HASHLIMIT_RATE_MATCH:
                dh.current_rate += len(skb.data) if mode & XT_HASHLIMIT_BYTES else 1
                if not dh.prev_window and dh.current_rate <= dh.burst:
                    return not invert
                return invert
            if mode & XT_HASHLIMIT_BYTES:  # hashlimit_byte_cost()
                cost = min(((len(skb.data) >> 4) + 1) * dh.cost, byte_cap)
                if dh.credit < cost and dh.credit_cap:
                    dh.credit_cap -= 1
                    dh.credit = byte_cap
            else:
                cost = dh.cost
            if dh.credit >= cost:
                dh.credit -= cost
                return not invert
            return invert

        return hashlimit_mt

    def why(self, skb: Skb, ctx: XtContext) -> str:
        return "no match (rate limit)" if not self.cfg.mode & XT_HASHLIMIT_INVERT else "no match (under the limit)"


def _maskl(a: int, plen: int) -> int:
    return a & ((0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF) if plen else 0


def _dst_key(skb: Skb, cfg: HashlimitCfg) -> tuple[int, int, int, int] | None:
    """`hashlimit_init_dst()`: (src, dst, sport, dport) as the table's mode and masks keep them."""
    mode = cfg.mode
    src = _maskl(skb.saddr, cfg.srcmask) if mode & XT_HASHLIMIT_HASH_SIP else 0
    dst = _maskl(skb.daddr, cfg.dstmask) if mode & XT_HASHLIMIT_HASH_DIP else 0
    if not mode & (XT_HASHLIMIT_HASH_DPT | XT_HASHLIMIT_HASH_SPT):
        return src, dst, 0, 0
    data = skb.data
    if ((data[IPH_FRAG_OFF] << 8) | data[IPH_FRAG_OFF + 1]) & 0x1FFF:
        return None
    proto = skb.protocol
    sport = dport = 0
    if proto in _PORT_PROTOS:
        pos = skb.ihl + (4 if proto == 51 else 0)
        if len(data) < pos + L4_PORTS_END:
            return None
        sport = int.from_bytes(data[pos + L4_SPORT:pos + L4_DPORT], "big")
        dport = int.from_bytes(data[pos + L4_DPORT:pos + L4_PORTS_END], "big")
    return (src, dst, sport if mode & XT_HASHLIMIT_HASH_SPT else 0, dport if mode & XT_HASHLIMIT_HASH_DPT else 0)


def _dst_key6(skb: Skb, cfg: HashlimitCfg) -> tuple[int, int, int, int] | None:
    """`hashlimit_init_dst()` for IPv6: masked 128-bit addresses (`hashlimit_ipv6_mask`); the ports after
    `ipv6_skip_exthdr` (a non-first fragment has none: its protocol is the Fragment header's, ports 0)."""
    mode = cfg.mode
    full = (1 << 128) - 1
    src = skb.saddr & (full ^ ((1 << (128 - cfg.srcmask)) - 1)) if mode & XT_HASHLIMIT_HASH_SIP else 0
    dst = skb.daddr & (full ^ ((1 << (128 - cfg.dstmask)) - 1)) if mode & XT_HASHLIMIT_HASH_DIP else 0
    if not mode & (XT_HASHLIMIT_HASH_DPT | XT_HASHLIMIT_HASH_SPT):
        return src, dst, 0, 0
    proto = skb.protocol
    if proto < 0:
        return None
    sport = dport = 0
    if proto in _PORT_PROTOS:
        data = skb.data
        pos = skb.ihl + (4 if proto == 51 else 0)
        if len(data) < pos + L4_PORTS_END:
            return None
        sport = int.from_bytes(data[pos + L4_SPORT:pos + L4_DPORT], "big")
        dport = int.from_bytes(data[pos + L4_DPORT:pos + L4_PORTS_END], "big")
    return (src, dst, sport if mode & XT_HASHLIMIT_HASH_SPT else 0, dport if mode & XT_HASHLIMIT_HASH_DPT else 0)
