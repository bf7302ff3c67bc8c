"""Conntrack's IPv6 reassembly: `nf_ct_frag6_gather` (net/ipv6/netfilter/nf_conntrack_reasm.c) behind
nf_defrag_ipv6's hook at -400 (ipv6-semantics.md §1.5).

- Not a fragment (no Fragment header in the chain before the upper layer): NF_ACCEPT unchanged.
- Queued by (fragment id, saddr, daddr, and the input device for a link-local or multicast daddr); a
  fragment is held (NF_STOLEN) until the datagram is complete.
- Dropped: an end past 65535; a last fragment ending before data already seen, or a second last fragment
  with another end; a zero-length fragment; any overlap (RFC 5722: the whole queue is killed, counted
  `frag_overlap`). An exact duplicate is consumed silently.
- A non-last fragment whose length is not a multiple of 8 (-EPROTO): the queue is killed and the fragment
  goes on unreassembled (conntrack then calls it INVALID, so it leaves without NAT [V]).
- Complete (an atomic fragment at once): the Fragment header is removed, the previous header's next
  header and the payload length fixed, `frag_max_size` = 40 + the largest fragment's payload length, and
  `frag_list` = the fragments' data sizes in offset order, so `ip6_fragment` sends it again at the received
  geometry under a new id (engine/ip6_output.py). The unfragmentable part is the fixed header and the
  Hop-by-Hop, Routing and Destination headers before the Fragment header.
- A queue not complete within `nf_conntrack_frag6_timeout` (60 s) is dropped (`nf_ct_frag6_expire` →
  `ip6frag_expire_frag_queue`): when its first fragment came, that fragment, as received, earns its sender
  ICMPv6 Time Exceeded code 1 (fragment reassembly time exceeded), for forwarded datagrams too (there is no
  IPv4-style `frag_expire_skip_icmp` for IPv6); the caller sends it (`expire` returns the queues). At most
  FRAG6_HIGH_THRESH bytes are held (new fragments are dropped beyond it, as `inet_frag_find` refuses them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from natbox.netfilter import DropReason
from natbox.wire.ipv6 import NEXTHDR_DEST, NEXTHDR_FRAGMENT, NEXTHDR_HOP, NEXTHDR_ROUTING, is_link_local, is_multicast
from natbox.wire.layout import (
    FRAGH_ID,
    FRAGH_LEN,
    FRAGH_NEXTHDR,
    FRAGH_OFF,
    IP6H_DADDR,
    IP6H_LEN,
    IP6H_NEXTHDR,
    IP6H_PAYLOAD_LEN,
    IP6H_SADDR,
    IP6OPT_HDRLEN,
    IP6OPT_NEXTHDR,
)

__all__ = ["FRAG6_HIGH_THRESH", "FRAG6_TIMEOUT", "Defrag6", "Defrag6Result", "Expired6"]

FRAG6_TIMEOUT: Final = 60.0  # net.netfilter.nf_conntrack_frag6_timeout
FRAG6_HIGH_THRESH: Final = 4194304  # nf_conntrack_frag6_high_thresh (bytes held)
MAX_QUEUES: Final = 4096  # bound on queues (each also bounded by 65535 bytes)
_UNFRAGMENTABLE: Final = (NEXTHDR_HOP, NEXTHDR_ROUTING, NEXTHDR_DEST)


@dataclass
class _Queue:
    first_seen: float
    head: bytes = b""  # the unfragmentable part of the fragment with offset 0 (fixed header + ext headers)
    prevhdr: int = 0  # where that part's last next-header field is (IP6H_NEXTHDR or an extension's)
    nexthdr: int = -1  # the Fragment header's next header
    pieces: dict[int, bytes] = field(default_factory=dict)  # offset -> data
    end: int = -1  # the datagram's length, once the last fragment came
    max_plen: int = 0  # the largest fragment's payload length
    size: int = 0
    first: bytes = b""  # the fragment with offset 0 as received (the queue's head, for the Time Exceeded)
    iif: str = ""  # fq->iif: the device of the latest fragment


@dataclass(frozen=True)
class Expired6:
    """A queue `ip6frag_expire_frag_queue` dropped: its fragments, and the first one as received (empty when it
    never came: then no error) with the device of the latest fragment."""

    fragments: int
    head: bytes
    iif: str


@dataclass(frozen=True)
class Defrag6Result:
    """`datagram` None and `reason` None: held. A datagram: reassembled (or passed on unreassembled)."""

    datagram: bytearray | None
    reason: DropReason | None = None
    detail: str = ""
    frag_max_size: int = 0
    frag_list: tuple[int, ...] = ()
    unreassembled: bool = False


def _find_frag(data: bytes | bytearray) -> tuple[int, int] | None:
    """`find_prev_fhdr`: (offset of the Fragment header, offset of the next-header byte naming it), or None."""
    prev, nh, off = IP6H_NEXTHDR, data[IP6H_NEXTHDR], IP6H_LEN
    while nh in _UNFRAGMENTABLE:
        if off + 2 > len(data):
            return None
        prev, nh, off = off + IP6OPT_NEXTHDR, data[off + IP6OPT_NEXTHDR], off + ((data[off + IP6OPT_HDRLEN] + 1) << 3)
    if nh != NEXTHDR_FRAGMENT or off + FRAGH_LEN > len(data):
        return None
    return off, prev


class Defrag6:
    """The IPv6 conntrack fragment queues of one network namespace (see the module docstring)."""

    def __init__(self) -> None:
        self._queues: dict[tuple[int, int, int, str], _Queue] = {}
        self.mem = 0

    def next_deadline(self) -> float | None:
        return min((q.first_seen + FRAG6_TIMEOUT for q in self._queues.values()), default=None)

    def expire(self, now: float) -> list[Expired6]:
        """Drop the queues past their timeout (`nf_ct_frag6_expire`); returns them, oldest first."""
        gone = [k for k, q in self._queues.items() if now >= q.first_seen + FRAG6_TIMEOUT]
        out = []
        for k in gone:
            q = self._queues[k]
            out.append(Expired6(len(q.pieces), q.first, q.iif))
            self._kill(k)
        return out

    def _kill(self, key: tuple[int, int, int, str]) -> None:
        q = self._queues.pop(key, None)
        if q is not None:
            self.mem -= q.size

    def gather(self, data: bytearray, iif: str, now: float) -> Defrag6Result | None:
        """Mirrors `nf_ct_frag6_gather()`: None when `data` is no fragment (NF_ACCEPT unchanged)."""
        found = _find_frag(data)
        if found is None or not data[IP6H_PAYLOAD_LEN:IP6H_PAYLOAD_LEN + 2].hex().strip("0"):
            return None
        fh, prev = found
        fo = (data[fh + FRAGH_OFF] << 8) | data[fh + FRAGH_OFF + 1]
        offset, more = fo & 0xFFF8, fo & 1
        ident = int.from_bytes(data[fh + FRAGH_ID:fh + FRAGH_ID + 4], "big")
        payload = bytes(data[fh + FRAGH_LEN:])
        plen = len(data) - IP6H_LEN
        end = offset + len(payload)
        if end > 65535:
            return Defrag6Result(None, DropReason.FRAG_TOO_BIG, f"fragment ends at {end}")
        if offset == 0 and not more:  # an atomic fragment: "reassembled" at once
            return self._complete(data[:fh], prev, data[fh + FRAGH_NEXTHDR], {0: payload}, plen)
        if more and len(payload) & 7:
            return Defrag6Result(data, unreassembled=True, detail="non-last fragment not a multiple of 8 bytes")
        if not payload:
            return Defrag6Result(None, DropReason.FRAG_INVALID, "zero-length fragment")
        saddr = int.from_bytes(data[IP6H_SADDR:IP6H_DADDR], "big")
        daddr = int.from_bytes(data[IP6H_DADDR:IP6H_DADDR + 16], "big")
        key = (ident, saddr, daddr, iif if is_link_local(daddr) or is_multicast(daddr) else "")
        q = self._queues.get(key)
        if q is None:
            if len(self._queues) >= MAX_QUEUES or self.mem + len(payload) > FRAG6_HIGH_THRESH:
                return Defrag6Result(None, DropReason.FRAG_MEMORY, "fragment memory exhausted")
            q = self._queues[key] = _Queue(now)
        if not more:
            if end < q.end or (q.end >= 0 and end != q.end) or any(o + len(p) > end for o, p in q.pieces.items()):
                self._kill(key)
                return Defrag6Result(None, DropReason.FRAG_INVALID, "inconsistent last fragment")
            q.end = end
        elif q.end >= 0 and end > q.end:
            self._kill(key)
            return Defrag6Result(None, DropReason.FRAG_INVALID, "fragment past the last one")
        if offset in q.pieces and len(q.pieces[offset]) == len(payload):
            return Defrag6Result(None, DropReason.FRAG_DUP, "duplicate fragment")
        for o, p in q.pieces.items():
            if o < end and offset < o + len(p):
                self._kill(key)
                return Defrag6Result(None, DropReason.FRAG_OVERLAP, "overlapping fragments (RFC 5722)")
        q.pieces[offset] = payload
        q.iif = iif
        if offset == 0:
            q.first = bytes(data)
        q.size += len(payload)
        self.mem += len(payload)
        q.max_plen = max(q.max_plen, plen)
        if offset == 0:
            q.head, q.prevhdr, q.nexthdr = bytes(data[:fh]), prev, data[fh + FRAGH_NEXTHDR]
        if q.end < 0 or not q.head:
            return Defrag6Result(None)
        covered, pos = True, 0
        for o in sorted(q.pieces):
            if o != pos:
                covered = False
                break
            pos = o + len(q.pieces[o])
        if not covered or pos != q.end:
            return Defrag6Result(None)
        self._kill(key)
        return self._complete(q.head, q.prevhdr, q.nexthdr, q.pieces, q.max_plen)

    @staticmethod
    def _complete(head: bytes | bytearray, prevhdr: int, nexthdr: int, pieces: dict[int, bytes],
                  max_plen: int) -> Defrag6Result:
        """`nf_ct_frag6_reasm()`: the datagram without its Fragment header."""
        out = bytearray(head)
        out[prevhdr] = nexthdr
        sizes = []
        for o in sorted(pieces):
            out += pieces[o]
            sizes.append(len(pieces[o]))
        out[IP6H_PAYLOAD_LEN:IP6H_PAYLOAD_LEN + 2] = (len(out) - IP6H_LEN).to_bytes(2, "big")
        return Defrag6Result(out, frag_max_size=IP6H_LEN + max_plen, frag_list=tuple(sizes) if len(sizes) > 1 else ())
