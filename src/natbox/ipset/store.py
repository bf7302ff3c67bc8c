"""One set: its extensions (ip_set_core.c, ip_set.h) and the hash storage (ip_set_hash_gen.h).

`IpSet` holds what every type shares: the create options (timeout, counters, comment, skbinfo), the
reference count (`set->ref`: list:set members and iptables rules) and the per-element extension data
(`Entry`). `HashSet` mirrors ip_set_hash_gen.h: `jhash2` of the element with the set's `initval`
picks a bucket; a bucket is an array of slots grown and shrunk by AHASH_INIT_SIZE as the kernel does,
and a full bucket doubles the table (`mtype_resize`). So `ipset list` shows members in the kernel's
order and "Size in memory" is the kernel's sum. A dict from element to entry answers lookups in O(1);
network types keep the kernel's per-prefix book (`h->nets`, most specific first) and look an address
up once per distinct prefix length (`mtype_test_cidrs`), so a lookup costs at most 33 dict probes.

Time is the `now` passed in (float seconds, the injected clock); the core never reads a clock.
"""

from __future__ import annotations

import math
import struct
from typing import NamedTuple

from natbox.ipset.errors import IpsetError
from natbox.ipset.settype import Elem, SetType
from natbox.nat.jhash import jhash2
from natbox.netfilter import NFPROTO_IPV4, NFPROTO_IPV6

NFPROTO_UNSPEC = 0

__all__ = ["ENOTEMPTY", "SET_OPTS_NONE", "Entry", "ExtArgs", "HashSet", "IpSet", "SetOpts", "elem_len"]

ENOTEMPTY = 39  # a nomatch entry matched (mtype_do_data_match returns -ENOTEMPTY)
AHASH_INIT_SIZE = 2
AHASH_MAX_SIZE = 12
AHASH_MAX_TUNED = 64
HBUCKET_SIZE = 32  # sizeof(struct hbucket)
REGION_SIZE = 24  # sizeof(struct ip_set_region)
HTABLE_REGION_BITS = 10
COMMENT_RCU_SIZE = 16  # sizeof(struct ip_set_comment_rcu)
IPSET_MAX_COMMENT_SIZE = 255
IPSET_MAX_TIMEOUT = (0xFFFFFFFF >> 1) // 1000  # ip_set_timeout_uget's ceiling (seconds)

E_EXIST_ADD = "Element cannot be added to the set: it's already added"
E_EXIST_DEL = "Element cannot be deleted from the set: it's not added"
E_HASH_FULL = "Hash is full, cannot add more elements"


def elem_len(base: int, align: int, timeout: bool, counters: bool, comment: bool, skbinfo: bool) -> int:
    """`ip_set_elem_len()`: the element followed by its extensions, each at its alignment."""
    size = base
    for on, ext_len, ext_align in ((timeout, 8, 8), (counters, 16, 8), (comment, 8, 8), (skbinfo, 16, 4)):
        if on:
            align = max(align, ext_align)
            size = -(-size // ext_align) * ext_align + ext_len
    return -(-size // align) * align if align else size


class ExtArgs:
    """`struct ip_set_ext` as userspace or a SET target passes it (None: not given)."""

    __slots__ = ("bytes", "comment", "nomatch", "packets", "skbmark", "skbmarkmask", "skbprio", "skbqueue",
                 "timeout")

    def __init__(self, timeout: int | None = None, packets: int | None = None, bytes_: int | None = None,
                 comment: str | None = None, skbmark: int = 0, skbmarkmask: int = 0, skbprio: int = 0,
                 skbqueue: int = 0, nomatch: bool = False) -> None:
        self.timeout = timeout
        self.packets = packets
        self.bytes = bytes_
        self.comment = comment
        self.skbmark = skbmark
        self.skbmarkmask = skbmarkmask
        self.skbprio = skbprio
        self.skbqueue = skbqueue
        self.nomatch = nomatch


class Entry:
    """One stored element and its extensions (timeout as an absolute expiry, None: permanent)."""

    __slots__ = ("bytes", "comment", "elem", "expires", "hkey", "nomatch", "packets", "skbmark", "skbmarkmask",
                 "skbprio", "skbqueue")

    def __init__(self, elem: Elem, hkey: int) -> None:
        self.elem = elem
        self.hkey = hkey
        self.expires: float | None = None
        self.packets = 0
        self.bytes = 0
        self.comment: str | None = None
        self.skbmark = 0
        self.skbmarkmask = 0
        self.skbprio = 0
        self.skbqueue = 0
        self.nomatch = False

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires


class SetOpts(NamedTuple):
    """The create options every type shares (the set's extensions)."""

    timeout: int | None = None  # None: created without timeout support
    counters: bool = False
    comment: bool = False
    skbinfo: bool = False
    forceadd: bool = False


SET_OPTS_NONE = SetOpts()


class IpSet:
    """`struct ip_set`: name, type, create options, references, extension bookkeeping."""

    def __init__(self, name: str, stype: SetType, opts: SetOpts = SET_OPTS_NONE, family: int = NFPROTO_IPV4) -> None:
        timeout, counters, comment, skbinfo, forceadd = opts
        self.name = name
        self.type = stype
        # set->family: NFPROTO_IPV4/IPV6, or NFPROTO_UNSPEC (0) for the types without an address, whose
        # sets `ip_set_test` consults for packets of either family
        self.family = NFPROTO_UNSPEC if stype.unspec else family
        self.timeout = timeout  # None: created without timeout support
        self.counters = counters
        self.comment = comment
        self.skbinfo = skbinfo
        self.forceadd = forceadd
        self.ref = 0  # set->ref: list:set members and rules using the set
        self.comment_size = 0  # set->ext_size: the comments' allocations
        size = stype.elem_size6 if family == NFPROTO_IPV6 else stype.elem_size
        self.dsize = elem_len(size, 4 if size else 0, timeout is not None, counters, comment, skbinfo)

    # --- extensions (ip_set_core.c / ip_set.h) ----------------------------------------------------

    def check_ext(self, ext: ExtArgs) -> None:
        """`ip_set_get_extensions()`: refuse extensions the set was created without."""
        if ext.timeout is not None and self.timeout is None:
            raise IpsetError("Timeout cannot be used: set was created without timeout support")
        if (ext.packets is not None or ext.bytes is not None) and not self.counters:
            raise IpsetError("Packet/byte counters cannot be used: set was created without counter support")
        if ext.comment is not None and not self.comment:
            raise IpsetError("Comment cannot be used: set was created without comment support")
        if (ext.skbmark or ext.skbmarkmask or ext.skbprio or ext.skbqueue) and not self.skbinfo:
            raise IpsetError("Skbinfo mapping cannot be used: set was created without skbinfo support")

    def init_ext(self, e: Entry, ext: ExtArgs, now: float, fresh: bool) -> None:
        """The tail of `mtype_add()`: counters, comment, skbinfo, then the timeout."""
        if self.counters:
            if fresh:
                e.packets = e.bytes = 0
            if ext.bytes is not None:
                e.bytes = ext.bytes
            if ext.packets is not None:
                e.packets = ext.packets
        if self.comment:
            if e.comment is not None:
                self.comment_size -= COMMENT_RCU_SIZE + len(e.comment.encode()) + 1
                e.comment = None
            if ext.comment is not None:
                c = ext.comment.encode()[:IPSET_MAX_COMMENT_SIZE].decode(errors="ignore")
                e.comment = c
                self.comment_size += COMMENT_RCU_SIZE + len(c.encode()) + 1
        if self.skbinfo:
            e.skbmark, e.skbmarkmask = ext.skbmark, ext.skbmarkmask
            e.skbprio, e.skbqueue = ext.skbprio, ext.skbqueue
        if self.timeout is not None:
            t = self.timeout if ext.timeout is None else ext.timeout
            e.expires = None if t == 0 else now + t

    def destroy_ext(self, e: Entry) -> None:
        """`ip_set_ext_destroy()`: free the comment."""
        if e.comment is not None:
            self.comment_size -= COMMENT_RCU_SIZE + len(e.comment.encode()) + 1
            e.comment = None

    def ext_pairs(self, e: Entry, now: float) -> list[tuple[str, str | None]]:
        """The extensions after an element in list/save output (the type's ADT argument order), as
        (option, value or None for a flag)."""
        out: list[tuple[str, str | None]] = []
        if self.timeout is not None:
            left = 0 if e.expires is None else int(e.expires - now)
            out.append(("timeout", str(left if left > 0 or e.expires is None else 1)))
        if e.nomatch:
            out.append(("nomatch", None))
        if self.counters:
            out += [("packets", str(e.packets)), ("bytes", str(e.bytes))]
        if self.comment and e.comment:
            out.append(("comment", '"' + e.comment + '"'))
        if self.skbinfo:
            if e.skbmark or e.skbmarkmask:
                out.append(("skbmark", f"0x{e.skbmark:x}" if e.skbmarkmask == 0xFFFFFFFF
                            else f"0x{e.skbmark:x}/0x{e.skbmarkmask:x}"))
            if e.skbprio:
                out.append(("skbprio", f"{e.skbprio >> 16:x}:{e.skbprio & 0xFFFF:x}"))
            if e.skbqueue:
                out.append(("skbqueue", str(e.skbqueue)))
        return out

    def ext_text(self, e: Entry, now: float) -> str:
        return "".join(f" {k}" if v is None else f" {k} {v}" for k, v in self.ext_pairs(e, now))

    def flags_text(self) -> str:
        out = ""
        if self.timeout is not None:
            out += f" timeout {self.timeout}"
        if self.counters:
            out += " counters"
        if self.comment:
            out += " comment"
        if self.skbinfo:
            out += " skbinfo"
        return out

    def same_set(self, other: IpSet) -> bool:
        """`mtype_same_set()` and the type checks of `ip_set_create()` for `-exist create`."""
        return (self.type is other.type and self.timeout == other.timeout and self.counters == other.counters
                and self.comment == other.comment and self.skbinfo == other.skbinfo
                and self.forceadd == other.forceadd and self._same(other))

    def _same(self, other: IpSet) -> bool:
        return True

    # --- the type's operations ----------------------------------------------------------------------

    def add(self, elem: Elem, ext: ExtArgs, now: float, exist: bool) -> None:
        raise NotImplementedError

    def delete(self, elem: Elem, now: float, exist: bool) -> None:
        raise NotImplementedError

    def lookup(self, elem: Elem, now: float, all_cidrs: bool) -> Entry | None:
        """The entry a test of `elem` reaches (nomatch entries included), or None."""
        raise NotImplementedError

    def entries(self, now: float) -> list[Entry]:
        raise NotImplementedError

    def flush(self) -> None:
        raise NotImplementedError

    def gc(self, now: float) -> None:
        """Drop expired entries (the kernel's periodic gc, run before each userspace command)."""

    def header(self) -> str:
        raise NotImplementedError

    def memsize(self, now: float) -> int:
        raise NotImplementedError

    def swap_data(self, other: IpSet) -> None:
        """`ip_set_swap()`: the two sets exchange everything but their name and references."""
        keep = ("name", "ref")
        mine = {k: v for k, v in vars(self).items() if k not in keep}
        theirs = {k: v for k, v in vars(other).items() if k not in keep}
        for k in mine:
            delattr(self, k)
        for k in theirs:
            delattr(other, k)
        self.__dict__.update(theirs)
        other.__dict__.update(mine)
        self.__class__, other.__class__ = other.__class__, self.__class__


class _Bucket:
    """`struct hbucket`: `slots[:pos]` (None where the used bit is clear) out of `size` allocated."""

    __slots__ = ("size", "slots")

    def __init__(self) -> None:
        self.size = AHASH_INIT_SIZE
        self.slots: list[Entry | None] = []


class _Resize(Exception):
    """`-EAGAIN` from `mtype_add()`: the bucket is full, the table must grow."""


class HashSet(IpSet):
    """A hash:* set (ip_set_hash_gen.h) for family inet or inet6 (the `*4` or `*6` variant: `hbits` is the
    address width, HOST_MASK)."""

    def __init__(self, name: str, stype: SetType, *, hashsize: int = 1024, maxelem: int = 65536,
                 netmask: int = 32, initval: int = 0, bucketsize: int = AHASH_MAX_SIZE,
                 opts: SetOpts = SET_OPTS_NONE, family: int = NFPROTO_IPV4) -> None:
        super().__init__(name, stype, opts, family)
        self.hbits = 128 if family == NFPROTO_IPV6 else 32
        self._hkey = stype.hkey6 if family == NFPROTO_IPV6 and stype.hkey6 is not None else stype.hkey
        hashsize = max(hashsize, 64)  # IPSET_MIMINAL_HASHSIZE
        self.bits = (hashsize - 1).bit_length()
        self.maxelem = maxelem
        self.netmask = netmask
        self.initval = initval & 0xFFFFFFFF
        bs = min(max(bucketsize, AHASH_INIT_SIZE), AHASH_MAX_SIZE)
        self.bucketsize = bs + (bs % 2)
        self.index: dict[Elem, Entry] = {}
        self.buckets: dict[int, _Bucket] = {}
        self.ext_size = 0  # the regions' ext_size: bucket allocations
        self.nets: list[int] = []  # h->nets: distinct prefix lengths, most specific first
        self.net_count: dict[int, int] = {}

    def _same(self, other: IpSet) -> bool:
        """The family is not compared (the kernel's hash types register NFPROTO_UNSPEC): `-exist create` of
        an inet6 set over an inet one of the same options succeeds (recorded), both masks being all ones."""
        if not isinstance(other, HashSet) or self.maxelem != other.maxelem:
            return False
        if self.netmask == self.hbits and other.netmask == other.hbits:
            return True
        return (self.family, self.netmask) == (other.family, other.netmask)

    def hkey(self, elem: Elem) -> int:
        """`HKEY()`: jhash2 over the element struct, read as host-order (little-endian) u32 words."""
        raw = self._hkey(elem)
        return jhash2(struct.unpack(f"<{len(raw) // 4}I", raw), self.initval)

    def _bucket_bytes(self, slots: int) -> int:
        """The `ext_size(n, dsize)` macro: the kernel adds it for a new bucket *and* for every growth or
        shrink by AHASH_INIT_SIZE slots, so the header is counted once per resize step."""
        return HBUCKET_SIZE + slots * self.dsize

    # --- prefix book-keeping (mtype_add_cidr / mtype_del_cidr) --------------------------------------

    def _add_cidr(self, cidr: int) -> None:
        n = self.net_count.get(cidr, 0)
        self.net_count[cidr] = n + 1
        if not n:
            self.nets.append(cidr)
            self.nets.sort(reverse=True)

    def _del_cidr(self, cidr: int) -> None:
        n = self.net_count[cidr] - 1
        if n:
            self.net_count[cidr] = n
        else:
            del self.net_count[cidr]
            self.nets.remove(cidr)

    def _unlink(self, e: Entry) -> None:
        nd = self.type.net_dim
        if nd is not None:
            self._del_cidr(int(e.elem[nd]))  # type: ignore[call-overload]
        del self.index[e.elem]
        self.destroy_ext(e)

    # --- add / del (mtype_add, mtype_del) ------------------------------------------------------------

    def add(self, elem: Elem, ext: ExtArgs, now: float, exist: bool) -> None:
        self.check_ext(ext)
        while True:
            try:
                self._add(elem, ext, now, exist)
                return
            except _Resize:
                self._resize(now)

    def _add(self, elem: Elem, ext: ExtArgs, now: float, exist: bool) -> None:
        """`mtype_add()`; raises `_Resize` where the kernel returns -EAGAIN."""
        h = self.hkey(elem)
        key = h & ((1 << self.bits) - 1)
        elements = len(self.index)
        full = elements >= self.maxelem
        n = self.buckets.get(key)
        if n is None:
            if full:
                raise IpsetError(E_HASH_FULL)
            n = self.buckets[key] = _Bucket()
            self.ext_size += self._bucket_bytes(AHASH_INIT_SIZE)
            j = len(n.slots)
            n.slots.append(None)
        else:
            j = -1
            for i, d in enumerate(n.slots):
                if d is None:
                    if j == -1:
                        j = i
                    continue
                if d.elem == elem:
                    if exist or d.expired(now):
                        self.init_ext(d, ext, now, fresh=d.expired(now))
                        d.nomatch = ext.nomatch and self.type.nomatch
                        return
                    raise IpsetError(E_EXIST_ADD)
                if d.expired(now) and j == -1:
                    j = i
            if j != -1:
                old = n.slots[j]
                if old is not None:
                    self._unlink(old)
            else:
                if full:
                    raise IpsetError(E_HASH_FULL)
                if len(n.slots) >= n.size:
                    if "iface" in self.type.dims:  # IP_SET_HASH_WITH_MULTI
                        multi = sum(1 for d in n.slots if d is not None and d.elem[:2] == elem[:2])
                        if self.bucketsize >= AHASH_MAX_TUNED:
                            raise IpsetError(E_HASH_FULL)
                        if self.bucketsize <= multi:
                            self.bucketsize += AHASH_INIT_SIZE
                    if n.size >= self.bucketsize:
                        raise _Resize
                    n.size += AHASH_INIT_SIZE
                    self.ext_size += self._bucket_bytes(AHASH_INIT_SIZE)  # ext_size(): the header counted again
                j = len(n.slots)
                n.slots.append(None)
        e = Entry(elem, h)
        e.nomatch = ext.nomatch and self.type.nomatch
        self.init_ext(e, ext, now, fresh=True)
        n.slots[j] = e
        self.index[elem] = e
        nd = self.type.net_dim
        if nd is not None:
            self._add_cidr(int(elem[nd]))  # type: ignore[call-overload]

    def _resize(self, now: float) -> None:
        """`mtype_resize()`: double the table until every bucket fits, keeping the slots' order."""
        bits = self.bits
        while True:
            bits += 1
            if bits > 31:
                raise IpsetError(E_HASH_FULL)
            mask = (1 << bits) - 1
            new: dict[int, _Bucket] = {}
            ext_size = 0
            ok = True
            for k in sorted(self.buckets):
                for d in self.buckets[k].slots:
                    if d is None or d.expired(now):
                        continue
                    m = new.get(d.hkey & mask)
                    if m is None:
                        m = new[d.hkey & mask] = _Bucket()
                        ext_size += self._bucket_bytes(AHASH_INIT_SIZE)
                    elif len(m.slots) >= m.size:
                        if m.size >= self.bucketsize:
                            ok = False
                            break
                        m.size += AHASH_INIT_SIZE
                        ext_size += self._bucket_bytes(AHASH_INIT_SIZE)
                    m.slots.append(d)
                if not ok:
                    break
            if ok:
                break
        for b in self.buckets.values():  # expired entries are not carried over
            for d in b.slots:
                if d is not None and d.expired(now):
                    self._unlink(d)
        self.bits, self.buckets, self.ext_size = bits, new, ext_size

    def delete(self, elem: Elem, now: float, exist: bool) -> None:
        """`mtype_del()`, with its bucket shrinking."""
        key = self.hkey(elem) & ((1 << self.bits) - 1)
        n = self.buckets.get(key)
        d = self.index.get(elem)
        if n is None or d is None or d.expired(now):
            if exist:
                return
            raise IpsetError(E_EXIST_DEL)
        i = n.slots.index(d)
        k = sum(1 for s in n.slots[:i] if s is None)
        n.slots[i] = None
        if i + 1 == len(n.slots):
            n.slots.pop()
        self._unlink(d)
        k += sum(1 for s in n.slots[i:] if s is None)
        if k == len(n.slots):  # every slot left is free (the kernel's fix of the bucket leak)
            self.ext_size -= self._bucket_bytes(n.size)
            del self.buckets[key]
        elif k >= AHASH_INIT_SIZE:
            n.slots = [s for s in n.slots if s is not None]
            n.size -= AHASH_INIT_SIZE
            self.ext_size -= self._bucket_bytes(AHASH_INIT_SIZE)

    def gc(self, now: float) -> None:
        """`mtype_gc_do()` over every region."""
        if self.timeout is None:
            return
        for key in sorted(self.buckets):
            n = self.buckets[key]
            d = 0
            for j, s in enumerate(n.slots):
                if s is None:
                    d += 1
                elif s.expired(now):
                    n.slots[j] = None
                    self._unlink(s)
                    d += 1
            if d >= AHASH_INIT_SIZE:
                if d >= n.size:
                    self.ext_size -= self._bucket_bytes(n.size)
                    del self.buckets[key]
                else:
                    n.slots = [s for s in n.slots if s is not None]
                    n.size -= AHASH_INIT_SIZE
                    self.ext_size -= self._bucket_bytes(AHASH_INIT_SIZE)

    def flush(self) -> None:
        """`mtype_flush()`."""
        for e in self.index.values():
            self.destroy_ext(e)
        self.index.clear()
        self.buckets.clear()
        self.ext_size = 0
        self.nets.clear()
        self.net_count.clear()

    # --- test (mtype_test, mtype_test_cidrs) --------------------------------------------------------

    def lookup(self, elem: Elem, now: float, all_cidrs: bool) -> Entry | None:
        """`mtype_test()`: with `all_cidrs` (a host address given) every stored prefix, most specific first."""
        nd = self.type.net_dim
        if nd is None or not all_cidrs:
            e = self.index.get(elem)
            return e if e is not None and not e.expired(now) else None
        ip = int(elem[nd - 1])  # type: ignore[call-overload]
        full = (1 << self.hbits) - 1
        for cidr in self.nets:
            m = full ^ ((1 << (self.hbits - cidr)) - 1)
            e = self.index.get((*elem[:nd - 1], ip & m, cidr, *elem[nd + 1:]))
            if e is not None and not e.expired(now):
                return e
        return None

    def entries(self, now: float) -> list[Entry]:
        """`mtype_list()`: buckets in index order, slots in order, expired entries left out."""
        return [d for k in sorted(self.buckets) for d in self.buckets[k].slots
                if d is not None and not d.expired(now)]

    def header(self) -> str:
        fam = "inet6" if self.family == NFPROTO_IPV6 else "inet"
        out = f"family {fam} hashsize {1 << self.bits} maxelem {self.maxelem}"
        if self.type.netmask and self.netmask != self.hbits:
            out += f" netmask {self.netmask}"
        return out + self.flags_text() + f" bucketsize {self.bucketsize} initval 0x{self.initval:08x}"

    def memsize(self, now: float) -> int:
        """`mtype_ahash_memsize() + ext_size + set->ext_size` (mtype_head)."""
        regions = 1 if self.bits < HTABLE_REGION_BITS else 1 << (self.bits - HTABLE_REGION_BITS)
        base = self.type.base_mem6 if self.family == NFPROTO_IPV6 else self.type.base_mem
        return base + (regions - 1) * REGION_SIZE + self.ext_size + self.comment_size


def bits_to_longs_bytes(nbits: int) -> int:
    return math.ceil(nbits / 64) * 8
