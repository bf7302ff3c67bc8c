"""NPTv6: stateless, checksum-neutral IPv6 prefix translation (RFC 6296; net/ipv6/netfilter/ip6t_NPT.c).

ipv6-semantics.md §3.7: SNPT rewrites the source (mangle LOCAL_IN, POST_ROUTING), DNPT the destination
(mangle PRE_ROUTING, LOCAL_OUT); both continue. The adjustment is computed once when the rule is loaded
(`npt_adjustment`, `ip6t_npt_checkentry`); each packet's address is mapped by `npt_map`
(`ip6t_npt_map_pfx`): the prefix bits replaced and one 16-bit word adjusted so that the one's-complement
sum of the address, hence every checksum covering it, is unchanged. Nothing checks that the address was in
the source prefix, and conntrack never hears of it.
"""

from __future__ import annotations

from typing import Final

from natbox.wire.layout import ICMP6H_LEN, IP6H_DADDR, IP6H_LEN, IP6H_NEXTHDR, IP6H_SADDR

__all__ = ["npt_adjustment", "npt_check", "npt_map", "npt_map_bounced"]

_MASK128: Final = (1 << 128) - 1
CSUM_MANGLED_0: Final = 0xFFFF
_NEXTHDR_ICMPV6: Final = 58


def _csum_add(a: int, b: int) -> int:
    """`csum_add` on a 32-bit `__wsum`: add with the carry folded back in."""
    r = a + b
    return (r + (r >> 32)) & 0xFFFFFFFF


def _csum_fold(x: int) -> int:
    """`csum_fold`: fold 32 bits to 16 and complement."""
    x = (x & 0xFFFF) + (x >> 16)
    x = (x & 0xFFFF) + (x >> 16)
    return ~x & 0xFFFF


def _words(addr: int) -> list[int]:
    return [(addr >> s) & 0xFFFF for s in range(112, -1, -16)]


def npt_check(pfx: int, plen: int) -> str | None:
    """`ip6t_npt_checkentry`'s test of one prefix: at most /64, no bits set past the prefix (EINVAL)."""
    if not 0 <= plen <= 64:
        return f"prefix length {plen} is longer than 64"
    if pfx & (_MASK128 >> plen):
        return "prefix has bits set past its length"
    return None


def npt_adjustment(src_pfx: int, dst_pfx: int) -> int:
    """`ip6t_npt_checkentry`: `~csum_fold(csum_sub(sum(src_pfx words), sum(dst_pfx words)))`."""
    src_sum = dst_sum = 0
    for s, d in zip(_words(src_pfx), _words(dst_pfx), strict=True):
        src_sum = _csum_add(src_sum, s)
        dst_sum = _csum_add(dst_sum, d)
    return ~_csum_fold(_csum_add(src_sum, ~dst_sum & 0xFFFFFFFF)) & 0xFFFF


def npt_map(addr: int, adjustment: int, dst_pfx: int, pfx_len: int) -> int | None:
    """Mirrors `ip6t_npt_map_pfx()`: `pfx_len` = max(src_len, dst_len) bits of `dst_pfx`, then word 3 (prefix
    ≤ /48) or the first of words 4-7 that is not 0xFFFF adjusted (one's-complement add, 0xFFFF written as 0).
    None when every word 4-7 is 0xFFFF (the target then sends Parameter Problem and drops)."""
    if pfx_len:
        keep = _MASK128 >> pfx_len
        addr = (addr & keep) | (dst_pfx & ~keep & _MASK128)
    words = _words(addr)
    if pfx_len <= 48:
        idx = 3
    else:
        for idx in range(4, 8):
            if words[idx] != CSUM_MANGLED_0:
                break
        else:
            return None
    total = ~_csum_fold(_csum_add(words[idx], adjustment)) & 0xFFFF
    if total == CSUM_MANGLED_0:
        total = 0
    shift = (7 - idx) * 16
    return (addr & ~(0xFFFF << shift) & _MASK128) | (total << shift)


def npt_map_bounced(data: bytearray, adjustment: int, src_pfx: int, src_len: int, dst_pfx: int, pfx_len: int, *,
                    snpt: bool) -> None:
    """`icmpv6_bounced_ipv6hdr()` and its use in `ip6t_snpt_tg` / `ip6t_dnpt_tg` (6.x): when the packet is an
    ICMPv6 error right after the fixed header, the packet it quotes is mapped too, its destination (SNPT) or
    source (DNPT), but only when that address lies in the rule's source prefix. Checksum-neutral, so the
    ICMPv6 checksum stays valid."""
    inner = IP6H_LEN + ICMP6H_LEN
    if len(data) < inner + IP6H_LEN or data[IP6H_NEXTHDR] != _NEXTHDR_ICMPV6 or data[IP6H_LEN] >= 128:
        return
    pos = inner + (IP6H_DADDR if snpt else IP6H_SADDR)
    addr = int.from_bytes(data[pos:pos + 16], "big")
    if src_len and (addr ^ src_pfx) & ~(_MASK128 >> src_len) & _MASK128:
        return
    new = npt_map(addr, adjustment, dst_pfx, pfx_len)
    if new is not None:
        data[pos:pos + 16] = new.to_bytes(16, "big")
