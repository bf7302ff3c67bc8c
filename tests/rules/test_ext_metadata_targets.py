"""AUDIT, LED and IDLETIMER: natbox has no audit, LEDs or idle-timer sysfs; each target continues."""

from __future__ import annotations

import shlex

from natbox.netfilter import Hook
from natbox.rules.api import NF_DROP
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_argv
from natbox.testing.rules_fakes import FakeCtx, udp


def test_targets_continue_to_the_next_rule() -> None:
    rs = Ruleset()
    for line in ("-A FORWARD -j AUDIT --type drop", '-A FORWARD -j LED --led-trigger-id "x" --led-delay inf',
                 "-A FORWARD -j IDLETIMER --timeout 60 --label wan --alarm", "-A FORWARD -j DROP"):
        rs.execute(parse_argv(["-t", "filter", *shlex.split(line)]))
    skb = udp("10.0.0.1", 1, "10.0.0.2", 2)
    before = bytes(skb.data)
    assert rs.run("filter", Hook.FORWARD, skb, FakeCtx(Hook.FORWARD)) == NF_DROP
    assert [r.packets for r in rs.tables["filter"].chains["FORWARD"].rules] == [1, 1, 1, 1]
    assert bytes(skb.data) == before


def test_tcpoptstrip_nops_the_options_and_keeps_the_checksum_valid() -> None:
    from natbox.testing.rules_fakes import tcp
    from natbox.wire.checksum import l4_checksum

    rs = Ruleset()
    rs.execute(parse_argv(["-t", "mangle", "-A", "FORWARD", "-p", "tcp", "-j", "TCPOPTSTRIP",
                           "--strip-options", "timestamp,sack-permitted"]))
    # MSS, SACK permitted, timestamp (10 bytes), NOP, window scale
    opts = b"\x02\x04\x05\xb4" + b"\x04\x02" + b"\x08\x0a" + bytes(range(1, 9)) + b"\x01" + b"\x03\x03\x07"
    skb = tcp("10.0.0.1", 1000, "10.0.0.2", 80, options=opts)
    skb.data[36:38] = l4_checksum(0x0A000001, 0x0A000002, 6, skb.data[20:]).to_bytes(2, "big")
    assert rs.run("mangle", Hook.FORWARD, skb, FakeCtx(Hook.FORWARD)) != NF_DROP
    assert bytes(skb.data[40:60]) == b"\x02\x04\x05\xb4" + b"\x01" * 12 + b"\x01\x03\x03\x07"
    seg = bytearray(skb.data[20:])
    stored = int.from_bytes(seg[16:18], "big")
    seg[16:18] = b"\0\0"
    assert l4_checksum(0x0A000001, 0x0A000002, 6, seg) == stored
    # a data offset past the packet's end drops it
    cut = tcp("10.0.0.1", 1000, "10.0.0.2", 80, options=opts)
    del cut.data[44:]
    assert rs.run("mangle", Hook.FORWARD, cut, FakeCtx(Hook.FORWARD)) == NF_DROP


def test_classify_sets_the_skb_priority() -> None:
    rs = Ruleset()
    rs.execute(parse_argv(["-t", "mangle", "-A", "POSTROUTING", "-j", "CLASSIFY", "--set-class", "1:10"]))
    skb = udp("10.0.0.1", 1, "10.0.0.2", 2)
    rs.run("mangle", Hook.POST_ROUTING, skb, FakeCtx(Hook.POST_ROUTING))
    assert skb.priority == 0x00010010
