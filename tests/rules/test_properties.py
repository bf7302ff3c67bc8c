"""Properties: save text is a fixed point of parse → save, and restore(save(x)) == x."""

from __future__ import annotations

import shlex

from hypothesis import given, settings
from hypothesis import strategies as st

from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_argv, parse_restore
from natbox.rules.printer import format_rule_spec, save_tables

addr = st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255), st.integers(0, 255),
                 st.integers(0, 32)).map(lambda t: f"{t[0]}.{t[1]}.{t[2]}.{t[3]}/{t[4]}")
iface = st.sampled_from(["eth0", "eth+", "docker0", "br-1a2b", "wlan0"])
neg = st.sampled_from(["", "! "])
port = st.integers(0, 65535)
port_range = st.one_of(port.map(str), st.tuples(port, port).map(lambda t: f"{min(t)}:{max(t)}"))

tcp_opts = st.lists(st.one_of(
    st.tuples(neg, port_range).map(lambda t: f"{t[0]}--dport {t[1]}"),
    st.tuples(neg, port_range).map(lambda t: f"{t[0]}--sport {t[1]}"),
    st.just("--syn"),
), max_size=2, unique_by=lambda s: s.split("--")[1].split()[0])

match = st.one_of(
    st.sampled_from(["-m conntrack --ctstate NEW", "-m conntrack ! --ctstate INVALID",
                     "-m conntrack --ctstate RELATED,ESTABLISHED --ctdir REPLY", "-m state --state NEW,ESTABLISHED",
                     "-m addrtype --dst-type LOCAL", "-m addrtype ! --src-type LOCAL,BROADCAST",
                     "-m comment --comment \"a b\"", "-m comment --comment plain", "-m mark --mark 0x1/0xff",
                     "-m limit --limit 5/min --limit-burst 3", "-m length --length 40:1500", "-m ttl --ttl-gt 3",
                     "-m pkttype --pkt-type multicast", "-m iprange --src-range 10.0.0.1-10.0.0.9",
                     "-m connmark ! --mark 0x7", "-m statistic --mode nth --every 4 --packet 2"]),
)
target = st.sampled_from(["-j ACCEPT", "-j DROP", "-j RETURN", "-j LOG --log-prefix \"x: \"", "-j REJECT",
                          "-j REJECT --reject-with icmp-host-prohibited", "-j MARK --set-mark 7", "-j CUSTOM",
                          "-g CUSTOM", ""])


@st.composite
def rule_text(draw: st.DrawFn) -> str:
    parts: list[str] = []
    if draw(st.booleans()):
        parts.append(f"{draw(neg)}-s {draw(addr)}")
    if draw(st.booleans()):
        parts.append(f"{draw(neg)}-d {draw(addr)}")
    if draw(st.booleans()):
        parts.append(f"{draw(neg)}-i {draw(iface)}")
    if draw(st.booleans()):
        parts.append(f"{draw(neg)}-o {draw(iface)}")
    proto = draw(st.sampled_from(["", "tcp", "udp", "icmp", "gre", "50"]))
    if proto:
        parts.append(f"-p {proto}")
        if proto == "tcp":
            parts.extend(draw(tcp_opts))
        elif proto == "udp" and draw(st.booleans()):
            parts.append(f"--dport {draw(port_range)}")
        elif proto == "icmp" and draw(st.booleans()):
            parts.append(f"--icmp-type {draw(st.sampled_from(['echo-request', '3/4', 'any', '11']))}")
        if proto in ("tcp", "udp") and draw(st.booleans()):
            parts.append("-m multiport --dports 22,80:90")
    parts.extend(draw(st.lists(match, max_size=3)))
    parts.append(draw(target))
    return " ".join(p for p in parts if p)


@settings(max_examples=300, deadline=None)
@given(st.lists(rule_text(), min_size=1, max_size=6))
def test_save_restore_fixed_point(lines: list[str]) -> None:
    rs = Ruleset()
    rs.execute(parse_argv(["-N", "CUSTOM"]))
    for line in lines:
        rs.execute(parse_argv(["-A", "FORWARD", *shlex.split(line)]))
    first = save_tables(rs.saved_tables(), "D")
    again = Ruleset()
    again.restore(parse_restore(first))
    assert save_tables(again.saved_tables(), "D") == first
    # -S prints the same rules
    listed = rs.execute(parse_argv(["-S", "FORWARD"])).splitlines()[1:]
    assert listed == [f"-A FORWARD{format_rule_spec(r)}" for r in rs.tables["filter"].chains["FORWARD"].rules]
    # every saved rule can be deleted by its own specification
    for r in list(rs.tables["filter"].chains["FORWARD"].rules):
        rs.execute(parse_argv(["-D", "FORWARD", *shlex.split(format_rule_spec(r))]))
    assert not rs.tables["filter"].chains["FORWARD"].rules
