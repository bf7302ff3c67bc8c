"""IPv6 frames for differential tests: crafted packets, decoding into comparable fields, port rewriting and
checksum checks (the IPv6 side of natbox.difftest.packets; stdlib `struct` only, independent of
natbox.wire's IPv6 code on purpose, so a bug there cannot hide in both columns of a comparison).

Neighbour Discovery, MLD and router discovery messages (ICMPv6 130-137, 143) are link chatter whose timing is
not the scenario's: `is_link_chatter` lets the harness leave them out of the comparison.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

from natbox.difftest.csum16 import adjust, map16, sum16
from natbox.wire.layout import (
    ETH_HDR_LEN,
    ICMP6H_IDENTIFIER,
    ICMP6H_LEN,
    IP6H_ADDRS_END,
    IP6H_DADDR,
    IP6H_SADDR,
    L4_DPORT,
    L4_SPORT,
    TCPH_CHECK,
    UDPH_CHECK,
)

__all__ = ["ETH_P_IPV6", "build_crafted6", "decode_ip6", "is_link_chatter", "l4_checksum6_ok", "rewrite_ports6"]

ETH_P_IPV6 = 0x86DD
ICMP6_ERRORS = (1, 2, 3, 4)
# MLD, RS/RA, NS/NA: left out. Redirects (137) are compared: the router sends them (ndisc_send_redirect).
_CHATTER = frozenset({130, 131, 132, 133, 134, 135, 136, 143})
_EXT = (0, 43, 60)  # HBH, routing, destination options: skipped when decoding
_V6 = 40  # fixed header


def _pseudo(src: bytes, dst: bytes, nh: int, n: int) -> bytes:
    return src + dst + struct.pack("!IxxxB", n, nh)


def _l4(kind: str, args: dict[str, Any], src: bytes, dst: bytes, payload: bytes) -> tuple[int, bytes]:
    if kind == "icmp_echo":
        msg = bytearray(struct.pack("!BBHHH", int(args.get("icmp_type", 128)), int(args.get("code", 0)), 0,
                                    int(args.get("icmp_id", 1)), int(args.get("seq", 1))) + payload)
        struct.pack_into("!H", msg, 2, ~sum16(_pseudo(src, dst, 58, len(msg)) + bytes(msg)) & 0xFFFF)
        return 58, bytes(msg)
    if kind == "udp":
        seg = bytearray(struct.pack("!HHHH", int(args.get("sport", 40000)), int(args.get("dport", 53)),
                                    8 + len(payload), 0) + payload)
        if not args.get("zero_checksum", False):
            c = ~sum16(_pseudo(src, dst, 17, len(seg)) + bytes(seg)) & 0xFFFF or 0xFFFF
            struct.pack_into("!H", seg, UDPH_CHECK, c)
        return 17, bytes(seg)
    if kind == "icmp6_error":  # an ICMPv6 error quoting a UDP datagram (e.g. Packet Too Big from a far link)
        qs = ipaddress.IPv6Address(str(args["quote_src"])).packed
        qd = ipaddress.IPv6Address(str(args["quote_dst"])).packed
        udp = bytearray(struct.pack("!HHHH", int(args.get("sport", 40000)), int(args.get("dport", 53)),
                                    8 + len(payload), 0) + payload)
        struct.pack_into("!H", udp, UDPH_CHECK, ~sum16(_pseudo(qs, qd, 17, len(udp)) + bytes(udp)) & 0xFFFF or 0xFFFF)
        quoted = struct.pack("!IHBB", 6 << 28, len(udp), 17, int(args.get("quote_hlim", 63))) + qs + qd + udp
        msg = bytearray(struct.pack("!BBHI", int(args.get("icmp_type", 1)), int(args.get("code", 0)), 0,
                                    int(args.get("info", 0))) + quoted)
        struct.pack_into("!H", msg, 2, ~sum16(_pseudo(src, dst, 58, len(msg)) + bytes(msg)) & 0xFFFF)
        return 58, bytes(msg)
    if kind == "tcp":
        from natbox.difftest.packets import TCP_FLAGS, _tcp_options

        opts = _tcp_options([str(o) for o in args.get("options", [])])
        flags = 0
        for ch in str(args.get("flags", "S")):
            flags |= TCP_FLAGS[ch]
        seg = bytearray(struct.pack("!HHIIBBHHH", int(args.get("sport", 40000)), int(args.get("dport", 80)),
                                    int(args.get("seq", 1000)) & 0xFFFFFFFF, int(args.get("ack", 0)) & 0xFFFFFFFF,
                                    ((20 + len(opts)) // 4) << 4, flags, int(args.get("window", 64240)), 0, 0)
                        + opts + payload)
        struct.pack_into("!H", seg, TCPH_CHECK, ~sum16(_pseudo(src, dst, 6, len(seg)) + bytes(seg)) & 0xFFFF)
        return 6, bytes(seg)
    return int(args.get("proto", 253)), payload


def build_crafted6(kind: str, args: dict[str, Any], payload: bytes, *, src: str, src_mac: bytes,
                   dst_mac: bytes, default_id: int) -> list[bytes]:
    """The Ethernet frames of one crafted IPv6 packet (`ttl` is the hop limit; `fragment` splits the payload
    into Fragment-header pieces of that many bytes, id `ip_id`), in sending order."""
    s, d = ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(str(args["dst"])).packed
    nh, body = _l4(kind, args, s, d, payload)
    hlim, tclass = int(args.get("ttl", 64)), int(args.get("tos", 0))
    eth = dst_mac + src_mac + struct.pack("!H", ETH_P_IPV6)

    def head(nexthdr: int, plen: int) -> bytes:
        return struct.pack("!IHBB", (6 << 28) | (tclass << 20), plen, nexthdr, hlim) + s + d

    size = args.get("fragment")
    if args.get("atomic", False):  # offset 0, M clear: a Fragment header on a whole datagram
        frag = struct.pack("!BBHI", nh, 0, 0, int(args.get("ip_id", default_id)))
        return [eth + head(44, 8 + len(body)) + frag + body]
    if not size or len(body) <= int(size):
        return [eth + head(nh, len(body)) + body]
    size = int(size)
    ident = int(args.get("ip_id", default_id))
    frames = []
    for off in range(0, len(body), size):
        chunk = body[off:off + size]
        more = 1 if off + size < len(body) else 0
        frag = struct.pack("!BBHI", nh, 0, off | more, ident)
        frames.append(eth + head(44, 8 + len(chunk)) + frag + chunk)
    if args.get("order") == "reverse":
        frames.reverse()
    return frames


def _ntoa(b: bytes) -> str:
    return str(ipaddress.IPv6Address(b))


def _skip(ip: bytes) -> tuple[int, int, int | None]:
    """(transport offset, protocol, fragment offset or None) after HBH/routing/destination options and a
    Fragment header."""
    nh, off, frag = ip[6], _V6, None
    while nh in _EXT or nh == 44:
        if off + 8 > len(ip):
            break
        if nh == 44:
            frag = struct.unpack_from("!H", ip, off + 2)[0]
            nh, off = ip[off], off + 8
            if frag & 0xFFF8:
                break
            continue
        nh, off = ip[off], off + (ip[off + 1] + 1) * 8
    return off, nh, frag


def decode_ip6(ip: bytes, prefix: str, out: list[tuple[str, Any, str]], *, whole: bool) -> None:
    """IPv6 fields (flow label and fragment ids are nondeterministic: §9 of the reference)."""
    from natbox.difftest.packets import _decode_l4

    if len(ip) < _V6 or ip[0] >> 4 != 6:
        out.append((f"{prefix}bytes", ip.hex(), "plain"))
        return
    first, plen, nh, hlim = struct.unpack_from("!IHBB", ip, 0)
    out += [(f"{prefix}ip6.tc", (first >> 20) & 0xFF, "plain"), (f"{prefix}ip6.plen", plen, "plain"),
            (f"{prefix}ip6.nh", nh, "plain"), (f"{prefix}ip6.hlim", hlim, "ttl"),
            (f"{prefix}ip6.src", _ntoa(ip[IP6H_SADDR:IP6H_DADDR]), "plain"),
            (f"{prefix}ip6.dst", _ntoa(ip[IP6H_DADDR:IP6H_ADDRS_END]), "plain")]
    off, proto, frag = _skip(ip)
    end = min(_V6 + plen, len(ip)) if whole else len(ip)
    if frag is not None:
        out.append((f"{prefix}ip6.frag", frag, "plain"))
        if frag & 0xFFF8 or frag & 1:
            out.append((f"{prefix}payload", ip[off:end].hex(), "plain"))
            return
    if proto == 58:
        data = ip[off:end]
        if len(data) < 4:
            out.append((f"{prefix}payload", data.hex(), "plain"))
            return
        itype, code, csum = struct.unpack_from("!BBH", data, 0)
        out += [(f"{prefix}icmp6.type", itype, "plain"), (f"{prefix}icmp6.code", code, "plain"),
                (f"{prefix}icmp6.csum", csum, "l4csum")]
        if itype in ICMP6_ERRORS and whole and len(data) >= 8:
            out.append((f"{prefix}icmp6.rest", data[ICMP6H_IDENTIFIER:ICMP6H_LEN].hex(), "plain"))
            decode_ip6(data[ICMP6H_LEN:], "inner.", out, whole=False)
        elif itype in (128, 129) and len(data) >= 8:
            ident, seq = struct.unpack_from("!HH", data, 4)
            out += [(f"{prefix}icmp6.id", ident, "port"), (f"{prefix}icmp6.seq", seq, "plain"),
                    (f"{prefix}payload", data[8:].hex(), "plain")]
        else:
            out.append((f"{prefix}payload", data[4:].hex(), "plain"))
        return
    _decode_l4(proto, ip[off:end], prefix, whole, out)


def is_link_chatter(frame: bytes) -> bool:
    """An IPv6 ND/MLD/router-discovery frame (left out of comparisons)."""
    if len(frame) < ETH_HDR_LEN + _V6 + 1 or struct.unpack_from("!H", frame, 12)[0] != ETH_P_IPV6:
        return False
    ip = frame[ETH_HDR_LEN:]
    off, proto, _frag = _skip(ip)
    return proto == 58 and off < len(ip) and ip[off] in _CHATTER


def l4_checksum6_ok(ip: bytes) -> bool:
    """TCP/UDP/ICMPv6 checksum with the pseudo-header (UDP 0 counts as valid: the kernel forwards it)."""
    if len(ip) < _V6:
        return False
    plen = struct.unpack_from("!H", ip, 4)[0]
    off, proto, frag = _skip(ip)
    if frag is not None and (frag & 0xFFF9):
        return True  # a fragment: the checksum covers the whole datagram
    data = ip[off:_V6 + plen]
    if proto not in (6, 17, 58):
        return True
    if proto == 17 and len(data) >= 8 and data[UDPH_CHECK:UDPH_CHECK + 2] == b"\0\0":
        return True
    return sum16(_pseudo(ip[IP6H_SADDR:IP6H_DADDR], ip[IP6H_DADDR:IP6H_ADDRS_END], proto, len(data)) + data) == 0xFFFF


def _rewrite(buf: bytearray, ip: int, end: int, mapping: dict[int, int], *, inner: bool) -> None:
    off, proto, frag = _skip(bytes(buf[ip:end]))
    if frag is not None and frag & 0xFFF8:
        return
    start = ip + off
    old = bytes(buf[start:end])
    if proto in (6, 17):
        map16(buf, start + L4_SPORT, mapping)
        map16(buf, start + L4_DPORT, mapping)
        csum_off = start + (TCPH_CHECK if proto == 6 else UDPH_CHECK)
    elif proto == 58 and end - start >= 8:
        itype = buf[start]
        if itype in (128, 129):
            map16(buf, start + 4, mapping)
        elif itype in ICMP6_ERRORS and not inner and end - start >= 8 + _V6:
            _rewrite(buf, start + 8, end, mapping, inner=True)
        csum_off = start + 2
    else:
        return
    if csum_off + 2 > end:
        return
    csum = struct.unpack("!H", buf[csum_off:csum_off + 2])[0]
    if proto == 17 and csum == 0:
        return
    new = bytes(buf[start:end])
    if new != old:
        buf[csum_off:csum_off + 2] = struct.pack("!H", adjust(csum, old, new))


def rewrite_ports6(frame: bytes, mapping: dict[int, int]) -> bytes:
    """`rewrite_ports` for an IPv6 frame (also inside the packet an ICMPv6 error quotes)."""
    if not mapping or len(frame) < ETH_HDR_LEN + _V6:
        return frame
    buf = bytearray(frame)
    plen = struct.unpack_from("!H", buf, ETH_HDR_LEN + 4)[0]
    _rewrite(buf, ETH_HDR_LEN, min(len(buf), ETH_HDR_LEN + _V6 + plen), mapping, inner=False)
    return bytes(buf)
