"""`natbox difftest --live --offload` sets aside exactly the differences docs/differences.md lists for offloaded
flows (pure: the lines are from real runs)."""

from __future__ import annotations

from natbox.difftest.cli import offload_documented
from natbox.difftest.compare import Difference

KERNEL_UDP = ("udp      17 29 src=192.168.50.3 dst=198.51.100.2 sport=40010 dport=5000 src=198.51.100.2 "
              "dst=198.51.100.1 sport=5000 dport=43450 mark=0 use=1")
NATBOX_UDP = ("udp      17 src=192.168.50.3 dst=198.51.100.2 sport=40010 dport=5000 src=198.51.100.2 "
              "dst=198.51.100.1 sport=5000 dport=58912 [OFFLOAD] mark=0 use=2")


def test_an_offloaded_entry_and_counters_that_missed_offloaded_packets_are_documented() -> None:
    assert offload_documented(Difference("conntrack", "live entry", KERNEL_UDP, NATBOX_UDP))
    assert offload_documented(Difference("counters", "live table filter line 8", "[10:560] -A FORWARD -j DOCKER-USER",
                                         "[8:444] -A FORWARD -j DOCKER-USER"))
    assert offload_documented(Difference("counters", "live table raw line 1", ":PREROUTING ACCEPT [17:824]",
                                         ":PREROUTING ACCEPT [15:706]"))


def test_other_differences_are_not() -> None:
    other_host = NATBOX_UDP.replace("src=192.168.50.3", "src=192.168.50.4")
    assert not offload_documented(Difference("conntrack", "live entry", KERNEL_UDP, other_host))
    assert not offload_documented(Difference("conntrack", "live entry", KERNEL_UDP,
                                             NATBOX_UDP.replace("[OFFLOAD] ", "[ASSURED] ")))
    assert not offload_documented(Difference("conntrack", "live entry", "(no entry)", NATBOX_UDP))
    assert not offload_documented(Difference("counters", "live table filter line 8", "[8:444] -A FORWARD -j X",
                                             "[10:560] -A FORWARD -j X"))  # more than the kernel: a real bug
    assert not offload_documented(Difference("counters", "x", "[8:444] -A FORWARD -j X", "[8:444] -A FORWARD -j Y"))
    assert not offload_documented(Difference("counters", "y", ":FORWARD ACCEPT [0:0]", ":FORWARD ACCEPT [2:86]"))
    assert not offload_documented(Difference("counters", "y", ":FORWARD ACCEPT [5:0]", ":FORWARD DROP [2:86]"))
    assert not offload_documented(Difference("frame", "lan0 #3", "a", "b"))
