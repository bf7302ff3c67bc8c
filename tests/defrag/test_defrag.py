"""IpDefrag: §9 experiment, kernel overlap/duplicate rules, limits, expiry, real fragments."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natbox.engine.defrag import (
    IP_DEFRAG_CONNTRACK_IN,
    IP_DEFRAG_CONNTRACK_OUT,
    IPQ_SIZE,
    IcmpOnExpire,
    IpDefrag,
    frag_expire_skip_icmp,
    nf_ct_defrag_user,
    skb_truesize,
)
from natbox.netfilter import DropReason, Hook, NfVerdict
from natbox.wire.checksum import internet_checksum, pseudo_header_sum
from natbox.wire.ethernet import ETH_P_IP, parse_ethernet
from natbox.wire.ipv4 import IP_DF, build_ipv4, ip_do_fragment, ip_fragment, ip_header_csum_ok, ip_rcv_core, str_to_addr
from natbox.wire.udp import build_udp

PCAP = Path(__file__).resolve().parents[3] / "shared" / "external" / "pcaps" / "debsrc-tcpdump-4.99.3__afs.pcap"
SRC = str_to_addr("192.168.50.2")
DST = str_to_addr("198.51.100.2")


def experiment_datagram(ident: int = 777) -> bytearray:
    seg = build_udp(SRC, DST, 40000, 5000, bytes(i & 0xFF for i in range(1200)))
    return build_ipv4(SRC, DST, 17, seg, ident=ident)


def frag(offset: int, payload: bytes, *, mf: bool, ident: int = 1, src: int = SRC, tos: int = 0,
         df: bool = False, ttl: int = 64, options: bytes = b"") -> bytearray:
    return build_ipv4(src, DST, 17, payload, ident=ident, mf=mf, frag_offset=offset, tos=tos, df=df, ttl=ttl,
                      options=options)


# --- the §9 experiment ------------------------------------------------------------------------


def test_section9_reverse_order_then_refragment() -> None:
    dg = experiment_datagram()
    pieces = ip_fragment(dg, 620)
    assert [len(p) for p in pieces] == [620, 620, 28]
    d = IpDefrag()
    results = [d.add(p, 1.0) for p in reversed(pieces)]
    assert [r.verdict for r in results] == [NfVerdict.STOLEN, NfVerdict.STOLEN, NfVerdict.ACCEPT]
    done = results[-1]
    assert done.datagram == dg
    assert done.frag_max_size == 620 and done.frag_list == (600, 600, 8) and not done.frag_pmtu
    assert len(d) == 0 and d.mem == 0
    out = ip_fragment(done.datagram, 1500, frag_max_size=done.frag_max_size, frag_list=done.frag_list)
    assert [len(p) for p in out] == [620, 620, 28]
    assert all((p[4] << 8 | p[5]) == 777 for p in out)
    assert [((p[6] << 8 | p[7]) & 0x1FFF) * 8 for p in out] == [0, 600, 1200]
    assert out == pieces


@settings(max_examples=60)
@given(st.integers(0, 4000), st.integers(68, 1500), st.randoms(use_true_random=False), st.integers(0, 65535))
def test_fragments_in_any_order_reassemble(size: int, mtu: int, rnd: object, ident: int) -> None:
    dg = build_ipv4(SRC, DST, 17, bytes((i * 7) & 0xFF for i in range(size)), ident=ident, ttl=17)
    pieces = ip_do_fragment(dg, mtu)
    if len(pieces) < 2:
        return
    order = list(pieces)
    rnd.shuffle(order)  # type: ignore[attr-defined]
    d = IpDefrag()
    results = [d.add(p, 0.0) for p in order]
    assert all(r.verdict == NfVerdict.STOLEN for r in results[:-1])
    assert results[-1].datagram == dg
    assert results[-1].frag_max_size == max(len(p) for p in pieces)
    assert d.mem == 0 and len(d) == 0


# --- duplicates and overlaps (inet_frag_queue_insert) ------------------------------------------


def test_exact_duplicate_dropped_queue_kept() -> None:
    a, b, c = frag(0, bytes(16), mf=True), frag(16, bytes(16), mf=True), frag(32, bytes(8), mf=False)
    d = IpDefrag()
    assert d.add(a, 0).verdict == NfVerdict.STOLEN
    dup = d.add(a, 0)
    assert dup.verdict == NfVerdict.DROP and dup.reason == DropReason.FRAG_DUP and len(d) == 1
    d.add(c, 0)
    assert d.add(c, 0).reason == DropReason.FRAG_DUP
    assert d.add(b, 0).datagram is not None


def test_overlap_kills_whole_queue() -> None:
    d = IpDefrag()
    d.add(frag(16, bytes(16), mf=True), 0)
    d.add(frag(0, bytes(16), mf=True), 0)  # inserted before: a run of its own
    r = d.add(frag(8, bytes(16), mf=True), 0)  # straddles both runs
    assert r.reason == DropReason.FRAG_OVERLAP and r.freed == 2
    assert len(d) == 0 and d.mem == 0 and d.mib["ReasmOverlaps"] == 1
    # overlapping the tail when extending it
    d.add(frag(0, bytes(16), mf=True), 0)
    assert d.add(frag(8, bytes(16), mf=True), 0).reason == DropReason.FRAG_OVERLAP


def test_runs_decide_dup_versus_overlap() -> None:
    # in order, 0-8 and 8-16 form one run: a 0-16 fragment lies inside it -> duplicate
    d = IpDefrag()
    d.add(frag(0, bytes(8), mf=True), 0)
    d.add(frag(8, bytes(8), mf=True), 0)
    d.add(frag(24, bytes(8), mf=False), 0)
    assert d.add(frag(0, bytes(16), mf=True), 0).reason == DropReason.FRAG_DUP
    # in reverse order each fragment is its own run: the same 0-16 fragment spans two -> overlap
    d = IpDefrag()
    d.add(frag(24, bytes(8), mf=False), 0)
    d.add(frag(8, bytes(8), mf=True), 0)
    d.add(frag(0, bytes(8), mf=True), 0)
    assert d.add(frag(0, bytes(16), mf=True), 0).reason == DropReason.FRAG_OVERLAP


# --- corrupt geometry, size, ECN ---------------------------------------------------------------


def test_corrupt_geometry_discards_queue() -> None:
    d = IpDefrag()
    d.add(frag(0, bytes(16), mf=True), 0)
    d.add(frag(32, bytes(8), mf=False), 0)  # end 40
    assert d.add(frag(40, bytes(8), mf=True), 0).reason == DropReason.FRAG_INVALID  # beyond the end
    assert len(d) == 0
    d.add(frag(32, bytes(8), mf=False), 0)
    assert d.add(frag(32, bytes(16), mf=False), 0).reason == DropReason.FRAG_INVALID  # two different ends
    assert d.add(frag(8, b"", mf=True), 0).reason == DropReason.FRAG_INVALID  # empty fragment
    assert d.add(frag(8, b"abc", mf=True), 0).reason == DropReason.FRAG_INVALID  # trimmed to nothing


def test_mf_fragment_trimmed_to_multiple_of_8() -> None:
    d = IpDefrag()
    d.add(frag(0, bytes(range(20)), mf=True), 0)  # 20 bytes: only 16 are kept
    r = d.add(frag(16, b"xy", mf=False), 0)
    assert r.datagram is not None and bytes(r.datagram[20:]) == bytes(range(16)) + b"xy"


def test_too_big_checked_at_reassembly() -> None:
    d = IpDefrag(high_thresh=64 * 1024 * 1024)
    chunk = bytes(8000)
    results = [d.add(frag(off, chunk, mf=True), 0) for off in range(0, 64000, 8000)]
    assert all(r.verdict == NfVerdict.STOLEN for r in results)
    r = d.add(frag(64000, bytes(1600), mf=False), 0)  # 20 + 65600 > 65535
    assert r.reason == DropReason.FRAG_TOO_BIG and r.freed == 8 and len(d) == 0 and d.mem == 0


def test_ecn_rules() -> None:
    d = IpDefrag()
    d.add(frag(0, bytes(8), mf=True, tos=0x02), 0)  # ECT(0)
    r = d.add(frag(8, bytes(8), mf=False, tos=0x03), 0)  # CE
    assert r.datagram is not None and r.datagram[1] & 3 == 3 and ip_header_csum_ok(r.datagram)
    d.add(frag(0, bytes(8), mf=True, tos=0x00), 0)  # Not-ECT
    r = d.add(frag(8, bytes(8), mf=False, tos=0x02), 0)
    assert r.reason == DropReason.FRAG_INVALID and r.freed == 1 and len(d) == 0


# --- the reassembled header --------------------------------------------------------------------


def test_header_from_first_fragment_df_from_largest() -> None:
    opts = bytes((7, 7, 4, 0, 0, 0, 0, 0))  # record route (not copied into later fragments)
    d = IpDefrag()
    d.add(frag(16, bytes(8), mf=False, ttl=9, df=False), 0)
    r = d.add(frag(0, bytes(16), mf=True, ttl=33, df=True, options=opts), 0)
    dg = r.datagram
    assert dg is not None and dg[8] == 33 and dg[20:28] == opts
    assert (dg[2] << 8 | dg[3]) == len(dg) == 28 + 24
    assert (dg[6] << 8 | dg[7]) == IP_DF and r.frag_pmtu and ip_header_csum_ok(dg)
    assert r.frag_max_size == 44
    # the largest fragment without DF: DF cleared
    d.add(frag(0, bytes(8), mf=True, df=True), 0)
    r = d.add(frag(8, bytes(40), mf=False), 0)
    assert r.datagram is not None and (r.datagram[6] << 8 | r.datagram[7]) == 0 and not r.frag_pmtu


def test_queues_keyed_by_user_and_id() -> None:
    d = IpDefrag()
    a, b = frag(0, bytes(8), mf=True), frag(8, bytes(8), mf=False)
    d.add(a, 0, IP_DEFRAG_CONNTRACK_IN)
    assert d.add(b, 0, IP_DEFRAG_CONNTRACK_OUT).verdict == NfVerdict.STOLEN
    assert d.add(frag(8, bytes(8), mf=False, ident=2), 0, IP_DEFRAG_CONNTRACK_IN).verdict == NfVerdict.STOLEN
    assert len(d) == 3
    assert d.add(b, 0, IP_DEFRAG_CONNTRACK_IN).verdict == NfVerdict.ACCEPT
    assert nf_ct_defrag_user(Hook.PRE_ROUTING, 5) == IP_DEFRAG_CONNTRACK_IN + 5
    assert nf_ct_defrag_user(Hook.LOCAL_OUT) == IP_DEFRAG_CONNTRACK_OUT


# --- expiry ------------------------------------------------------------------------------------


def test_expiry_after_ipfrag_time_not_extended() -> None:
    d = IpDefrag()
    d.add(frag(0, bytes(8), mf=True), 100.0)
    d.add(frag(16, bytes(8), mf=False), 129.0)  # later fragments do not push the timer back
    assert d.expire(129.9) == []
    (gone,) = d.expire(130.0)
    assert gone.fragments == 2 and gone.reason == DropReason.FRAG_TIMEOUT and str(gone) == "frag_timeout"
    assert gone.icmp == IcmpOnExpire.IF_LOCAL  # conntrack-in user: only if addressed to this host
    assert gone.head is not None and len(gone.head) == 28
    assert len(d) == 0 and d.mem == 0 and d.mib["ReasmTimeout"] == 1


def test_expiry_icmp_decision() -> None:
    d = IpDefrag()
    d.add(frag(8, bytes(8), mf=False), 0.0)  # first fragment never arrives
    d.add(frag(0, bytes(8), mf=True, ident=3), 0.0, IP_DEFRAG_CONNTRACK_OUT)
    got = {e.ip_id: e for e in d.expire(31.0)}
    assert got[1].icmp == IcmpOnExpire.NONE and got[1].head is None
    assert got[3].icmp == IcmpOnExpire.ALWAYS
    assert frag_expire_skip_icmp(IP_DEFRAG_CONNTRACK_IN + 65535) and not frag_expire_skip_icmp(IP_DEFRAG_CONNTRACK_OUT)


def test_stale_queue_expired_by_add() -> None:
    d = IpDefrag()
    d.add(frag(0, bytes(8), mf=True), 0.0)
    assert d.add(frag(8, bytes(8), mf=False), 40.0).verdict == NfVerdict.STOLEN  # a new queue
    (gone,) = d.expire(40.0)
    assert gone.fragments == 1


# --- memory and max_dist -----------------------------------------------------------------------


def test_memory_over_high_thresh_refuses_all_fragments() -> None:
    per_queue = IPQ_SIZE + skb_truesize(28)
    d = IpDefrag(high_thresh=3 * per_queue - 1)
    for ident in range(3):
        assert d.add(frag(0, bytes(8), mf=True, ident=ident), 0).verdict == NfVerdict.STOLEN
    assert d.mem == 3 * per_queue
    r = d.add(frag(8, bytes(8), mf=False, ident=0), 0)  # would complete queue 0: refused anyway
    assert r.reason == DropReason.FRAG_MEMORY and len(d) == 3  # no evictor in 6.x
    # timers the caller has not run yet are run before refusing: at t=31 the queues have expired
    assert d.add(frag(8, bytes(8), mf=False, ident=0), 31).verdict == NfVerdict.STOLEN
    assert len(d.expire(31)) == 3 and len(d) == 1


def test_memory_accounting_matches_kernel_observation() -> None:
    # Linux 6.18 veth lab, fragments sent with AF_PACKET: /proc/net/sockstat "FRAG: memory" per
    # one-fragment queue was 1032 (36..220-byte datagrams), 1480 (320..620), 2504 (1020..1500)
    for ip_len, charged in ((36, 1032), (220, 1032), (320, 1480), (620, 1480), (1020, 2504), (1500, 2504)):
        assert IPQ_SIZE + skb_truesize(ip_len) == charged
    # with ipfrag_high_thresh 8192: 8 queues of one 36-byte fragment admitted (8256), the 9th refused,
    # and a new datagram's two fragments were not forwarded (no eviction)
    d = IpDefrag(high_thresh=8192)
    results = [d.add(frag(0, bytes(16), mf=True, ident=4000 + i), 0) for i in range(100)]
    assert sum(r.verdict == NfVerdict.STOLEN for r in results) == 8 and d.mem == 8256
    assert all(r.reason == DropReason.FRAG_MEMORY for r in results[8:])
    assert d.add(frag(0, bytes(16), mf=True, ident=5000), 0).reason == DropReason.FRAG_MEMORY


def test_max_dist_reinitialises_queue() -> None:
    d = IpDefrag()
    d.add(frag(0, bytes(8), mf=True, ident=1), 0)
    # 64 other fragments from the same source in between: end - start = 65 > ipfrag_max_dist
    for ident in range(100, 164):
        d.add(frag(0, bytes(8), mf=True, ident=ident), 0)
    r = d.add(frag(8, bytes(8), mf=False, ident=1), 0)
    assert r.verdict == NfVerdict.STOLEN and r.freed == 1  # queue purged, restarted with this one
    assert d.dropped[DropReason.FRAG_TOO_FAR] == 1
    assert d.add(frag(0, bytes(8), mf=True, ident=1), 0).verdict == NfVerdict.ACCEPT


def test_max_dist_boundary_and_other_sources() -> None:
    d = IpDefrag()
    d.add(frag(0, bytes(8), mf=True, ident=1), 0)
    for ident in range(100, 163):  # 63 in between: end - start = 64, not > 64
        d.add(frag(0, bytes(8), mf=True, ident=ident), 0)
    for ident in range(100, 300):  # other sources do not count
        d.add(frag(0, bytes(8), mf=True, ident=ident, src=SRC + 1), 0)
    assert d.add(frag(8, bytes(8), mf=False, ident=1), 0).verdict == NfVerdict.ACCEPT
    assert IpDefrag(max_dist=0).add(frag(0, bytes(8), mf=True), 0).verdict == NfVerdict.STOLEN


# --- real fragments and malformed input --------------------------------------------------------


def read_pcap(path: Path) -> list[bytes]:
    """Frames of a little-endian classic pcap file."""
    raw = path.read_bytes()
    pos, frames = 24, []
    while pos + 16 <= len(raw):
        incl = struct.unpack("<I", raw[pos + 8 : pos + 12])[0]
        frames.append(raw[pos + 16 : pos + 16 + incl])
        pos += 16 + incl
    return frames


def test_real_afs_fragments_reassemble() -> None:
    if not PCAP.exists():
        pytest.skip(f"{PCAP} not present")
    d = IpDefrag()
    done = []
    for number, frame in enumerate(read_pcap(PCAP)):
        eth = parse_ethernet(frame)
        if eth is None or eth[2] != ETH_P_IP:
            continue
        dg, reason = ip_rcv_core(frame[eth[3] :])
        assert reason is None and dg is not None
        if dg[6] & 0x3F or dg[7]:
            r = d.add(dg, number * 0.01)
            assert r.reason is None
            if r.datagram is not None:
                done.append(r.datagram)
    assert len(done) == 51 and len(d) == 0  # tshark: 51 first and 51 last fragments
    for dg in done:
        seg = dg[20:]
        assert (seg[4] << 8 | seg[5]) == len(seg)  # UDP length matches the reassembled payload
        src, dst = int.from_bytes(dg[12:16], "big"), int.from_bytes(dg[16:20], "big")
        if seg[6:8] != b"\x00\x00":  # the sender's UDP checksum verifies over the whole datagram
            assert internet_checksum(seg, pseudo_header_sum(src, dst, 17, len(seg))) == 0


@given(st.lists(st.binary(max_size=80), max_size=20))
def test_never_raises(chunks: list[bytes]) -> None:
    d = IpDefrag()
    for i, c in enumerate(chunks):
        r = d.add(bytearray(c), float(i))
        assert (r.reason is None) == (r.verdict != NfVerdict.DROP)
    d.expire(1000.0)
    assert d.mem == 0
