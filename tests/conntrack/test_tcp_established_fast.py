"""`tcp_packet_established` is `tcp_packet` for its commonest case, or declines without changing anything.

Hypothesis builds arbitrary window-tracking states (both directions' td_end, td_maxend, td_maxwin,
td_maxack, td_scale and flags, the retransmission memory) and an arbitrary ACK segment, runs the general
path (`tcp_packet` with `shortcut=False`: the state table and `tcp_in_window`) on one copy and
`tcp_packet_established` on another: when the fast function accepts, both copies must end identical and
the general path must have accepted the segment as in-window; when it declines, its copy must be
untouched. `tcp_packet` (which tries the fast function first, as the engine's fast paths do) must end in
the general path's state either way.
Sequence numbers are drawn near the tracked edges, so the four window checks
and the zero-window, SACK and retransmission branches are all reached.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from natbox.conntrack.config import ConntrackConfig
from natbox.conntrack.conn import Conn, TcpConntrack
from natbox.conntrack.proto.tcp import tcp_packet, tcp_packet_established
from natbox.conntrack.table import ConntrackTable
from natbox.conntrack.tuple import ConnTuple
from natbox.netfilter import NF_ACCEPT, CtStatus, Hook, TcpState
from natbox.skb import Skb
from natbox.wire import ipv4, tcp

U32 = 0xFFFFFFFF
BASE = 0xFFFFF000  # near the wrap, so modular comparisons matter
SRC, DST = 0x0A000001, 0xC6336402

near = st.integers(-70000, 70000).map(lambda d: (BASE + d) & U32)
seen = st.tuples(near, near, st.sampled_from([0, 1, 1000, 65535, 70000, 1 << 20]), near, st.integers(0, 14),
                 st.integers(0, 0xFF))


def _state(t: TcpConntrack, c: Conn) -> tuple[object, ...]:
    return (t.state, t.last_dir, t.last_index, t.last_seq, t.last_ack, t.last_end, t.last_win, t.retrans,
            t.last_flags, tuple((s.td_end, s.td_maxend, s.td_maxwin, s.td_maxack, s.td_scale, s.flags)
                                for s in t.seen), c.status, c.timeout, c.accounted and (c.acct_packets, c.acct_bytes))


def _make(sides: tuple[tuple[int, ...], tuple[int, ...]], last: tuple[int, ...]) -> tuple[Conn, TcpConntrack]:
    conn = Conn(ConnTuple(SRC, 1000, DST, 80, 6), ConnTuple(DST, 80, SRC, 1000, 6), now=0.0, ct_id=1)
    conn.status = int(CtStatus.CONFIRMED | CtStatus.SEEN_REPLY | CtStatus.ASSURED)
    conn.timeout = 100.0
    t = TcpConntrack()
    t.state = TcpState.ESTABLISHED
    for s, v in zip(t.seen, sides, strict=True):
        s.td_end, s.td_maxend, s.td_maxwin, s.td_maxack, s.td_scale, s.flags = v
    t.last_dir, t.last_index, t.last_seq, t.last_ack, t.last_end, t.last_win, t.retrans = last
    conn.tcp = t
    return conn, t


@settings(max_examples=3000, deadline=None)
@given(sides=st.tuples(seen, seen), direction=st.integers(0, 1), seq=near, ack=near,
       win=st.sampled_from([0, 0, 1, 512, 65535]), length=st.sampled_from([0, 0, 1, 1000]),
       flags=st.sampled_from([tcp.ACK, tcp.ACK | tcp.PSH, tcp.ACK | 0xC0]),
       opts=st.sampled_from(["none", "ts", "sack"]), sack_edge=near,
       last=st.tuples(st.integers(0, 1), st.integers(0, 5), near, near, near, st.sampled_from([0, 512]),
                      st.integers(0, 4)),
       acct=st.booleans(), now=st.sampled_from([1.0, 50.0]))
def test_fast_function_equals_tcp_packet(
    sides: tuple[tuple[int, ...], tuple[int, ...]], direction: int, seq: int, ack: int, win: int, length: int,
    flags: int, opts: str, sack_edge: int, last: tuple[int, ...], acct: bool, now: float,
) -> None:
    cfg = ConntrackConfig()
    cfg.acct = acct
    options = {"none": b"", "ts": bytes((1, 1, 8, 10)) + bytes(8),
               "sack": bytes((1, 1, 5, 10)) + ((sack_edge - 100) & U32).to_bytes(4, "big")
               + sack_edge.to_bytes(4, "big")}[opts]
    src, dst = (SRC, DST) if direction == 0 else (DST, SRC)
    seg = tcp.build_tcp(src, dst, 1000, 80, seq=seq, ack=ack, flags=flags, window=win, options=options,
                        payload=bytes(length))
    data = ipv4.build_ipv4(src, dst, 6, seg)
    doff = (seg[12] >> 4) * 4

    slow_conn, slow_tcp = _make(sides, last)
    skb = Skb(bytearray(data))
    verdict = tcp_packet(slow_conn, skb, 20, direction, Hook.PRE_ROUTING, now, ConntrackTable(), cfg,
                         shortcut=False)

    both_conn, both_tcp = _make(sides, last)
    both_skb = Skb(bytearray(data))
    assert tcp_packet(both_conn, both_skb, 20, direction, Hook.PRE_ROUTING, now, ConntrackTable(), cfg) == verdict
    assert _state(both_tcp, both_conn) == _state(slow_tcp, slow_conn)
    assert both_skb.note == skb.note

    fast_conn, fast_tcp = _make(sides, last)
    before = _state(fast_tcp, fast_conn)
    took = tcp_packet_established(fast_conn, fast_tcp, direction, bytes(data), 20, doff, seq, ack, win,
                                  (seq + len(seg) - doff) & U32, len(data), now, cfg)
    if took:
        assert verdict == NF_ACCEPT and not skb.note
        assert _state(fast_tcp, fast_conn) == _state(slow_tcp, slow_conn)
    else:
        assert _state(fast_tcp, fast_conn) == before
