"""The classic experiments, built in: each is a host model, a ruleset and a traffic script for a `Lab`.

- `docker`: Docker's default bridge with its classic ruleset (§6, userland-proxy=true), as in the
  write-up "Linux下实现NAT": a container pings 8.8.8.8 (MASQUERADE), then an outside client fetches a
  page through the published port 10000 → 172.17.0.2:8000 (DNAT). Addresses and MACs are the
  write-up's own (offline replay sends nothing, so any address may appear).
- `qemu`: two VMs behind tap0 (192.168.129.0/24) and tap1 (192.168.130.0/24) on a host whose uplink is
  192.168.0.108, with `-I POSTROUTING -s 192.168.128.0/20 -j SNAT --to-source 192.168.0.108`; both VMs
  ping the same outside host with the same ICMP id, then use the same UDP and TCP source port.
- `hairpin`: a LAN client reaches a LAN server through the router's public address (§8), with and
  without the hairpin MASQUERADE rule.
- `port-clash`: two inside hosts with the same source port, and a `--to-ports` range that runs out (§4.6).
- `basic`: the smallest useful MASQUERADE gateway.
- `docker28`, `kube-proxy`: the rulesets Docker 28 and kube-proxy write today (natbox.demos.modern).
- `docker6`: Docker 27+'s IPv6 default bridge through ip6tables (natbox.demos.docker6).
- `qemu6`: `qemu` with IPv6 ULA subnets on the taps behind one ip6tables SNAT address (natbox.demos.qemu6).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from natbox.conntrack.tuple import parse_addr
from natbox.demos import docker6, modern, qemu6
from natbox.engine.host import Host, Interface, Route
from natbox.netfilter import NFPROTO_IPV4, NFPROTO_IPV6
from natbox.sim.lab import Lab

__all__ = ["DEMOS", "Demo"]

HTTP_REQUEST = (b"GET / HTTP/1.1\r\nHost: 45.77.200.180:10000\r\nUser-Agent: curl/7.64.1\r\n"
                b"Accept: */*\r\n\r\n")
HTTP_RESPONSE = (b"HTTP/1.0 200 OK\r\nServer: SimpleHTTP/0.6 Python/3.8.6\r\nDate: Sun, 22 Nov 2026 "
                 b"15:22:07 GMT\r\nContent-type: text/html; charset=utf-8\r\nContent-Length: 12\r\n\r\n"
                 b"hello natbox")


def dns_query(name: str, ident: int) -> bytes:
    """A DNS query for `name` (type A, class IN, recursion desired), as a stub resolver sends it."""
    qname = b"".join(len(label).to_bytes(1, "big") + label.encode() for label in name.split(".")) + b"\x00"
    return ident.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + qname + b"\x00\x01\x00\x01"


def _mac(text: str) -> bytes:
    return bytes(int(x, 16) for x in text.split(":"))


@dataclass(frozen=True)
class Demo:
    """A built-in experiment."""

    name: str
    title: str
    description: str
    build: Callable[[], tuple[Host, str]]  # the host and its ruleset (iptables-save text)
    script: Callable[[Lab], None]  # attaches end hosts and schedules traffic
    interfaces: tuple[str, ...]  # interfaces to show, in order
    questions: tuple[str, ...] = ()  # what the demo answers, printed with the results
    tables: tuple[str, ...] = ("nat",)  # the tables whose counters are printed (iptables -t T -nvL)
    family: int = NFPROTO_IPV4  # NFPROTO_IPV6: `build` returns an ip6tables ruleset (the engine's rules6)


# --- docker -----------------------------------------------------------------------------------------

DOCKER_RULES = """\
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -i docker0 -o docker0 -j ACCEPT
-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 8000 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A POSTROUTING -s 172.17.0.2/32 -d 172.17.0.2/32 -p tcp -m tcp --dport 8000 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 10000 -j DNAT --to-destination 172.17.0.2:8000
COMMIT
"""


def _docker_host() -> tuple[Host, str]:
    host = Host(name="vultr", ip_forward=True)
    host.add_interface(Interface("eth0", mac=_mac("56:00:04:7c:7c:23")))
    host.add_interface(Interface("docker0", mac=_mac("02:42:d5:35:3a:3c"), kind="bridge"))
    host.add_address("eth0", parse_addr("45.77.200.180"), 23)
    host.add_address("docker0", parse_addr("172.17.0.1"), 16)
    host.routes.append(Route(0, 0, "eth0", parse_addr("45.77.200.1")))
    return host, DOCKER_RULES


def _docker_script(lab: Lab) -> None:
    ctr = lab.add_host("container", "docker0", "172.17.0.2/16", gateway="172.17.0.1", mac="02:42:ac:11:00:02")
    lab.add_host("internet", "eth0", "45.77.200.1/23", mac="06:7c:16:88:fe:87",
                 extra_addrs=("8.8.8.8", "114.246.99.100"))
    ctr.listen_tcp[8000] = HTTP_RESPONSE
    internet = lab.hosts["internet"]
    lab.at(0.0, lambda: ctr.ping("8.8.8.8", ident=28, seq=265))
    lab.at(1.0, lambda: ctr.ping("8.8.8.8", ident=28, seq=266))
    lab.at(2.0, lambda: internet.tcp_connect("45.77.200.180", 10000, sport=60677, request=HTTP_REQUEST,
                                             src="114.246.99.100"))


# --- qemu -------------------------------------------------------------------------------------------

QEMU_RULES = """\
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -s 192.168.128.0/20 -j SNAT --to-source 192.168.0.108
COMMIT
"""


def _qemu_host() -> tuple[Host, str]:
    host = Host(name="qemu-host", ip_forward=True)
    host.add_interface(Interface("eth0", mac=_mac("52:54:00:c0:a8:6c")))
    host.add_interface(Interface("tap0", mac=_mac("fe:54:00:81:00:01"), kind="tap"))
    host.add_interface(Interface("tap1", mac=_mac("fe:54:00:82:00:01"), kind="tap"))
    host.add_address("eth0", parse_addr("192.168.0.108"), 24)
    host.add_address("tap0", parse_addr("192.168.129.1"), 24)
    host.add_address("tap1", parse_addr("192.168.130.1"), 24)
    host.routes.append(Route(0, 0, "eth0", parse_addr("192.168.0.1")))
    return host, QEMU_RULES


def _qemu_script(lab: Lab) -> None:
    vm1 = lab.add_host("vm1", "tap0", "192.168.129.110/24", gateway="192.168.129.1", mac="52:54:00:12:34:01")
    vm2 = lab.add_host("vm2", "tap1", "192.168.130.110/24", gateway="192.168.130.1", mac="52:54:00:12:34:02")
    cloud = lab.add_host("router", "eth0", "192.168.0.1/24", mac="52:54:00:c0:a8:01",
                         extra_addrs=("121.40.12.34",))
    cloud.listen_udp[5000] = b"pong"
    cloud.listen_tcp[80] = b"HTTP/1.0 200 OK\r\n\r\nhi"
    # both VMs ping the same host with the same ICMP id: the second id must be remapped
    lab.at(0.0, lambda: vm1.ping("121.40.12.34", ident=0x4242, seq=1))
    lab.at(0.5, lambda: vm2.ping("121.40.12.34", ident=0x4242, seq=1))
    # the same UDP source port from both
    lab.at(1.0, lambda: vm1.udp_send("121.40.12.34", 5000, b"ping", sport=40000))
    lab.at(1.5, lambda: vm2.udp_send("121.40.12.34", 5000, b"ping", sport=40000))
    # the same TCP source port from both
    lab.at(2.0, lambda: vm1.tcp_connect("121.40.12.34", 80, sport=45000, request=b"GET / HTTP/1.0\r\n\r\n"))
    lab.at(2.5, lambda: vm2.tcp_connect("121.40.12.34", 80, sport=45000, request=b"GET / HTTP/1.0\r\n\r\n"))


# --- basic ------------------------------------------------------------------------------------------

BASIC_RULES = """\
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -o eth1 -j MASQUERADE
COMMIT
"""


def _basic_host() -> tuple[Host, str]:
    host = Host(name="gateway", ip_forward=True)
    host.add_interface(Interface("eth0", mac=_mac("02:00:00:00:00:01")))
    host.add_interface(Interface("eth1", mac=_mac("02:00:00:00:01:01")))
    host.add_address("eth0", parse_addr("192.168.50.1"), 24)
    host.add_address("eth1", parse_addr("198.51.100.1"), 24)
    return host, BASIC_RULES


def _basic_script(lab: Lab) -> None:
    client = lab.add_host("client", "eth0", "192.168.50.2/24", gateway="192.168.50.1")
    server = lab.add_host("server", "eth1", "198.51.100.2/24")
    server.listen_udp[5000] = None
    lab.at(0.0, lambda: client.ping("198.51.100.2", ident=7, seq=1))
    lab.at(1.0, lambda: client.udp_send("198.51.100.2", 5000, b"hello", sport=40000))
    lab.at(2.0, lambda: client.udp_send("198.51.100.2", 5999, b"anyone?", sport=40001))


# --- hairpin ----------------------------------------------------------------------------------------

HAIRPIN_RULES = """\
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -d 198.51.100.1/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 192.168.50.10:80
-A POSTROUTING -o eth1 -j MASQUERADE
COMMIT
"""
HAIRPIN_FIX = ["-t", "nat", "-I", "POSTROUTING", "-s", "192.168.50.0/24", "-d", "192.168.50.10/32", "-p", "tcp",
               "--dport", "80", "-j", "MASQUERADE"]


def _hairpin_script(lab: Lab) -> None:
    from natbox.rules.parser import parse_argv

    client = lab.add_host("client", "eth0", "192.168.50.2/24", gateway="192.168.50.1")
    server = lab.add_host("server", "eth0", "192.168.50.10/24", gateway="192.168.50.1")
    server.listen_tcp[80] = b"HTTP/1.0 200 OK\r\n\r\nhairpin"
    # 1. the LAN client uses the public address: DNAT sends it to the server on the same segment, the
    #    server answers the client directly (L2), the client does not know that reply and resets it
    lab.at(0.0, lambda: client.tcp_connect("198.51.100.1", 8080, sport=41000, request=b"GET / HTTP/1.0\r\n\r\n"))
    # 2. the fix: masquerade hairpinned flows, so the server answers the router (new connections only)
    lab.at(3.0, lambda: lab.engine.rules.execute(parse_argv(list(HAIRPIN_FIX))))
    lab.at(4.0, lambda: client.tcp_connect("198.51.100.1", 8080, sport=41001, request=b"GET / HTTP/1.0\r\n\r\n"))


# --- port-clash -------------------------------------------------------------------------------------

PORT_CLASH_RULES = """\
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -o eth1 -p udp -j MASQUERADE --to-ports 30000-30001
-A POSTROUTING -o eth1 -j MASQUERADE
COMMIT
"""


def _port_clash_host() -> tuple[Host, str]:
    host, _rules = _basic_host()
    return host, PORT_CLASH_RULES


def _port_clash_script(lab: Lab) -> None:
    hosts = [lab.add_host(f"h{i}", "eth0", f"192.168.50.{i + 2}/24", gateway="192.168.50.1") for i in range(3)]
    server = lab.add_host("server", "eth1", "198.51.100.2/24")
    server.listen_tcp[80] = b"HTTP/1.0 200 OK\r\n\r\n"
    server.listen_udp[53] = None
    # TCP: the same source port from two hosts; the first keeps it, the second is moved within its class
    lab.at(0.0, lambda: hosts[0].tcp_connect("198.51.100.2", 80, sport=45000, request=b"GET"))
    lab.at(0.5, lambda: hosts[1].tcp_connect("198.51.100.2", 80, sport=45000, request=b"GET"))
    # a port below 512 stays below 512 when it has to move
    lab.at(1.0, lambda: hosts[0].tcp_connect("198.51.100.2", 80, sport=100, request=b"GET"))
    lab.at(1.5, lambda: hosts[1].tcp_connect("198.51.100.2", 80, sport=100, request=b"GET"))
    # UDP into a 2-port range: two flows fit, the third finds no free tuple and is dropped at confirm
    for i, h in enumerate(hosts):
        query = dns_query("example.com", 0x1000 + i)
        lab.at(3.0 + i * 0.5, functools.partial(h.udp_send, "198.51.100.2", 53, query, sport=40000))


DEMOS: dict[str, Demo] = {
    "docker": Demo(
        "docker", "Docker's default bridge: MASQUERADE out, DNAT in (-p 10000:8000)",
        "A container (172.17.0.2 on docker0) pings 8.8.8.8; then 114.246.99.100 fetches a page from "
        "the container through the host's published port 10000.",
        _docker_host, _docker_script, ("docker0", "eth0"),
        ("Where does MASQUERADE act? POSTROUTING, on the first packet of each connection only.",
         "What does DNAT do to each packet? PREROUTING rewrites the destination 45.77.200.180:10000 to "
         "172.17.0.2:8000; replies are un-DNATed from the conntrack entry, with no rule consulted."),
    ),
    "qemu": Demo(
        "qemu", "Two VMs behind one SNAT address",
        "vm1 (tap0) and vm2 (tap1) share 192.168.0.108 through "
        "`-I POSTROUTING -s 192.168.128.0/20 -j SNAT --to-source 192.168.0.108`.",
        _qemu_host, _qemu_script, ("tap0", "tap1", "eth0"),
        ("How does a reply to 192.168.0.108 find the right VM? Through the conntrack entry's reply tuple: "
         "NAT keeps each reply tuple unique by changing the ICMP id or source port of the second flow.",),
    ),
    "hairpin": Demo(
        "hairpin", "Hairpin NAT: reaching a LAN server through the public address (§8)",
        "client and server share eth0's LAN; the client connects to 198.51.100.1:8080, which DNATs to the "
        "server. Without SNAT the server answers the client directly and the client resets that reply. At "
        "t=3 s the hairpin MASQUERADE rule is inserted; the next connection works.",
        lambda: (_basic_host()[0], HAIRPIN_RULES), _hairpin_script, ("eth0",),
        ("Why does hairpin NAT need SNAT? Without it the reply bypasses the router, so nothing un-DNATs it: "
         "the first connection's entry stays SYN_SENT [UNREPLIED].",
         "Do new rules change existing connections? No: the rule inserted at t=3 s only affects the second "
         "connection, whose reply tuple now goes to the router (dst=192.168.50.1)."),
    ),
    "port-clash": Demo(
        "port-clash", "Port clashes: how NAT keeps every reply tuple unique (§4.5, §4.6)",
        "Three hosts behind one address use the same source ports; a 2-port UDP range runs out.",
        _port_clash_host, _port_clash_script, ("eth1",),
        ("The first flow keeps its source port; a clashing flow gets another port of the same class "
         "(<512, 512-1023, >=1024).",
         "When no free port is left in --to-ports, the packet is dropped at confirm: conntrack -S insert_failed."),
    ),
    "basic": Demo(
        "basic", "A MASQUERADE gateway",
        "A client pings and sends UDP through a gateway that masquerades out of eth1.",
        _basic_host, _basic_script, ("eth0", "eth1"),
    ),
    "docker28": Demo(
        "docker28", "Docker 28's ruleset: DOCKER-FORWARD, DOCKER-CT, DOCKER-BRIDGE, a user network, -p 8080:80",
        "The default bridge docker0 and a user-defined network bridge1 whose container c1 (172.18.0.2) is "
        "published as -p 8080:80 (moby's iptablesdoc usernet-portmap.md, v28.0.1). ctr0 on docker0 pings out; "
        "10.99.0.7 fetches a page through 198.51.100.10:8080; ctr0 sends to c1 directly (isolated); 10.99.0.7 "
        "tries 172.18.0.2:80 directly (raw DROP).",
        modern.docker28_host, modern.docker28_script, ("docker0", "bridge1", "eth0"),
        modern.DOCKER28_QUESTIONS, ("raw", "filter", "nat"),
    ),
    "kube-proxy": Demo(
        "kube-proxy", "kube-proxy's iptables mode: KUBE-SERVICES, KUBE-SVC/KUBE-SEP, statistic, KUBE-MARK-MASQ",
        "A node with three pods on cni0 behind a ClusterIP service 10.96.0.10:80 (3 endpoints) and a NodePort "
        "service on :30080 (2 endpoints). 10.99.0.7 opens three connections to the NodePort and three to the "
        "ClusterIP; the random draws (seeded: --seed changes them) spread them over the pods.",
        modern.kube_proxy_host, modern.kube_proxy_script, ("eth0", "cni0"),
        modern.KUBE_PROXY_QUESTIONS, ("nat", "filter"),
    ),
    "docker6": Demo(
        "docker6", "Docker 27+ with an IPv6 default bridge: NAT66 MASQUERADE out, DNAT in (-p 8080:80)",
        "The container fd00:d0c::2 on docker0 (ULA fd00:d0c::/64) pings and queries 2001:db8:77::7; then "
        "2001:db8:77::7 fetches a page through [2001:db8:300::1]:8080; then the container itself tries "
        "[2001:db8:300::1]:8080. Ruleset: Docker 27's ip6tables rules (reference §6, from moby's source).",
        docker6.docker6_host, docker6.docker6_script, ("docker0", "eth0"),
        docker6.DOCKER6_QUESTIONS, ("nat", "filter"), NFPROTO_IPV6,
    ),
    "qemu6": Demo(
        "qemu6", "Two VMs behind one SNAT address, in IPv6 (NAT66)",
        "vm1 (tap0, fd00:80:1::110) and vm2 (tap1, fd00:80:2::110) share 2001:db8:108::108 through "
        "`ip6tables -t nat -A POSTROUTING -s fd00:80::/32 -j SNAT --to-source 2001:db8:108::108`.",
        qemu6.qemu6_host, qemu6.qemu6_script, ("tap0", "tap1", "eth0"), qemu6.QEMU6_QUESTIONS, ("nat",),
        NFPROTO_IPV6,
    ),
}
