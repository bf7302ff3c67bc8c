"""`natbox demo qemu6`: two VMs with ULA addresses behind one ip6tables SNAT address; the second flow of each
kind (ICMPv6 echo id, UDP port, TCP port) is remapped so that the reply tuples stay unique (NAT66 as NAT44)."""

from __future__ import annotations

import io
import re

from natbox.cli.demo import run_demo


def test_qemu6_demo_remaps_the_second_flow_of_each_kind() -> None:
    out = io.StringIO()
    run_demo("qemu6", out=out)
    text = out.getvalue()
    eth0 = text.split("# tcpdump -nne -i eth0\n")[1].split("\n\n")[0]
    # the first echo keeps its id, the second (same id from vm2) gets another one; both replies come back
    ids = re.findall(r"2001:db8:108::108 > 2001:db8:4012::34: ICMP6, echo request, id (\d+)", eth0)
    assert ids[0] == "16962" and len(ids) == 2 and ids[1] != "16962"
    assert "2001:db8:4012::34 > fd00:80:2::110: ICMP6, echo reply, id 16962, seq 1" in text
    udp = re.findall(r"2001:db8:108::108\.(\d+) > 2001:db8:4012::34\.5000: UDP", eth0)
    assert udp[0] == "40000" and len(udp) == 2 and udp[1] != "40000" and int(udp[1]) >= 1024
    syn = re.findall(r"2001:db8:108::108\.(\d+) > 2001:db8:4012::34\.80: Flags \[S\]", eth0)
    assert syn[0] == "45000" and len(syn) == 2 and syn[1] != "45000"
    # each VM gets its own answers back, un-NATed
    assert "2001:db8:4012::34.80 > fd00:80:2::110.45000: Flags [P.], seq 1:22, ack 19" in text
    assert "2001:db8:4012::34.5000 > fd00:80:1::110.40000: UDP, length 4" in text
    assert (f"udp      17 21 src=fd00:80:2::110 dst=2001:db8:4012::34 sport=40000 dport=5000 src=2001:db8:4012::34 "
            f"dst=2001:db8:108::108 sport=5000 dport={udp[1]} mark=0 use=1") in text
    assert ("    6   440 SNAT       0    --  *      *       fd00:80::/32         ::/0                 "
            "to:2001:db8:108::108") in text
