"""SYNPROXY's handshake through the engine (xt_SYNPROXY.c, nf_synproxy_core.c, nf_conntrack_seqadj.c) with the
iptables-extensions(8) setup: raw `--syn -j CT --notrack`, filter `--ctstate INVALID,UNTRACKED -j SYNPROXY`,
`--ctstate INVALID -j DROP`, nf_conntrack_tcp_loose = 0. The client 10.0.1.5 (eth0) connects through the
router to the server 198.51.100.2 (eth1)."""

from __future__ import annotations

import json
import shlex

from natbox.conntrack.conn import Conn
from natbox.conntrack.persist import dump_conns, load_conns
from natbox.conntrack.syncookies import cookie_v4_init_sequence, cookie_v6_init_sequence
from natbox.conntrack.tuple import parse_addr
from natbox.engine.engine import Engine
from natbox.engine.host import Host, Interface, Neighbour
from natbox.engine.output import Output
from natbox.netfilter import NFPROTO_IPV6, CtStatus, TcpState
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_argv
from natbox.wire import ethernet, ipv4, tcp
from natbox.wire.checksum import csum_fold, csum_partial, l4_checksum
from natbox.wire.ipv6 import build_ipv6, parse_addr6, pseudo6_sum
from natbox.wire.layout import ETH_HDR_LEN, IP6H_LEN, IPH_MIN_LEN, TCPH_CHECK
from natbox.wire.tcp import TcpHeader, parse_tcp, parse_tcp_options

LAN_MAC, WAN_MAC = bytes.fromhex("020000000001"), bytes.fromhex("020000000101")
SERVER_MAC, CLIENT_MAC = bytes.fromhex("02000000aa02"), bytes.fromhex("020000000a05")
CLIENT, SERVER = parse_addr("10.0.1.5"), parse_addr("198.51.100.2")
CPORT, SPORT = 40000, 80
RULE = "--sack-perm --timestamp --wscale 7 --mss 1460"
Seg = tuple[str, int, int, TcpHeader, list[tuple[str, tuple[int, ...]]], bytes]


def _engine(target_opts: str = RULE) -> Engine:
    host = Host(name="gw", ip_forward=True)
    host.add_interface(Interface("eth0", mac=LAN_MAC))
    host.add_interface(Interface("eth1", mac=WAN_MAC))
    host.add_address("eth0", parse_addr("10.0.0.1"), 16)
    host.add_address("eth1", parse_addr("198.51.100.1"), 24)
    host.neighbours.append(Neighbour("eth1", SERVER, SERVER_MAC))
    host.neighbours.append(Neighbour("eth0", CLIENT, CLIENT_MAC))
    host.conntrack.tcp_loose = False
    rs = Ruleset()
    for line in ("-t raw -A PREROUTING -i eth0 -p tcp -m tcp --syn -j CT --notrack",
                 f"-A FORWARD -i eth0 -p tcp -m tcp -m conntrack --ctstate INVALID,UNTRACKED -j SYNPROXY {target_opts}",
                 "-A FORWARD -m conntrack --ctstate INVALID -j DROP"):
        rs.execute(parse_argv(shlex.split(line)))
    return Engine(host, ruleset=rs, seed=7)


def _send(engine: Engine, now: float, *, seq: int, ack: int, flags: int, window: int, opts: bytes = b"",
          payload: bytes = b"", from_server: bool = False) -> Output:
    src, dst, sport, dport = (SERVER, CLIENT, SPORT, CPORT) if from_server else (CLIENT, SERVER, CPORT, SPORT)
    seg = tcp.build_tcp(src, dst, sport, dport, seq=seq, ack=ack, flags=flags, window=window, options=opts,
                        payload=payload)
    frame = ethernet.build_ethernet(WAN_MAC if from_server else LAN_MAC, SERVER_MAC if from_server else CLIENT_MAC,
                                    ethernet.ETH_P_IP, ipv4.build_ipv4(src, dst, 6, seg))
    return engine.receive(bytes(frame), "eth1" if from_server else "eth0", now)


def _segs(out: Output) -> list[Seg]:
    """(interface, saddr, daddr, header, options, payload) of each emitted segment; checksums verified."""
    segs = []
    for e in out.emitted:
        ip = e.frame[ETH_HDR_LEN:]
        saddr, daddr = ipv4.ip_saddr(ip), ipv4.ip_daddr(ip)
        body = ip[IPH_MIN_LEN:]
        assert l4_checksum(saddr, daddr, 6, body) == 0 and ipv4.ip_header_csum_ok(ip)
        th = parse_tcp(body)
        assert th is not None
        segs.append((e.iface, saddr, daddr, th, parse_tcp_options(body[20:th.doff]), bytes(body[th.doff:])))
    return segs


def _ts(opts: list[tuple[str, tuple[int, ...]]]) -> tuple[int, ...]:
    return next(v for k, v in opts if k == "TS")


def _ts_opt(tsval: int, tsecr: int) -> bytes:
    return tcp.tcp_opt_nop() + tcp.tcp_opt_nop() + tcp.tcp_opt_timestamps(tsval, tsecr)


SYN_OPTS = (tcp.tcp_opt_mss(1460) + tcp.tcp_opt_sack_perm() + tcp.tcp_opt_timestamps(5000, 0) + tcp.tcp_opt_nop()
            + tcp.tcp_opt_wscale(6))


def _conn(engine: Engine) -> Conn:
    conns = [c for c in engine.table if c.original.proto == 6]
    assert len(conns) == 1
    return conns[0]


def _state(ct: Conn) -> TcpState:
    assert ct.tcp is not None
    return ct.tcp.state


def _stats(engine: Engine) -> dict[str, int]:
    return engine.synproxy.stats.as_dict()


def test_the_whole_exchange_with_timestamps() -> None:
    engine = _engine()
    # 1. client SYN: answered by the router with a cookie SYN-ACK, nothing goes to the server
    [(iface, saddr, daddr, th, opts, _)] = _segs(_send(engine, 1.0, seq=1000, ack=0, flags=tcp.SYN, window=64240,
                                                       opts=SYN_OPTS))
    cookie, _mss = cookie_v4_init_sequence(engine.synproxy.secret, CLIENT, SERVER, CPORT, SPORT, 1000, 1460, 1.0)
    assert (iface, saddr, daddr, th.sport, th.dport) == ("eth0", SERVER, CLIENT, SPORT, CPORT)
    assert (th.seq, th.ack, th.flags, th.window) == (cookie, 1001, tcp.SYN | tcp.ACK, 0)
    # the client's wscale 6 and SACK-permitted ride in our TSval's low bits (1000 ms & ~0x3f = 960)
    assert opts == [("mss", (1460,)), ("sackOK", ()), ("TS", (960 | 6 | 0x10, 5000)), ("nop", ()), ("wscale", (7,))]
    its = 960 | 6 | 0x10
    assert _stats(engine)["syn_received"] == 1 and not list(engine.table)
    # 2. client ACK: the cookie checks, the SYN goes to the server with the client's ISN and options
    [(iface, saddr, daddr, th, opts, _)] = _segs(_send(engine, 1.1, seq=1001, ack=cookie + 1, flags=tcp.ACK,
                                                       window=502, opts=_ts_opt(5001, its)))
    assert (iface, saddr, daddr, th.seq, th.ack, th.flags, th.window) == ("eth1", CLIENT, SERVER, 1000, cookie,
                                                                         tcp.SYN, 502)
    assert opts == [("mss", (1460,)), ("sackOK", ()), ("TS", (5001, its)), ("nop", ()), ("wscale", (6,))]
    ct = _conn(engine)
    assert ct.synproxy is not None and ct.synproxy.isn == cookie and ct.synproxy.its == its
    assert _state(ct) == TcpState.SYN_SENT and not ct.status & CtStatus.SEQ_ADJUST
    # 3. server SYN-ACK (its own ISN and clock): consumed; an ACK to the server, the window update to the client
    out = _send(engine, 1.2, seq=90000, ack=1001, flags=tcp.SYN | tcp.ACK, window=65160, from_server=True,
                opts=tcp.tcp_opt_mss(1400) + tcp.tcp_opt_sack_perm() + tcp.tcp_opt_timestamps(777000, 5001)
                + tcp.tcp_opt_nop() + tcp.tcp_opt_wscale(3))
    tsoff = 777000 - its
    [to_server, to_client] = _segs(out)
    assert to_server[:3] == ("eth1", CLIENT, SERVER)
    assert (to_server[3].seq, to_server[3].ack, to_server[3].flags, to_server[3].window) == (1001, 90001, tcp.ACK, 502)
    # TS (client's, server's); the synproxy hook then adds tsoff to the TSecr of this original-direction segment too
    assert _ts(to_server[4]) == (5001, 777000 + tsoff)
    assert to_client[:3] == ("eth0", SERVER, CLIENT)
    assert (to_client[3].seq, to_client[3].ack, to_client[3].flags) == (cookie + 1, 1001, tcp.ACK)
    assert to_client[3].window == 65160 >> 3 and _ts(to_client[4]) == (its, 5001)
    assert _state(ct) == TcpState.ESTABLISHED and ct.status & CtStatus.SEQ_ADJUST
    assert ct.seqadj is not None and ct.seqadj.seq[1].offset_after == (cookie - 90000) & 0xFFFFFFFF
    # 4. data both ways, for the life of the connection: ack numbers, SACK blocks and timestamps adjusted
    [(_, _, _, th, opts, payload)] = _segs(_send(engine, 1.3, seq=1001, ack=cookie + 1, flags=tcp.ACK | tcp.PSH,
                                                 window=502, opts=_ts_opt(5002, its), payload=b"hello"))
    assert (th.seq, th.ack, _ts(opts), payload) == (1001, 90001, (5002, 777000), b"hello")
    [(_, _, _, th, opts, payload)] = _segs(_send(
        engine, 1.4, seq=90001, ack=1006, flags=tcp.ACK | tcp.PSH, window=509, from_server=True, payload=b"world",
        opts=_ts_opt(777010, 5002) + tcp.tcp_opt_nop() + tcp.tcp_opt_nop() + tcp.tcp_opt_sack([(1001, 1006)])))
    assert (th.seq, th.ack, _ts(opts), payload) == (cookie + 1, 1006, (its + 10, 5002), b"world")
    assert ("sack", (1001, 1006)) in opts  # the client's own numbers: no offset in that direction
    [(_, _, _, th, opts, _)] = _segs(_send(
        engine, 1.5, seq=1006, ack=cookie + 1, flags=tcp.ACK, window=502,
        opts=_ts_opt(5003, its + 10) + tcp.tcp_opt_nop() + tcp.tcp_opt_nop()
        + tcp.tcp_opt_sack([(cookie + 1, cookie + 6)])))
    assert (th.seq, th.ack, _ts(opts)) == (1006, 90001, (5003, 777010))
    assert ("sack", (90001, 90006)) in opts
    assert _stats(engine) == {"syn_received": 1, "cookie_invalid": 0, "cookie_valid": 1, "cookie_retrans": 0,
                              "conn_reopened": 0}
    # never compiled nor cached: the synproxy hook and nf_confirm's seqadj must see every packet
    assert not engine._flowcache.flows and not engine._forward.flows


def test_without_timestamps_only_the_mss_is_offered() -> None:
    engine = _engine("--sack-perm --wscale 7 --mss 1460")
    syn_opts = tcp.tcp_opt_mss(1400) + tcp.tcp_opt_sack_perm() + tcp.tcp_opt_nop() + tcp.tcp_opt_wscale(6)
    [(_, _, _, th, opts, _)] = _segs(_send(engine, 1.0, seq=1000, ack=0, flags=tcp.SYN, window=64240, opts=syn_opts))
    cookie = th.seq
    assert opts == [("mss", (1460,))] and th.doff == 24
    # the cookie keeps 1300, the msstab entry below the client's 1400; no wscale or SACK come back
    [(_, _, _, th, opts, _)] = _segs(_send(engine, 1.1, seq=1001, ack=cookie + 1, flags=tcp.ACK, window=502))
    assert (th.seq, th.ack, th.flags) == (1000, cookie, tcp.SYN) and opts == [("mss", (1300,))]
    out = _send(engine, 1.2, seq=5, ack=1001, flags=tcp.SYN | tcp.ACK, window=65160, from_server=True,
                opts=tcp.tcp_opt_mss(1460))
    [to_server, to_client] = _segs(out)
    assert (to_server[3].seq, to_server[3].ack, to_server[4]) == (1001, 6, [])
    assert (to_client[3].seq, to_client[3].ack, to_client[3].window) == (cookie + 1, 1001, 65160)
    [(_, _, _, th, _, _)] = _segs(_send(engine, 1.3, seq=6, ack=1001, flags=tcp.ACK, window=100, from_server=True,
                                         payload=b"x"))
    assert th.seq == cookie + 1


def test_a_bad_cookie_is_dropped_and_counted() -> None:
    engine = _engine()
    [(_, _, _, th, _, _)] = _segs(_send(engine, 1.0, seq=1000, ack=0, flags=tcp.SYN, window=64240, opts=SYN_OPTS))
    out = _send(engine, 1.1, seq=1001, ack=th.seq + 2, flags=tcp.ACK, window=502)
    assert not out.emitted and out.dropped and "cookie" in out.dropped[0].detail
    # another client's ACK with this client's cookie fails too (the hash covers the tuple)
    out = _send(engine, 1.1, seq=1001, ack=th.seq + 1, flags=tcp.ACK, window=502, from_server=True)
    assert not out.emitted
    assert _stats(engine)["cookie_invalid"] == 1 and _stats(engine)["cookie_valid"] == 0


def test_a_cookie_checks_for_two_minutes_of_its_count() -> None:
    for now, valid in ((119.9, True), (120.0, False)):
        engine = _engine()
        [(_, _, _, th, _, _)] = _segs(_send(engine, 1.0, seq=1000, ack=0, flags=tcp.SYN, window=64240))
        out = _send(engine, now, seq=1001, ack=th.seq + 1, flags=tcp.ACK, window=502)
        assert bool(out.emitted) == valid
        assert _stats(engine)["cookie_valid" if valid else "cookie_invalid"] == 1


def test_retransmitted_ack_and_keepalive_resend_the_syn() -> None:
    engine = _engine()
    [(_, _, _, th, _, _)] = _segs(_send(engine, 1.0, seq=1000, ack=0, flags=tcp.SYN, window=64240, opts=SYN_OPTS))
    cookie, its = th.seq, 960 | 6 | 0x10
    [first] = _segs(_send(engine, 1.1, seq=1001, ack=cookie + 1, flags=tcp.ACK, window=502, opts=_ts_opt(5001, its)))
    # the server's SYN-ACK is lost; the client's ACK again: INVALID in SYN_SENT, SYNPROXY checks it again
    [again] = _segs(_send(engine, 2.1, seq=1001, ack=cookie + 1, flags=tcp.ACK, window=502, opts=_ts_opt(5002, its)))
    assert (again[3].seq, again[3].ack, again[3].flags) == (first[3].seq, first[3].ack, tcp.SYN)
    assert _stats(engine)["cookie_valid"] == 2 and _stats(engine)["cookie_retrans"] == 0
    # a keep-alive (SND.NXT - 1) stays with the ct (tcp_packet's SYNPROXY case) and reaches the hook, which
    # gives synproxy_recv_client_ack seq + 1; but __cookie_v4_check reads the segment's own seq, one less,
    # so the MSS index comes out one higher: past msstab for 1460 (dropped, counted invalid)...
    out = _send(engine, 3.1, seq=1000, ack=cookie + 1, flags=tcp.ACK, window=502, opts=_ts_opt(5003, its))
    assert not out.emitted and _stats(engine)["cookie_invalid"] == 1
    # ... and the next entry for 1440: the SYN is sent again, announcing 1460, and counted as cookie_retrans
    engine = _engine()
    syn_opts = tcp.tcp_opt_mss(1440) + tcp.tcp_opt_sack_perm() + tcp.tcp_opt_timestamps(5000, 0)
    [(_, _, _, th, _, _)] = _segs(_send(engine, 1.0, seq=1000, ack=0, flags=tcp.SYN, window=64240, opts=syn_opts))
    cookie, its = th.seq, 960 | 0xF | 0x10
    _segs(_send(engine, 1.1, seq=1001, ack=cookie + 1, flags=tcp.ACK, window=502, opts=_ts_opt(5001, its)))
    [keep] = _segs(_send(engine, 3.1, seq=1000, ack=cookie + 1, flags=tcp.ACK, window=502, opts=_ts_opt(5003, its)))
    assert (keep[3].seq, keep[3].ack, keep[3].flags) == (1000, cookie, tcp.SYN) and ("mss", (1460,)) in keep[4]
    assert _stats(engine) == {"syn_received": 1, "cookie_invalid": 0, "cookie_valid": 2, "cookie_retrans": 1,
                              "conn_reopened": 0}


# --- IPv6 (ip6t_SYNPROXY: synproxy_tg6, ipv6_synproxy_hook, IPv6 cookies) -----------------------------------

C6, S6 = parse_addr6("fd00:1::5"), parse_addr6("2001:db8:100::10")


def _engine6() -> Engine:
    host = Host(name="gw", ipv6_forward=True)
    host.add_interface(Interface("eth0", mac=LAN_MAC))
    host.add_interface(Interface("eth1", mac=WAN_MAC))
    host.add_address6("eth0", parse_addr6("fd00:1::1"), 64)
    host.add_address6("eth1", parse_addr6("2001:db8:100::1"), 64)
    host.neighbours.append(Neighbour("eth1", S6, SERVER_MAC))
    host.neighbours.append(Neighbour("eth0", C6, CLIENT_MAC))
    host.conntrack.tcp_loose = False
    rs = Ruleset(NFPROTO_IPV6)
    for line in ("-t raw -A PREROUTING -i eth0 -p tcp -m tcp --syn -j CT --notrack",
                 f"-A FORWARD -i eth0 -p tcp -m tcp -m conntrack --ctstate INVALID,UNTRACKED -j SYNPROXY {RULE}",
                 "-A FORWARD -m conntrack --ctstate INVALID -j DROP"):
        rs.execute(parse_argv(shlex.split(line), family=NFPROTO_IPV6))
    return Engine(host, ruleset6=rs, seed=7)


def _send6(engine: Engine, now: float, *, seq: int, ack: int, flags: int, window: int, opts: bytes = b"",
           payload: bytes = b"", from_server: bool = False, cport: int = CPORT) -> Output:
    src, dst, sport, dport = (S6, C6, SPORT, cport) if from_server else (C6, S6, cport, SPORT)
    seg = bytearray(tcp.build_tcp(0, 0, sport, dport, seq=seq, ack=ack, flags=flags, window=window, options=opts,
                                  payload=payload))
    seg[TCPH_CHECK:TCPH_CHECK + 2] = b"\0\0"
    check = csum_fold(csum_partial(seg, pseudo6_sum(src, dst, 6, len(seg))))
    seg[TCPH_CHECK:TCPH_CHECK + 2] = check.to_bytes(2, "big")
    frame = ethernet.build_ethernet(WAN_MAC if from_server else LAN_MAC, SERVER_MAC if from_server else CLIENT_MAC,
                                    ethernet.ETH_P_IPV6, build_ipv6(src, dst, 6, seg))
    return engine.receive(bytes(frame), "eth1" if from_server else "eth0", now)


def _segs6(out: Output) -> list[tuple[str, int, int, TcpHeader, list[tuple[str, tuple[int, ...]]]]]:
    segs = []
    for e in out.emitted:
        ip = e.frame[ETH_HDR_LEN:]
        saddr, daddr = int.from_bytes(ip[8:24], "big"), int.from_bytes(ip[24:40], "big")
        body = ip[IP6H_LEN:]
        assert csum_fold(csum_partial(body, pseudo6_sum(saddr, daddr, 6, len(body)))) == 0
        th = parse_tcp(body)
        assert th is not None
        segs.append((e.iface, saddr, daddr, th, parse_tcp_options(body[20:th.doff])))
    return segs


def test_ipv6_the_whole_exchange() -> None:
    engine = _engine6()
    [(iface, saddr, daddr, th, opts)] = _segs6(_send6(engine, 1.0, seq=1000, ack=0, flags=tcp.SYN, window=64240,
                                                      opts=SYN_OPTS))
    cookie, mss = cookie_v6_init_sequence(engine.synproxy.secret6, C6, S6, CPORT, SPORT, 1000, 1460, 1.0)
    assert mss == 1440  # IPv6's msstab: 1220, 1420, 1440, 8940
    assert (iface, saddr, daddr, th.seq, th.ack, th.flags, th.window) == ("eth0", S6, C6, cookie, 1001,
                                                                         tcp.SYN | tcp.ACK, 0)
    its = 960 | 6 | 0x10
    assert opts == [("mss", (1460,)), ("sackOK", ()), ("TS", (its, 5000)), ("nop", ()), ("wscale", (7,))]
    [(iface, saddr, _, th, opts)] = _segs6(_send6(engine, 1.1, seq=1001, ack=cookie + 1, flags=tcp.ACK, window=502,
                                                  opts=_ts_opt(5001, its)))
    assert (iface, saddr, th.seq, th.ack, th.flags) == ("eth1", C6, 1000, cookie, tcp.SYN)
    assert ("mss", (1440,)) in opts
    out = _send6(engine, 1.2, seq=90000, ack=1001, flags=tcp.SYN | tcp.ACK, window=65160, from_server=True,
                 opts=tcp.tcp_opt_timestamps(777000, 5001) + tcp.tcp_opt_nop() + tcp.tcp_opt_nop())
    [to_server, to_client] = _segs6(out)
    assert (to_server[0], to_server[3].ack, to_client[0], to_client[3].seq) == ("eth1", 90001, "eth0", cookie + 1)
    [(_, _, _, th, opts)] = _segs6(_send6(engine, 1.3, seq=90001, ack=1001, flags=tcp.ACK | tcp.PSH, window=509,
                                          from_server=True, opts=_ts_opt(777010, 5001), payload=b"v6"))
    assert (th.seq, _ts(opts)) == (cookie + 1, (its + 10, 5001))
    [(_, _, _, th, opts)] = _segs6(_send6(engine, 1.4, seq=1001, ack=cookie + 3, flags=tcp.ACK, window=502,
                                          opts=_ts_opt(5002, its + 10)))
    assert (th.ack, _ts(opts)) == (90003, (5002, 777010))
    assert _stats(engine)["syn_received"] == 1 and _stats(engine)["cookie_valid"] == 1
    # another connection's ACK with a bad cookie: dropped and counted
    assert not _send6(engine, 1.5, seq=1, ack=5, flags=tcp.ACK, window=5, cport=CPORT + 1).emitted
    assert _stats(engine)["cookie_invalid"] == 1


def test_a_restarted_gateway_keeps_the_offsets() -> None:
    """conntrack/persist.py carries the synproxy and seqadj extensions: the restored ct splices the same way."""
    engine = _engine()
    [(_, _, _, th, _, _)] = _segs(_send(engine, 1.0, seq=1000, ack=0, flags=tcp.SYN, window=64240, opts=SYN_OPTS))
    cookie, its = th.seq, 960 | 6 | 0x10
    _send(engine, 1.1, seq=1001, ack=cookie + 1, flags=tcp.ACK, window=502, opts=_ts_opt(5001, its))
    _send(engine, 1.2, seq=90000, ack=1001, flags=tcp.SYN | tcp.ACK, window=65160, from_server=True,
          opts=tcp.tcp_opt_timestamps(777000, 5001) + tcp.tcp_opt_nop() + tcp.tcp_opt_nop())
    doc = json.loads(json.dumps(dump_conns(list(engine.table), 1.3)))
    again = _engine()
    [ct] = load_conns(doc, again.table, 1.3)
    old = _conn(engine)
    assert ct.synproxy is not None and old.synproxy is not None and ct.seqadj is not None and old.seqadj is not None
    assert (ct.synproxy.isn, ct.synproxy.its, ct.synproxy.tsoff) == (old.synproxy.isn, its, 777000 - its)
    assert ct.seqadj.seq[1].offset_after == (cookie - 90000) & 0xFFFFFFFF and ct.status & CtStatus.SEQ_ADJUST
    [(_, _, _, th, opts, _)] = _segs(_send(again, 1.4, seq=90001, ack=1001, flags=tcp.ACK, window=509,
                                           from_server=True, opts=_ts_opt(777010, 5001), payload=b"x"))
    assert (th.seq, _ts(opts)) == (cookie + 1, (its + 10, 5001))
