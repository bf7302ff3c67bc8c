"""Untrusted IPv6 packets never raise in ip6tables rules: every rule of the recorded listings (matches and
targets of every kind) run on random packets with random extension header chains, cut short or not."""

from __future__ import annotations

import contextlib
import json
import random
import shlex
from pathlib import Path

from natbox.netfilter import Hook
from natbox.rules.evaluate import Ruleset
from natbox.rules.model import NFPROTO_IPV6, RulesError
from natbox.rules.parser import parse_argv
from natbox.skb import Skb6
from natbox.testing.rules_fakes import FakeCtx
from natbox.wire.ipv6 import build_frag_hdr, build_ipv6

HDRS = (0, 43, 44, 51, 60, 59, 50, 6, 17, 58, 135)
HOOKS = (("filter", (Hook.FORWARD,)), ("mangle", (Hook.PRE_ROUTING, Hook.FORWARD, Hook.POST_ROUTING)),
         ("nat", (Hook.PRE_ROUTING, Hook.POST_ROUTING)))


def _ruleset() -> Ruleset:
    rs = Ruleset(NFPROTO_IPV6)
    for r in json.loads((Path(__file__).parent / "data" / "listing_recorded.json").read_text()):
        if r["rc"] == 0:
            with contextlib.suppress(RulesError):  # a target natbox does not implement
                rs.execute(parse_argv(["-t", r["table"], "-A", r["chain"], *shlex.split(r["rule"])],
                                      family=NFPROTO_IPV6))
    return rs


def _packet(rnd: random.Random) -> bytes:
    chain, first = b"", rnd.choice(HDRS)
    nh = first
    for _ in range(rnd.randint(0, 3)):
        nxt = rnd.choice(HDRS)
        if nh == 44:
            chain += build_frag_hdr(nxt, rnd.choice((0, 8, 1232)), rnd.random() < 0.5, rnd.getrandbits(32))
        elif nh == 51:
            chain += bytes((nxt, rnd.randint(0, 4))) + rnd.randbytes(14)
        elif nh in (0, 43, 60):
            n = rnd.randint(0, 3)
            chain += bytes((nxt, n)) + rnd.randbytes(6 + 8 * n)
        else:
            break
        nh = nxt
    d = bytes(build_ipv6(rnd.getrandbits(128), rnd.getrandbits(128), first, chain + rnd.randbytes(rnd.randint(0, 40)),
                         hop_limit=rnd.randint(0, 255)))
    return d[:rnd.randint(40, len(d))] if rnd.random() < 0.3 else d  # ip6_rcv_core keeps the 40-byte header


def test_random_packets_never_raise() -> None:
    rs, rnd = _ruleset(), random.Random(15)
    for _ in range(2000):
        d = _packet(rnd)
        for table, hooks in HOOKS:
            for hook in hooks:
                skb = Skb6(bytearray(d), iif="lan")
                skb.oif, skb.src_mac = "wan", rnd.choice((b"", bytes(6)))
                assert rs.run(table, hook, skb, FakeCtx(hook)) in (0, 1)  # NF_DROP or NF_ACCEPT
