"""Offloads in the engine: GSO super-packets and CHECKSUM_PARTIAL packets, as the kernel forwards them.

- `nf_ip_checksum` does not verify a CHECKSUM_PARTIAL packet; NAT updates its pseudo-header sum for the
  address change only (`inet_proto_csum_replace4` with pseudohdr), so the receiver's completed checksum is
  right for the NATed header.
- A GSO packet whose segments fit the out MTU leaves whole (`skb_gso_validate_network_len`); with DF and
  segments too big, `ip_forward` answers ICMP fragmentation needed; without DF it is segmented in software
  and each segment fragmented (`ip_finish_output_gso`).
- A partial packet that must be fragmented has its checksum completed first (`ip_do_fragment`).
"""

from __future__ import annotations

from natbox.conntrack.tuple import parse_addr
from natbox.engine.engine import Engine, Output
from natbox.engine.host import Host, Interface, Neighbour
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore
from natbox.wire import ethernet, ipv4, tcp, udp
from natbox.wire.checksum import complete_partial_csum, internet_checksum, l4_checksum, pseudo_header_sum
from natbox.wire.gso import GSO_TCPV4

LAN_MAC = bytes.fromhex("020000000001")
WAN_MAC = bytes.fromhex("020000000101")
CLIENT_MAC = bytes.fromhex("020000000a05")
SERVER_MAC = bytes.fromhex("02000000aa02")
CLIENT = parse_addr("10.0.1.5")
SERVER = parse_addr("198.51.100.2")
PUBLIC = parse_addr("198.51.100.1")
RULES = ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
         "-A POSTROUTING -o eth1 -j MASQUERADE\nCOMMIT\n")


def _engine(wan_mtu: int = 1500) -> Engine:
    host = Host(name="gw", ip_forward=True)
    host.add_interface(Interface("eth0", mac=LAN_MAC))
    host.add_interface(Interface("eth1", mac=WAN_MAC, mtu=wan_mtu))
    host.add_address("eth0", parse_addr("10.0.0.1"), 16)
    host.add_address("eth1", PUBLIC, 24)
    host.neighbours.append(Neighbour("eth1", SERVER, SERVER_MAC))
    host.neighbours.append(Neighbour("eth0", CLIENT, CLIENT_MAC))
    rules = Ruleset()
    rules.restore(parse_restore(RULES, file="test"))
    return Engine(host, ruleset=rules, seed=1)


def _partial(dgram: bytearray) -> bytearray:
    """What a virtio sender hands over: the TCP/UDP checksum field holds the pseudo-header sum only."""
    ihl = (dgram[0] & 0x0F) * 4
    cpos = ihl + (16 if dgram[9] == 6 else 6)
    total = pseudo_header_sum(int.from_bytes(dgram[12:16], "big"), int.from_bytes(dgram[16:20], "big"), dgram[9],
                              len(dgram) - ihl)
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    dgram[cpos] = total >> 8
    dgram[cpos + 1] = total & 0xFF
    return dgram


def _tcp(src: int, dst: int, sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes = b"",
         df: bool = True, ident: int = 100) -> bytearray:
    seg = tcp.build_tcp(src, dst, sport, dport, seq=seq, ack=ack, flags=flags, window=65535, payload=payload)
    return ipv4.build_ipv4(src, dst, 6, seg, df=df, ident=ident)


def _send(engine: Engine, dgram: bytes | bytearray, iface: str, now: float, **kw: int | bool) -> Output:
    src_mac, dst_mac = (CLIENT_MAC, LAN_MAC) if iface == "eth0" else (SERVER_MAC, WAN_MAC)
    return engine.receive(bytes(ethernet.build_ethernet(dst_mac, src_mac, ethernet.ETH_P_IP, dgram)), iface, now,
                          **kw)  # type: ignore[arg-type]


def _established(engine: Engine) -> None:
    _send(engine, _tcp(CLIENT, SERVER, 40000, 80, 1000, 0, tcp.SYN), "eth0", 1.0)
    _send(engine, _tcp(SERVER, PUBLIC, 80, 40000, 5000, 1001, tcp.SYN | tcp.ACK), "eth1", 1.0)
    _send(engine, _tcp(CLIENT, SERVER, 40000, 80, 1001, 5001, tcp.ACK), "eth0", 1.0)


def _valid_l4(dgram: bytes | bytearray) -> bool:
    ihl = (dgram[0] & 0x0F) * 4
    return l4_checksum(int.from_bytes(dgram[12:16], "big"), int.from_bytes(dgram[16:20], "big"), dgram[9],
                       dgram[ihl:]) == 0


def test_partial_checksum_is_not_verified_and_follows_the_address_change() -> None:
    for fast in (False, True):
        engine = _engine()
        engine.fast_path = fast
        _established(engine)
        for i in range(3):  # the first compiles the flow, the next ones take the compiled path when fast
            payload = bytes(range(100))
            dgram = _partial(_tcp(CLIENT, SERVER, 40000, 80, 1001 + 100 * i, 5001, tcp.ACK | tcp.PSH, payload))
            out = _send(engine, dgram, "eth0", 2.0, partial=True)
            assert len(out.emitted) == 1, out.dropped
            e = out.emitted[0]
            assert e.partial and not e.gso_size
            sent = bytearray(e.frame[14:])
            assert int.from_bytes(sent[12:16], "big") == PUBLIC
            assert internet_checksum(sent[:20]) == 0
            # the receiver finishes the checksum from the field: it must then be the right one
            assert complete_partial_csum(sent)
            assert _valid_l4(sent), (fast, i)
        conn = next(iter(engine.table))
        assert conn.tcp is not None and conn.tcp.seen[0].td_end == 1301


def test_a_bad_checksum_is_invalid_unless_partial() -> None:
    engine = _engine()
    syn = _tcp(CLIENT, SERVER, 40001, 80, 1000, 0, tcp.SYN)
    syn[36] ^= 0xFF  # a wrong checksum
    _send(engine, syn, "eth0", 1.0)
    assert len(engine.table) == 0 and engine.table.stats.invalid == 1
    _send(engine, syn, "eth0", 1.0, partial=True)
    assert len(engine.table) == 1


def test_gso_packet_whose_segments_fit_leaves_whole() -> None:
    for fast in (False, True):
        engine = _engine()
        engine.fast_path = fast
        _established(engine)
        seq = 1001
        for _ in range(3):
            payload = bytes(i & 0xFF for i in range(20000))
            dgram = _partial(_tcp(CLIENT, SERVER, 40000, 80, seq, 5001, tcp.ACK | tcp.PSH, payload))
            out = _send(engine, dgram, "eth0", 2.0, gso_type=GSO_TCPV4, gso_size=1448, partial=True)
            seq += len(payload)
            assert [(e.gso_type, e.gso_size, e.partial) for e in out.emitted] == [(GSO_TCPV4, 1448, True)]
            sent = bytearray(out.emitted[0].frame[14:])
            assert len(sent) == 20040 and complete_partial_csum(sent) and _valid_l4(sent)


def test_gso_packet_too_big_with_df_gets_frag_needed_translated_back() -> None:
    engine = _engine(wan_mtu=1000)
    _established(engine)
    dgram = _partial(_tcp(CLIENT, SERVER, 40000, 80, 1001, 5001, tcp.ACK, bytes(5000)))
    out = _send(engine, dgram, "eth0", 2.0, gso_type=GSO_TCPV4, gso_size=1448, partial=True)
    assert [d.reason for d in out.dropped] == ["frag_needed"]
    (err,) = out.emitted
    icmp_dgram = err.frame[14:]
    assert err.iface == "eth0" and icmp_dgram[9] == 1
    assert int.from_bytes(icmp_dgram[16:20], "big") == CLIENT
    assert icmp_dgram[20:22] == bytes((3, 4)) and int.from_bytes(icmp_dgram[26:28], "big") == 1000


def test_gso_packet_too_big_without_df_is_segmented_then_fragmented() -> None:
    engine = _engine(wan_mtu=1000)
    _established(engine)
    payload = bytes((i * 7) & 0xFF for i in range(4000))
    dgram = _partial(_tcp(CLIENT, SERVER, 40000, 80, 1001, 5001, tcp.ACK | tcp.PSH, payload, df=False, ident=500))
    out = _send(engine, dgram, "eth0", 2.0, gso_type=GSO_TCPV4, gso_size=1448, partial=True)
    frames = [e.frame[14:] for e in out.emitted]
    assert all(len(f) <= 1000 and not e.gso_size and not e.partial for f, e in zip(frames, out.emitted, strict=True))
    # 1448 + 1448 + 1104 bytes of payload: three segments with IDs 500, 501, 502, each in two fragments
    by_id: dict[int, list[bytes]] = {}
    for f in frames:
        by_id.setdefault(int.from_bytes(f[4:6], "big"), []).append(f)
    assert sorted(by_id) == [500, 501, 502] and all(len(v) == 2 for v in by_id.values())
    got = b""
    for n, ident in enumerate(sorted(by_id)):
        pieces = sorted(by_id[ident], key=lambda f: int.from_bytes(f[6:8], "big") & 0x1FFF)
        seg = bytearray(pieces[0][:20]) + b"".join(p[20:] for p in pieces)
        seg[2:4] = len(seg).to_bytes(2, "big")
        seg[6:8] = b"\x00\x00"
        assert int.from_bytes(seg[12:16], "big") == PUBLIC and _valid_l4(seg)
        assert int.from_bytes(seg[24:28], "big") == 1001 + 1448 * n  # sequence numbers advance
        assert bool(seg[33] & tcp.PSH) == (n == 2)  # PSH on the last segment only
        got += bytes(seg[40:])
    assert got == payload


def test_partial_packet_is_completed_before_fragmentation() -> None:
    engine = _engine(wan_mtu=1000)
    dgram = ipv4.build_ipv4(CLIENT, SERVER, 17, udp.build_udp(CLIENT, SERVER, 5000, 53, bytes(1500)))
    out = _send(engine, _partial(dgram), "eth0", 1.0, partial=True)
    assert len(out.emitted) == 2 and not any(e.partial for e in out.emitted)
    first, second = (e.frame[14:] for e in out.emitted)
    whole = bytearray(first[:20]) + first[20:] + second[20:]
    assert _valid_l4(whole)
