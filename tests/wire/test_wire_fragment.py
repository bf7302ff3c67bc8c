"""ip_do_fragment: the §9 experiment, option copying, DF, fragmenting fragments, properties."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from natbox.wire.ip_options import IPOPT_LSRR, IPOPT_NOOP, IPOPT_RR
from natbox.wire.ipv4 import (
    IP_DF,
    IP_MF,
    build_ipv4,
    ip_do_fragment,
    ip_fragment,
    ip_header_csum_ok,
    ip_output_fragments,
    str_to_addr,
)
from natbox.wire.udp import build_udp

SRC = str_to_addr("192.168.50.2")
DST = str_to_addr("198.51.100.2")


def frag_word(piece: bytearray) -> int:
    return (piece[6] << 8) | piece[7]


def experiment_datagram() -> bytearray:
    """§9: a 1228-byte UDP datagram (20 + 8 + 1200) with IP ID 777."""
    seg = build_udp(SRC, DST, 40000, 5000, bytes(i & 0xFF for i in range(1200)))
    return build_ipv4(SRC, DST, 17, seg, ident=777)


def test_section9_refragmentation_at_frag_max_size() -> None:
    dg = experiment_datagram()
    pieces = ip_fragment(dg, 1500, frag_max_size=620)
    assert [len(p) for p in pieces] == [620, 620, 28]
    assert [(frag_word(p) & 0x1FFF) * 8 for p in pieces] == [0, 600, 1200]
    assert [bool(frag_word(p) & IP_MF) for p in pieces] == [True, True, False]
    assert all((p[4] << 8 | p[5]) == 777 and ip_header_csum_ok(p) for p in pieces)
    assert b"".join(bytes(p[20:]) for p in pieces) == bytes(dg[20:])


def test_fast_path_keeps_received_geometry() -> None:
    dg = experiment_datagram()
    # received as 300+600+... pieces: the frag_list geometry fits mtu 620 so boundaries are reused
    pieces = ip_do_fragment(dg, 620, frag_list=(304, 600, 304))
    assert [len(p) - 20 for p in pieces] == [304, 600, 304]
    assert [frag_word(p) for p in pieces] == [IP_MF, IP_MF | 38, 113]
    # a piece not a multiple of 8 (and not last) forces the slow path
    pieces = ip_do_fragment(dg, 620, frag_list=(300, 604, 304))
    assert [len(p) - 20 for p in pieces] == [600, 600, 8]


def test_df_on_every_fragment_with_frag_pmtu_only_on_slow_path() -> None:
    dg = experiment_datagram()
    dg[6] = IP_DF >> 8
    slow = ip_do_fragment(dg, 620, frag_pmtu=True)
    assert all(frag_word(p) & IP_DF for p in slow)
    fast = ip_do_fragment(dg, 620, frag_pmtu=True, frag_list=(600, 600, 8))
    assert not any(frag_word(p) & IP_DF for p in fast)  # ip_fraglist_init/prepare clear DF


def test_options_copied_only_with_copy_flag() -> None:
    rr = bytes((IPOPT_RR, 7, 4, 0, 0, 0, 0))  # copy flag clear
    lsrr = bytes((IPOPT_LSRR, 7, 4, 10, 0, 0, 9))  # copy flag set
    opts = rr + lsrr + b"\x00\x00"
    dg = build_ipv4(SRC, DST, 17, bytes(400), ident=5, options=opts)
    pieces = ip_do_fragment(dg, 200)
    assert bytes(pieces[0][20:36]) == opts
    for p in pieces[1:]:
        assert bytes(p[20:27]) == bytes((IPOPT_NOOP,)) * 7
        assert bytes(p[27:34]) == lsrr
        assert ip_header_csum_ok(p)
    assert all(len(p) <= 200 for p in pieces)


def test_fragmenting_a_fragment_keeps_offset_and_mf() -> None:
    dg = build_ipv4(SRC, DST, 17, bytes(1000), ident=9, mf=True, frag_offset=800)
    pieces = ip_do_fragment(dg, 420)
    assert [(frag_word(p) & 0x1FFF) * 8 for p in pieces] == [800, 1200, 1600]
    assert all(frag_word(p) & IP_MF for p in pieces)


def test_too_small_mtu_gives_nothing() -> None:
    assert ip_do_fragment(build_ipv4(SRC, DST, 17, bytes(100)), 27) == []
    assert ip_do_fragment(b"\x45\x00", 576) == []


@given(st.integers(0, 3000), st.integers(68, 1500), st.integers(0, 65535), st.sampled_from([0, 4, 8, 40]))
def test_fragments_reassemble_to_original(size: int, mtu: int, ident: int, optlen: int) -> None:
    options = bytes((IPOPT_NOOP,)) * optlen
    dg = build_ipv4(SRC, DST, 17, bytes(i & 0xFF for i in range(size)), ident=ident, options=options)
    if mtu - 20 - optlen < 8:
        return
    pieces = ip_do_fragment(dg, mtu)
    data = bytearray()
    hlen = 20 + optlen
    for i, p in enumerate(pieces):
        assert len(p) <= mtu and ip_header_csum_ok(p)
        assert (p[4] << 8 | p[5]) == ident
        assert (frag_word(p) & 0x1FFF) * 8 == len(data)
        assert bool(frag_word(p) & IP_MF) == (i != len(pieces) - 1)
        if i != len(pieces) - 1:
            assert (len(p) - hlen) % 8 == 0
        data += p[hlen:]
    assert data == dg[hlen:]


def test_output_path_decisions() -> None:
    dg = experiment_datagram()
    assert ip_output_fragments(dg, 1500) == ([dg], 0)  # fits, not reassembled: sent as is
    pieces, icmp_mtu = ip_output_fragments(dg, 1500, frag_max_size=620, frag_list=(600, 600, 8), ignore_df=True)
    assert [len(p) for p in pieces] == [620, 620, 28] and icmp_mtu == 0  # always refragmented (§9)
    df = bytearray(dg)
    df[6] |= IP_DF >> 8
    assert ip_output_fragments(df, 1000) == ([], 1000)  # DF: ICMP FRAG_NEEDED, mtu 1000
    assert ip_output_fragments(df, 1000, frag_max_size=1100, ignore_df=True) == ([], 1000)
    pieces, icmp_mtu = ip_output_fragments(df, 1000, frag_max_size=620, frag_pmtu=True, ignore_df=True)
    assert [len(p) for p in pieces] == [620, 620, 28] and all(p[6] & (IP_DF >> 8) for p in pieces)
