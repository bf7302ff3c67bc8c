"""Crafted frames checked by real tools (tcpdump -vv validates IP/TCP/UDP/ICMP checksums), decoding, and
the port rewriting the replay uses (RFC 1624 incremental checksums)."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natbox.adapters.pcap import PcapWriter
from natbox.difftest.packets import build_crafted, decode_frame, ip_checksum_ok, l4_checksum_ok, rewrite_ports

SMAC, DMAC = bytes.fromhex("020000000201"), bytes.fromhex("020000000101")


def _build(kind: str, **args: Any) -> list[bytes]:
    args.setdefault("dst", "198.51.100.2")
    return build_crafted(kind, args, src="192.168.50.2", src_mac=SMAC, dst_mac=DMAC, default_id=1000)


def _fields(frame: bytes) -> dict[str, Any]:
    return {n: v for n, v, _ in decode_frame(frame)}


def _tcpdump(frames: list[bytes], tmp_path: Path) -> list[str]:
    if shutil.which("tcpdump") is None:
        pytest.skip("tcpdump not installed")
    path = tmp_path / "c.pcap"
    with PcapWriter(path) as w:
        for i, f in enumerate(frames):
            w.write(f, ts=1.0 + i)
    out = subprocess.run(["tcpdump", "-nn", "-vv", "-r", str(path)], capture_output=True, text=True,
                         timeout=20, check=True).stdout
    return [ln for ln in out.splitlines() if ln.strip()]


def test_crafted_checksums_are_correct_for_tcpdump(tmp_path: Path) -> None:
    frames = [
        *_build("icmp_echo", icmp_id=4242, seq=7, payload="abc"),
        *_build("udp", sport=40010, dport=5000, payload="hello"),
        *_build("tcp", sport=40801, dport=22, flags="S", seq=123456,
                options=["mss=1460", "sackok", "ts=1:0", "nop", "wscale=7"]),
        *_build("tcp", sport=40400, dport=80, flags="FA", seq=5000, ack=7000, payload="x"),
    ]
    text = "\n".join(_tcpdump(frames, tmp_path))
    assert "incorrect" not in text
    assert "ICMP echo request, id 4242, seq 7" in text
    assert "192.168.50.2.40010 > 198.51.100.2.5000: [udp sum ok] UDP, length 5" in text
    assert "Flags [S], cksum" in text and "(correct), seq 123456" in text
    assert "options [mss 1460,sackOK,TS val 1 ecr 0,nop,wscale 7]" in text
    assert "Flags [F.], cksum" in text and "seq 5000:5001, ack 7000" in text


def test_zero_checksum_udp(tmp_path: Path) -> None:
    (f,) = _build("udp", sport=1, dport=2, payload="no sum", zero_checksum=True)
    assert _fields(f)["udp.csum"] == 0 and l4_checksum_ok(f)
    assert "[no cksum]" in "\n".join(_tcpdump([f], tmp_path))


def test_fragments_reverse_order(tmp_path: Path) -> None:
    frames = _build("udp", sport=40900, dport=5000, payload_len=1200, ip_id=777, fragment=600, order="reverse")
    f = [_fields(x) for x in frames]
    # §9 / Appendix A #14: 620/620/28 bytes at offsets 0/600/1200, sent last first
    assert [x["ip.len"] for x in f] == [28, 620, 620]
    assert [x["ip.frag"] for x in f] == [150, 0x2000 | 75, 0x2000]
    assert {x["ip.id"] for x in f} == {777}
    assert all(ip_checksum_ok(x) for x in frames)
    text = "\n".join(_tcpdump(frames, tmp_path))
    assert "id 777, offset 1200, flags [none]" in text and "id 777, offset 0, flags [+]" in text


def test_raw_protocol() -> None:
    (f,) = _build("raw", proto=253, payload_hex="deadbeef")
    d = _fields(f)
    assert d["ip.proto"] == 253 and d["payload"] == "deadbeef" and d["ip.len"] == 24


def test_decode_icmp_error_quotes_inner_datagram() -> None:
    (udp,) = _build("udp", sport=40200, dport=9999, payload="anyone?")
    inner = udp[14:14 + 28]
    body = struct.pack("!BBHI", 3, 3, 0, 0) + inner
    s = sum(struct.unpack(f"!{len(body) // 2}H", body))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    body = body[:2] + struct.pack("!H", ~s & 0xFFFF) + body[4:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 1, 0, 63, 1, 0, bytes([198, 51, 100, 2]),
                     bytes([192, 168, 50, 2]))
    frame = DMAC + SMAC + b"\x08\x00" + ip + body
    d = _fields(frame)
    assert (d["icmp.type"], d["icmp.code"]) == (3, 3)
    assert d["inner.ip.src"] == "192.168.50.2" and d["inner.sport"] == 40200 and d["inner.dport"] == 9999
    assert l4_checksum_ok(frame)
    # rewriting the quoted source port keeps the ICMP checksum valid and changes the quoted UDP checksum
    new = rewrite_ports(frame, {40200: 61000})
    nd = _fields(new)
    assert nd["inner.sport"] == 61000 and l4_checksum_ok(new) and nd["inner.udp.csum"] != d["inner.udp.csum"]


ports = st.integers(0, 65535)


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(["udp", "tcp", "icmp_echo"]), a=ports, b=ports, new=ports,
       payload=st.binary(max_size=40))
def test_rewrite_ports_keeps_checksums_valid(kind: str, a: int, b: int, new: int, payload: bytes) -> None:
    (f,) = _build(kind, sport=a, dport=b, icmp_id=a, payload_hex=payload.hex())
    g = rewrite_ports(f, {a: new})
    d = _fields(g)
    assert d.get("sport", d.get("icmp.id")) == new
    assert l4_checksum_ok(g) and ip_checksum_ok(g)


@given(a=ports, new=ports)
def test_rewrite_keeps_a_bad_checksum_bad(a: int, new: int) -> None:
    (f,) = _build("udp", sport=a, dport=53, payload="x")
    bad = bytearray(f)
    bad[40] ^= 0x01  # flip a bit of the UDP checksum (offset 14 + 20 + 6)
    if bad[40:42] == b"\0\0":
        return
    assert not l4_checksum_ok(bytes(bad))
    assert not l4_checksum_ok(rewrite_ports(bytes(bad), {a: new}))


def test_rewrite_leaves_non_first_fragments_and_arp() -> None:
    frames = _build("udp", sport=40900, dport=5000, payload_len=1200, fragment=600)
    assert rewrite_ports(frames[1], {40900: 1}) == frames[1]
    arp = DMAC + SMAC + b"\x08\x06" + bytes(28)
    assert rewrite_ports(arp, {0: 1}) == arp
