"""jhash2 and the address choice of find_best_ips_proto (§4.5 step 2).

The expected addresses are the [V] results of experiment 4 (Appendix A) on Linux 6.18:
- `iptables -t nat -A PREROUTING -j DNAT --to-destination 203.0.113.10-203.0.113.20 [--persistent]`, the
  clients 192.168.50.2 and 192.168.50.3 connecting to the router's address 203.0.113.1 (the DNAT
  experiment's destination): .2 → .12, .3 → .15; with --persistent .2 → .18, .3 → .11.
- `SNAT --to-source 198.51.100.0-198.51.101.255 --persistent` for the same two clients:
  .2 → 198.51.101.125, .3 → 198.51.100.67 (--persistent hashes the source alone: initval 0).
Without --persistent the initval is the destination word (xor zone 0), so the router address matters;
203.0.113.1 reproduces every stated pick (203.0.113.2, the server, would give .16 for .3).
"""

from __future__ import annotations

import pytest

from natbox.conntrack.tuple import ConnTuple, format_addr
from natbox.nat.core import find_best_ips_proto
from natbox.nat.jhash import JHASH_INITVAL, addr_word, jhash2, reciprocal_scale
from natbox.nat.range import NatRange, RangeFlags
from natbox.netfilter import ManipType
from natbox.testing.natpkt import TCP, A, Lab

ROUTER = A("203.0.113.1")
MAP = RangeFlags.MAP_IPS
PERSIST = RangeFlags.MAP_IPS | RangeFlags.PERSISTENT


def test_jhash2_empty_key_matches_lookup3() -> None:
    # lookup3.c driver5: hashlittle("", 0, 0) = 0xdeadbeef, hashlittle("", 0, 0xdeadbeef) = 0xbd5b7dde;
    # with no words jhash2 and hashlittle do the same thing.
    assert jhash2([], 0) == JHASH_INITVAL
    assert jhash2([], 0xDEADBEEF) == 0xBD5B7DDE


def test_addr_word_is_little_endian_load_of_network_bytes() -> None:
    assert addr_word(A("192.168.50.2")) == 0x0232A8C0
    assert addr_word(A("1.2.3.4")) == 0x04030201


def test_reciprocal_scale() -> None:
    assert reciprocal_scale(0xFFFFFFFF, 11) == 10
    assert reciprocal_scale(0, 11) == 0
    assert reciprocal_scale(0x80000000, 10) == 5


@pytest.mark.parametrize(
    ("client", "flags", "lo", "hi", "expected"),
    [
        ("192.168.50.2", MAP, "203.0.113.10", "203.0.113.20", "203.0.113.12"),
        ("192.168.50.3", MAP, "203.0.113.10", "203.0.113.20", "203.0.113.15"),
        ("192.168.50.2", PERSIST, "203.0.113.10", "203.0.113.20", "203.0.113.18"),
        ("192.168.50.3", PERSIST, "203.0.113.10", "203.0.113.20", "203.0.113.11"),
        ("192.168.50.2", PERSIST, "198.51.100.0", "198.51.101.255", "198.51.101.125"),
        ("192.168.50.3", PERSIST, "198.51.100.0", "198.51.101.255", "198.51.100.67"),
    ],
)
def test_verified_kernel_picks(client: str, flags: RangeFlags, lo: str, hi: str, expected: str) -> None:
    orig = ConnTuple(A(client), 40000, ROUTER, 80, TCP)
    rng = NatRange(flags, A(lo), A(hi))
    manip = ManipType.DST if lo.startswith("203") else ManipType.SRC
    t = find_best_ips_proto(orig, rng, 0, manip)
    chosen = t.dst if manip == ManipType.DST else t.src
    assert format_addr(chosen) == expected


def test_persistent_ignores_destination_and_plain_does_not() -> None:
    rng_p = NatRange(PERSIST, A("203.0.113.10"), A("203.0.113.20"))
    rng = NatRange(MAP, A("203.0.113.10"), A("203.0.113.20"))
    picks_p = {find_best_ips_proto(ConnTuple(A("192.168.50.3"), 1, A(d), 80, TCP), rng_p, 0, ManipType.DST).dst
               for d in ("203.0.113.1", "203.0.113.2", "198.51.100.9")}
    assert picks_p == {A("203.0.113.11")}
    pick_1 = find_best_ips_proto(ConnTuple(A("192.168.50.3"), 1, A("203.0.113.1"), 80, TCP), rng, 0, ManipType.DST)
    pick_2 = find_best_ips_proto(ConnTuple(A("192.168.50.3"), 1, A("203.0.113.2"), 80, TCP), rng, 0, ManipType.DST)
    assert (format_addr(pick_1.dst), format_addr(pick_2.dst)) == ("203.0.113.15", "203.0.113.16")


def test_dnat_range_setup_info_uses_the_jhash_pick_and_keeps_the_port() -> None:
    lab = Lab()
    rng = NatRange(MAP, A("203.0.113.10"), A("203.0.113.20"))
    trace: list[str] = []
    ct = lab.flow(ConnTuple(A("192.168.50.2"), 45000, ROUTER, 80, TCP), dnat=rng, trace=trace)
    assert ct.reply == ConnTuple(A("203.0.113.12"), 80, A("192.168.50.2"), 45000, TCP)
    assert "DNAT: address 203.0.113.12 chosen by jhash2 from 203.0.113.10-203.0.113.20" in trace
