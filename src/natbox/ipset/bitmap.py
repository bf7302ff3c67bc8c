"""bitmap:ip, bitmap:port (ip_set_bitmap_gen.h, ip_set_bitmap_ip.c, ip_set_bitmap_port.c) and list:set
(ip_set_list_set.c).

A bitmap set is an array indexed by offset from the range's start (one entry per `netmask` block for
bitmap:ip); members list in ascending order. A list:set is an ordered list of other sets; adding one takes
a reference on it (`ip_set_get_byname`), so a member set cannot be destroyed.
"""

from __future__ import annotations

from natbox.ipset.elem import format_ip
from natbox.ipset.errors import IpsetError
from natbox.ipset.settype import Elem, SetType
from natbox.ipset.store import (
    E_EXIST_ADD,
    E_EXIST_DEL,
    SET_OPTS_NONE,
    Entry,
    ExtArgs,
    IpSet,
    SetOpts,
    bits_to_longs_bytes,
)

__all__ = ["BitmapSet", "ListSet"]

E_RANGE = "Element is out of the range of the set"


class BitmapSet(IpSet):
    """A bitmap:ip or bitmap:port set over [first, last] (bitmap:ip in blocks of 2^(32 - netmask))."""

    def __init__(self, name: str, stype: SetType, first: int, last: int, netmask: int = 32,
                 opts: SetOpts = SET_OPTS_NONE) -> None:
        super().__init__(name, stype, opts)
        self.first, self.last, self.netmask = first, last, netmask
        self.hosts = 1 << (32 - netmask) if stype.name == "bitmap:ip" else 1
        self.elements = (last - first) // self.hosts + 1
        self.members: dict[int, Entry] = {}

    def _same(self, other: IpSet) -> bool:
        return (isinstance(other, BitmapSet) and self.first == other.first and self.last == other.last
                and self.netmask == other.netmask)

    def _offset(self, elem: Elem) -> int:
        v = elem[0]
        assert isinstance(v, int)
        if not self.first <= v <= self.last:
            raise IpsetError(E_RANGE)
        return (v - self.first) // self.hosts

    def masked(self, v: int) -> int:
        return self.first + (v - self.first) // self.hosts * self.hosts

    def add(self, elem: Elem, ext: ExtArgs, now: float, exist: bool) -> None:
        """`mtype_add()` of ip_set_bitmap_gen.h."""
        self.check_ext(ext)
        off = self._offset(elem)
        e = self.members.get(off)
        if e is not None and not e.expired(now):
            if not exist:
                raise IpsetError(E_EXIST_ADD)
            self.init_ext(e, ext, now, fresh=False)
            return
        if e is not None:
            self.destroy_ext(e)
        e = Entry((self.first + off * self.hosts,), 0)
        self.init_ext(e, ext, now, fresh=True)
        self.members[off] = e

    def delete(self, elem: Elem, now: float, exist: bool) -> None:
        off = self._offset(elem)
        e = self.members.get(off)
        if e is None or e.expired(now):
            if exist:
                return
            raise IpsetError(E_EXIST_DEL)
        self.destroy_ext(e)
        del self.members[off]

    def lookup(self, elem: Elem, now: float, all_cidrs: bool) -> Entry | None:
        v = int(elem[0])  # type: ignore[call-overload]
        if not self.first <= v <= self.last:
            return None
        e = self.members.get((v - self.first) // self.hosts)
        return e if e is not None and not e.expired(now) else None

    def entries(self, now: float) -> list[Entry]:
        return [self.members[k] for k in sorted(self.members) if not self.members[k].expired(now)]

    def gc(self, now: float) -> None:
        for k in [k for k, e in self.members.items() if e.expired(now)]:
            self.destroy_ext(self.members.pop(k))

    def flush(self) -> None:
        for e in self.members.values():
            self.destroy_ext(e)
        self.members.clear()

    def header(self) -> str:
        if self.type.name == "bitmap:ip":
            out = f"range {format_ip(self.first)}-{format_ip(self.last)}"
            if self.netmask != 32:
                out += f" netmask {self.netmask}"
        else:
            out = f"range {self.first}-{self.last}"
        return out + self.flags_text()

    def memsize(self, now: float) -> int:
        """`mtype_memsize()`: the map, its bitmap and one extension block per element, plus comments."""
        return (self.type.base_mem + bits_to_longs_bytes(self.elements) + self.elements * self.dsize
                + self.comment_size)


class ListSet(IpSet):
    """A list:set of at most `size` member sets, in order (ip_set_list_set.c)."""

    def __init__(self, name: str, stype: SetType, size: int = 8, opts: SetOpts = SET_OPTS_NONE) -> None:
        super().__init__(name, stype, opts)
        self.size = max(size, 4)  # IP_SET_LIST_MIN_SIZE
        self.members: list[tuple[IpSet, Entry]] = []

    def _same(self, other: IpSet) -> bool:
        return isinstance(other, ListSet) and self.size == other.size

    def _pos(self, s: IpSet, now: float) -> int:
        for i, (m, e) in enumerate(self.members):
            if m is s and not e.expired(now):
                return i
        return -1

    def add_set(self, s: IpSet, ext: ExtArgs, now: float, exist: bool, before: int = 0,
                ref: IpSet | None = None) -> None:
        """`list_set_uadd()`: `before` 1 = before `ref`, -1 = after `ref`."""
        self.check_ext(ext)
        self.gc(now)
        i = self._pos(s, now)
        if i >= 0:
            if not exist:
                raise IpsetError(E_EXIST_ADD)
            self.init_ext(self.members[i][1], ext, now, fresh=False)
            return
        at = len(self.members)
        if ref is not None:
            r = self._pos(ref, now)
            if r < 0:
                raise IpsetError("Reference set does not exist")
            at = r if before > 0 else r + 1
        if len(self.members) >= self.size:
            raise IpsetError("The set is full, more elements cannot be added")
        e = Entry((s.name,), 0)
        self.init_ext(e, ext, now, fresh=True)
        self.members.insert(at, (s, e))
        s.ref += 1

    def del_set(self, s: IpSet, now: float, exist: bool) -> None:
        i = self._pos(s, now)
        if i < 0:
            if exist:
                return
            raise IpsetError(E_EXIST_DEL)
        m, e = self.members.pop(i)
        self.destroy_ext(e)
        m.ref -= 1

    def test_set(self, s: IpSet, now: float, before: int = 0, ref: IpSet | None = None) -> bool:
        """`list_set_utest()`."""
        i = self._pos(s, now)
        if i < 0:
            return False
        if ref is None:
            return True
        j = i + 1 if before > 0 else i - 1
        return 0 <= j < len(self.members) and self.members[j][0] is ref

    def entries(self, now: float) -> list[Entry]:
        return [e for m, e in self.members if not e.expired(now)]

    def member_sets(self, now: float) -> list[tuple[IpSet, Entry]]:
        return [(m, e) for m, e in self.members if not e.expired(now)]

    def gc(self, now: float) -> None:
        for m, e in [x for x in self.members if x[1].expired(now)]:
            self.members.remove((m, e))
            self.destroy_ext(e)
            m.ref -= 1

    def flush(self) -> None:
        for m, e in self.members:
            self.destroy_ext(e)
            m.ref -= 1
        self.members.clear()

    def lookup(self, elem: Elem, now: float, all_cidrs: bool) -> Entry | None:
        for m, e in self.members:
            if m.name == elem[0] and not e.expired(now):
                return e
        return None

    def header(self) -> str:
        return f"size {self.size}" + self.flags_text()

    def memsize(self, now: float) -> int:
        """`list_set_memsize()`: the map plus one `set_elem` (with extensions) per member."""
        return self.type.base_mem + len(self.members) * self.dsize + self.comment_size
