"""Random IPv6 differential scenarios (hypothesis), the IPv6 twin of natbox.difftest.generator: ip6tables
rulesets from a grammar of what natbox implements for IPv6, on one small fixed topology, with short crafted
traffic; `explore(..., strategy=scenarios6())` runs and shrinks them.

Topology (`TOPOLOGY6`): router `lan0` fd00:77::1/64 with hosts `cli` (::2) and `cli2` (::3), `wan0`
2001:db8:100::1/64 with host `srv` (2001:db8:100::10). Every ruleset ends with `-A POSTROUTING -o wan0 -j
MASQUERADE` (a conntrack user). Grammar (`rulesets6()`): nat PREROUTING DNAT from wan0 (address, [address]:port,
port range) or REDIRECT; nat POSTROUTING MASQUERADE (ports, --random), SNAT ([address]:ports), NETMAP;
filter FORWARD -p/-s/-d/-i/-o/--dport/-m conntrack with ACCEPT, DROP, REJECT (icmp6-* and tcp-reset),
policy ACCEPT or DROP. Traffic (`traffics6()`): up to 6 UDP, TCP and ICMPv6 echo packets, some with hop
limit 1, inside hosts to the server and the server to the router's address, on few ports so flows clash.
"""

from __future__ import annotations

from hypothesis import strategies as st

from natbox.difftest.generator import MAX_PACKETS, MAX_RULES, scenario_text

__all__ = ["TOPOLOGY6", "rulesets6", "scenario_text6", "scenarios6", "traffics6"]

RT_LAN, RT_WAN, SRV, CLI, CLI2 = "fd00:77::1", "2001:db8:100::1", "2001:db8:100::10", "fd00:77::2", "fd00:77::3"
TOPOLOGY6 = f"""[router.sysctl]
"net.ipv6.conf.all.forwarding" = 1

[[router.interface]]
name = "lan0"
addresses = ["{RT_LAN}/64"]

[[router.interface]]
name = "wan0"
addresses = ["{RT_WAN}/64"]

[[host]]
name = "cli"
attach = "lan0"
addresses = ["{CLI}/64"]
gateway6 = "{RT_LAN}"

[[host]]
name = "cli2"
attach = "lan0"
addresses = ["{CLI2}/64"]
gateway6 = "{RT_LAN}"

[[host]]
name = "srv"
attach = "wan0"
addresses = ["{SRV}/64"]
gateway6 = "{RT_WAN}"
"""
SPORTS = (40000, 40001)
_port = st.sampled_from([80, 5000, 8080])
_proto = st.sampled_from(["tcp", "udp"])


@st.composite
def _pre_rule(draw: st.DrawFn) -> str:
    p, port = draw(_proto), draw(_port)
    target = draw(st.sampled_from([f"DNAT --to-destination {CLI}", f"DNAT --to-destination [{CLI}]:80",
                                   f"DNAT --to-destination [{CLI2}]:5000-5001", "REDIRECT --to-ports 9000",
                                   "ACCEPT"]))
    return f"-A PREROUTING -i wan0 -p {p} -m {p} --dport {port} -j {target}"


@st.composite
def _post_rule(draw: st.DrawFn) -> str:
    sel = draw(st.sampled_from(["", f" -s {CLI}/128", f" -s {CLI2}/128", " -s fd00:77::/64"]))
    target = draw(st.sampled_from(["MASQUERADE --to-ports 2000-2005", "MASQUERADE --random",
                                   f"SNAT --to-source [{RT_WAN}]:2000-2005", "NETMAP --to 2001:db8:77::/64",
                                   "RETURN"]))
    if "ports" in target or "]:" in target:
        sel += " -p udp"
    return f"-A POSTROUTING -o wan0{sel} -j {target}"


@st.composite
def _filter_rule(draw: st.DrawFn) -> str:
    sel = draw(st.sampled_from(["", " -i lan0", " -o lan0", f" -s {CLI}/128", f" -d {SRV}/128",
                                " -p udp -m udp --dport 5000", " -p tcp -m tcp --dport 80",
                                " -m conntrack --ctstate NEW", " -m conntrack --ctstate RELATED,ESTABLISHED",
                                " -p ipv6-icmp -m icmp6 --icmpv6-type 128"]))
    target = draw(st.sampled_from(["ACCEPT", "DROP", "REJECT --reject-with icmp6-port-unreachable",
                                   "REJECT --reject-with icmp6-adm-prohibited", "RETURN"]
                                  + (["REJECT --reject-with tcp-reset"] if "tcp" in sel else [])))
    return f"-A FORWARD{sel} -j {target}"


@st.composite
def rulesets6(draw: st.DrawFn) -> str:
    """An ip6tables-save ruleset from the grammar (see the module docstring)."""
    pre = draw(st.lists(_pre_rule(), max_size=MAX_RULES))
    post = draw(st.lists(_post_rule(), max_size=MAX_RULES))
    out = ["*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
           ":POSTROUTING ACCEPT [0:0]", *pre, *post, "-A POSTROUTING -o wan0 -j MASQUERADE", "COMMIT"]
    fwd = draw(st.lists(_filter_rule(), max_size=MAX_RULES))
    policy = draw(st.sampled_from(["ACCEPT", "DROP"]))
    if fwd or policy != "ACCEPT":
        out += ["*filter", ":INPUT ACCEPT [0:0]", f":FORWARD {policy} [0:0]", ":OUTPUT ACCEPT [0:0]", *fwd,
                "COMMIT"]
    return "\n".join(out)


@st.composite
def _packet(draw: st.DrawFn) -> dict[str, object]:
    outbound = draw(st.booleans())
    host, dst = (draw(st.sampled_from(["cli", "cli2"])), SRV) if outbound else ("srv", RT_WAN)
    kind = draw(st.sampled_from(["udp", "tcp", "icmp_echo"]))
    step: dict[str, object] = {"host": host, "send": kind, "dst": dst}
    if kind == "icmp_echo":
        step.update(icmp_id=draw(st.sampled_from([7, 8])), seq=draw(st.integers(1, 3)), payload="p")
    else:
        step["sport"] = draw(st.sampled_from(SPORTS)) if outbound else draw(_port)
        step["dport"] = draw(_port) if outbound else draw(st.sampled_from(SPORTS))
        if kind == "tcp":
            flags = draw(st.sampled_from(["S", "S", "A", "PA", "F", "R", "SA"]))
            step.update(flags=flags, seq=draw(st.sampled_from([1000, 5000])),
                        ack=0 if flags in ("S", "R") else draw(st.sampled_from([1001, 5001])))
        else:
            step["payload"] = draw(st.sampled_from(["u", "udp payload"]))
    if draw(st.integers(0, 9)) == 0:
        step["ttl"] = 1
    return step


def traffics6() -> st.SearchStrategy[list[dict[str, object]]]:
    return st.lists(_packet(), min_size=1, max_size=MAX_PACKETS)


def scenario_text6(rules6: str, traffic: list[dict[str, object]], *, name: str = "random",
                   description: str = "a random IPv6 scenario (natbox.difftest.generator6)") -> str:
    """A scenario file (TOML) for the fixed IPv6 topology, an ip6tables ruleset and crafted packets."""
    return scenario_text(rules6, traffic, name=name, description=description, rules_key="rules6",
                         topology=TOPOLOGY6)


def scenarios6() -> st.SearchStrategy[str]:
    """Whole random IPv6 scenarios (TOML text)."""
    return st.builds(scenario_text6, rulesets6(), traffics6())
