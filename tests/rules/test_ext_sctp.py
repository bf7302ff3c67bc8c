"""`-m sctp` (xt_sctp.c `sctp_mt`): ports, and the chunk walk of `--chunk-types any|all|only`."""

from __future__ import annotations

import shlex

import pytest

from natbox.netfilter import Hook
from natbox.rules.api import NF_ACCEPT, NF_DROP
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_argv
from natbox.skb import Skb
from natbox.testing.rules_fakes import FakeCtx, ipv4
from natbox.wire import sctp as w

DATA_B = w.build_chunk(w.DATA, b"\0" * 12 + b"x", flags=0x02)  # B(eginning) set, E clear
SACK = w.build_chunk(w.SACK, b"\0" * 12)
ABORT_T = w.build_chunk(w.ABORT, flags=0x01)


def _skb(chunks: bytes, sport: int = 5000, dport: int = 80) -> Skb:
    return Skb(ipv4("10.0.0.1", "10.0.0.2", 132, w.build_sctp(sport, dport, 7, chunks)))


def _verdict(rule: str, skb: Skb) -> int:
    rs = Ruleset()
    rs.execute(parse_argv(["-A", "INPUT", *shlex.split(rule), "-j", "DROP"]))
    return rs.run("filter", Hook.LOCAL_IN, skb, FakeCtx(Hook.LOCAL_IN))


@pytest.mark.parametrize(("rule", "chunks", "matches"), [
    ("-p sctp --dport 80", DATA_B, True),
    ("-p sctp ! --dport 80", DATA_B, False),
    ("-p sctp --sport 4000:6000", DATA_B, True),
    ("-p sctp --chunk-types any SACK,INIT", DATA_B + SACK, True),
    ("-p sctp --chunk-types any INIT", DATA_B + SACK, False),
    ("-p sctp --chunk-types all DATA,SACK", DATA_B + SACK, True),
    ("-p sctp --chunk-types all DATA,SACK", DATA_B, False),
    ("-p sctp --chunk-types only DATA", DATA_B + SACK, False),
    ("-p sctp --chunk-types only DATA,SACK", DATA_B + SACK, True),
    ("-p sctp ! --chunk-types only DATA,SACK", DATA_B + SACK, False),
    # flags: B set matches, E set does not, lower case asks for the bit clear
    ("-p sctp --chunk-types any DATA:B", DATA_B, True),
    ("-p sctp --chunk-types any DATA:E", DATA_B, False),
    ("-p sctp --chunk-types any DATA:e", DATA_B, True),
    ("-p sctp --chunk-types any ABORT:T", ABORT_T, True),
    ("-p sctp --chunk-types any ABORT:t", ABORT_T, False),
    # `only` with a listed chunk whose flags do not match fails at once
    ("-p sctp --chunk-types only DATA:E,SACK", DATA_B + SACK, False),
    ("-p sctp --chunk-types all ALL", DATA_B, False),
    ("-p sctp --chunk-types only ALL", DATA_B + SACK, True),
    ("-p sctp --chunk-types any NONE", DATA_B, False),
])
def test_sctp_match(rule: str, chunks: bytes, matches: bool) -> None:
    assert _verdict(rule, _skb(chunks)) == (NF_DROP if matches else NF_ACCEPT)


def test_cut_or_zero_length_chunks_never_match() -> None:
    """The kernel's hotdrop: natbox does not match (docs/differences.md)."""
    rule = "-p sctp ! --chunk-types any INIT"
    assert _verdict(rule, _skb(DATA_B)) == NF_DROP
    assert _verdict(rule, _skb(b"\0\0\0\0")) == NF_ACCEPT  # chunk length 0
    cut = _skb(b"")
    assert _verdict(rule, cut) == NF_ACCEPT  # no chunk header at all
