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
