"""`-m srh` revision 1 (libip6t_srh.c, ip6t_srh.c `srh1_mt6`): the Segment Routing Header (routing type 4)
fields and segment ids, as ip6tables 1.8.9 parses and prints them."""

from __future__ import annotations

from typing import Final

from natbox.rules.addr6 import format_addr6, mask6_to_prefix, parse_hostmask6
from natbox.rules.api import XtContext
from natbox.rules.matches._xtopt import U8_MAX, U16_MAX, parse_value
from natbox.rules.model import Match, MatchFn, Opt, Rule
from natbox.skb import Skb
from natbox.wire.ipv6 import NEXTHDR_ROUTING, ipv6_find_hdr
from natbox.wire.layout import (
    IP6OPT_HDRLEN,
    IP6OPT_NEXTHDR,
    IP6RT_SEGMENTS_LEFT,
    IP6RT_TYPE,
    IP6SRH_LAST_ENTRY,
    IP6SRH_SEGMENTS,
    IP6SRH_TAG,
)

__all__ = ["Srh"]

# -m srh revision 1: (option, -L word, largest value), in the order both outputs use
_SRH_NUMS: Final = (("srh-next-hdr", "next-hdr", U8_MAX), ("srh-hdr-len-eq", "hdr-len-eq", U8_MAX),
             ("srh-hdr-len-gt", "hdr-len-gt", U8_MAX), ("srh-hdr-len-lt", "hdr-len-lt", U8_MAX),
             ("srh-segs-left-eq", "segs-left-eq", U8_MAX), ("srh-segs-left-gt", "segs-left-gt", U8_MAX),
             ("srh-segs-left-lt", "segs-left-lt", U8_MAX), ("srh-last-entry-eq", "last-entry-eq", U8_MAX),
             ("srh-last-entry-gt", "last-entry-gt", U8_MAX), ("srh-last-entry-lt", "last-entry-lt", U8_MAX),
             ("srh-tag", "tag", U16_MAX))
_SRH_SIDS: Final = (("srh-psid", "psid"), ("srh-nsid", "nsid"), ("srh-lsid", "lsid"))


class Srh(Match):
    """`-m srh` revision 1 (`struct ip6t_srh1`): Segment Routing Header fields and segment ids."""

    name = "srh"
    revision = 1
    options = tuple(Opt(o, 1, True) for o, _w, _m in _SRH_NUMS) + tuple(Opt(o, 1, True) for o, _w in _SRH_SIDS)

    def __init__(self) -> None:
        self.nums: dict[str, int] = {}
        self.sids: dict[str, tuple[int, int]] = {}  # address as given (not masked), mask
        self.inv: set[str] = set()

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        a = arg or ""
        if inverted:
            self.inv.add(opt)
        for o, _w, hi in _SRH_NUMS:
            if o == opt:
                self.nums[opt] = parse_value("srh", opt, a, hi)
                return
        if opt in {o for o, _w in _SRH_SIDS}:
            self.sids[opt] = parse_hostmask6(a, "srh", opt)
            return
        super().parse(opt, arg, inverted, rule)

    def save(self) -> str:
        out = ""
        for o, _w, _hi in _SRH_NUMS:
            if o in self.nums:
                out += (" !" if o in self.inv else "") + f" --{o} {self.nums[o]}"
        for o, _w in _SRH_SIDS:
            if o in self.sids:
                addr, mask = self.sids[o]
                out += (" !" if o in self.inv else "") + f" --{o} {format_addr6(addr)}/{mask6_to_prefix(mask)}"
        return out

    def print_list(self, numeric: bool) -> str:
        out = " srh"
        for o, w, _hi in _SRH_NUMS:
            if o in self.nums:
                out += f" {w}:{'!' if o in self.inv else ''}{self.nums[o]}"
        for o, w in _SRH_SIDS:
            if o in self.sids:
                addr, mask = self.sids[o]
                out += f" {w} {'!' if o in self.inv else ''} {format_addr6(addr)}/{mask6_to_prefix(mask)}"
        return out

    def compile(self) -> MatchFn:
        """`srh1_mt6`: a routing header of type 4 (segments left <= last entry), then each given field, and the
        previous, next and last segment ids under their masks."""
        tests = tuple((o, v, o in self.inv) for o, v in self.nums.items())
        sids = tuple((o, a, m, o in self.inv) for o, (a, m) in self.sids.items())

        def srh1_mt6(skb: Skb, ctx: XtContext) -> bool:
            data = skb.data
            found = ipv6_find_hdr(data, NEXTHDR_ROUTING)
            if found is None or found[0] + IP6SRH_SEGMENTS > len(data):
                return False
            p = found[0]
            if len(data) - p < (data[p + IP6OPT_HDRLEN] + 1) << 3 or data[p + IP6RT_TYPE] != 4:
                return False
            segs_left, last = data[p + IP6RT_SEGMENTS_LEFT], data[p + IP6SRH_LAST_ENTRY]
            if segs_left > last:
                return False
            values = {"next-hdr": data[p + IP6OPT_NEXTHDR], "hdr-len": data[p + IP6OPT_HDRLEN],
                      "segs-left": segs_left, "last-entry": last,
                      "tag": int.from_bytes(data[p + IP6SRH_TAG:p + IP6SRH_SEGMENTS], "big")}
            for opt, want, inv in tests:
                field, _, op = opt[4:].rpartition("-") if opt[-3:] in ("-eq", "-gt", "-lt") else (opt[4:], "", "eq")
                have = values[field]
                hit = have == want if op == "eq" else (have > want if op == "gt" else have < want)
                if hit == inv:
                    return False
            for opt, addr, mask, inv in sids:
                if opt == "srh-psid":
                    if segs_left == last:
                        return False
                    idx = segs_left + 1
                elif opt == "srh-nsid":
                    if segs_left == 0:
                        return False
                    idx = segs_left - 1
                else:
                    idx = 0
                off = p + IP6SRH_SEGMENTS + 16 * idx
                if off + 16 > len(data):
                    return False
                sid = int.from_bytes(data[off:off + 16], "big")
                if (((sid ^ addr) & mask) != 0) != inv:
                    return False
            return True

        return srh1_mt6
