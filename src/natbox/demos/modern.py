"""Today's defaults as demos (issue #14): the rulesets Docker 28 and kube-proxy write, from their sources.

- `docker28`: Docker 28.0.1+'s ruleset as moby's integration/network/bridge/iptablesdoc/generated/
  usernet-portmap.md records it at v28.0.1 (commit bbd0a17ccc67e48d4a69393287b7fcc4f0578683): the default bridge
  docker0 and a user-defined network bridge1 with a container published as `-p 8080:80`. The page's bridge1
  subnet 192.0.2.0/24 is 172.18.0.0/16 here (Docker's default for a second network). The same ruleset is
  difftested against the kernel in scenarios/docker28-published-port.toml.
- `kube-proxy`: kube-proxy's iptables mode for a ClusterIP service with three endpoints and a NodePort service
  with two, in the form kubernetes' pkg/proxy/iptables/proxier_test.go (TestOverallIPTablesRules, stored
  version 2bb4b1042dfd3a7645d1812037074b5eeedfab78) expects, plus the jump rules and `--random-fully`;
  scenarios/kube-proxy-services.toml names every difference and is difftested against the kernel.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

from natbox.conntrack.tuple import parse_addr
from natbox.engine.host import Host, Interface, Route
from natbox.sim.lab import Lab

__all__ = ["DOCKER28_QUESTIONS", "KUBE_PROXY_QUESTIONS", "docker28_host", "docker28_script", "kube_proxy_host",
           "kube_proxy_script", "scenario_rules"]



def _scenarios() -> Path:
    """The repository's scenarios/: shipped inside the package as natbox/scenarios by every built wheel (setup.py
    copies it there, compiled or not); a checkout (the editable install) has it beside src/."""
    shipped = Path(str(resources.files("natbox"))) / "scenarios"
    return shipped if shipped.is_dir() else Path(str(resources.files("natbox"))).parents[1] / "scenarios"


SCENARIOS = _scenarios()


def scenario_rules(name: str) -> str:
    """The `[router] rules` of a scenario file: demo and difftest share one copy of each ruleset."""
    import tomllib

    path = SCENARIOS / f"{name}.toml"
    return str(tomllib.loads(path.read_text(encoding="utf-8"))["router"]["rules"]).lstrip("\n")


def _mac(text: str) -> bytes:
    return bytes(int(x, 16) for x in text.split(":"))


# --- docker28 ---------------------------------------------------------------------------------------


@functools.cache
def _docker28_rules() -> str:
    return scenario_rules("docker28-published-port")


def docker28_host() -> tuple[Host, str]:
    host = Host(name="docker-host", ip_forward=True)
    host.add_interface(Interface("eth0", mac=_mac("52:54:00:12:00:0a")))
    host.add_interface(Interface("docker0", mac=_mac("02:42:d5:35:3a:3c"), kind="bridge"))
    host.add_interface(Interface("bridge1", mac=_mac("02:42:7e:51:0c:11"), kind="bridge"))
    host.add_address("eth0", parse_addr("198.51.100.10"), 24)
    host.add_address("docker0", parse_addr("172.17.0.1"), 16)
    host.add_address("bridge1", parse_addr("172.18.0.1"), 16)
    host.routes.append(Route(0, 0, "eth0", parse_addr("198.51.100.1")))
    return host, _docker28_rules()


def docker28_script(lab: Lab) -> None:
    ctr0 = lab.add_host("ctr0", "docker0", "172.17.0.2/16", gateway="172.17.0.1", mac="02:42:ac:11:00:02")
    c1 = lab.add_host("c1", "bridge1", "172.18.0.2/16", gateway="172.18.0.1", mac="02:42:ac:12:00:02")
    internet = lab.add_host("internet", "eth0", "198.51.100.1/24", mac="52:54:00:12:00:01",
                            extra_addrs=("10.99.0.1", "10.99.0.7"))
    c1.listen_tcp[80] = b"HTTP/1.0 200 OK\r\n\r\nc1 on bridge1"
    # 1. the default bridge's container goes out: DOCKER-FORWARD accepts -i docker0, MASQUERADE
    lab.at(0.0, lambda: ctr0.ping("10.99.0.1", ident=28, seq=1))
    # 2. the published port: nat DOCKER DNATs 198.51.100.10:8080 to 172.18.0.2:80, filter DOCKER accepts it
    lab.at(1.0, lambda: internet.tcp_connect("198.51.100.10", 8080, sport=50000, request=b"GET / HTTP/1.0\r\n\r\n",
                                             src="10.99.0.7"))
    # 3. docker0 -> bridge1 directly (DNS to c1): DOCKER-ISOLATION-STAGE-1 -> STAGE-2 drops it
    lab.at(3.0, lambda: ctr0.udp_send("172.18.0.2", 53, b"isolated?", sport=40000))
    # 4. the container's own address from outside: the raw table drops it before conntrack
    lab.at(4.0, lambda: internet.tcp_connect("172.18.0.2", 80, sport=50001, request=b"GET / HTTP/1.0\r\n\r\n",
                                             src="10.99.0.7"))


DOCKER28_QUESTIONS = (
    "Where did Docker 28 move its FORWARD rules? Into DOCKER-FORWARD: DOCKER-CT accepts replies "
    "(RELATED,ESTABLISHED) to each bridge, DOCKER-ISOLATION-STAGE-1/2 keep networks apart, DOCKER-BRIDGE sends "
    "traffic into a bridge to DOCKER, and each bridge's own traffic out is accepted last. DOCKER-USER still "
    "comes first.",
    "What does the published port need? A DNAT in nat DOCKER (`! -i bridge1`, so containers on bridge1 reach "
    "docker-proxy instead) and an ACCEPT in filter DOCKER for the container's address and port; every other "
    "packet into bridge1 from elsewhere meets `! -i bridge1 -o bridge1 -j DROP`.",
    "Why does 172.18.0.2:80 from outside get nothing? raw PREROUTING drops it (`-d 172.18.0.2 ! -i bridge1 "
    "--dport 80 -j DROP`, 28.0.1's direct-access filter) before conntrack or DNAT see it; the raw counters show it.",
)

# --- kube-proxy -------------------------------------------------------------------------------------


@functools.cache
def _kube_rules() -> str:
    return scenario_rules("kube-proxy-services")


def kube_proxy_host() -> tuple[Host, str]:
    host = Host(name="node1", ip_forward=True)
    host.add_interface(Interface("eth0", mac=_mac("52:54:00:12:00:0a")))
    host.add_interface(Interface("cni0", mac=_mac("0a:58:0a:f4:00:01"), kind="bridge"))
    host.add_address("eth0", parse_addr("198.51.100.10"), 24)
    host.add_address("cni0", parse_addr("10.244.0.1"), 24)
    host.routes.append(Route(0, 0, "eth0", parse_addr("198.51.100.1")))
    return host, _kube_rules()


def kube_proxy_script(lab: Lab) -> None:
    pods = [lab.add_host(f"pod{i}", "cni0", f"10.244.0.{i}/24", gateway="10.244.0.1",
                         mac=f"0a:58:0a:f4:00:{i:02x}") for i in (2, 3, 4)]
    for pod in pods:
        pod.listen_tcp[8080] = f"HTTP/1.0 200 OK\r\n\r\nfrom {pod.name}".encode()
    client = lab.add_host("client", "eth0", "198.51.100.1/24", mac="52:54:00:12:00:01", extra_addrs=("10.99.0.7",))
    request = b"GET / HTTP/1.0\r\n\r\n"
    # three connections to the NodePort and three to the ClusterIP (routed to the node): each draws again
    for i in range(3):
        lab.at(0.5 * i, functools.partial(client.tcp_connect, "198.51.100.10", 30080, sport=50000 + i,
                                          request=request, src="10.99.0.7"))
        lab.at(2.0 + 0.5 * i, functools.partial(client.tcp_connect, "10.96.0.10", 80, sport=51000 + i,
                                                request=request, src="10.99.0.7"))


KUBE_PROXY_QUESTIONS = (
    "How does a service pick a pod? KUBE-SVC-* tries its KUBE-SEP-* chains in order with `-m statistic --mode "
    "random --probability 1/n, 1/(n-1), ...`, the last unconditionally: each pod gets 1/n of the new connections. "
    "Only a connection's first packet draws: the rest follow its conntrack entry (nat rules see only NEW).",
    "Why is every reply's source right? DNAT happened in PREROUTING; the reply tuple in conntrack un-DNATs it.",
    "Why do the pods see 10.244.0.1? KUBE-MARK-MASQ ORs 0x4000 into the packet's mark (from outside the "
    "cluster CIDR, or for a NodePort); KUBE-POSTROUTING clears it and MASQUERADEs with --random-fully, so the "
    "source port is random (fully: no attempt to keep the client's).",
)
