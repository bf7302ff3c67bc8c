"""SYNPROXY's pure parts: SipHash and SYN cookies (syncookies.c), sequence adjustment (nf_conntrack_seqadj.c),
the options and timestamp cookies (nf_synproxy_core.c)."""

from __future__ import annotations

from natbox.conntrack.conn import Conn
from natbox.conntrack.seqadj import NfConnSeqadj, nf_ct_seq_adjust, nf_ct_seq_offset, nf_ct_seqadj_init
from natbox.conntrack.syncookies import (
    SyncookieSecret,
    cookie_v4_check,
    cookie_v4_init_sequence,
    siphash_4u32,
)
from natbox.conntrack.synproxy import (
    NF_SYNPROXY_OPT_ECN,
    NF_SYNPROXY_OPT_MSS,
    NF_SYNPROXY_OPT_SACK_PERM,
    NF_SYNPROXY_OPT_TIMESTAMP,
    NF_SYNPROXY_OPT_WSCALE,
    NfConnSynproxy,
    SynproxyOptions,
    SynproxyStats,
    synproxy_build_options,
    synproxy_check_timestamp_cookie,
    synproxy_init_timestamp_cookie,
    synproxy_parse_options,
    synproxy_tstamp_adjust,
)
from natbox.conntrack.tuple import ConnTuple, parse_addr
from natbox.netfilter import CtStatus
from natbox.wire import tcp
from natbox.wire.checksum import l4_checksum
from natbox.wire.tcp import parse_tcp, parse_tcp_options

A, B = parse_addr("10.0.1.5"), parse_addr("198.51.100.2")
SECRET = SyncookieSecret((1, 2, 3, 4))


def test_siphash_matches_the_reference_vector() -> None:
    """SipHash-2-4's 16-byte test vector (key 00..0f, message 00..0f): 0x3f2acc7f57c29bdb, low half kept."""
    key = (int.from_bytes(bytes(range(8)), "little"), int.from_bytes(bytes(range(8, 16)), "little"))
    words = [int.from_bytes(bytes(range(i, i + 4)), "little") for i in (0, 4, 8, 12)]
    assert siphash_4u32(words[0], words[1], words[2], words[3], key) == 0x57C29BDB


def test_cookies_encode_the_mss_and_age_out() -> None:
    for mss, encoded in ((0, 536), (535, 536), (1299, 536), (1300, 1300), (1452, 1440), (9000, 1460)):
        cookie, got = cookie_v4_init_sequence(SECRET, A, B, 40000, 80, 1000, mss, 30.0)
        assert got == encoded
        for now, want in ((30.0, encoded), (119.0, encoded), (120.0, 0)):
            assert cookie_v4_check(SECRET, A, B, 40000, 80, 1001, cookie + 1, now) == want
    cookie, _ = cookie_v4_init_sequence(SECRET, A, B, 40000, 80, 1000, 1460, 30.0)
    assert cookie_v4_check(SECRET, A, B, 40001, 80, 1001, cookie + 1, 30.0) == 0  # another tuple
    assert cookie_v4_check(SyncookieSecret((1, 2, 3, 5)), A, B, 40000, 80, 1001, cookie + 1, 30.0) == 0


def _conn() -> Conn:
    ct = Conn(ConnTuple(A, 40000, B, 80, 6), ConnTuple(B, 80, A, 40000, 6), now=0.0, ct_id=1)
    ct.seqadj, ct.synproxy = NfConnSeqadj(), NfConnSynproxy()
    return ct


def test_seqadj_shifts_seq_ack_and_sack_with_a_valid_checksum() -> None:
    ct = _conn()
    nf_ct_seqadj_init(ct, 1, 0)
    assert not ct.status & CtStatus.SEQ_ADJUST  # a zero offset changes nothing
    nf_ct_seqadj_init(ct, 1, 1000 - 0xFFFFFF00)  # reply direction: + (cookie - server ISN), wrapping
    assert ct.status & CtStatus.SEQ_ADJUST and nf_ct_seq_offset(ct, 1, 5) == (1000 - 0xFFFFFF00) & 0xFFFFFFFF
    # a reply segment: its seq moves by the offset
    seg = bytearray(tcp.build_tcp(B, A, 80, 40000, seq=0xFFFFFF01, ack=7, flags=tcp.ACK, payload=b"x"))
    assert nf_ct_seq_adjust(seg, 0, ct, 1)
    th = parse_tcp(seg)
    assert th is not None and (th.seq, th.ack) == (1001, 7) and l4_checksum(B, A, 6, seg) == 0
    # an original segment: its ack and SACK blocks lose the offset
    opts = tcp.tcp_opt_nop() + tcp.tcp_opt_nop() + tcp.tcp_opt_sack([(1001, 1002), (1005, 1010)])
    seg = bytearray(tcp.build_tcp(A, B, 40000, 80, seq=7, ack=1002, flags=tcp.ACK, options=opts))
    assert nf_ct_seq_adjust(seg, 0, ct, 0)
    th = parse_tcp(seg)
    assert th is not None and (th.seq, th.ack) == (7, 0xFFFFFF02) and l4_checksum(A, B, 6, seg) == 0
    assert ("sack", (0xFFFFFF01, 0xFFFFFF02, 0xFFFFFF05, 0xFFFFFF0A)) in parse_tcp_options(seg[20:th.doff])
    # a partial option: the packet is dropped
    seg = bytearray(tcp.build_tcp(A, B, 40000, 80, seq=7, ack=1002, flags=tcp.ACK, options=bytes((1, 1, 1, 5))))
    assert not nf_ct_seq_adjust(seg, 0, ct, 0)


def test_options_parse_and_build_as_the_kernel_lays_them_out() -> None:
    seg = tcp.build_tcp(A, B, 1, 2, flags=tcp.SYN, options=tcp.tcp_opt_mss(1400) + tcp.tcp_opt_sack_perm()
                        + tcp.tcp_opt_timestamps(5, 6) + tcp.tcp_opt_nop() + tcp.tcp_opt_wscale(15))
    opts = synproxy_parse_options(seg, 0)
    assert opts is not None and opts.options == 0x0F and (opts.mss_option, opts.wscale, opts.tsval, opts.tsecr) == (
        1400, 14, 5, 6)  # wscale capped at TCP_MAX_WSCALE
    assert synproxy_parse_options(seg[:30], 0) is None  # options cut short
    assert synproxy_build_options(opts) == bytes.fromhex("02040578 0402080a 00000005 00000006 0103030e")
    opts.options = NF_SYNPROXY_OPT_SACK_PERM | NF_SYNPROXY_OPT_WSCALE
    assert synproxy_build_options(opts) == bytes.fromhex("01010402 0103030e")
    opts.options = NF_SYNPROXY_OPT_TIMESTAMP
    assert synproxy_build_options(opts) == bytes.fromhex("0101080a 00000005 00000006")


def test_timestamp_cookie_round_trip() -> None:
    opts = SynproxyOptions()
    opts.options = NF_SYNPROXY_OPT_TIMESTAMP | NF_SYNPROXY_OPT_WSCALE | NF_SYNPROXY_OPT_SACK_PERM | NF_SYNPROXY_OPT_ECN
    opts.wscale, opts.tsval = 9, 4242
    synproxy_init_timestamp_cookie(7, opts, 12.345)
    assert (opts.tsval, opts.tsecr, opts.wscale) == ((12345 & ~0x3F) | 9 | 0x10 | 0x20, 4242, 7)
    back = SynproxyOptions()
    back.options, back.tsecr = NF_SYNPROXY_OPT_TIMESTAMP | NF_SYNPROXY_OPT_MSS, opts.tsval
    synproxy_check_timestamp_cookie(back)
    assert back.wscale == 9 and back.options == 0x1F
    none = SynproxyOptions()
    none.options = NF_SYNPROXY_OPT_TIMESTAMP
    synproxy_init_timestamp_cookie(7, none, 1.0)
    assert none.tsval & 0x3F == 0xF  # no window scale: 0xf, which check_timestamp_cookie reads as none


def test_tstamp_adjust_moves_the_reply_tsval_and_the_original_tsecr() -> None:
    sp = NfConnSynproxy()
    sp.tsoff = 1000
    seg = bytearray(tcp.build_tcp(B, A, 80, 1, flags=tcp.ACK, options=tcp.tcp_opt_nop() + tcp.tcp_opt_nop()
                                  + tcp.tcp_opt_timestamps(5000, 7)))
    assert synproxy_tstamp_adjust(seg, 0, True, sp)
    assert ("TS", (4000, 7)) in parse_tcp_options(seg[20:32]) and l4_checksum(B, A, 6, seg) == 0
    assert synproxy_tstamp_adjust(seg, 0, False, sp)
    assert ("TS", (4000, 1007)) in parse_tcp_options(seg[20:32]) and l4_checksum(B, A, 6, seg) == 0


def test_stats_print_as_proc_net_stat_synproxy() -> None:
    st = SynproxyStats()
    st.syn_received, st.cookie_valid = 3, 0x1F
    assert st.proc_text() == ("entries\t\tsyn_received\tcookie_invalid\tcookie_valid\tcookie_retrans\tconn_reopened\n"
                              "00000000\t00000003\t00000000\t0000001f\t00000000\t00000000\n")
