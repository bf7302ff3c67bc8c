"""`natbox demo docker6`: Docker 27's ip6tables ruleset on the engine's IPv6 path (NAT66 out, DNAT in)."""

from __future__ import annotations

import io

from natbox.cli.demo import run_demo


def test_docker6_demo() -> None:
    out = io.StringIO()
    run_demo("docker6", out=out)
    text = out.getvalue()
    # out: MASQUERADE to the host's address, id and port kept
    assert ("2001:db8:300::1 > 2001:db8:77::7: ICMP6, echo request, id 25606, seq 1, length 64" in text)
    assert "2001:db8:300::1.45000 > 2001:db8:77::7.53: 4660+ AAAA? docker.com. (28)" in text
    # in: the published port DNATed to the container, which answers; the entry shows both tuples
    assert "2001:db8:77::7.47000 > fd00:d0c::2.80: Flags [S]" in text
    assert "2001:db8:300::1.8080 > 2001:db8:77::7.47000: Flags [P.], seq 1:55, ack 19" in text
    assert ("tcp      6 111 TIME_WAIT src=2001:db8:77::7 dst=2001:db8:300::1 sport=47000 dport=8080 "
            "src=fd00:d0c::2 dst=2001:db8:77::7 sport=80 dport=47000 [ASSURED]") in text
    # the container to the published port: -i docker0 -j RETURN, the host's closed port resets
    assert "2001:db8:300::1.8080 > fd00:d0c::2.47001: Flags [R.]" in text
    assert "# ip6tables -t nat -nvL" in text and "net.ipv6.conf.all.forwarding = 1" in text
    assert ("    1    64 DNAT       6    --  !docker0 *      !fe80::/10            ::/0                 tcp dpt:8080 "
            "to:[fd00:d0c::2]:80") in text
    assert "    2   180 MASQUERADE  0    --  *      !docker0  fd00:d0c::/64        ::/0" in text
