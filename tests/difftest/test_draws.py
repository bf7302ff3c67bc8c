"""Following the kernel's `-m statistic --mode random` draws in the replay (natbox.difftest.draws, §10)."""

from __future__ import annotations

from natbox.conntrack.tuple import parse_addr
from natbox.difftest.draws import DRAW_MATCH, DRAW_NO_MATCH, DrawScript, first_divergence, next_outcomes
from natbox.wire.ethernet import build_ethernet
from natbox.wire.ipv4 import build_ipv4


def _frame(dst: str) -> bytes:
    ip = build_ipv4(parse_addr("10.244.0.1"), parse_addr(dst), 17, b"\x00" * 8)
    return bytes(build_ethernet(b"\x02" * 6, b"\x04" * 6, 0x0800, ip))


def test_outcomes_walk_a_chain_of_bernoulli_rules() -> None:
    assert next_outcomes(None, 2) == [True]  # the seeded draw differed: try the first rule
    assert next_outcomes([True], 1) == [False, True]
    assert next_outcomes([False, True], 2) == [False, False, True]
    # the chain took only two draws for [F, F, T]: its unconditional last rule was taken, nothing is left
    assert next_outcomes([False, False, True], 2) is None


def test_scripted_draws_match_or_not_then_fall_back_to_the_seeded_stream() -> None:
    d = DrawScript({3: [False, True]}, seed=1)
    d.frame = 3
    assert [d.random_u32(), d.random_u32()] == [DRAW_NO_MATCH, DRAW_MATCH]
    assert int(0.99999 * 0x80000000) <= DRAW_NO_MATCH  # no match for any probability below 1
    fallback = d.random_u32()
    assert d.used == {3: 3}
    assert fallback == DrawScript({}, seed=1).random_u32()  # the stream the unscripted draws come from


def test_first_divergence_is_the_input_frame_of_the_first_address_difference() -> None:
    kernel = {"cni0": [(0.1, _frame("10.244.0.2")), (0.5, _frame("10.244.0.3"))]}
    same = {"cni0": [(4, _frame("10.244.0.2")), (9, _frame("10.244.0.3"))]}
    assert first_divergence(kernel, same, [0.0, 0.1, 0.5]) is None
    other = {"cni0": [(4, _frame("10.244.0.2")), (9, _frame("10.244.0.4"))]}
    assert first_divergence(kernel, other, [0.0, 0.1, 0.5]) == 9
    # natbox sent nothing where the kernel sent its second frame: the input frame before that time
    short = {"cni0": [(4, _frame("10.244.0.2"))]}
    assert first_divergence(kernel, short, [0.0, 0.1, 0.2, 0.6]) == 2
