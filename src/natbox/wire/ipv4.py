"""IPv4 datagrams: input validation, building, TTL, addresses and fragmentation (options: ip_options.py).

What mirrors which kernel code (Linux 6.x, net/ipv4/):

| natbox | kernel |
|---|---|
| `ip_rcv_core` | `ip_rcv_core()` in ip_input.c (version, ihl, header checksum, tot_len, trim) |
| `ip_rcv_options` | `ip_rcv_options()` in ip_input.c (run by `ip_rcv_finish_core`: after PRE_ROUTING and routing) |
| `ip_decrease_ttl` | `ip_decrease_ttl()` in include/net/ip.h |
| `ip_send_check` | `ip_send_check()` in ip_output.c |
| `ip_do_fragment` | `ip_do_fragment()` in ip_output.c (frag_list fast path and slow path) |
| `ip_fragment_df_blocked` | the DF test of `ip_fragment()` in ip_output.c |
| `ip_exceeds_mtu` | `ip_exceeds_mtu()` in ip_forward.c |
| `ip_finish_output_needs_fragment` | the test in `__ip_finish_output()` in ip_output.c |

Source routing (§1.2 is silent; read from the kernel): `ip_rcv_options()` drops every packet that
carries LSRR or SSRR when `IN_DEV_SOURCE_ROUTE(in_dev)` is false. That macro is
`IN_DEV_ANDCONF(in_dev, ACCEPT_SOURCE_ROUTE)`: `net.ipv4.conf.all.accept_source_route` AND the
device's value. The kernel defaults are all=0 and default=1 (devinet.c `ipv4_devconf` vs
`ipv4_devconf_dflt`; also seen on the 6.18 test box), so by default *every* source-routed packet,
forwarded or local, is dropped after PRE_ROUTING, silently (no ICMP). `ip_rcv_options` implements
that drop; with `accept_source_route=True` it only reports where the option is (the source-route
forwarding itself, `ip_options_rcv_srr`, needs routing and is not implemented).

Malformed options make `__ip_options_compile` fail: the packet is dropped (IPSTATS_MIB_INHDRERRORS)
and `ip_options_compile` sends ICMP PARAMETERPROB with `info = htonl(pointer << 24)`, the pointer
being the offset of the bad octet from the start of the IP header. `ip_rcv_options` returns that
pointer so the caller can send the ICMP.

[V] On Linux 6.18 (tests/defrag/test_defrag_kernel.py): a forwarded datagram with a malformed
record-route option drew ICMP PARAMETERPROB with pointer 22 quoting it; a loose-source-routed one
was dropped with no ICMP; refragmentation and FRAG_NEEDED/TIME_EXCEEDED replies were byte-equal.

Every function taking packet bytes is total: malformed input gives a DropReason or a neutral value,
never an exception. Addresses are host-order ints.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from natbox.netfilter import DropReason
from natbox.wire.checksum import csum_replace4, internet_checksum
from natbox.wire.ip_options import IpOptions, ip_options_compile, ip_options_fragment

__all__ = [
    "IPTOS_PREC_INTERNETCONTROL",
    "IP_DF",
    "IP_MAX_MTU",
    "IP_MF",
    "IP_OFFSET",
    "IpOptions",
    "addr_to_str",
    "build_ipv4",
    "ip_daddr",
    "ip_decrease_ttl",
    "ip_do_fragment",
    "ip_exceeds_mtu",
    "ip_finish_output_needs_fragment",
    "ip_fragment",
    "ip_fragment_df_blocked",
    "ip_hdrlen",
    "ip_header_csum_ok",
    "ip_is_fragment",
    "ip_output_fragments",
    "ip_rcv_core",
    "ip_rcv_options",
    "ip_saddr",
    "ip_send_check",
    "ip_set_daddr",
    "ip_set_saddr",
    "set_daddr",
    "set_saddr",
    "str_to_addr",
]

# include/net/ip.h
IP_CE: Final = 0x8000
IP_DF: Final = 0x4000
IP_MF: Final = 0x2000
IP_OFFSET: Final = 0x1FFF
IP_MAX_MTU: Final = 0xFFFF
IPTOS_PREC_INTERNETCONTROL: Final = 0xC0
IPTOS_TOS_MASK: Final = 0x1E  # RT_TOS()

_IPHDR_LEN: Final = 20


def addr_to_str(addr: int) -> str:
    """Dotted quad of a host-order address."""
    return f"{addr >> 24 & 255}.{addr >> 16 & 255}.{addr >> 8 & 255}.{addr & 255}"


def str_to_addr(text: str) -> int:
    """Parse a dotted quad. Raises ValueError (configuration, not packet bytes)."""
    parts = text.strip().split(".")
    if len(parts) != 4 or not all(p.isdigit() and len(p) <= 3 and int(p) <= 255 for p in parts):
        raise ValueError(f"invalid IPv4 address: {text!r}")
    return int(parts[0]) << 24 | int(parts[1]) << 16 | int(parts[2]) << 8 | int(parts[3])


# --- header fields (the datagram is known to hold a full header) ------------------------------


def ip_hdrlen(data: bytes | bytearray | memoryview) -> int:
    return (data[0] & 0x0F) * 4


def ip_saddr(data: bytes | bytearray | memoryview) -> int:
    return int.from_bytes(data[12:16], "big")


def ip_daddr(data: bytes | bytearray | memoryview) -> int:
    return int.from_bytes(data[16:20], "big")


def ip_is_fragment(data: bytes | bytearray | memoryview) -> bool:
    """`ip_is_fragment()`: MF set or a non-zero offset."""
    return bool(((data[6] << 8) | data[7]) & (IP_MF | IP_OFFSET))


def ip_send_check(data: bytearray) -> None:
    """Recompute the header checksum in place (`ip_send_check`)."""
    ihl = (data[0] & 0x0F) * 4
    data[10] = 0
    data[11] = 0
    check = internet_checksum(data[:ihl])
    data[10] = check >> 8
    data[11] = check & 0xFF


def ip_header_csum_ok(data: bytes | bytearray | memoryview) -> bool:
    """`ip_fast_csum(iph, ihl) == 0`: the header, checksum included, sums to 0xFFFF."""
    ihl = (data[0] & 0x0F) * 4
    return internet_checksum(data[:ihl]) == 0


def ip_set_saddr(data: bytearray, new: int) -> None:
    """Write saddr and patch the header checksum incrementally (`csum_replace4`, §4.8)."""
    old = int.from_bytes(data[12:16], "big")
    check = csum_replace4((data[10] << 8) | data[11], old, new)
    data[12:16] = new.to_bytes(4, "big")
    data[10] = check >> 8
    data[11] = check & 0xFF


def ip_set_daddr(data: bytearray, new: int) -> None:
    """Write daddr and patch the header checksum incrementally (`csum_replace4`, §4.8)."""
    old = int.from_bytes(data[16:20], "big")
    check = csum_replace4((data[10] << 8) | data[11], old, new)
    data[16:20] = new.to_bytes(4, "big")
    data[10] = check >> 8
    data[11] = check & 0xFF


set_saddr = ip_set_saddr
set_daddr = ip_set_daddr


def ip_decrease_ttl(data: bytearray) -> int:
    """Decrement the TTL and patch the checksum exactly as `ip_decrease_ttl()` does; returns the new TTL.

    The kernel adds `htons(0x0100)` to the checksum *as stored in memory* and adds the carry back
    with `check + (check >= 0xFFFF)` (§1.2). On the little-endian hosts the reference runs on, the
    stored u16 is the wire value byte-swapped, so the arithmetic below is done on that swapped
    value: the result is byte-identical to the kernel's, including its choice of 0x0000 rather than
    0xFFFF for a zero sum. Like the kernel, TTL 0 wraps to 255 (callers check TTL <= 1 first).
    """
    check = data[10] | (data[11] << 8)  # the u16 as a little-endian CPU loads it
    check += 0x0001  # htons(0x0100) on little endian
    check += check >= 0xFFFF
    data[10] = check & 0xFF
    data[11] = (check >> 8) & 0xFF
    ttl = (data[8] - 1) & 0xFF
    data[8] = ttl
    return ttl


# --- input -------------------------------------------------------------------------------------


def ip_rcv_core(
    frame_payload: bytes | bytearray | memoryview,
) -> tuple[bytearray | None, DropReason | None]:
    """Validate a received IPv4 datagram; mirrors `ip_rcv_core()` in net/ipv4/ip_input.c.

    Returns `(datagram, None)` with the datagram trimmed to tot_len (link-layer padding removed,
    as `pskb_trim_rcsum` does), or `(None, reason)`:

    | kernel test | reason |
    |---|---|
    | `pskb_may_pull(skb, sizeof(struct iphdr))` | IP_HDR_TRUNCATED |
    | `iph->version != 4` | IP_BAD_VERSION |
    | `iph->ihl < 5` | IP_BAD_IHL |
    | `pskb_may_pull(skb, iph->ihl*4)` | IP_HDR_TRUNCATED |
    | `ip_fast_csum(iph, ihl)` (CSUMERRORS) | IP_CSUM |
    | `skb->len < tot_len` (INTRUNCATEDPKTS) | IP_BAD_TOTLEN |
    | `tot_len < ihl*4` | IP_BAD_TOTLEN |

    The kernel tests version and ihl in one `if` (both are `inhdr_error`); natbox names the
    version first. IP options are not looked at here: the kernel validates them later, in
    `ip_rcv_finish_core` after PRE_ROUTING (see `ip_rcv_options`). PACKET_OTHERHOST is the
    caller's check (it knows the link-layer destination).
    """
    n = len(frame_payload)
    if n < _IPHDR_LEN:
        return None, DropReason.IP_HDR_TRUNCATED
    b0 = frame_payload[0]
    if b0 >> 4 != 4:
        return None, DropReason.IP_BAD_VERSION
    ihl = (b0 & 0x0F) * 4
    if ihl < _IPHDR_LEN:
        return None, DropReason.IP_BAD_IHL
    if n < ihl:
        return None, DropReason.IP_HDR_TRUNCATED
    # internet_checksum(header) != 0, inline: the header's 16-bit words read as one integer w sum to
    # w mod 0xFFFF (see csum_partial); the folded sum is 0xFFFF (checksum 0) iff w != 0 and w ≡ 0
    w = int.from_bytes(frame_payload[:ihl], "big")  # ihl is a multiple of 4: no odd byte
    if not w or w % 0xFFFF:
        return None, DropReason.IP_CSUM
    tot_len = (frame_payload[2] << 8) | frame_payload[3]
    if n < tot_len or tot_len < ihl:
        return None, DropReason.IP_BAD_TOTLEN
    return bytearray(frame_payload[:tot_len]), None


def ip_rcv_options(
    data: bytes | bytearray | memoryview, *, accept_source_route: bool = False
) -> tuple[IpOptions | None, DropReason | None, int]:
    """Mirrors `ip_rcv_options()` (ip_input.c), run for ihl > 5 after the input route lookup.

    Returns `(options, None, 0)` to continue, `(None, IP_BAD_OPTIONS, pointer)` for malformed
    options (the caller sends ICMP PARAMETERPROB code 0 with `info = pointer << 24`, as
    `ip_options_compile` does), or `(options, IP_BAD_OPTIONS, 0)` for a source-routed packet
    when `accept_source_route` (all AND device, default all=0) is off: dropped without ICMP.
    """
    opts, pointer = ip_options_compile(data)
    if opts is None:
        return None, DropReason.IP_BAD_OPTIONS, pointer
    if opts.srr and not accept_source_route:
        return opts, DropReason.IP_BAD_OPTIONS, 0
    return opts, None, 0


# --- building ----------------------------------------------------------------------------------


def build_ipv4(
    src: int,
    dst: int,
    proto: int,
    payload: bytes | bytearray | memoryview,
    *,
    ttl: int = 64,
    ident: int = 0,
    df: bool = False,
    mf: bool = False,
    frag_offset: int = 0,
    tos: int = 0,
    options: bytes = b"",
) -> bytearray:
    """An IPv4 datagram with a correct header checksum. `frag_offset` is in bytes (a multiple of 8).

    `options` is padded with IPOPT_END to a multiple of 4 bytes (at most 40).
    """
    opts = bytes(options)
    if len(opts) & 3:
        opts += bytes(4 - (len(opts) & 3))
    ihl = _IPHDR_LEN + len(opts)
    frag = ((frag_offset >> 3) & IP_OFFSET) | (IP_DF if df else 0) | (IP_MF if mf else 0)
    tot_len = ihl + len(payload)
    hdr = bytearray(
        (
            0x40 | (ihl >> 2),
            tos & 0xFF,
            (tot_len >> 8) & 0xFF,
            tot_len & 0xFF,
            (ident >> 8) & 0xFF,
            ident & 0xFF,
            frag >> 8,
            frag & 0xFF,
            ttl & 0xFF,
            proto & 0xFF,
            0,
            0,
        )
    )
    hdr += src.to_bytes(4, "big")
    hdr += dst.to_bytes(4, "big")
    hdr += opts
    check = internet_checksum(hdr)
    hdr[10] = check >> 8
    hdr[11] = check & 0xFF
    hdr += payload
    return hdr


# --- fragmentation -----------------------------------------------------------------------------


def ip_do_fragment(
    data: bytes | bytearray | memoryview,
    mtu: int,
    *,
    frag_max_size: int = 0,
    frag_pmtu: bool = False,
    frag_list: Sequence[int] | None = None,
) -> list[bytearray]:
    """Split a datagram into fragments of at most `mtu` bytes; mirrors `ip_do_fragment()` (ip_output.c).

    - `mtu` is lowered to `frag_max_size` when that is set and smaller: a reassembled datagram is
      refragmented to the largest fragment received (§9, IPCB(skb)->frag_max_size).
    - Fast path: when `frag_list` gives the payload lengths of the fragments the datagram was
      reassembled from (`IpDefrag` returns them) and their geometry fits (first payload <= mtu and
      a multiple of 8, the datagram not itself a fragment, every later piece <= mtu and a multiple
      of 8 unless last), the original boundaries are reused (`ip_fraglist_init/prepare`): the first
      fragment gets frag_off = MF only and the others offset|MF(if not last), DF cleared.
    - Slow path (`ip_frag_init/ip_frag_next`): payload chunks of `(mtu - hlen) & ~7` bytes; offsets
      continue from the datagram's own offset and MF stays set on every piece if it was set; DF is
      set on every piece when `frag_pmtu` (IPSKB_FRAG_PMTU, set by defrag when the largest fragment
      had DF).
    - Options: the first fragment keeps all of them; later fragments get a header in which options
      without the copy flag are NOOPs (`ip_options_fragment`).
    - Every fragment has the same IP ID and a correct header checksum.

    Returns [] when the data space per fragment is under 8 bytes (IPv4's minimum MTU is 68, so a
    real device never asks for that); callers treat it as a drop.
    """
    n = len(data)
    if n < _IPHDR_LEN:
        return []
    hlen = (data[0] & 0x0F) * 4
    if hlen < _IPHDR_LEN or n < hlen:
        return []
    if frag_max_size and frag_max_size < mtu:
        mtu = frag_max_size
    space = mtu - hlen
    if space < 8:
        return []
    src = bytes(data)
    frag_off = (src[6] << 8) | src[7]
    out: list[bytearray] = []

    if frag_list:
        first_len = frag_list[0]
        ok = (
            sum(frag_list) == n - hlen
            and first_len <= space
            and not first_len & 7
            and not frag_off & (IP_MF | IP_OFFSET)
        )
        if ok:
            last = len(frag_list) - 1
            for i, flen in enumerate(frag_list[1:], 1):
                if flen > space or (flen & 7 and i != last):
                    ok = False
                    break
        if ok:
            header = bytearray(src[:hlen])
            ptr = hlen
            offset = 0
            for i, flen in enumerate(frag_list):
                if i == 1:
                    ip_options_fragment(header)
                piece = bytearray(header)
                piece += src[ptr : ptr + flen]
                tot = hlen + flen
                fo = (offset >> 3) | (IP_MF if i != last else 0)
                piece[2] = tot >> 8
                piece[3] = tot & 0xFF
                piece[6] = fo >> 8
                piece[7] = fo & 0xFF
                ip_send_check(piece)
                out.append(piece)
                ptr += flen
                offset += flen
            return out

    header = bytearray(src[:hlen])
    left = n - hlen
    ptr = hlen
    offset = (frag_off & IP_OFFSET) << 3
    not_last = bool(frag_off & IP_MF)
    first = True
    while left > 0:
        length = min(left, space)
        if length < left:
            length &= ~7
        piece = bytearray(header)
        piece += src[ptr : ptr + length]
        left -= length
        fo = (offset >> 3) | (IP_DF if frag_pmtu else 0)
        if left > 0 or not_last:
            fo |= IP_MF
        piece[6] = fo >> 8
        piece[7] = fo & 0xFF
        tot = length + hlen
        piece[2] = tot >> 8
        piece[3] = tot & 0xFF
        ip_send_check(piece)
        out.append(piece)
        if first and offset == 0:
            ip_options_fragment(header)
        first = False
        ptr += length
        offset += length
    return out


def ip_fragment(
    data: bytes | bytearray | memoryview,
    mtu: int,
    *,
    frag_max_size: int = 0,
    frag_pmtu: bool = False,
    frag_list: Sequence[int] | None = None,
) -> list[bytearray]:
    """Fragment `data` for a link of `mtu` bytes (`ip_do_fragment`); see `ip_fragment_df_blocked` for DF."""
    return ip_do_fragment(data, mtu, frag_max_size=frag_max_size, frag_pmtu=frag_pmtu, frag_list=frag_list)


def ip_fragment_df_blocked(
    data: bytes | bytearray | memoryview, mtu: int, *, frag_max_size: int = 0, ignore_df: bool = False
) -> bool:
    """The DF test of `ip_fragment()` (ip_output.c): True means FRAGFAILS, ICMP FRAG_NEEDED (info=mtu), drop.

    With DF clear the datagram is always fragmented. With DF set it is refused unless `ignore_df`
    (skb->ignore_df; conntrack defrag sets it on reassembled datagrams) and frag_max_size <= mtu.
    """
    if not data[6] & 0x40:
        return False
    return not ignore_df or (frag_max_size != 0 and frag_max_size > mtu)


def ip_exceeds_mtu(
    data: bytes | bytearray | memoryview, mtu: int, *, frag_max_size: int = 0, ignore_df: bool = False
) -> bool:
    """Mirrors `ip_exceeds_mtu()` (ip_forward.c): True means ip_forward sends FRAG_NEEDED and drops.

    Only a DF datagram longer than the MTU exceeds it; a reassembled one (frag_max_size set) exceeds
    it when its largest original fragment did, even with ignore_df. (GSO is not modelled.)
    """
    if len(data) <= mtu:
        return False
    if not data[6] & 0x40:
        return False
    if frag_max_size > mtu:
        return True
    return not ignore_df


def ip_finish_output_needs_fragment(length: int, mtu: int, frag_max_size: int = 0) -> bool:
    """The test in `__ip_finish_output()`: `skb->len > mtu || IPCB(skb)->frag_max_size` (GSO aside).

    A reassembled datagram always goes through `ip_fragment`, even when it would fit: that is how
    the fragments received are re-created on output (§9).
    """
    return length > mtu or frag_max_size != 0


def ip_output_fragments(
    data: bytes | bytearray | memoryview,
    mtu: int,
    *,
    frag_max_size: int = 0,
    frag_pmtu: bool = False,
    frag_list: Sequence[int] | None = None,
    ignore_df: bool = False,
) -> tuple[list[bytearray], int]:
    """`__ip_finish_output()` → `ip_fragment()` → `ip_do_fragment()` in one call.

    Returns `(pieces, 0)`: the datagram itself when it fits and was not reassembled, else its
    fragments; or `([], mtu)` when DF forbids fragmenting: the caller sends ICMP FRAG_NEEDED with
    `info = mtu` and drops (FRAGFAILS). `mtu` is the route/device MTU, not lowered by the caller.
    For a datagram reassembled by conntrack pass `frag_max_size`, `frag_pmtu` and `frag_list` from
    `DefragResult` and `ignore_df=True` (`nf_ct_ipv4_gather_frags` sets skb->ignore_df).
    """
    if not ip_finish_output_needs_fragment(len(data), mtu, frag_max_size):
        return [bytearray(data)], 0
    if len(data) < _IPHDR_LEN or ip_fragment_df_blocked(data, mtu, frag_max_size=frag_max_size, ignore_df=ignore_df):
        return [], mtu
    return ip_do_fragment(data, mtu, frag_max_size=frag_max_size, frag_pmtu=frag_pmtu, frag_list=frag_list), 0
