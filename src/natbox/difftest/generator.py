"""Random differential scenarios (hypothesis): rulesets from a grammar of what natbox implements, on one
small fixed topology, with short crafted traffic; run on both sides, shrunk on a difference.

The topology (`TOPOLOGY`): router `lan0` 192.168.50.1/24 with hosts `cli` (.2) and `cli2` (.3); `wan0`
198.51.100.1/24 (plus .10) with host `srv` (198.51.100.2). Every ruleset ends with
`-A POSTROUTING -o wan0 -j MASQUERADE`, so the netns always has a conntrack user (the kernel registers its
conntrack hooks only while a rule needs them, a known natbox difference), and every case sends at most
`MAX_PACKETS` packets, under the kernel's ICMP burst of 6 per destination (natbox has no ICMP rate limit).

The grammar (`rulesets()`), in kernel terms:
- nat PREROUTING: DNAT from wan0 (address, address:port, address:port-range) and REDIRECT (with/without
  --to-ports) for a protocol and a destination port, or ACCEPT;
- nat POSTROUTING: MASQUERADE (--to-ports, --random, --random-fully), SNAT (address or address range,
  ports, --random, --persistent), NETMAP, RETURN — with -s/-p/--dport selectors;
- filter FORWARD and INPUT: -p/-s/-d/-i/-o, --dport, -m conntrack --ctstate, -m multiport, -m iprange,
  -m length, -m ttl, -m mark; ACCEPT, DROP, RETURN, REJECT (every --reject-with), policy ACCEPT/DROP;
- mangle PREROUTING: MARK --set-mark, CONNMARK --save-mark, TTL --ttl-set.
Traffic (`traffics()`): 1..MAX_PACKETS crafted UDP, TCP (S, A, PA, F, R, SA) and ICMP echo packets from the
inside hosts to the server and from the server to the router's address, on few ports so flows clash.

`explore(max_examples, seed, out_dir)` runs hypothesis; the smallest scenario that differed is written to
`out_dir` as a regression scenario (`regression-<hash>.toml`). Needs root and `ip netns`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from natbox.difftest.compare import Difference
from natbox.difftest.scenario import parse_scenario

__all__ = ["MAX_PACKETS", "TOPOLOGY", "Finding", "explore", "rulesets", "scenario_text", "scenarios", "traffics"]

MAX_PACKETS = 6  # per random case: under the kernel's per-destination ICMP burst (6)
MAX_RULES = 3  # per chain in a random ruleset
STEP_GAP = 0.03  # seconds between a case's packets
SETTLE = 0.2  # seconds after the last packet
CONFIRM_RUNS = 2  # reruns of the smallest differing scenario, to tell a flaky difference

ROUTER_WAN, ROUTER_WAN2, ROUTER_LAN = "198.51.100.1", "198.51.100.10", "192.168.50.1"
SRV, CLI, CLI2 = "198.51.100.2", "192.168.50.2", "192.168.50.3"
TOPOLOGY = f"""[router.sysctl]
"net.ipv4.ip_forward" = 1

[[router.interface]]
name = "lan0"
addresses = ["{ROUTER_LAN}/24"]

[[router.interface]]
name = "wan0"
addresses = ["{ROUTER_WAN}/24", "{ROUTER_WAN2}/24"]

[[host]]
name = "cli"
attach = "lan0"
addresses = ["{CLI}/24"]
gateway = "{ROUTER_LAN}"

[[host]]
name = "cli2"
attach = "lan0"
addresses = ["{CLI2}/24"]
gateway = "{ROUTER_LAN}"

[[host]]
name = "srv"
attach = "wan0"
addresses = ["{SRV}/24"]
gateway = "{ROUTER_WAN}"
"""
PORTS = (5000, 8080, 22)  # destination ports (few, so rules and flows meet)
SPORTS = (40000, 40001, 1000)  # source ports (none inside the NAT port ranges below)
REJECT_WITH = ("icmp-net-unreachable", "icmp-host-unreachable", "icmp-port-unreachable",
               "icmp-proto-unreachable", "icmp-net-prohibited", "icmp-host-prohibited", "icmp-admin-prohibited")
CTSTATES = ("NEW", "ESTABLISHED", "RELATED", "INVALID", "RELATED,ESTABLISHED", "NEW,INVALID")

_proto = st.sampled_from(["tcp", "udp"])
_port = st.sampled_from(PORTS)


@st.composite
def _selector(draw: st.DrawFn, *, l4: bool = True) -> str:
    """-p/--dport and friends, in iptables-save's order."""
    parts: list[str] = []
    if draw(st.booleans()):
        parts.append(draw(st.sampled_from([f"-s {CLI}/32", f"-s {CLI2}/32", "-s 192.168.50.0/24",
                                           f"! -s {CLI}/32", f"-d {SRV}/32"])))
    proto = draw(st.sampled_from(["tcp", "udp", "icmp", None])) if l4 else None
    if proto is not None:
        parts.append(f"-p {proto}")
        if proto in ("tcp", "udp") and draw(st.booleans()):
            parts.append(f"-m {proto} --dport {draw(_port)}")
        elif proto in ("tcp", "udp") and draw(st.booleans()):
            ports = ",".join(str(p) for p in draw(st.lists(_port, min_size=1, max_size=2, unique=True)))
            parts.append(f"-m multiport --dports {ports}")
        elif proto == "icmp" and draw(st.booleans()):
            parts.append("-m icmp --icmp-type 8")
    extra = draw(st.sampled_from([None, "conntrack", "iprange", "length", "ttl", "mark"]))
    if extra == "conntrack":
        parts.append(f"-m conntrack --ctstate {draw(st.sampled_from(CTSTATES))}")
    elif extra == "iprange":
        parts.append("-m iprange --src-range 192.168.50.2-192.168.50.2")
    elif extra == "length":
        parts.append(f"-m length --length {draw(st.sampled_from(['0:60', '61:1500', '40']))}")
    elif extra == "ttl":
        parts.append(f"-m ttl --ttl-{draw(st.sampled_from(['gt 60', 'lt 64', 'eq 64']))}")
    elif extra == "mark":
        parts.append(f"-m mark --mark {draw(st.sampled_from(['0x1', '0x0', '0x1/0x1']))}")
    return " ".join(parts)


@st.composite
def _filter_rule(draw: st.DrawFn, chain: str) -> str:
    iface = draw(st.sampled_from(["", "-i lan0 ", "-i wan0 ", "-o wan0 " if chain == "FORWARD" else ""]))
    sel = draw(_selector())
    target = draw(st.sampled_from(["ACCEPT", "DROP", "RETURN", "REJECT"]))
    if target == "REJECT":
        if "-p tcp" in sel and draw(st.booleans()):
            target += " --reject-with tcp-reset"
        else:
            target += f" --reject-with {draw(st.sampled_from(REJECT_WITH))}"
    return f"-A {chain} {iface}{sel} -j {target}".replace("  ", " ")


@st.composite
def _pre_rule(draw: st.DrawFn) -> str:
    proto, port = draw(_proto), draw(_port)
    kind = draw(st.sampled_from(["DNAT", "DNAT-port", "DNAT-range", "REDIRECT", "ACCEPT"]))
    # DNAT only from wan0: a lan0 flow DNATed back into lan0 is forwarded out the interface it came in on,
    # and the kernel's ICMP redirect then rate-limits the next error to that host (a known natbox
    # difference: scenarios/icmp-redirect-same-subnet.toml)
    iface = "wan0" if kind.startswith("DNAT") else draw(st.sampled_from(["wan0", "lan0"]))
    head = f"-A PREROUTING -i {iface} -p {proto} -m {proto} --dport {port}"
    if kind == "DNAT":
        return f"{head} -j DNAT --to-destination {CLI}"
    if kind == "DNAT-port":
        return f"{head} -j DNAT --to-destination {draw(st.sampled_from([CLI, CLI2]))}:{draw(_port)}"
    if kind == "DNAT-range":
        return f"{head} -j DNAT --to-destination {CLI}-{CLI2}:6000-6001"
    if kind == "REDIRECT":
        return f"{head} -j REDIRECT" + (f" --to-ports {draw(_port)}" if draw(st.booleans()) else "")
    return f"{head} -j ACCEPT"


@st.composite
def _post_rule(draw: st.DrawFn) -> str:
    proto = draw(st.sampled_from(["tcp", "udp", None]))
    sel = f" -p {proto}" if proto else ""
    if draw(st.booleans()):
        sel = draw(st.sampled_from([f" -s {CLI}/32", f" -s {CLI2}/32", " -s 192.168.50.0/24"])) + sel
    head = f"-A POSTROUTING -o wan0{sel}"
    kind = draw(st.sampled_from(["MASQUERADE", "SNAT", "NETMAP", "RETURN"]))
    flags = draw(st.sampled_from(["", " --random", " --random-fully"]))
    # no range holds a port the traffic uses: where the kernel picks at random, natbox's pick may equal the
    # original port, and a value the inputs carried is never mapped as a random choice (§10, PortMap)
    ranges = ["30000-30999", "20000-20999", "1100"]  # wide: two random picks rarely meet (PortMap is global)
    if kind == "MASQUERADE":
        ports = f" --to-ports {draw(st.sampled_from(ranges))}" if proto else ""
        return f"{head} -j MASQUERADE{ports}{flags}"
    if kind == "SNAT":
        addr = draw(st.sampled_from([ROUTER_WAN, ROUTER_WAN2, f"{ROUTER_WAN}-{ROUTER_WAN2}"]))
        ports = f":{draw(st.sampled_from(ranges))}" if proto else ""
        persistent = " --persistent" if draw(st.booleans()) else ""
        return f"{head} -j SNAT --to-source {addr}{ports}{flags}{persistent}"
    if kind == "NETMAP":
        return f"-A POSTROUTING -o wan0 -s 192.168.50.0/30 -j NETMAP --to {ROUTER_WAN}/30".replace(
            f"{ROUTER_WAN}/30", "198.51.100.0/30")
    return f"{head} -j RETURN"


@st.composite
def rulesets(draw: st.DrawFn) -> str:
    """An iptables-save ruleset from the grammar (see the module docstring)."""
    out: list[str] = []
    mangle = draw(st.lists(st.sampled_from([
        "-A PREROUTING -i lan0 -p udp -j MARK --set-xmark 0x1/0xffffffff",
        "-A PREROUTING -j CONNMARK --save-mark --nfmask 0xffffffff --ctmask 0xffffffff",
        "-A PREROUTING -i lan0 -p tcp -j TTL --ttl-set 9"]), max_size=2, unique=True))
    if mangle:
        out += ["*mangle", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]",
                ":OUTPUT ACCEPT [0:0]", ":POSTROUTING ACCEPT [0:0]", *mangle, "COMMIT"]
    pre = draw(st.lists(_pre_rule(), max_size=MAX_RULES))
    post = draw(st.lists(_post_rule(), max_size=MAX_RULES))
    out += ["*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
            ":POSTROUTING ACCEPT [0:0]", *pre, *post, "-A POSTROUTING -o wan0 -j MASQUERADE", "COMMIT"]
    fwd = draw(st.lists(_filter_rule("FORWARD"), max_size=MAX_RULES))
    inp = draw(st.lists(_filter_rule("INPUT"), max_size=2))
    policy = draw(st.sampled_from(["ACCEPT", "DROP"]))
    if fwd or inp or policy != "ACCEPT":
        out += ["*filter", ":INPUT ACCEPT [0:0]", f":FORWARD {policy} [0:0]", ":OUTPUT ACCEPT [0:0]",
                *fwd, *inp, "COMMIT"]
    return "\n".join(out)


@st.composite
def _packet(draw: st.DrawFn) -> dict[str, object]:
    outbound = draw(st.booleans())
    host, dst = (draw(st.sampled_from(["cli", "cli2"])), SRV) if outbound else \
        ("srv", draw(st.sampled_from([ROUTER_WAN, ROUTER_WAN2])))
    kind = draw(st.sampled_from(["udp", "tcp", "icmp_echo"]))
    step: dict[str, object] = {"host": host, "send": kind, "dst": dst}
    if host == "cli2":
        step["src"] = CLI2
    if kind == "icmp_echo":
        step.update(icmp_id=draw(st.sampled_from([7, 8])), seq=draw(st.integers(1, 3)), payload="p")
        return step
    step["sport"] = draw(st.sampled_from(SPORTS)) if outbound else draw(_port)
    step["dport"] = draw(_port) if outbound else draw(st.sampled_from(SPORTS))
    if kind == "tcp":
        flags = draw(st.sampled_from(["S", "S", "A", "PA", "F", "R", "SA"]))
        step.update(flags=flags, seq=draw(st.sampled_from([1000, 1001, 5000])),
                    ack=0 if flags in ("S", "R") else draw(st.sampled_from([1001, 5001])))
        if flags == "PA":
            step["payload"] = "data"
    else:
        step["payload"] = draw(st.sampled_from(["u", "udp payload"]))
    if draw(st.integers(0, 9)) == 0:
        step["ttl"] = 1
    return step


def traffics() -> st.SearchStrategy[list[dict[str, object]]]:
    return st.lists(_packet(), min_size=1, max_size=MAX_PACKETS)


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def scenario_text(rules: str, traffic: list[dict[str, object]], *, name: str = "random",
                  description: str = "a random scenario (natbox.difftest.generator)", rules_key: str = "rules",
                  topology: str = TOPOLOGY) -> str:
    """A scenario file (TOML) for a fixed topology (IPv4's by default; generator6 passes its own and
    `rules_key="rules6"`), a ruleset and crafted packets."""
    lines = [f"name = {_toml_value(name)}", f"description = {_toml_value(description)}", f"settle = {SETTLE}", "",
             "[router]", f"{rules_key} = '''", rules, "'''", topology]
    for i, step in enumerate(traffic):
        lines += ["[[step]]", f"at = {round(i * STEP_GAP, 3)}"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in step.items()]
        lines.append("")
    return "\n".join(lines)


def scenarios() -> st.SearchStrategy[str]:
    """Whole random scenarios (TOML text)."""
    return st.builds(scenario_text, rulesets(), traffics())


@dataclass
class Finding:
    """The smallest random scenario that differed, and where it was written."""

    text: str
    differences: list[Difference]
    path: Path | None = None
    reproduced: int = 0  # of CONFIRM_RUNS reruns of the smallest scenario, how many differed again


Runner = Callable[[str], list[Difference]]


def _default_runner(text: str) -> list[Difference]:
    from natbox.difftest.cli import run_scenario

    sc = parse_scenario(text, "<random>")
    kernel, diffs = run_scenario(sc)
    return diffs + [Difference("error", "kernel run", e, "") for e in kernel.errors]


def explore(max_examples: int, *, seed: int = 0, out_dir: str | Path | None = None,
            runner: Runner | None = None, on_case: Callable[[str, list[Difference]], None] | None = None,
            strategy: st.SearchStrategy[str] | None = None) -> Finding | None:
    """Run `max_examples` random scenarios (derandomized by `seed`); None if all agreed, else the smallest
    differing scenario (hypothesis shrinks it), written to `out_dir/regression-<hash>.toml` if given."""
    run = runner or _default_runner
    smallest: list[Finding] = []

    @settings(max_examples=max_examples, deadline=None, database=None, derandomize=True, print_blob=False,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink])
    @given(strategy if strategy is not None else scenarios())  # scenarios6() for IPv6 (generator6)
    def case(text: str) -> None:
        diffs = run(text)
        if on_case is not None:
            on_case(text, diffs)
        if diffs:
            if not smallest or len(text) < len(smallest[0].text):
                smallest[:] = [Finding(text, diffs)]
            raise AssertionError(f"{len(diffs)} differences")

    case._hypothesis_internal_use_seed = seed  # type: ignore[attr-defined]
    try:
        case()
    except Exception:
        if not smallest:
            raise
    if not smallest:
        return None
    found = smallest[0]
    # a flaky difference (a random choice that happened to differ) shrinks badly: say how often it repeats
    found.reproduced = sum(bool(run(found.text)) for _ in range(CONFIRM_RUNS))
    if out_dir is not None:
        digest = hashlib.sha256(found.text.encode()).hexdigest()[:12]
        path = Path(out_dir) / f"regression-{digest}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = found.text.replace('name = "random"', f'name = "regression-{digest}"', 1).replace(
            'description = "a random scenario',
            f'description = "shrunk from a random scenario that differed (again in {found.reproduced} of '
            f'{CONFIRM_RUNS} reruns)', 1)
        path.write_text(text)
        found.path = path
    return found
