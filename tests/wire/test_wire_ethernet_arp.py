"""Ethernet II and ARP: parse, build, round trip, edge cases, malformed input; real captures."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natbox.wire.arp import ARPOP_REPLY, ARPOP_REQUEST, build_arp, build_arp_reply, build_arp_request, parse_arp
from natbox.wire.ethernet import (
    BROADCAST,
    ETH_P_8021Q,
    ETH_P_ARP,
    ETH_P_IP,
    build_ethernet,
    is_broadcast_mac,
    is_multicast_mac,
    mac_from_str,
    mac_to_str,
    parse_ethernet,
)
from natbox.wire.ipv4 import str_to_addr

MAC_A = mac_from_str("02:00:00:00:00:0a")
MAC_B = mac_from_str("02:00:00:00:00:0b")


def test_parse_known_frame() -> None:
    frame = bytes.fromhex("ffffffffffff" "020000000001" "0806") + bytes(28)
    assert parse_ethernet(frame) == (BROADCAST, bytes.fromhex("020000000001"), ETH_P_ARP, 14)


def test_build_and_round_trip() -> None:
    frame = build_ethernet(MAC_B, MAC_A, ETH_P_IP, b"payload")
    assert bytes(frame[:14]) == MAC_B + MAC_A + b"\x08\x00"
    dst, src, etype, off = parse_ethernet(frame) or (b"", b"", 0, 0)
    assert (dst, src, etype, bytes(frame[off:])) == (MAC_B, MAC_A, ETH_P_IP, b"payload")
    assert len(build_ethernet(MAC_B, MAC_A, ETH_P_IP, b"x", pad=True)) == 60


def test_vlan_tag_reported() -> None:
    frame = MAC_B + MAC_A + b"\x81\x00\x00\x05\x08\x00" + bytes(20)
    parsed = parse_ethernet(frame)
    assert parsed is not None and parsed[2] == ETH_P_8021Q


def test_mac_text() -> None:
    assert mac_to_str(bytes.fromhex("aabbccddeeff")) == "aa:bb:cc:dd:ee:ff"
    assert mac_from_str("AA-BB-CC-DD-EE-FF") == bytes.fromhex("aabbccddeeff")
    assert is_broadcast_mac(BROADCAST) and is_multicast_mac(BROADCAST)
    assert is_multicast_mac(bytes.fromhex("01005e000001")) and not is_multicast_mac(MAC_A)
    for bad in ("aa:bb:cc:dd:ee", "aa:bb:cc:dd:ee:fg", "aabbccddeeff", "aa:bb:cc:dd:ee:ff:00"):
        with pytest.raises(ValueError, match="invalid MAC"):
            mac_from_str(bad)


@given(st.binary(max_size=30))
def test_ethernet_malformed_never_raises(data: bytes) -> None:
    parsed = parse_ethernet(data)
    assert (parsed is None) == (len(data) < 14)


@pytest.mark.parametrize("name", ["debbin-python3-libtrace__anon-v4.pcap", "debsrc-wireshark-4.0.17__communityid.pcap"])
def test_real_arp_frames_parse_and_rebuild(name: str, pcap_frames: Callable[[str], list[bytes]]) -> None:
    seen = 0
    for frame in pcap_frames(name):
        eth = parse_ethernet(frame)
        if eth is None or eth[2] != ETH_P_ARP:
            continue
        msg = parse_arp(frame[eth[3] :])
        assert msg is not None and msg.op in (ARPOP_REQUEST, ARPOP_REPLY)
        rebuilt = build_arp(msg.op, msg.sender_mac, msg.sender_ip, msg.target_mac, msg.target_ip)
        assert rebuilt == frame[eth[3] : eth[3] + 28]
        seen += 1
    assert seen


def test_arp_request_and_reply() -> None:
    req = build_arp_request(MAC_A, str_to_addr("10.0.0.1"), str_to_addr("10.0.0.2"))
    # RFC 826 layout: hrd=1, pro=0x0800, hln=6, pln=4, op=1, sha, spa, tha=0, tpa
    assert req == bytes.fromhex("0001080006040001") + MAC_A + bytes((10, 0, 0, 1)) + bytes(6) + bytes((10, 0, 0, 2))
    msg = parse_arp(req)
    assert msg is not None and msg.op == ARPOP_REQUEST and msg.target_mac == bytes(6)
    rep = parse_arp(build_arp_reply(MAC_B, msg.target_ip, msg.sender_mac, msg.sender_ip) + bytes(18))
    assert rep == (ARPOP_REPLY, MAC_B, str_to_addr("10.0.0.2"), MAC_A, str_to_addr("10.0.0.1"))


def test_arp_non_ethernet_ipv4_rejected() -> None:
    req = bytearray(build_arp_request(MAC_A, 1, 2))
    for pos, value in ((1, 6), (2, 0x86), (4, 8), (5, 16)):
        bad = bytearray(req)
        bad[pos] = value
        assert parse_arp(bad) is None


@given(st.binary(max_size=40))
def test_arp_malformed_never_raises(data: bytes) -> None:
    msg = parse_arp(data)
    if len(data) < 28:
        assert msg is None
