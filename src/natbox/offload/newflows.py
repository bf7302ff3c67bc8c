"""New connections in the kernel data path (issue #16, `--offload-new`): the BPF side's records, plain data.

natbox_offload.bpf.c built with -DNB_NEW_FLOWS has three more maps (its comment says what the program does
with them):
- nb_tmpl: a template per (ifindex, saddr, daddr, dport, proto) (struct nb_key with sport 0) → struct nb_tmpl,
  116 bytes: the ORIGINAL direction's action (its sport replaced by each SYN's), the REPLY direction's action
  (its dport replaced by the SYN's sport) and the REPLY direction's key (the same dport replaced);
- nb_ct: every tuple natbox's conntrack holds and every tuple the program claimed for a new flow, struct
  nb_ct_key (16 bytes: saddr, daddr, sport, dport in network order, proto, 3 bytes padding) → u32 (1: the
  program claimed it, 2: natbox's, 3: natbox's ct is closed and a SYN of its tuple would reopen it);
- nb_events: a ring buffer of struct nb_event, 120 bytes: ifindex u32, copied u16, flags u16 (bit 0: the SYN
  that created the entries), len u32 (the frame's), 4 bytes padding, ts_ns u64, then the frame's first
  `copied` bytes (at most EV_COPY).

`encode_template` builds an nb_tmpl value from an engine template's plans with `offload_entry` (the same
entries `--offload` installs, so nothing of NAT is derived here); `decode_event` reads an event back.
`EventRing` consumes the ring buffer through libbpf's ring_buffer__consume (ctypes).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import platform
import struct
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from natbox.offload.entry import (
    ACTION_SIZE,
    KEY_SIZE,
    OffloadKey,
    decode_action,
    decode_key,
    encode_action,
    encode_key,
    offload_entry,
)

if TYPE_CHECKING:
    from natbox.engine.template import ConnTemplate

__all__ = [
    "CT_KEY_SIZE",
    "EVENTS_SIZE",
    "EVENT_HEAD",
    "EVENT_SIZE",
    "EV_COPY",
    "EV_CREATED",
    "F_TRACKED",
    "MAX_CTS",
    "MAX_TEMPLATES",
    "TMPL_SIZE",
    "EventRing",
    "NewFlowEvent",
    "TemplateEntry",
    "decode_event",
    "encode_ct_key",
    "template_entry",
    "tracked_entries",
]

TMPL_SIZE, CT_KEY_SIZE, EVENT_SIZE = 116, 16, 120  # NB_TMPL_SIZE, NB_CT_KEY_SIZE, NB_EVENT_SIZE
MAX_TEMPLATES = 4096  # NB_MAX_TEMPLATES
MAX_CTS = 524288  # NB_MAX_CTS: both tuples of 262144 cts (nf_conntrack_max's default)
EVENTS_SIZE = 1 << 20  # NB_EVENTS_SIZE: 8192 copies (120 bytes + an 8-byte header each)
EV_COPY = 96  # NB_EV_COPY
EV_CREATED = 1  # NB_EV_CREATED
F_TRACKED = 2  # NB_F_TRACKED: an nb_flows action flag, every packet of the entry copied to nb_events
CLAIM_NATBOX = 2  # nb_ct's value for a tuple of natbox's conntrack
CLAIM_REOPEN = 3  # NB_CT_REOPEN: a tuple of a closed ct of natbox's that a SYN reopens (the program claims it)
EVENT_HEAD = struct.Struct("=IHHI4xQ")  # struct nb_event before data: ifindex, copied, flags, len, ts_ns
_CT_KEY = struct.Struct("!IIHHB3x")


Entry = tuple[OffloadKey, bytes]  # an nb_flows key and its encoded action


class TemplateEntry(NamedTuple):
    """A template as the map holds it: its key (sport 0), the encoded nb_tmpl, and the REPLY key's fixed part."""

    key: OffloadKey
    value: bytes
    reply_key: OffloadKey  # dport 0: each SYN's sport


def template_entry(template: ConnTemplate, ifindex: Callable[[str], int]) -> TemplateEntry | None:
    """The nb_tmpl entry of an engine template; None when the data path cannot carry it (`offload_entry`)."""
    first = offload_entry(template.plans[0], ifindex)
    second = offload_entry(template.plans[1], ifindex)
    if first is None or second is None:
        return None
    key = first[0]._replace(sport=0)
    reply_key = second[0]._replace(dport=0)
    value = encode_action(first[1]) + encode_action(second[1]) + encode_key(reply_key)
    return TemplateEntry(key, value, reply_key)


def tracked_entries(value: bytes, key: OffloadKey, sport: int) -> tuple[Entry, Entry]:
    """The two nb_flows entries `nb_new_flow` creates from template `value` (an nb_tmpl, the template's map key
    `key`) for a SYN from client port `sport`: the ORIGINAL direction's (the key and the action with the SYN's
    sport), the REPLY direction's (the reply key and action with the sport as dport), both flagged
    NB_F_TRACKED. natbox installs them itself for a connection its own path opened with the template's
    binding (gateway/newconn.py); the program's copy of the same statement is in natbox_offload.bpf.c."""
    orig = decode_action(value[:ACTION_SIZE])._replace(sport=sport)
    reply = decode_action(value[ACTION_SIZE:2 * ACTION_SIZE])._replace(dport=sport)
    reply_key = decode_key(value[2 * ACTION_SIZE:2 * ACTION_SIZE + KEY_SIZE])._replace(dport=sport)
    return (key._replace(sport=sport), _tracked(encode_action(orig))), (reply_key, _tracked(encode_action(reply)))


def _tracked(action: bytes) -> bytes:
    """struct nb_action with NB_F_TRACKED added to its flags (its last 32 bits)."""
    flags = int.from_bytes(action[-4:], sys.byteorder) | F_TRACKED  # a host-order __u32
    return action[:-4] + flags.to_bytes(4, sys.byteorder)


def encode_ct_key(saddr: int, daddr: int, sport: int, dport: int, proto: int) -> bytes:
    """struct nb_ct_key."""
    return _CT_KEY.pack(saddr, daddr, sport, dport, proto)


class NewFlowEvent(NamedTuple):
    """One struct nb_event: the packet's first bytes, its device, its length and time."""

    ifindex: int
    created: bool
    length: int
    ts_ns: int
    data: bytes


def decode_event(raw: bytes) -> NewFlowEvent | None:
    """struct nb_event read back; None for a record of another size."""
    if len(raw) < EVENT_SIZE:
        return None
    ifindex, copied, flags, length, ts = EVENT_HEAD.unpack_from(raw)
    start = EVENT_HEAD.size
    return NewFlowEvent(ifindex, bool(flags & EV_CREATED), length, ts, raw[start:start + min(copied, EV_COPY)])


_U32, _U64 = struct.Struct("=I"), struct.Struct("=Q")
_RB_BUSY, _RB_DISCARD = 1 << 31, 1 << 30  # BPF_RINGBUF_BUSY_BIT, BPF_RINGBUF_DISCARD_BIT
_RB_LEN = _RB_DISCARD - 1
_RB_HDR = 8  # BPF_RINGBUF_HDR_SZ
_RB_PASSES = 4  # producer positions read per consume(): the program may keep writing while natbox reads
_SAMPLE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)


class EventRing:
    """A BPF ring buffer's records: `consume()` returns those written since the last call, each as bytes, oldest
    first; `fileno()` is readable when records wait. On x86-64 the ring is read directly, as libbpf's
    ringbuf.c does (`ring_buffer__add`, `ringbuf_process_ring`): the consumer position's page mapped
    read-write at offset 0, the producer position's page and the data read-only after it, the data mapped
    twice so that a record wrapping past the end reads in one piece; each record an 8-byte header (u32 length
    with BPF_RINGBUF_BUSY_BIT while the program writes it and BPF_RINGBUF_DISCARD_BIT when it gave it up,
    u32 page offset) and the sample, rounded up to 8 bytes; every record up to the producer position taken at
    once (one slice each, no call per record), then the consumer position written. x86-64 keeps loads and
    stores in order, so plain loads and stores are the acquire and release libbpf uses; the map descriptor
    is the poll descriptor (ringbuf_map_poll_kern). Elsewhere, or with `libbpf=True`, libbpf does it
    (ring_buffer__new / __consume / __epoll_fd / __free). Raises OSError when neither can open the map."""

    def __init__(self, map_fd: int, size: int = EVENTS_SIZE, *, libbpf: bool = False) -> None:
        self._got: list[bytes] = []
        self._rb: int | None = None
        self._fd = map_fd
        self._maps: tuple[mmap.mmap, mmap.mmap] | None = None
        if not libbpf and platform.machine() in ("x86_64", "AMD64"):
            try:
                page = mmap.PAGESIZE
                cons = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
                try:
                    prod = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
                except OSError:
                    cons.close()
                    raise
                self._maps = (cons, prod)
                self._data = memoryview(prod)[page:]
                self._mask = size - 1
                return
            except (OSError, ValueError):
                self._maps = None  # libbpf then
        self._open_libbpf(map_fd)

    def _open_libbpf(self, map_fd: int) -> None:
        name = ctypes.util.find_library("bpf") or "libbpf.so.1"
        try:
            lib = ctypes.CDLL(name, use_errno=True)
        except OSError as e:
            raise OSError(f"libbpf not found ({name}: Debian package libbpf1): {e}") from None
        lib.ring_buffer__new.restype = ctypes.c_void_p
        lib.ring_buffer__new.argtypes = [ctypes.c_int, _SAMPLE_FN, ctypes.c_void_p, ctypes.c_void_p]
        lib.ring_buffer__consume.restype = ctypes.c_int
        lib.ring_buffer__consume.argtypes = [ctypes.c_void_p]
        lib.ring_buffer__epoll_fd.restype = ctypes.c_int
        lib.ring_buffer__epoll_fd.argtypes = [ctypes.c_void_p]
        lib.ring_buffer__free.restype = None
        lib.ring_buffer__free.argtypes = [ctypes.c_void_p]
        self._lib = lib
        got = self._got
        string_at = ctypes.string_at

        def sample(ctx: int | None, data: int | None, size: int) -> int:
            got.append(string_at(data, size) if data else b"")
            return 0

        self._cb = _SAMPLE_FN(sample)  # kept alive as long as the ring buffer
        rb = lib.ring_buffer__new(map_fd, self._cb, None, None)
        if not rb:
            raise OSError(ctypes.get_errno(), "libbpf could not open the ring buffer")
        self._rb = rb

    def fileno(self) -> int:
        if self._maps is not None:
            return self._fd
        if self._rb is None:
            return -1
        return int(self._lib.ring_buffer__epoll_fd(self._rb))

    def consume(self) -> list[bytes]:
        """Every record waiting, oldest first."""
        if self._maps is not None:
            return self._consume_mapped(self._maps[0], self._maps[1])
        if self._rb is None:
            return []
        self._lib.ring_buffer__consume(self._rb)
        out = self._got[:]
        self._got.clear()
        return out

    def _consume_mapped(self, cons_map: mmap.mmap, prod_map: mmap.mmap) -> list[bytes]:
        """`ringbuf_process_ring`: the records up to the producer position (read again after them, a few
        times at most, as it may have moved), then the consumer position written once."""
        out: list[bytes] = []
        data, mask, unpack = self._data, self._mask, _U32.unpack_from
        cons = start = _U64.unpack_from(cons_map, 0)[0]
        for _ in range(_RB_PASSES):
            prod = _U64.unpack_from(prod_map, 0)[0]
            if cons >= prod:
                break
            while cons < prod:
                off = cons & mask
                length = unpack(data, off)[0]
                if length & _RB_BUSY:
                    break  # still being written: the next wakeup takes it and what follows
                size = length & _RB_LEN
                cons += (size + _RB_HDR + 7) & ~7
                if not length & _RB_DISCARD:
                    out.append(bytes(data[off + _RB_HDR:off + _RB_HDR + size]))
            else:
                continue
            break
        if cons != start:
            _U64.pack_into(cons_map, 0, cons)
        return out

    def close(self) -> None:
        if self._maps is not None:
            self._data.release()
            for m in self._maps:
                m.close()
            self._maps = None
        if self._rb is not None:
            self._lib.ring_buffer__free(self._rb)
            self._rb = None
