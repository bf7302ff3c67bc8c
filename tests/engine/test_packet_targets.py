"""TEE, NFQUEUE, TPROXY, SYNPROXY and HMARK on packets through the engine (xt_TEE/nf_dup_ipv4, nf_queue
without a listener, xt_TPROXY with the local stack's listeners, xt_SYNPROXY, xt_HMARK)."""

from __future__ import annotations

import shlex

from natbox.conntrack.tuple import parse_addr
from natbox.engine.engine import Engine
from natbox.engine.host import Host, Interface, Neighbour
from natbox.netfilter import NF_ACCEPT, NF_DROP, Hook
from natbox.rules.api import NF_STOLEN
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_argv
from natbox.skb import Skb
from natbox.testing.rules_fakes import FakeCtx, udp
from natbox.wire import ethernet, ipv4, tcp
from natbox.wire import udp as wudp
from natbox.wire.checksum import internet_checksum
from natbox.wire.ipv4 import IP_DF
from natbox.wire.layout import ETH_HDR_LEN, IPH_DADDR, IPH_FRAG_OFF, IPH_MIN_LEN, IPH_SADDR, IPH_TTL

LAN_MAC, WAN_MAC, TAP_MAC = bytes.fromhex("020000000001"), bytes.fromhex("020000000101"), bytes.fromhex("020000000201")
SERVER_MAC, CLIENT_MAC = bytes.fromhex("02000000aa02"), bytes.fromhex("020000000a05")
SNIFFER_MAC = bytes.fromhex("02000000bb02")
CLIENT, SERVER, SNIFFER = parse_addr("10.0.1.5"), parse_addr("198.51.100.2"), parse_addr("172.16.0.9")


def _engine(rules: list[str], *, listeners: tuple[tuple[int, int], ...] = ()) -> Engine:
    host = Host(name="gw", ip_forward=True)
    host.add_interface(Interface("eth0", mac=LAN_MAC))
    host.add_interface(Interface("eth1", mac=WAN_MAC))
    host.add_interface(Interface("tap0", mac=TAP_MAC))
    host.add_address("eth0", parse_addr("10.0.0.1"), 16)
    host.add_address("eth1", parse_addr("198.51.100.1"), 24)
    host.add_address("tap0", parse_addr("172.16.0.1"), 24)
    host.neighbours.append(Neighbour("eth1", SERVER, SERVER_MAC))
    host.neighbours.append(Neighbour("tap0", SNIFFER, SNIFFER_MAC))
    rs = Ruleset()
    for line in rules:
        rs.execute(parse_argv(shlex.split(line)))
    return Engine(host, ruleset=rs, seed=1, listeners=listeners)


def _udp_frame(dport: int = 53, *, ttl: int = 64) -> bytes:
    d = ipv4.build_ipv4(CLIENT, SERVER, 17, wudp.build_udp(CLIENT, SERVER, 4000, dport, b"q"), ttl=ttl)
    return bytes(ethernet.build_ethernet(LAN_MAC, CLIENT_MAC, ethernet.ETH_P_IP, d))


def test_tee_sends_a_copy_to_the_gateway_and_the_original_goes_on() -> None:
    engine = _engine(["-t mangle -A PREROUTING -p udp -j TEE --gateway 172.16.0.9",
                      "-t nat -A POSTROUTING -o eth1 -j MASQUERADE"])
    out = engine.receive(_udp_frame(), "eth0", 1.0)
    assert [e.iface for e in out.emitted] == ["tap0", "eth1"]  # the copy leaves first, at once
    copy, orig = out.emitted
    assert copy.frame[:6] == SNIFFER_MAC and orig.frame[:6] == SERVER_MAC
    c = copy.frame[ETH_HDR_LEN:]
    # the copy: untracked (not NATed), DF set, one TTL less at PREROUTING, a valid header checksum
    assert c[IPH_DADDR:IPH_DADDR + 4] == SERVER.to_bytes(4, "big")
    assert c[IPH_SADDR:IPH_SADDR + 4] == CLIENT.to_bytes(4, "big")
    assert c[IPH_FRAG_OFF] & (IP_DF >> 8) and c[IPH_TTL] == 63
    assert internet_checksum(c[:IPH_MIN_LEN]) == 0
    # the original is tracked and NATed as ever, and one ct exists (the copy has none)
    o = orig.frame[ETH_HDR_LEN:]
    assert o[IPH_SADDR:IPH_SADDR + 4] == parse_addr("198.51.100.1").to_bytes(4, "big") and o[IPH_TTL] == 63
    assert len(engine.table.live(1.0)) == 1


def test_tee_copy_makes_no_copy_and_no_route_frees_it() -> None:
    engine = _engine(["-t mangle -A PREROUTING -j TEE --gateway 172.16.0.9",
                      "-t mangle -A POSTROUTING -j TEE --gateway 172.16.0.9"])
    out = engine.receive(_udp_frame(), "eth0", 1.0)
    # PREROUTING's copy does not TEE again at POSTROUTING; the original makes a second copy there
    assert sorted(e.iface for e in out.emitted) == ["eth1", "tap0", "tap0"]
    unrouted = _engine(["-t mangle -A PREROUTING -j TEE --gateway 192.168.77.1"])
    out = unrouted.receive(_udp_frame(), "eth0", 1.0)
    assert [e.iface for e in out.emitted] == ["eth1"] and unrouted.stats["tee_no_route"] == 1


def test_nfqueue_without_a_listener_drops_unless_bypass() -> None:
    engine = _engine(["-A FORWARD -p udp --dport 53 -j NFQUEUE --queue-num 3",
                      "-A FORWARD -p udp --dport 54 -j NFQUEUE --queue-balance 2:5 --queue-bypass",
                      "-A FORWARD -p udp --dport 54 -j DROP"])
    out = engine.receive(_udp_frame(53), "eth0", 1.0)
    assert not out.emitted and [(str(d.reason), d.detail) for d in out.dropped] == [
        ("rule_drop", "NFQUEUE: no listener on queue 3")]
    fwd = engine.rules.tables["filter"].chains["FORWARD"].rules
    assert fwd[0].packets == 1
    # --queue-bypass: the packet leaves the filter table accepted, the DROP after it is not reached
    out = engine.receive(_udp_frame(54), "eth0", 1.0)
    assert [e.iface for e in out.emitted] == ["eth1"] and fwd[1].packets == 1 and fwd[2].packets == 0


def test_tproxy_gives_the_packet_to_a_transparent_listener_and_marks_it() -> None:
    rules = ["-t mangle -A PREROUTING -p tcp --dport 80 -j TPROXY --on-port 3128 --tproxy-mark 0x1/0x1",
             "-t mangle -A INPUT -m mark --mark 0x1/0x1 -j ACCEPT"]
    syn = ipv4.build_ipv4(CLIENT, SERVER, 6, tcp.build_tcp(CLIENT, SERVER, 40000, 80, seq=1, ack=0,
                                                             flags=tcp.SYN, window=65535, payload=b""))
    frame = bytes(ethernet.build_ethernet(LAN_MAC, CLIENT_MAC, ethernet.ETH_P_IP, syn))
    engine = _engine(rules, listeners=((6, 3128),))
    out = engine.receive(frame, "eth0", 1.0)
    assert not out.emitted and [d.action for d in out.delivered] == ["socket tcp:3128 (transparent, TPROXY)"]
    assert engine.rules.tables["mangle"].chains["INPUT"].rules[0].packets == 1  # the mark was set
    # no listener: dropped
    engine = _engine(rules)
    out = engine.receive(frame, "eth0", 1.0)
    assert not out.emitted and not out.delivered and "no transparent socket" in out.dropped[0].detail


def test_synproxy_target_answers_syns_checks_acks_and_lets_others_continue() -> None:
    """synproxy_tg4 alone (the handshake through the engine: tests/engine/test_synproxy.py)."""
    rs = Ruleset()
    rs.execute(parse_argv(shlex.split("-A FORWARD -p tcp -j SYNPROXY --mss 1460 --wscale 7 --sack-perm")))
    ctx = FakeCtx(Hook.FORWARD)
    opts = tcp.tcp_opt_mss(1400) + tcp.tcp_opt_sack_perm() + tcp.tcp_opt_nop() + tcp.tcp_opt_wscale(6)
    for flags, verdict in ((tcp.SYN, NF_STOLEN), (tcp.ACK, NF_STOLEN), (tcp.ACK | tcp.FIN, NF_ACCEPT),
                           (tcp.RST, NF_ACCEPT)):
        seg = tcp.build_tcp(CLIENT, SERVER, 40000, 80, seq=1, ack=1, flags=flags, window=100, options=opts)
        skb = Skb(ipv4.build_ipv4(CLIENT, SERVER, 6, seg), iif="eth0")
        assert rs.run("filter", Hook.FORWARD, skb, ctx) == verdict, flags
    # the SYN: counted; without --timestamp the window scale and SACK-permitted are not offered; the
    # client's MSS is what the cookie encodes, the rule's what the SYN-ACK announces
    [synack] = ctx.synacks
    assert (synack.options, synack.mss_encode, synack.mss_option) == (0x01, 1400, 1460)
    assert ctx.synproxy.syn_received == 1 and ctx.client_acks == [1]
    ctx.cookie_ok = False  # a bad cookie: dropped
    seg = tcp.build_tcp(CLIENT, SERVER, 40000, 80, seq=1, ack=1, flags=tcp.ACK, window=100)
    assert rs.run("filter", Hook.FORWARD, Skb(ipv4.build_ipv4(CLIENT, SERVER, 6, seg)), ctx) == NF_DROP
    bad = bytearray(ipv4.build_ipv4(CLIENT, SERVER, 6, tcp.build_tcp(CLIENT, SERVER, 1, 2, flags=tcp.SYN)))
    bad[-1] ^= 0xFF  # a bad TCP checksum: nf_ip_checksum drops it
    assert rs.run("filter", Hook.FORWARD, Skb(bad), ctx) == NF_DROP and ctx.synproxy.syn_received == 1


def test_hmark_matches_the_kernel() -> None:
    """Marks recorded on Linux 6.18 (HMARK in mangle OUTPUT, then CONNMARK --save-mark, conntrack -L)."""
    rs = Ruleset()
    for line in ("-t mangle -A OUTPUT -p udp --dport 5000 -j HMARK --hmark-tuple src,dst,sport,dport,proto "
                 "--hmark-rnd 0xfeedcafe --hmark-mod 1000 --hmark-offset 5",
                 "-t mangle -A OUTPUT -p udp --dport 5001 -j HMARK --hmark-src-prefix 16 --hmark-dst-prefix 8 "
                 "--hmark-sport-mask 0xff00 --hmark-rnd 0x12345678 --hmark-mod 65536",
                 "-t mangle -A OUTPUT -p udp --dport 5002 -j HMARK --hmark-tuple src,dst --hmark-rnd 7 "
                 "--hmark-mod 4294967295"):
        rs.execute(parse_argv(shlex.split(line)))
    cases = [(("127.0.0.1", 4000, "127.0.0.1", 5000), 550), (("10.1.2.3", 4001, "127.0.0.1", 5000), 707),
             (("10.1.2.3", 40123, "127.0.0.5", 5001), 47688), (("127.0.0.1", 4002, "10.1.2.3", 5002), 380551880)]
    for (src, sport, dst, dport), mark in cases:
        skb = udp(src, sport, dst, dport)
        rs.run("mangle", Hook.LOCAL_OUT, skb, FakeCtx(Hook.LOCAL_OUT))
        assert skb.mark == mark
        # both directions of a flow get the same mark
        back = udp(dst, dport, src, sport)
        rs2 = Ruleset()
        rs2.execute(parse_argv(shlex.split("-t mangle -A OUTPUT -j HMARK --hmark-tuple src,dst,sport,dport "
                                           "--hmark-rnd 1 --hmark-mod 100")))
        fwd = udp(src, sport, dst, dport)
        rs2.run("mangle", Hook.LOCAL_OUT, fwd, FakeCtx(Hook.LOCAL_OUT))
        rs2.run("mangle", Hook.LOCAL_OUT, back, FakeCtx(Hook.LOCAL_OUT))
        assert fwd.mark == back.mark


def test_a_protocol_without_a_handler_is_answered_protocol_unreachable() -> None:
    """ip_protocol_deliver_rcu: SCTP (no sctp module loaded) to the host itself gets ICMP 3/2, as Linux 6.18
    answered in scenarios/sctp-shutdown-heartbeat-chunks.toml."""
    from natbox.wire import sctp as w

    engine = _engine([])
    gw = parse_addr("10.0.0.1")
    d = ipv4.build_ipv4(CLIENT, gw, 132, w.build_sctp(1, 2, 0, w.build_init(w.INIT, 7)))
    out = engine.receive(bytes(ethernet.build_ethernet(LAN_MAC, CLIENT_MAC, ethernet.ETH_P_IP, d)), "eth0", 1.0)
    assert [x.action for x in out.delivered] == ["protocol 132: no handler, protocol unreachable sent"]
    icmp = out.emitted[0].frame[ETH_HDR_LEN:]
    assert out.emitted[0].iface == "eth0" and icmp[IPH_MIN_LEN:IPH_MIN_LEN + 2] == b"\x03\x02"
