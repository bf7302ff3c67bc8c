"""`natbox bench rules`: what today's big rulesets cost per packet and to load, and ipset's O(1) lookup.

Figures, never a pass/fail (a benchmark reports). All in one run, so the ratios compare like with like; times
are the process's CPU time (time.process_time), so other load on the machine inflates them less:

1. **Docker's classic FORWARD chains** with N published ports (§6): one `filter FORWARD` traversal per packet.
2. **Docker 28** (`docker28_ruleset`: the chains of scenarios/docker28-published-port.toml, moby's
   iptablesdoc usernet-portmap.md at v28.0.1, with N published ports, each a raw direct-access DROP, a filter
   DOCKER ACCEPT and a nat DOCKER DNAT): the load time (`parse_restore` + `Ruleset.restore`) and the cost of a
   new connection's first packet through `Engine.receive` (raw, conntrack, nat, filter, NAT, output), next to
   the same packet through an engine whose only rule is one DNAT: the ratio is what the ruleset adds.
3. **kube-proxy** (`kube_proxy_ruleset`: the chains of scenarios/kube-proxy-services.toml for S ClusterIP
   services of 3 endpoints each): load time, and a new connection to the first and to the last service
   (KUBE-SERVICES is one rule per service, scanned in order, as the kernel scans it: the last costs S rules).
4. **ipset**: `-m set --match-set S src` against a hash:ip set of 10 and of 100,000 elements; the lookup is a
   hash (jhash bucket, natbox.ipset.store), so the two costs are about equal.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from natbox.conntrack.tuple import parse_addr
from natbox.engine.engine import Engine
from natbox.engine.host import Host, Interface, Neighbour
from natbox.ipset.command import IpsetSession
from natbox.ipset.core import IpsetRegistry
from natbox.ipset.scope import using_sets
from natbox.netfilter import Hook
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore
from natbox.skb import Skb
from natbox.wire import ethernet, ipv4, tcp

__all__ = ["bench_docker28", "bench_ipset", "bench_kube_proxy", "docker28_ruleset", "kube_proxy_ruleset"]

EXT_MAC = bytes.fromhex("02000000aa02")
HOST_MAC = bytes.fromhex("020000000101")
POD_MAC = bytes.fromhex("02000000bb02")
CLIENT = parse_addr("198.51.100.7")
PUBLIC = parse_addr("198.51.100.1")


def docker28_ruleset(ports: int) -> str:
    """Docker 28.0.1+'s ruleset for docker0 and bridge1 with `ports` containers ports published (8000+i ->
    172.18.x.y:80), as iptables-save prints it (rule shapes from moby's usernet-portmap.md at v28.0.1)."""
    ctrs = [f"172.18.{(i + 2) >> 8}.{(i + 2) & 255}" for i in range(ports)]
    raw = ["*raw", ":PREROUTING ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
    raw += [f"-A PREROUTING -d {c}/32 ! -i bridge1 -p tcp -m tcp --dport 80 -j DROP" for c in ctrs]
    filt = ["COMMIT", "*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
            ":DOCKER - [0:0]", ":DOCKER-BRIDGE - [0:0]", ":DOCKER-CT - [0:0]", ":DOCKER-FORWARD - [0:0]",
            ":DOCKER-ISOLATION-STAGE-1 - [0:0]", ":DOCKER-ISOLATION-STAGE-2 - [0:0]", ":DOCKER-USER - [0:0]",
            "-A FORWARD -j DOCKER-USER", "-A FORWARD -j DOCKER-FORWARD"]
    filt += [f"-A DOCKER -d {c}/32 ! -i bridge1 -o bridge1 -p tcp -m tcp --dport 80 -j ACCEPT" for c in ctrs]
    filt += ["-A DOCKER ! -i docker0 -o docker0 -j DROP", "-A DOCKER ! -i bridge1 -o bridge1 -j DROP",
             "-A DOCKER-BRIDGE -o docker0 -j DOCKER", "-A DOCKER-BRIDGE -o bridge1 -j DOCKER",
             "-A DOCKER-CT -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
             "-A DOCKER-CT -o bridge1 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
             "-A DOCKER-FORWARD -j DOCKER-CT", "-A DOCKER-FORWARD -j DOCKER-ISOLATION-STAGE-1",
             "-A DOCKER-FORWARD -j DOCKER-BRIDGE", "-A DOCKER-FORWARD -i docker0 -j ACCEPT",
             "-A DOCKER-FORWARD -i bridge1 -j ACCEPT",
             "-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2",
             "-A DOCKER-ISOLATION-STAGE-1 -i bridge1 ! -o bridge1 -j DOCKER-ISOLATION-STAGE-2",
             "-A DOCKER-ISOLATION-STAGE-2 -o bridge1 -j DROP", "-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP",
             "-A DOCKER-USER -j RETURN", "COMMIT"]
    nat = ["*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
           ":POSTROUTING ACCEPT [0:0]", ":DOCKER - [0:0]",
           "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
           "-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER",
           "-A POSTROUTING -s 172.18.0.0/16 ! -o bridge1 -j MASQUERADE",
           "-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE",
           "-A DOCKER -i bridge1 -j RETURN", "-A DOCKER -i docker0 -j RETURN"]
    nat += [f"-A DOCKER ! -i bridge1 -p tcp -m tcp --dport {8000 + i} -j DNAT --to-destination {c}:80"
            for i, c in enumerate(ctrs)]
    return "\n".join([*raw, *filt, *nat, "COMMIT", ""])


def kube_proxy_ruleset(services: int) -> str:
    """kube-proxy's iptables-mode ruleset for `services` ClusterIP services (10.96.x.y:80) of 3 endpoints each
    (10.244.0.0/16 pods on :8080), rule shapes as in scenarios/kube-proxy-services.toml."""
    nat_chains = ["KUBE-MARK-MASQ", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-SERVICES"]
    jumps: list[str] = []
    chains: list[str] = []
    for s in range(services):
        svc = f"KUBE-SVC-{s:016X}"
        nat_chains.append(svc)
        cip = f"10.96.{(s + 10) >> 8}.{(s + 10) & 255}"
        name = f"ns{s % 97}/svc{s}:http"
        jumps.append(f'-A KUBE-SERVICES -d {cip}/32 -p tcp -m comment --comment "{name} cluster IP" -m tcp '
                     f"--dport 80 -j {svc}")
        chains.append(f'-A {svc} ! -s 10.244.0.0/16 -d {cip}/32 -p tcp -m comment --comment "{name} cluster IP" '
                      "-m tcp --dport 80 -j KUBE-MARK-MASQ")
        for e in range(3):
            sep = f"KUBE-SEP-{s:012X}{e:04X}"
            nat_chains.append(sep)
            ep = f"10.244.{(s * 3 + e) >> 8 & 255}.{(s * 3 + e) & 255}"
            stat = (" -m statistic --mode random --probability 0.33333333349" if e == 0 else
                    " -m statistic --mode random --probability 0.50000000000" if e == 1 else "")
            chains.append(f'-A {svc} -m comment --comment "{name} -> {ep}:8080"{stat} -j {sep}')
            chains.append(f'-A {sep} -s {ep}/32 -m comment --comment "{name}" -j KUBE-MARK-MASQ')
            chains.append(f'-A {sep} -p tcp -m comment --comment "{name}" -m tcp -j DNAT --to-destination {ep}:8080')
    lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
             ":KUBE-FORWARD - [0:0]", ":KUBE-SERVICES - [0:0]",
             '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
             '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" '
             "-j KUBE-SERVICES",
             "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
             '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 '
             "-j ACCEPT",
             '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate '
             "RELATED,ESTABLISHED -j ACCEPT", "COMMIT",
             "*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
             ":POSTROUTING ACCEPT [0:0]"]
    lines += [f":{c} - [0:0]" for c in sorted(nat_chains)]
    lines += ['-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
              '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
              '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
              "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
              "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
              "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
              '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
              "-j MASQUERADE --random-fully"]
    lines += jumps
    lines.append('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last '
                 'rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS')
    lines += chains
    return "\n".join([*lines, "COMMIT", ""])


def _load(text: str, origin: str) -> tuple[Ruleset, float]:
    t0 = time.process_time()
    rs = Ruleset()
    rs.restore(parse_restore(text, file=origin))
    return rs, time.process_time() - t0


def _engine(inside: str, inside_addr: str, plen: int, ruleset: Ruleset, inside_peers: list[str]) -> Engine:
    host = Host(name="bench", ip_forward=True)
    host.add_interface(Interface("eth0", mac=HOST_MAC))
    host.add_interface(Interface(inside, mac=bytes.fromhex("020000000201")))
    host.add_address("eth0", PUBLIC, 24)
    host.add_address(inside, parse_addr(inside_addr), plen)
    host.neighbours.append(Neighbour("eth0", CLIENT, EXT_MAC))
    host.neighbours.extend(Neighbour(inside, parse_addr(a), POD_MAC) for a in inside_peers)
    return Engine(host, ruleset=ruleset, seed=1)


def _syn_cost(engine: Engine, dst: int, dport: int, packets: int) -> float:
    """Microseconds per first packet of a new connection from outside (each packet a new source port and,
    past 60,000 of them, a new source address), through Engine.receive; the conntrack table grows by one per
    packet, as it would."""
    frames = []
    for i in range(packets + 100):
        src = CLIENT + (i // 60000) * 256
        seg = tcp.build_tcp(src, dst, 1024 + i % 60000, dport, seq=1, ack=0, flags=tcp.SYN, window=1024)
        frames.append(bytes(ethernet.build_ethernet(HOST_MAC, EXT_MAC, ethernet.ETH_P_IP,
                                                    ipv4.build_ipv4(src, dst, 6, seg, ttl=64))))
    receive = engine.receive
    for f in frames[:100]:
        receive(f, "eth0", 0.0)
    t0 = time.process_time()
    for f in frames[100:]:
        receive(f, "eth0", 1.0)
    return (time.process_time() - t0) / packets * 1e6


def _one_dnat(dport: int, to: str) -> Ruleset:
    rs, _ = _load("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT "
                  f"[0:0]\n-A PREROUTING -p tcp -m tcp --dport {dport} -j DNAT --to-destination {to}\nCOMMIT\n",
                  "one-dnat")
    return rs


def bench_docker28(ports: int, packets: int, say: Callable[[str], None]) -> None:
    text = docker28_ruleset(ports)
    rules, load_s = _load(text, "docker28")
    n = sum(1 for line in text.splitlines() if line.startswith("-A "))
    last = f"172.18.{(ports + 1) >> 8}.{(ports + 1) & 255}"
    peers = [f"172.18.{(i + 2) >> 8}.{(i + 2) & 255}" for i in range(ports)]
    say(f"Docker 28 (DOCKER-FORWARD/CT/BRIDGE, isolation, raw direct-access DROP), {ports} published ports, "
        f"{n} rules: load {load_s * 1e3:.1f} ms")
    full = _syn_cost(_engine("bridge1", "172.18.0.1", 16, rules, peers), PUBLIC, 8000 + ports - 1, packets)
    base = _syn_cost(_engine("bridge1", "172.18.0.1", 16, _one_dnat(8000 + ports - 1, f"{last}:80"), peers),
                     PUBLIC, 8000 + ports - 1, packets)
    say(f"  new connection to the last published port  {full:7.1f} us/packet   one DNAT rule {base:6.1f} us   "
        f"ratio {full / base:5.2f}")


def bench_kube_proxy(services: int, packets: int, say: Callable[[str], None]) -> None:
    text = kube_proxy_ruleset(services)
    rules, load_s = _load(text, "kube-proxy")
    n = sum(1 for line in text.splitlines() if line.startswith("-A "))
    say(f"kube-proxy (KUBE-SERVICES -> KUBE-SVC -> statistic -> KUBE-SEP), {services:,} services x 3 endpoints, "
        f"{n:,} rules: load {load_s * 1e3:.0f} ms")
    pods = [f"10.244.{j >> 8 & 255}.{j & 255}" for j in range(services * 3)]
    first = _syn_cost(_engine("cni0", "10.244.0.1", 16, rules, pods), parse_addr("10.96.0.10"), 80, packets)
    s = services - 1
    last_ip = parse_addr(f"10.96.{(s + 10) >> 8}.{(s + 10) & 255}")
    last = _syn_cost(_engine("cni0", "10.244.0.1", 16, rules, pods), last_ip, 80, packets)
    base = _syn_cost(_engine("cni0", "10.244.0.1", 16, _one_dnat(80, "10.244.0.2:8080"), pods),
                     parse_addr("10.96.0.10"), 80, packets)
    say(f"  new connection to the first service         {first:7.1f} us/packet   one DNAT rule {base:6.1f} us   "
        f"ratio {first / base:5.2f}")
    say(f"  new connection to the last service          {last:7.1f} us/packet   one DNAT rule {base:6.1f} us   "
        f"ratio {last / base:5.2f}  (KUBE-SERVICES scanned to rule {services:,})")


def _set_rules(size: int, lookups: int) -> float:
    """Microseconds per `-m set --match-set s src` evaluation against a hash:ip set of `size` addresses
    (the packet's source is in the set: a hit)."""
    reg = IpsetRegistry()
    session = IpsetSession(reg, 0.0, lambda: 0x2545F491)
    maxelem = max(65536, size)
    entries = "".join(f"add s 10.{1 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}\n" for i in range(size))
    rc, _, err = session.run(["restore"], f"create s hash:ip family inet hashsize 1024 maxelem {maxelem}\n"
                             + entries)
    if rc:
        raise RuntimeError(err)
    with using_sets(reg):
        rs, _ = _load("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                      "-A FORWARD -m set --match-set s src -j ACCEPT\nCOMMIT\n", "set")
    engine = _engine("lan0", "10.0.0.1", 8, rs, [])
    engine.ipsets = reg
    ctx = engine._ctx
    ctx.hook = Hook.FORWARD
    last = size - 1
    src = parse_addr(f"10.{1 + (last >> 16)}.{(last >> 8) & 255}.{last & 255}")
    skb = Skb(bytearray(ipv4.build_ipv4(src, CLIENT, 17, bytes(8))), iif="lan0")
    skb.oif = "eth0"
    run = rs.run
    for _ in range(100):
        run("filter", Hook.FORWARD, skb, ctx)
    t0 = time.process_time()
    for _ in range(lookups):
        run("filter", Hook.FORWARD, skb, ctx)
    return (time.process_time() - t0) / lookups * 1e6


def bench_ipset(lookups: int, say: Callable[[str], None]) -> None:
    small, big = _set_rules(10, lookups), _set_rules(100_000, lookups)
    say(f"ipset hash:ip, one -m set --match-set rule (a hit): 10 elements {small:5.2f} us, 100,000 elements "
        f"{big:5.2f} us   ratio {big / small:4.2f}  (O(1): a hash bucket, not a scan)")
