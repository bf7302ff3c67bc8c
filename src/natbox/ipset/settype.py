"""The set types natbox knows: their revision, element layout, kernel struct sizes and hash key bytes.

One `SetType` per `ip_set_type` the kernel registers (net/netfilter/ipset/ip_set_*.c), with what
`ipset list` shows (the revision a 6.x kernel and ipset 7.17 agree on) and what the model needs:

- `dims`: the element's dimensions (`ip`, `net`, `port`, `ip2`, `net2`, `iface`, `mac`, `set`); an
  element is a flat tuple (`net` contributes ip and cidr, `port` proto and port, `iface` physdev and name).
- `base_mem`, `elem_size`: sizeof(struct htype/bitmap/list_set) and sizeof(struct *4_elem) on x86-64, as
  the kernel adds them up for "Size in memory" (measured on 6.18, tests/ipset/data/ipset_7.17.json).
- `hkey(elem)`: the bytes `HKEY()` hashes with jhash2 (the IPv4 element struct with its flags cleared),
  so that members come out in the kernel's bucket order.
- `base_mem6`, `elem_size6`, `hkey6`: the same for family inet6 (the `*6_elem` structs, whose addresses are
  `union nf_inet_addr`; base sizes measured on 6.18, tests/ipset/data/ipset6_7.17.json); 0/None where the
  type has no inet6 variant. `unspec`: the type's family is NFPROTO_UNSPEC (no address: a set of it
  matches packets of both families).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["SET_TYPES", "Elem", "SetType"]

Elem = tuple[object, ...]


def _k_ip(e: Elem) -> bytes:
    return struct.pack(">I", e[0])


def _k_net(e: Elem) -> bytes:  # struct hash_net4_elem {ip; u16 padding0; u8 nomatch; u8 cidr}
    return struct.pack(">IHBB", e[0], 0, 0, e[1])


def _k_ipport(e: Elem) -> bytes:  # {ip; __be16 port; u8 proto; u8 padding}
    return struct.pack(">IHBB", e[0], e[2], e[1], 0)


def _k_netport(e: Elem) -> bytes:  # {ip; port; proto; u8 cidr:7 (cidr - 1), nomatch:1}
    return struct.pack(">IHBB", e[0], e[3], e[2], (int(e[1]) - 1) & 0x7F)  # type: ignore[call-overload]


def _k_ipportip(e: Elem) -> bytes:  # {ip; ip2; port; proto; padding}
    return struct.pack(">IIHBB", e[0], e[3], e[2], e[1], 0)


def _k_ipportnet(e: Elem) -> bytes:  # {ip; ip2; port; u8 cidr:7, nomatch:1; proto}
    return struct.pack(">IIHBB", e[0], e[3], e[2], (int(e[4]) - 1) & 0x7F, e[1])  # type: ignore[call-overload]


def _k_netiface(e: Elem) -> bytes:  # struct hash_netiface4_elem_hashed {ip; physdev; cidr; nomatch; elem = 1}
    return struct.pack(">IBBBB", e[0], e[2], e[1], 0, 1)


def _k_mac(e: Elem) -> bytes:  # union {ether[6]; __be32 foo[2]}
    mac = e[0]
    assert isinstance(mac, bytes)
    return mac + b"\0\0"


def _a6(v: object) -> bytes:
    assert isinstance(v, int)
    return v.to_bytes(16, "big")


def _k_ip6(e: Elem) -> bytes:  # struct hash_ip6_elem {union nf_inet_addr ip}
    return _a6(e[0])


def _k_net6(e: Elem) -> bytes:  # struct hash_net6_elem {ip; u16 padding0; u8 nomatch; u8 cidr}
    return _a6(e[0]) + struct.pack(">HBB", 0, 0, e[1])


def _k_ipport6(e: Elem) -> bytes:  # struct hash_ipport6_elem {ip; __be16 port; u8 proto; u8 padding}
    return _a6(e[0]) + struct.pack(">HBB", e[2], e[1], 0)


def _k_netport6(e: Elem) -> bytes:  # {ip; port; proto; u8 cidr:7 (cidr - 1), nomatch:1}
    return _a6(e[0]) + struct.pack(">HBB", e[3], e[2], (int(e[1]) - 1) & 0x7F)  # type: ignore[call-overload]


def _k_ipportip6(e: Elem) -> bytes:  # {ip; ip2; port; proto; padding}
    return _a6(e[0]) + _a6(e[3]) + struct.pack(">HBB", e[2], e[1], 0)


def _k_ipportnet6(e: Elem) -> bytes:  # {ip; ip2; port; u8 cidr:7, nomatch:1; proto}
    return _a6(e[0]) + _a6(e[3]) + struct.pack(">HBB", e[2], (int(e[4]) - 1) & 0x7F, e[1])  # type: ignore[call-overload]


def _k_netiface6(e: Elem) -> bytes:  # struct hash_netiface6_elem_hashed {ip; physdev; cidr; nomatch; elem = 1}
    return _a6(e[0]) + struct.pack(">BBBB", e[2], e[1], 0, 1)


def _k_none(e: Elem) -> bytes:
    return b""


@dataclass(frozen=True)
class SetType:
    name: str
    revision: int
    kind: str  # "hash", "bitmap" or "list"
    dims: tuple[str, ...]
    base_mem: int
    elem_size: int
    hkey: Callable[[Elem], bytes]
    nomatch: bool = False  # IPSET_TYPE_NOMATCH
    net0: bool = False  # IP_SET_HASH_WITH_NET0: a /0 network may be stored
    netmask: bool = False  # the `netmask` create option (hash:ip, bitmap:ip)
    base_mem6: int = 0
    elem_size6: int = 0
    hkey6: Callable[[Elem], bytes] | None = None
    unspec: bool = False  # NFPROTO_UNSPEC: bitmap:port, hash:mac, list:set

    @property
    def net_dim(self) -> int | None:
        """Index in the element tuple of the cidr of the type's network dimension, if any."""
        if "net" in self.dims:
            return 1
        if "net2" in self.dims:
            return 4
        return None


SET_TYPES: dict[str, SetType] = {t.name: t for t in (
    SetType("hash:ip", 6, "hash", ("ip",), 216, 4, _k_ip, netmask=True, base_mem6=224, elem_size6=16,
            hkey6=_k_ip6),
    SetType("hash:net", 7, "hash", ("net",), 456, 8, _k_net, nomatch=True, base_mem6=1240, elem_size6=20,
            hkey6=_k_net6),
    SetType("hash:ip,port", 7, "hash", ("ip", "port"), 216, 8, _k_ipport, base_mem6=232, elem_size6=20,
            hkey6=_k_ipport6),
    SetType("hash:net,port", 8, "hash", ("net", "port"), 456, 8, _k_netport, nomatch=True, base_mem6=1240,
            elem_size6=20, hkey6=_k_netport6),
    SetType("hash:ip,port,ip", 6, "hash", ("ip", "port", "ip2"), 208, 12, _k_ipportip, base_mem6=232,
            elem_size6=36, hkey6=_k_ipportip6),
    SetType("hash:ip,port,net", 8, "hash", ("ip", "port", "net2"), 464, 12, _k_ipportnet, nomatch=True,
            base_mem6=1256, elem_size6=36, hkey6=_k_ipportnet6),
    SetType("hash:net,iface", 8, "hash", ("net", "iface"), 488, 28, _k_netiface, nomatch=True, net0=True,
            base_mem6=1264, elem_size6=40, hkey6=_k_netiface6),
    SetType("hash:mac", 1, "hash", ("mac",), 208, 8, _k_mac, unspec=True),
    SetType("bitmap:ip", 3, "bitmap", ("ip",), 88, 0, _k_none, netmask=True),
    SetType("bitmap:port", 3, "bitmap", ("port",), 72, 0, _k_none, unspec=True),
    SetType("list:set", 3, "list", ("set",), 80, 48, _k_none, unspec=True),
)}
