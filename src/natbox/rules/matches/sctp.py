"""`-p sctp -m sctp [--sport P[:P]] [--dport P[:P]] [--chunk-types all|any|only CHUNK[:FLAGS],...]`
(libxt_sctp.c, net/netfilter/xt_sctp.c `sctp_mt`).

`sctp_mt` (first fragments only) compares the common header's ports and, for `--chunk-types`, walks the
chunks (`match_packet`): `any` matches at the first listed chunk whose flags match, `all` when every listed
chunk type was seen with matching flags, `only` when no chunk outside the list appears and every listed
one has matching flags. Flags are `match_flags`: `(chunk flags & mask) == flag`, for the (at most four)
chunk types given with `:FLAGS` (upper case: the bit set, lower case: clear). Each test is inverted on its
own (`SCCHECK`). A header or chunk cut short, or a zero chunk length, is the kernel's hotdrop: no match
here (docs/differences.md).

libxt_sctp 1.8.9 keeps the flags of a chunk under its index in `sctp_chunk_names[]`, not its type: the
two agree for types 0-14, so flags on I_DATA (index 15, type 64) are neither printed nor matched on
I_DATA chunks. natbox keeps that behaviour.
"""

from __future__ import annotations

from typing import Final

from natbox.rules.api import XtContext
from natbox.rules.matches._common import parse_port, print_port
from natbox.rules.model import RESOURCE_PROBLEM, Match, MatchFn, Opt, Rule, RulesError
from natbox.skb import Skb
from natbox.wire.layout import SCTP_CHUNK_FLAGS, SCTP_CHUNK_LENGTH, SCTP_CHUNK_TYPE, SCTPH_DEST, SCTPH_LEN, SCTPH_SOURCE

__all__ = ["SCTP_CHUNK_NAMES", "Sctp", "sctp_match_chunks"]

IPPROTO_SCTP: Final = 132
XT_SCTP_SRC_PORTS, XT_SCTP_DEST_PORTS, XT_SCTP_CHUNK_TYPES = 0x01, 0x02, 0x04
SCTP_CHUNK_MATCH_ANY, SCTP_CHUNK_MATCH_ALL, SCTP_CHUNK_MATCH_ONLY = 0x01, 0x02, 0x04
XT_NUM_SCTP_FLAGS: Final = 4
_ALL_CHUNKS: Final = (1 << 256) - 1
_MATCH_TYPES: Final = {"any": SCTP_CHUNK_MATCH_ANY, "all": SCTP_CHUNK_MATCH_ALL, "only": SCTP_CHUNK_MATCH_ONLY}

# sctp_chunk_names[] of libxt_sctp.c: name, chunk type, valid flags (bit 7 first)
SCTP_CHUNK_NAMES: tuple[tuple[str, int, str], ...] = (
    ("DATA", 0, "----IUBE"), ("INIT", 1, "--------"), ("INIT_ACK", 2, "--------"), ("SACK", 3, "--------"),
    ("HEARTBEAT", 4, "--------"), ("HEARTBEAT_ACK", 5, "--------"), ("ABORT", 6, "-------T"),
    ("SHUTDOWN", 7, "--------"), ("SHUTDOWN_ACK", 8, "--------"), ("ERROR", 9, "--------"),
    ("COOKIE_ECHO", 10, "--------"), ("COOKIE_ACK", 11, "--------"), ("ECN_ECNE", 12, "--------"),
    ("ECN_CWR", 13, "--------"), ("SHUTDOWN_COMPLETE", 14, "-------T"), ("I_DATA", 64, "----IUBE"),
    ("RE_CONFIG", 130, "--------"), ("PAD", 132, "--------"), ("ASCONF", 193, "--------"),
    ("ASCONF_ACK", 128, "--------"), ("FORWARD_TSN", 192, "--------"), ("I_FORWARD_TSN", 194, "--------"),
)
_NAME_OF_TYPE: Final = {t: n for n, t, _f in SCTP_CHUNK_NAMES}

FlagInfo = list[int]  # struct xt_sctp_flag_info: [chunktype, flag, flag_mask]


def _parse_ports(text: str) -> tuple[int, int]:
    """`parse_sctp_ports`."""
    if ":" not in text:
        p = parse_port(text, "sctp")
        return p, p
    a, b = text.split(":", 1)
    lo = parse_port(a, "sctp") if a else 0
    hi = parse_port(b, "sctp") if b else 0xFFFF
    if lo > hi:
        raise RulesError("invalid portrange (min > max)")
    return lo, hi


def _save_flag(flag_info: list[FlagInfo], index: int, bit: int, is_set: bool) -> None:
    """`save_chunk_flag_info` (keyed by the name's index, as libxt_sctp does)."""
    for fi in flag_info:
        if fi[0] == index:
            fi[2] |= 1 << bit
            if is_set:
                fi[1] |= 1 << bit
            return
    if len(flag_info) == XT_NUM_SCTP_FLAGS:
        raise RulesError("Number of chunk types with flags exceeds currently allowed limit. Increasing this limit "
                         "involves changing IPT_NUM_SCTP_FLAGS and recompiling both the kernel space and user "
                         "space modules")
    flag_info.append([index, (1 << bit) if is_set else 0, 1 << bit])


def _parse_chunks(text: str, flag_info: list[FlagInfo]) -> int:
    """`parse_sctp_chunk`: the chunk map (one bit per type) and the flags."""
    if text.upper() == "ALL":
        return _ALL_CHUNKS
    if text.upper() == "NONE":
        return 0
    chunkmap = 0
    for token in (t for t in text.split(",") if t):  # strtok skips empty tokens
        name, sep, flags = token.partition(":")
        index = next((i for i, entry in enumerate(SCTP_CHUNK_NAMES) if entry[0].lower() == name.lower()), -1)
        if index < 0:
            raise RulesError(f"Unknown sctp chunk `{name}'")
        _cname, ctype, valid = SCTP_CHUNK_NAMES[index]
        chunkmap |= 1 << ctype
        for ch in flags if sep else "":
            pos = valid.find(ch.upper())
            if pos < 0:
                raise RulesError(f"Invalid flags for chunk type {index}")
            _save_flag(flag_info, index, 7 - pos, ch.isupper())
    return chunkmap


def sctp_match_chunks(data: bytes | bytearray, offset: int, chunkmap: int, match_type: int,
                      flag_info: tuple[tuple[int, int, int], ...]) -> bool | None:
    """Mirrors `match_packet()` of xt_sctp.c; None is the kernel's hotdrop (a chunk header cut short or of
    length 0)."""
    remaining = chunkmap if match_type == SCTP_CHUNK_MATCH_ALL else 0
    n = len(data)
    while True:
        if offset + 4 > n:
            return None
        ctype, cflags = data[offset + SCTP_CHUNK_TYPE], data[offset + SCTP_CHUNK_FLAGS]
        clen = (data[offset + SCTP_CHUNK_LENGTH] << 8) | data[offset + SCTP_CHUNK_LENGTH + 1]
        if clen == 0:
            return None
        offset += (clen + 3) & ~3
        flags_ok = True
        for fi_type, fi_flag, fi_mask in flag_info:  # match_flags
            if fi_type == ctype:
                flags_ok = (cflags & fi_mask) == fi_flag
                break
        if chunkmap >> ctype & 1:
            if match_type == SCTP_CHUNK_MATCH_ANY:
                if flags_ok:
                    return True
            elif match_type == SCTP_CHUNK_MATCH_ALL:
                if flags_ok:
                    remaining &= ~(1 << ctype)
            elif not flags_ok:
                return False
        elif match_type == SCTP_CHUNK_MATCH_ONLY:
            return False
        if offset >= n:
            break
    if match_type == SCTP_CHUNK_MATCH_ALL:
        return remaining == 0
    return match_type == SCTP_CHUNK_MATCH_ONLY


class Sctp(Match):
    name = "sctp"
    options = (Opt("source-port", 1, True), Opt("sport", 1, True), Opt("destination-port", 1, True),
               Opt("dport", 1, True), Opt("chunk-types", 2, True))
    two_args_message = "--{opt} requires two args"

    def __init__(self) -> None:
        self.spts = (0, 0xFFFF)
        self.dpts = (0, 0xFFFF)
        self.chunkmap = 0
        self.match_type = 0
        self.flag_info: list[FlagInfo] = []
        self.flags = 0
        self.invflags = 0

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        a = arg or ""
        if opt in ("source-port", "sport"):
            bit, what = XT_SCTP_SRC_PORTS, "source-port"
        elif opt in ("destination-port", "dport"):
            bit, what = XT_SCTP_DEST_PORTS, "destination-port"
        elif opt == "chunk-types":
            bit, what = XT_SCTP_CHUNK_TYPES, "chunk-types"
        else:
            super().parse(opt, arg, inverted, rule)
        if self.flags & bit:
            raise RulesError(f"Only one `--{what}' allowed")
        self.flags |= bit
        if bit == XT_SCTP_SRC_PORTS:
            self.spts = _parse_ports(a)
        elif bit == XT_SCTP_DEST_PORTS:
            self.dpts = _parse_ports(a)
        else:
            kind, _sp, chunks = a.partition(" ")
            match_type = _MATCH_TYPES.get(kind.lower())
            if match_type is None:
                raise RulesError('Match type has to be one of "ALL", "ANY" or "ONLY"')
            self.match_type = match_type
            self.chunkmap = _parse_chunks(chunks, self.flag_info)
        if inverted:
            self.invflags |= bit

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        if rule.proto != IPPROTO_SCTP or rule.inv_proto:  # xt_check_match: .proto = IPPROTO_SCTP
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def _chunks(self, numeric: bool) -> str:
        """`print_chunks`."""
        out = " " + {SCTP_CHUNK_MATCH_ANY: "any", SCTP_CHUNK_MATCH_ALL: "all"}.get(self.match_type, "only")
        if self.chunkmap == 0:
            return out + " NONE"
        if self.chunkmap == _ALL_CHUNKS:
            return out + " ALL"
        parts = []
        for ctype in range(256):
            if not self.chunkmap >> ctype & 1:
                continue
            text = f"0x{ctype:04X}" if numeric else _NAME_OF_TYPE.get(ctype, "")
            for fi_type, fi_flag, fi_mask in self.flag_info:
                if fi_type == ctype and fi_mask:  # print_chunk_flags, with the names' table indexed by type
                    valid = SCTP_CHUNK_NAMES[ctype][2]
                    text += ":" + "".join(valid[7 - b] if fi_flag >> b & 1 else valid[7 - b].lower()
                                          for b in range(7, -1, -1) if fi_mask >> b & 1)
            parts.append(text)
        return out + " " + ",".join(parts)

    def save(self) -> str:
        out = ""
        for bit, opt, (lo, hi) in ((XT_SCTP_SRC_PORTS, "sport", self.spts), (XT_SCTP_DEST_PORTS, "dport", self.dpts)):
            if self.flags & bit:
                out += (" !" if self.invflags & bit else "") + f" --{opt} " + (f"{lo}" if lo == hi else f"{lo}:{hi}")
        if self.flags & XT_SCTP_CHUNK_TYPES:
            out += (" !" if self.invflags & XT_SCTP_CHUNK_TYPES else "") + " --chunk-types" + self._chunks(False)
        return out

    def print_list(self, numeric: bool) -> str:
        out = " sctp"
        for bit, label, (lo, hi) in ((XT_SCTP_SRC_PORTS, "spt", self.spts), (XT_SCTP_DEST_PORTS, "dpt", self.dpts)):
            inv = bool(self.invflags & bit)
            if self.flags & bit and (lo != 0 or hi != 0xFFFF or inv):
                i = "!" if inv else ""
                if lo == hi:
                    out += f" {label}:{i}{print_port(lo, numeric, 'sctp')}"
                else:
                    out += f" {label}s:{i}{print_port(lo, numeric, 'sctp')}:{print_port(hi, numeric, 'sctp')}"
        if self.flags & XT_SCTP_CHUNK_TYPES:
            out += (" !" if self.invflags & XT_SCTP_CHUNK_TYPES else "") + self._chunks(numeric)
        return out

    def compile(self) -> MatchFn:
        flags, inv = self.flags, self.invflags
        (slo, shi), (dlo, dhi) = self.spts, self.dpts
        chunkmap, match_type = self.chunkmap, self.match_type
        flag_info = tuple((fi[0], fi[1], fi[2]) for fi in self.flag_info)

        def sctp_mt(skb: Skb, ctx: XtContext) -> bool:
            if skb.is_later_fragment:
                return False
            data, th = skb.data, skb.ihl
            if len(data) < th + SCTPH_LEN:
                return False  # hotdrop in the kernel
            if flags & XT_SCTP_SRC_PORTS:
                sp = (data[th + SCTPH_SOURCE] << 8) | data[th + SCTPH_SOURCE + 1]
                if (slo <= sp <= shi) == bool(inv & XT_SCTP_SRC_PORTS):
                    return False
            if flags & XT_SCTP_DEST_PORTS:
                dp = (data[th + SCTPH_DEST] << 8) | data[th + SCTPH_DEST + 1]
                if (dlo <= dp <= dhi) == bool(inv & XT_SCTP_DEST_PORTS):
                    return False
            if flags & XT_SCTP_CHUNK_TYPES:
                found = sctp_match_chunks(data, th + SCTPH_LEN, chunkmap, match_type, flag_info)
                if found is None:
                    return False  # hotdrop in the kernel
                if found == bool(inv & XT_SCTP_CHUNK_TYPES):
                    return False
            return True

        return sctp_mt
