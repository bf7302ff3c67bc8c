"""What `-m set` and `-j SET` ask of a set for one packet: `ip_set_test`, `ip_set_add`, `ip_set_del`
(ip_set_core.c) over each type's kadt function (the element built from the packet's headers).

`AdtOpt` is `struct ip_set_adt_opt`: the src/dst flag of each dimension, the command flags and, for
counter matches, the wanted packets/bytes. A test returns the kernel's value: > 0 matched, 0 not
(nomatch entries and errors included, as `ip_set_test` folds them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from natbox.ipset.bitmap import BitmapSet, ListSet
from natbox.ipset.elem6 import hostmask6
from natbox.ipset.errors import IpsetError
from natbox.ipset.settype import Elem
from natbox.ipset.store import ENOTEMPTY, Entry, ExtArgs, HashSet, IpSet, _Resize
from natbox.netfilter import NFPROTO_IPV6
from natbox.skb import Skb
from natbox.wire.layout import ICMP6H_CODE, ICMP6H_TYPE, ICMPH_CODE, ICMPH_TYPE

__all__ = ["COUNTER_EQ", "COUNTER_GT", "COUNTER_LT", "COUNTER_NE", "COUNTER_NONE", "AdtOpt", "ip_set_add",
           "ip_set_del", "ip_set_test"]

COUNTER_NONE, COUNTER_EQ, COUNTER_NE, COUNTER_LT, COUNTER_GT = 0, 1, 2, 3, 4  # enum ip_set_counter_op
PORT_PROTOS: Final = (6, 17, 132, 136)
# set type dimensions (struct ip_set_type .dimension)
_DIMENSION: Final = {"hash:ip": 1, "hash:net": 1, "hash:ip,port": 2, "hash:net,port": 2, "hash:ip,port,ip": 3,
              "hash:ip,port,net": 3, "hash:net,iface": 2, "hash:mac": 1, "bitmap:ip": 1, "bitmap:port": 1,
              "list:set": 1}


@dataclass
class AdtOpt:
    """`struct ip_set_adt_opt` (with the flags of `struct xt_set_info` for each dimension)."""

    src: tuple[bool, ...]  # dimension i+1 takes the source (True) or the destination
    return_nomatch: bool = False  # IPSET_FLAG_RETURN_NOMATCH
    skip_counter_update: bool = False
    skip_subcounter_update: bool = False
    packets_op: int = COUNTER_NONE
    packets: int = 0
    bytes_op: int = COUNTER_NONE
    bytes: int = 0
    exist: bool = False  # IPSET_FLAG_EXIST (SET --exist)
    timeout: int | None = None  # SET --timeout (None: the set's default)

    @property
    def match_counters(self) -> bool:
        return self.packets_op != COUNTER_NONE or self.bytes_op != COUNTER_NONE


def _counter_ok(value: int, op: int, want: int) -> bool:
    """`ip_set_match_counter()`."""
    if op == COUNTER_NONE:
        return True
    if op == COUNTER_EQ:
        return value == want
    if op == COUNTER_NE:
        return value != want
    if op == COUNTER_LT:
        return value < want
    return value > want


def match_extensions(s: IpSet, e: Entry, skb_len: int, opt: AdtOpt, now: float) -> bool:
    """`ip_set_match_extensions()`: expiry, then counters (updated first, unless skipped), then match."""
    if e.expired(now):
        return False
    if s.counters:
        if not opt.skip_counter_update:
            e.bytes += skb_len
            e.packets += 1
        if opt.match_counters and not (_counter_ok(e.packets, opt.packets_op, opt.packets)
                                       and _counter_ok(e.bytes, opt.bytes_op, opt.bytes)):
            return False
    return True


def _port(skb: Skb, src: bool) -> tuple[int, int] | None:
    """`ip_set_get_ip4_port()`: (proto, port); ICMP gives type << 8 | code; None when not available."""
    proto = skb.protocol
    if proto <= 0:
        return None
    if skb.frag_off & 0x1FFF:
        return None if proto in PORT_PROTOS or proto == 1 else (proto, 0)
    if proto in PORT_PROTOS:
        p = skb.l4_u16(0 if src else 2)
        return None if p is None else (proto, p)
    if proto == 1:
        off = skb.ihl
        if len(skb.data) < off + ICMPH_CODE + 1:
            return None
        return 1, skb.data[off + ICMPH_TYPE] << 8 | skb.data[off + ICMPH_CODE]
    return proto, 0


def _port6(skb: Skb, src: bool) -> tuple[int, int] | None:
    """`ip_set_get_ip6_port()`: the protocol after `ipv6_skip_exthdr`; nothing for a non-first fragment or a
    walk that failed; then `get_port` as for IPv4 (ICMPv6 gives type << 8 | code)."""
    proto = skb.protocol
    if proto < 0 or skb.is_later_fragment:
        return None
    if proto in PORT_PROTOS:
        p = skb.l4_u16(0 if src else 2)
        return None if p is None else (proto, p)
    if proto == 58:
        off = skb.ihl
        if len(skb.data) < off + ICMP6H_CODE + 1:
            return None
        return 58, skb.data[off + ICMP6H_TYPE] << 8 | skb.data[off + ICMP6H_CODE]
    return proto, 0


def _kadt_elem(s: IpSet, skb: Skb, opt: AdtOpt, adding: bool) -> tuple[Elem, bool] | None:
    """The element a type's kadt builds from the packet, and whether to try every stored prefix; a family
    inet6 set (the `hash_*6_kadt` functions) takes 128-bit addresses (`ip6addrptr`, `ip6_netmask`)."""
    v6 = s.family == NFPROTO_IPV6
    mask, port = (_mask6, _port6) if v6 else (_mask, _port)
    name = s.type.name
    src = opt.src

    def addr(i: int) -> int:
        return skb.saddr if src[i] else skb.daddr

    if name == "hash:ip":
        assert isinstance(s, HashSet)
        ip = mask(addr(0), s.netmask)
        return ((ip,), False) if ip else None
    if name == "bitmap:ip":
        assert isinstance(s, BitmapSet)
        return (addr(0),), False
    if name == "bitmap:port":  # ip_set_get_ip_port: the packet's family decides
        pp = _port6(skb, src[0]) if skb.family == NFPROTO_IPV6 else _port(skb, src[0])
        return ((pp[1],), False) if pp is not None and pp[0] in (6, 17) else None
    if name == "hash:mac":
        mac = skb.src_mac if src[0] else skb.dst_mac
        return ((bytes(mac),), False) if len(mac) == 6 and any(mac) else None
    if name in ("hash:ip,port", "hash:ip,port,ip", "hash:net,port", "hash:ip,port,net"):
        pp = port(skb, src[1])
        if pp is None:
            return None
        if name == "hash:ip,port":
            return (addr(0), pp[0], pp[1]), False
        if name == "hash:ip,port,ip":
            return (addr(0), pp[0], pp[1], addr(2)), False
        cidr = _kadt_cidr(s, adding)
        if cidr is None:
            return None
        if name == "hash:net,port":
            return (mask(addr(0), cidr), cidr, pp[0], pp[1]), not adding
        return (addr(0), pp[0], pp[1], mask(addr(2), cidr), cidr), not adding
    cidr = _kadt_cidr(s, adding)
    if cidr is None:
        return None
    if name == "hash:net":
        return (mask(addr(0), cidr), cidr), not adding
    if name == "hash:net,iface":
        iface = skb.iif if len(src) > 1 and src[1] else skb.oif
        if not iface:
            return None
        return (mask(addr(0), cidr), cidr, 0, iface), not adding
    return None


def _mask(ip: int, cidr: int) -> int:
    return ip & ((0xFFFFFFFF << (32 - cidr)) & 0xFFFFFFFF) if cidr else 0


def _mask6(ip: int, cidr: int) -> int:
    return ip & hostmask6(cidr)


def _kadt_cidr(s: IpSet, adding: bool) -> int | None:
    """`INIT_CIDR(h->nets[0].cidr[0], HOST_MASK)`: a test looks up host addresses; an add stores the
    most specific prefix the set holds (a host when it holds none)."""
    assert isinstance(s, HashSet)
    if not adding:
        return s.hbits
    cidr = s.nets[0] if s.nets else s.hbits
    return cidr if cidr else None


def ip_set_test(s: IpSet, skb: Skb, opt: AdtOpt, now: float, mext: ExtArgs | None = None) -> int:
    """`ip_set_test()`: > 0 when the packet's element is in the set (honouring --return-nomatch). A set of
    the other family never matches (`opt->family == set->family || set->family == NFPROTO_UNSPEC`)."""
    if len(opt.src) < _DIMENSION[s.type.name] or (s.family and s.family != skb.family):
        return 0
    ret = _ktest(s, skb, opt, now, mext)
    if opt.return_nomatch and s.type.nomatch and (ret > 0 or ret == -ENOTEMPTY):
        ret = -ret
    return ret if ret > 0 else 0


def _ktest(s: IpSet, skb: Skb, opt: AdtOpt, now: float, mext: ExtArgs | None) -> int:
    if isinstance(s, ListSet):
        return _list_ktest(s, skb, opt, now)
    built = _kadt_elem(s, skb, opt, adding=False)
    if built is None:
        return 0
    elem, all_cidrs = built
    if all_cidrs:
        assert isinstance(s, HashSet)
        return _test_cidrs(s, elem, skb, opt, now, mext)
    e = s.lookup(elem, now, False)
    return 0 if e is None else _data_match(s, e, skb, opt, now, mext)


def _data_match(s: IpSet, e: Entry, skb: Skb, opt: AdtOpt, now: float, mext: ExtArgs | None) -> int:
    """`mtype_data_match()`: extensions first, then -ENOTEMPTY for a nomatch entry."""
    if not match_extensions(s, e, len(skb.data), opt, now):
        return 0
    if mext is not None and s.skbinfo:
        mext.skbmark, mext.skbmarkmask = e.skbmark, e.skbmarkmask
        mext.skbprio, mext.skbqueue = e.skbprio, e.skbqueue
    return -ENOTEMPTY if e.nomatch else 1


def _test_cidrs(s: HashSet, elem: Elem, skb: Skb, opt: AdtOpt, now: float, mext: ExtArgs | None) -> int:
    """`mtype_test_cidrs()`: each stored prefix length, most specific first; the first entry whose
    extensions match decides (a nomatch entry with -ENOTEMPTY). At most 33 dict lookups."""
    nd = s.type.net_dim
    assert nd is not None
    ip = elem[nd - 1]
    assert isinstance(ip, int)
    mask = _mask if s.hbits == 32 else _mask6
    for cidr in s.nets:
        e = s.index.get((*elem[:nd - 1], mask(ip, cidr), cidr, *elem[nd + 1:]))
        if e is not None:
            ret = _data_match(s, e, skb, opt, now, mext)
            if ret:
                return ret
    return 0


def _list_ktest(s: ListSet, skb: Skb, opt: AdtOpt, now: float) -> int:
    """`list_set_ktest()`: the first member set the packet matches; its own counters then decide."""
    sub = AdtOpt(opt.src, opt.return_nomatch, opt.skip_counter_update or opt.skip_subcounter_update,
                 opt.skip_subcounter_update)
    for m, e in s.member_sets(now):
        if ip_set_test(m, skb, sub, now) > 0 and match_extensions(s, e, len(skb.data), opt, now):
            return 1
    return 0


def ip_set_add(s: IpSet, skb: Skb, opt: AdtOpt, now: float) -> int:
    """`ip_set_add()` from a SET target: 0 when added; errors are the target's to ignore, and a full
    bucket is not resized from the packet path (mtype_add's -EAGAIN; only userspace resizes)."""
    if len(opt.src) < _DIMENSION[s.type.name] or (s.family and s.family != skb.family):
        return -1
    if isinstance(s, ListSet):  # list_set_kadd: the first member that takes it
        for m, _ in s.member_sets(now):
            if ip_set_add(m, skb, opt, now) == 0:
                return 0
        return -1
    built = _kadt_elem(s, skb, opt, adding=True)
    if built is None:
        return -1
    ext = ExtArgs(timeout=opt.timeout if s.timeout is not None else None)
    if s.counters:
        ext.packets, ext.bytes = 1, len(skb.data)
    try:
        if isinstance(s, HashSet):
            s._add(built[0], ext, now, opt.exist)
        else:
            s.add(built[0], ext, now, opt.exist)
    except (_Resize, IpsetError):
        return -1
    return 0


def ip_set_del(s: IpSet, skb: Skb, opt: AdtOpt, now: float) -> int:
    """`ip_set_del()` from a SET target: 0 when deleted."""
    if len(opt.src) < _DIMENSION[s.type.name] or (s.family and s.family != skb.family):
        return -1
    if isinstance(s, ListSet):  # list_set_kdel: the first member that had it
        for m, _ in s.member_sets(now):
            if ip_set_del(m, skb, opt, now) == 0:
                return 0
        return -1
    built = _kadt_elem(s, skb, opt, adding=True)
    if built is None:
        return -1
    try:
        s.delete(built[0], now, False)
    except IpsetError:
        return -1
    return 0
