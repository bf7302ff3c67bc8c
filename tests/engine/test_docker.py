"""Docker's classic ruleset acting on packets through the engine: the §6 walk-through, both proxy modes.

userland-proxy=true is the demo's ruleset; userland-proxy=false ("hairpin mode") drops the `! -i docker0`
and `! -d 127.0.0.0/8` conditions and the `-i docker0 -j RETURN`, adds a `--src-type LOCAL` MASQUERADE on
docker0, and sets route_localnet on docker0 (§6, §8).
"""

from __future__ import annotations

from natbox.conntrack.format import format_conntrack
from natbox.conntrack.tuple import format_addr, parse_addr
from natbox.demos.scenarios import DOCKER_RULES, _docker_host
from natbox.engine.engine import Engine, Output
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore
from natbox.sim.lab import Lab
from natbox.wire import ipv4, tcp

HOST_IP = "45.77.200.180"

HAIRPIN_MODE_NAT = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A POSTROUTING -o docker0 -m addrtype --src-type LOCAL -j MASQUERADE
-A POSTROUTING -s 172.17.0.2/32 -d 172.17.0.2/32 -p tcp -m tcp --dport 8000 -j MASQUERADE
-A DOCKER -p tcp -m tcp --dport 10000 -j DNAT --to-destination 172.17.0.2:8000
COMMIT
"""


def _docker(userland_proxy: bool) -> tuple[Lab, Engine]:
    host, _ = _docker_host()
    rules = DOCKER_RULES
    if not userland_proxy:
        rules = DOCKER_RULES[: DOCKER_RULES.index("*nat")] + HAIRPIN_MODE_NAT
        host.interfaces["docker0"].route_localnet = True
    ruleset = Ruleset()
    ruleset.restore(parse_restore(rules, file="docker"))
    engine = Engine(host, ruleset=ruleset, seed=11)
    lab = Lab(host, engine, seed=11)
    ctr = lab.add_host("container", "docker0", "172.17.0.2/16", gateway="172.17.0.1", mac="02:42:ac:11:00:02")
    ctr.listen_tcp[8000] = b"HTTP/1.0 200 OK\r\n\r\nctr"
    lab.add_host("internet", "eth0", "45.77.200.1/23", mac="06:7c:16:88:fe:87", extra_addrs=("8.8.8.8",))
    return lab, engine


def _syn(src: str, dst: str, sport: int, dport: int) -> bytes:
    s, d = parse_addr(src), parse_addr(dst)
    seg = tcp.build_tcp(s, d, sport, dport, seq=1, ack=0, flags=tcp.SYN, window=64240)
    return bytes(ipv4.build_ipv4(s, d, 6, seg, ttl=64))


def _ips(frame: bytes) -> tuple[str, str, int, int]:
    d = frame[14:]
    return (format_addr(int.from_bytes(d[12:16], "big")), format_addr(int.from_bytes(d[16:20], "big")),
            int.from_bytes(d[20:22], "big"), int.from_bytes(d[22:24], "big"))


def _on(out: Output, iface: str) -> list[tuple[str, str, int, int]]:
    return [_ips(e.frame) for e in out.emitted if e.iface == iface]


def test_host_to_its_own_address_is_dnatted_by_the_output_chain_without_snat() -> None:
    """§6: `Host → own IP:10000`: OUTPUT jumps to DOCKER, DNAT applies; the source stays the host IP."""
    _lab, engine = _docker(userland_proxy=True)
    out = engine.send_local(_syn(HOST_IP, HOST_IP, 50000, 10000), 1.0)
    assert _on(out, "docker0") == [(HOST_IP, "172.17.0.2", 50000, 8000)]


def test_host_to_localhost_and_container_to_host_ip_are_not_natted_with_the_proxy() -> None:
    """§6: 127.0.0.1:10000 (`! -d 127.0.0.0/8`) and container → host-IP:10000 (`-i docker0 -j RETURN`)."""
    lab, engine = _docker(userland_proxy=True)
    engine.listeners.add((6, 10000))  # docker-proxy listens on the published port
    out = engine.send_local(_syn("127.0.0.1", "127.0.0.1", 50001, 10000), 1.0)
    assert [d.action for d in out.delivered] == ["socket tcp:10000"]
    assert not any(e.iface == "docker0" for e in out.emitted)
    ctr = lab.hosts["container"]
    lab.at(2.0, lambda: ctr.tcp_connect(HOST_IP, 10000, sport=50002))
    lab.run(until=2.5)
    delivered = [d for o in lab.outputs for d in o.delivered]
    assert delivered and delivered[0].action == "socket tcp:10000"
    line = next(format_conntrack(c, lab.now) for c in engine.table.live(lab.now) if c.original.sport == 50002)
    assert f"src=172.17.0.2 dst={HOST_IP} sport=50002 dport=10000 [UNREPLIED] src={HOST_IP} dst=172.17.0.2 " \
        "sport=10000 dport=50002" in line  # not NATed


def test_hairpin_mode_localhost_is_dnatted_and_masqueraded_to_the_bridge_address() -> None:
    """§8 [V]: with route_localnet and the `--src-type LOCAL` MASQUERADE: reply tuple src=172.17.0.2 dst=172.17.0.1."""
    _lab, engine = _docker(userland_proxy=False)
    out = engine.send_local(_syn("127.0.0.1", "127.0.0.1", 50003, 10000), 1.0)
    assert _on(out, "docker0") == [("172.17.0.1", "172.17.0.2", 50003, 8000)]
    (conn,) = engine.table.live(1.0)
    assert " src=172.17.0.2 dst=172.17.0.1 sport=8000 dport=50003 " in format_conntrack(conn, 1.0)


def test_localhost_dnat_without_route_localnet_is_dropped() -> None:
    """§8 [V]: 127.0.0.1 may not leave docker0 unless route_localnet is set there."""
    _lab, engine = _docker(userland_proxy=False)
    engine.host.interfaces["docker0"].route_localnet = False
    out = engine.send_local(_syn("127.0.0.1", "127.0.0.1", 50004, 10000), 1.0)
    assert not out.emitted
    assert [d.reason for d in out.dropped] == ["martian_source"]


def test_hairpin_mode_container_to_its_own_published_port() -> None:
    """§8 [V]: container → host-IP:10000 → DNAT back to itself, MASQUERADEd: reply tuple dst=172.17.0.1."""
    lab, engine = _docker(userland_proxy=False)
    ctr = lab.hosts["container"]
    lab.at(1.0, lambda: ctr.tcp_connect(HOST_IP, 10000, sport=50005, request=b"GET / HTTP/1.0\r\n\r\n"))
    lab.run(until=3.0)
    line = next(format_conntrack(c, lab.now) for c in engine.table.live(lab.now) if c.original.sport == 50005)
    assert f"src=172.17.0.2 dst={HOST_IP} sport=50005 dport=10000 src=172.17.0.2 dst=172.17.0.1 sport=8000 " \
        "dport=50005 [ASSURED]" in line
    assert any(d.endswith(b"ctr") for _t, d in ctr.received)


def test_filter_forward_policy_drop_blocks_unpublished_ports() -> None:
    """The filter FORWARD policy is DROP: an outside connection to a container port that is not published
    is routed to docker0 by nothing (no DNAT), and one forwarded without the DOCKER ACCEPT is dropped."""
    lab, engine = _docker(userland_proxy=True)
    out = engine.receive(b"", "eth0", 1.0)
    assert out.dropped
    internet = lab.hosts["internet"]
    lab.at(1.0, lambda: internet.tcp_connect("172.17.0.2", 22, sport=40000))  # straight to the bridge network
    lab.run(until=1.5)
    assert not [c for c in lab.on("docker0") if c.direction == "out"]
    drops = [d for o in lab.outputs for d in o.dropped]
    assert drops and drops[-1].where == "FORWARD/filter"
    filt = engine.rules.tables["filter"].chains["FORWARD"]
    assert filt.policy == "DROP" and filt.packets >= 1
