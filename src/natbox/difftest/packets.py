"""Frames for differential tests: building crafted packets and decoding frames into comparable fields.

Independent of `natbox.wire`'s parsers, builders and checksums on purpose (stdlib `struct` only), so a
bug there cannot hide in both the kernel's and natbox's column of a comparison; only wire's vocabulary
(the field offsets of `wire.layout`, ETH_P_IP, the frag_off bits) is shared.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

from natbox.difftest.csum16 import adjust, map16, sum16
from natbox.difftest.packets6 import (
    ETH_P_IPV6,
    build_crafted6,
    decode_ip6,
    is_link_chatter,
    l4_checksum6_ok,
    rewrite_ports6,
)
from natbox.wire.ethernet import ETH_P_IP
from natbox.wire.ipv4 import IP_DF, IP_MF, IP_OFFSET
from natbox.wire.layout import (
    ETH_DEST,
    ETH_HDR_LEN,
    ETH_PROTO,
    ETH_SOURCE,
    ICMPH_CHECKSUM,
    ICMPH_ID,
    ICMPH_LEN,
    ICMPH_TYPE,
    IPH_ADDRS_END,
    IPH_CHECK,
    IPH_DADDR,
    IPH_FRAG_OFF,
    IPH_MIN_LEN,
    IPH_PROTOCOL,
    IPH_SADDR,
    IPH_TOS,
    IPH_TOT_LEN,
    IPH_VER_IHL,
    L4_DPORT,
    L4_SPORT,
    TCPH_ACK_SEQ,
    TCPH_CHECK,
    TCPH_MIN_LEN,
    TCPH_SEQ,
    UDPH_CHECK,
    UDPH_LEN,
    UDPH_LEN_BYTES,
)

__all__ = [
    "Field", "build_crafted", "decode_frame", "ip_checksum_ok", "is_compared_frame", "l4_checksum_ok",
    "rewrite_ports",
]

ICMP_ERRORS = (3, 4, 5, 11, 12)
TCP_FLAGS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10, "U": 0x20, "E": 0x40, "C": 0x80}
PROTO_NUM = {"icmp_echo": 1, "udp": 17, "tcp": 6}

# A decoded field: (name, value, kind). kind: "plain" (compare exactly), "port" (may be mapped through the
# kernel<->natbox bijection), "ipid" / "ttl" (ignored for kernel-generated ICMP), "ipcsum" (IP header
# checksum), "l4csum" (TCP/UDP/ICMP checksum).
Field = tuple[str, Any, str]


def _csum(data: bytes) -> int:
    return ~sum16(data) & 0xFFFF


def _addr(text: str) -> bytes:
    return ipaddress.IPv4Address(text).packed


def _tcp_options(opts: list[str]) -> bytes:
    out = b""
    for o in opts:
        name, _, val = o.partition("=")
        if name == "mss":
            out += struct.pack("!BBH", 2, 4, int(val))
        elif name == "wscale":
            out += struct.pack("!BBB", 3, 3, int(val))
        elif name == "sackok":
            out += b"\x04\x02"
        elif name == "ts":
            tsval, _, ecr = val.partition(":")
            out += struct.pack("!BBII", 8, 10, int(tsval), int(ecr or 0))
        elif name == "nop":
            out += b"\x01"
        else:
            raise ValueError(f"unknown TCP option {o!r}")
    return out + b"\x01" * (-len(out) % 4)


def _payload(args: dict[str, Any]) -> bytes:
    if "payload_hex" in args:
        return bytes.fromhex(str(args["payload_hex"]))
    if "payload_len" in args:
        n = int(args["payload_len"])
        return bytes((i * 7 + 3) & 0xFF for i in range(n))
    return str(args.get("payload", "")).encode()


def _l4(kind: str, args: dict[str, Any], src: bytes, dst: bytes) -> tuple[int, bytes]:
    payload = _payload(args)
    if kind == "icmp_echo":
        hdr = struct.pack("!BBHHH", int(args.get("icmp_type", 8)), int(args.get("code", 0)), 0,
                          int(args.get("icmp_id", 1)), int(args.get("seq", 1)))
        msg = bytearray(hdr + payload)
        struct.pack_into("!H", msg, ICMPH_CHECKSUM, _csum(bytes(msg)))
        return 1, bytes(msg)
    if kind == "udp":
        seg = struct.pack("!HHHH", int(args.get("sport", 40000)), int(args["dport"]) if "dport" in args else 53,
                          8 + len(payload), 0) + payload
        if not args.get("zero_checksum", False):
            c = _csum(src + dst + struct.pack("!BBH", 0, 17, len(seg)) + seg) or 0xFFFF
            seg = seg[:UDPH_CHECK] + struct.pack("!H", c) + seg[UDPH_CHECK + 2:]
        return 17, seg
    if kind == "tcp":
        opts = _tcp_options([str(o) for o in args.get("options", [])])
        flags = 0
        for ch in str(args.get("flags", "S")):
            flags |= TCP_FLAGS[ch]
        off = (20 + len(opts)) // 4
        seg = struct.pack("!HHIIBBHHH", int(args.get("sport", 40000)), int(args.get("dport", 80)),
                          int(args.get("seq", 1000)) & 0xFFFFFFFF, int(args.get("ack", 0)) & 0xFFFFFFFF,
                          off << 4, flags, int(args.get("window", 64240)), 0, 0) + opts + payload
        c = _csum(src + dst + struct.pack("!BBH", 0, 6, len(seg)) + seg)
        return 6, seg[:TCPH_CHECK] + struct.pack("!H", c) + seg[TCPH_CHECK + 2:]
    return int(args.get("proto", 253)), payload


def _ip_header(*, tos: int, total: int, ip_id: int, frag: int, ttl: int, proto: int, src: bytes,
               dst: bytes) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, tos, total, ip_id, frag, ttl, proto, 0, src, dst)
    return hdr[:IPH_CHECK] + struct.pack("!H", _csum(hdr)) + hdr[IPH_CHECK + 2:]


def build_crafted(kind: str, args: dict[str, Any], *, src: str, src_mac: bytes, dst_mac: bytes,
                  default_id: int) -> list[bytes]:
    """The Ethernet frames of one crafted packet (several when `fragment` is given), in sending order."""
    if ":" in str(args["dst"]):
        return build_crafted6(kind, args, _payload(args), src=src, src_mac=src_mac, dst_mac=dst_mac,
                              default_id=default_id)
    s, d = _addr(src), _addr(str(args["dst"]))
    proto, body = _l4(kind, args, s, d)
    tos, ttl = int(args.get("tos", 0)), int(args.get("ttl", 64))
    ip_id = int(args.get("ip_id", default_id)) & 0xFFFF
    df = IP_DF if args.get("df", False) else 0
    eth = dst_mac + src_mac + struct.pack("!H", ETH_P_IP)
    size = args.get("fragment")
    if not size or len(body) <= int(size):
        return [eth + _ip_header(tos=tos, total=20 + len(body), ip_id=ip_id, frag=df, ttl=ttl, proto=proto,
                                 src=s, dst=d) + body]
    size = int(size)
    frames = []
    for off in range(0, len(body), size):
        chunk = body[off:off + size]
        more = IP_MF if off + size < len(body) else 0
        frames.append(eth + _ip_header(tos=tos, total=20 + len(chunk), ip_id=ip_id, frag=more | (off // 8),
                                       ttl=ttl, proto=proto, src=s, dst=d) + chunk)
    if args.get("order") == "reverse":
        frames.reverse()
    return frames


# --- decoding --------------------------------------------------------------------------------------


def _ntoa(b: bytes) -> str:
    return str(ipaddress.IPv4Address(b))


def _decode_l4(proto: int, data: bytes, prefix: str, whole: bool, out: list[Field]) -> None:
    if proto in (6, 17) and len(data) >= L4_DPORT + 2:
        sport, dport = struct.unpack_from("!HH", data, L4_SPORT)
        out += [(f"{prefix}sport", sport, "port"), (f"{prefix}dport", dport, "port")]
        if proto == 17 and len(data) >= UDPH_LEN_BYTES:
            ulen, csum = struct.unpack_from("!HH", data, UDPH_LEN)
            out += [(f"{prefix}udp.len", ulen, "plain"), (f"{prefix}udp.csum", csum, "l4csum"),
                    (f"{prefix}payload", data[UDPH_LEN_BYTES:].hex(), "plain")]
        elif proto == 6 and len(data) >= TCPH_ACK_SEQ:
            out.append((f"{prefix}tcp.seq", struct.unpack_from("!I", data, TCPH_SEQ)[0], "plain"))
            if len(data) >= TCPH_MIN_LEN:
                ack, offb, flags, win, csum, urg = struct.unpack_from("!IBBHHH", data, TCPH_ACK_SEQ)
                hl = (offb >> 4) * 4
                out += [(f"{prefix}tcp.ack", ack, "plain"), (f"{prefix}tcp.off", offb >> 4, "plain"),
                        (f"{prefix}tcp.flags", flags, "plain"), (f"{prefix}tcp.win", win, "plain"),
                        (f"{prefix}tcp.csum", csum, "l4csum"), (f"{prefix}tcp.urg", urg, "plain"),
                        (f"{prefix}tcp.options", data[TCPH_MIN_LEN:hl].hex(), "plain"),
                        (f"{prefix}payload", data[hl:].hex(), "plain")]
        return
    if proto == 1 and len(data) >= ICMPH_ID:
        itype, code, csum = struct.unpack_from("!BBH", data, ICMPH_TYPE)
        out += [(f"{prefix}icmp.type", itype, "plain"), (f"{prefix}icmp.code", code, "plain"),
                (f"{prefix}icmp.csum", csum, "l4csum")]
        if itype in ICMP_ERRORS and whole:
            out.append((f"{prefix}icmp.rest", data[ICMPH_ID:ICMPH_LEN].hex(), "plain"))
            _decode_ip(data[ICMPH_LEN:], "inner.", out, whole=False)
        elif itype in (0, 8, 13, 14) and len(data) >= ICMPH_LEN:
            ident, seq = struct.unpack_from("!HH", data, ICMPH_ID)
            out += [(f"{prefix}icmp.id", ident, "port"), (f"{prefix}icmp.seq", seq, "plain"),
                    (f"{prefix}payload", data[ICMPH_LEN:].hex(), "plain")]
        else:
            out.append((f"{prefix}payload", data[ICMPH_ID:].hex(), "plain"))
        return
    out.append((f"{prefix}payload", data.hex(), "plain"))


def _decode_ip(ip: bytes, prefix: str, out: list[Field], *, whole: bool) -> None:
    if len(ip) < IPH_MIN_LEN or ip[IPH_VER_IHL] >> 4 != 4:
        out.append((f"{prefix}bytes", ip.hex(), "plain"))
        return
    ihl = (ip[IPH_VER_IHL] & 0xF) * 4
    tos, total, ip_id, frag, ttl, proto, csum = struct.unpack_from("!BHHHBBH", ip, IPH_TOS)
    out += [(f"{prefix}ip.ihl", ihl, "plain"), (f"{prefix}ip.tos", tos, "plain"),
            (f"{prefix}ip.len", total, "plain"), (f"{prefix}ip.id", ip_id, "ipid"),
            (f"{prefix}ip.frag", frag, "plain"), (f"{prefix}ip.ttl", ttl, "ttl"),
            (f"{prefix}ip.proto", proto, "plain"), (f"{prefix}ip.csum", csum, "ipcsum"),
            (f"{prefix}ip.src", _ntoa(ip[IPH_SADDR:IPH_DADDR]), "plain"),
            (f"{prefix}ip.dst", _ntoa(ip[IPH_DADDR:IPH_ADDRS_END]), "plain"),
            (f"{prefix}ip.options", ip[IPH_MIN_LEN:ihl].hex(), "plain")]
    end = min(total, len(ip)) if whole else len(ip)
    if frag & IP_OFFSET:
        out.append((f"{prefix}payload", ip[ihl:end].hex(), "plain"))
        return
    _decode_l4(proto, ip[ihl:end], prefix, whole, out)


def decode_frame(frame: bytes) -> list[Field]:
    """The frame's fields in wire order; ICMP errors include the quoted datagram as `inner.*`."""
    out: list[Field] = [("eth.dst", frame[ETH_DEST:ETH_SOURCE].hex(":"), "plain"),
                        ("eth.src", frame[ETH_SOURCE:ETH_PROTO].hex(":"), "plain")]
    if len(frame) >= ETH_HDR_LEN and struct.unpack_from("!H", frame, ETH_PROTO)[0] == ETH_P_IPV6:
        decode_ip6(frame[ETH_HDR_LEN:], "", out, whole=True)
        return out
    if len(frame) < ETH_HDR_LEN or struct.unpack_from("!H", frame, ETH_PROTO)[0] != ETH_P_IP:
        out.append(("bytes", frame[ETH_PROTO:].hex(), "plain"))
        return out
    _decode_ip(frame[ETH_HDR_LEN:], "", out, whole=True)
    return out


def _is6(frame: bytes) -> bool:
    return len(frame) >= ETH_HDR_LEN and struct.unpack_from("!H", frame, ETH_PROTO)[0] == ETH_P_IPV6


def is_compared_frame(frame: bytes) -> bool:
    """Frames a comparison looks at: IPv4, and IPv6 other than ND/MLD link chatter."""
    if _is6(frame):
        return not is_link_chatter(frame)
    return len(frame) >= ETH_HDR_LEN and struct.unpack_from("!H", frame, ETH_PROTO)[0] == ETH_P_IP


def ip_checksum_ok(frame: bytes) -> bool:
    if _is6(frame):
        return True  # IPv6 has no header checksum
    ip = frame[ETH_HDR_LEN:]
    ihl = (ip[IPH_VER_IHL] & 0xF) * 4 if ip else 0
    return len(ip) >= ihl >= IPH_MIN_LEN and sum16(ip[:ihl]) == 0xFFFF


def l4_checksum_ok(frame: bytes) -> bool:
    """TCP/UDP/ICMP checksum of an unfragmented datagram is valid (UDP 0 = none counts as valid)."""
    if _is6(frame):
        return l4_checksum6_ok(frame[ETH_HDR_LEN:])
    ip = frame[ETH_HDR_LEN:]
    if len(ip) < IPH_MIN_LEN:
        return False
    ihl = (ip[IPH_VER_IHL] & 0xF) * 4
    total = struct.unpack_from("!H", ip, IPH_TOT_LEN)[0]
    frag = struct.unpack_from("!H", ip, IPH_FRAG_OFF)[0]
    proto = ip[IPH_PROTOCOL]
    data = ip[ihl:total]
    if frag & (IP_MF | IP_OFFSET):
        return True  # a fragment: the checksum covers the whole datagram
    if proto == 1:
        return sum16(data) == 0xFFFF
    if proto in (6, 17):
        if proto == 17 and len(data) >= UDPH_LEN_BYTES and data[UDPH_CHECK:UDPH_CHECK + 2] == b"\0\0":
            return True
        return sum16(ip[IPH_SADDR:IPH_ADDRS_END] + struct.pack("!BBH", 0, proto, len(data)) + data) == 0xFFFF
    return True


def _rewrite_l4(buf: bytearray, start: int, end: int, proto: int, mapping: dict[int, int], *, inner: bool) -> None:
    """Map the ports / echo id of the L4 header at buf[start:end], updating its checksum incrementally."""
    old = bytes(buf[start:end])
    if proto in (6, 17):
        map16(buf, start + L4_SPORT, mapping)
        map16(buf, start + L4_DPORT, mapping)
        csum_off = start + (TCPH_CHECK if proto == 6 else UDPH_CHECK)
    elif proto == 1 and end - start >= ICMPH_LEN:
        itype = buf[start + ICMPH_TYPE]
        if itype in (0, 8, 13, 14):
            map16(buf, start + ICMPH_ID, mapping)
        elif itype in ICMP_ERRORS and not inner and end - start >= ICMPH_LEN + IPH_MIN_LEN:
            q = start + ICMPH_LEN
            qihl = (buf[q + IPH_VER_IHL] & 0xF) * 4
            qfrag = struct.unpack_from("!H", buf, q + IPH_FRAG_OFF)[0]
            if qihl >= IPH_MIN_LEN and not qfrag & IP_OFFSET:
                _rewrite_l4(buf, q + qihl, end, buf[q + IPH_PROTOCOL], mapping, inner=True)
        csum_off = start + ICMPH_CHECKSUM
    else:
        return
    if csum_off + 2 > end:
        return
    csum = struct.unpack("!H", buf[csum_off:csum_off + 2])[0]
    if proto == 17 and csum == 0:
        return  # no checksum stays no checksum
    new = bytes(buf[start:end])
    if new != old:
        buf[csum_off:csum_off + 2] = struct.pack("!H", adjust(csum, old[:len(new)], new))


def rewrite_ports(frame: bytes, mapping: dict[int, int]) -> bytes:
    """The frame with every TCP/UDP port and ICMP echo id in `mapping` replaced (also in the datagram an
    ICMP error quotes), checksums updated incrementally (RFC 1624), so a bad checksum stays bad."""
    if _is6(frame):
        return rewrite_ports6(frame, mapping)
    if (not mapping or len(frame) < ETH_HDR_LEN + IPH_MIN_LEN
            or struct.unpack_from("!H", frame, ETH_PROTO)[0] != ETH_P_IP):
        return frame
    buf = bytearray(frame)
    ip = ETH_HDR_LEN
    ihl = (buf[ip + IPH_VER_IHL] & 0xF) * 4
    total = struct.unpack_from("!H", buf, ip + IPH_TOT_LEN)[0]
    frag = struct.unpack_from("!H", buf, ip + IPH_FRAG_OFF)[0]
    if ihl < IPH_MIN_LEN or frag & IP_OFFSET:
        return frame
    _rewrite_l4(buf, ip + ihl, min(len(buf), ip + total), buf[ip + IPH_PROTOCOL], mapping, inner=False)
    return bytes(buf)
