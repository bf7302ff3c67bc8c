"""`natbox bench`: the engine's packet rate and memory per conntrack entry, with a floor to compare to.

What it measures, in one run on one core:
1. **engine**: established TCP and UDP flows through a MASQUERADE gateway (`-o eth1 -j MASQUERADE`,
   empty filter table). Every packet takes the full path: Ethernet, `ip_rcv_core` (header checksum),
   conntrack lookup with L4 checksum verification and TCP window tracking, NAT, routing, TTL, output.
   TCP flows carry data one way and ACKs the other, with advancing sequence numbers, so the window
   tracker sees a real stream.
2. **floor**: a bare Python loop doing the least any NAT must do to each of the same frames: copy it,
   rewrite the source address and port, and patch the IP and L4 checksums incrementally. The engine's
   figure is printed as a ratio to it.
3. **IPv6**: the same workload in IPv6 through a NAT66 MASQUERADE gateway (cli/bench6.py), in the same
   run, printed beside IPv4 with the ratio of the two rates (issue #15 aims at 0.8).
4. **memory**: bytes per conntrack entry (both tuples hashed, TCP state included) with N entries in the
   table, measured with tracemalloc.

A benchmark reports figures; it never fails. Use `--packets` and `--entries` for quick runs.
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from collections.abc import Sequence
from typing import Protocol

from natbox.cli.builds import build_name
from natbox.conntrack.conn import Conn, TcpConntrack
from natbox.conntrack.table import ConntrackTable
from natbox.conntrack.tuple import ConnTuple, parse_addr
from natbox.engine.engine import Engine
from natbox.engine.host import Host, Interface, Neighbour
from natbox.netfilter import CtStatus, TcpState
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore
from natbox.wire import ethernet, ipv4, tcp, udp
from natbox.wire.checksum import csum_replace2, csum_replace4
from natbox.wire.layout import ETH_HDR_LEN, IPH_CHECK, IPH_PROTOCOL, IPH_SADDR, TCPH_CHECK, UDPH_CHECK

__all__ = ["bench_main", "build_name"]

RULES = ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
         ":POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -o eth1 -j MASQUERADE\nCOMMIT\n")
GW_LAN_MAC = bytes.fromhex("020000000001")
GW_WAN_MAC = bytes.fromhex("020000000101")
SERVER = parse_addr("198.51.100.2")
PUBLIC = parse_addr("198.51.100.1")
PAYLOAD = bytes(64)


def _gateway() -> Engine:
    host = Host(name="bench", ip_forward=True)
    host.add_interface(Interface("eth0", mac=GW_LAN_MAC))
    host.add_interface(Interface("eth1", mac=GW_WAN_MAC))
    host.add_address("eth0", parse_addr("10.0.0.1"), 16)
    host.add_address("eth1", PUBLIC, 24)
    host.neighbours.append(Neighbour("eth1", SERVER, bytes.fromhex("02000000aa02")))
    ruleset = Ruleset()
    ruleset.restore(parse_restore(RULES, file="bench"))
    return Engine(host, ruleset=ruleset, seed=1)


def _client(i: int) -> int:
    return parse_addr("10.0.1.0") + i


def _frame(dst_mac: bytes, src_mac: bytes, datagram: bytes | bytearray) -> bytes:
    return bytes(ethernet.build_ethernet(dst_mac, src_mac, ethernet.ETH_P_IP, datagram))


class _TcpFlow:
    """One TCP connection's frames: client data out, server ACKs back (the reply side is post-NAT)."""

    def __init__(self, client: int, sport: int) -> None:
        self.client, self.sport = client, sport
        self.cmac = b"\x02\x00" + client.to_bytes(4, "big")
        self.cseq, self.sseq = 1000, 5000

    def _seg(self, src: int, dst: int, sp: int, dp: int, seq: int, ack: int, flags: int, data: bytes) -> bytes:
        seg = tcp.build_tcp(src, dst, sp, dp, seq=seq, ack=ack, flags=flags, window=65535, payload=data)
        return bytes(ipv4.build_ipv4(src, dst, 6, seg, ttl=64))

    def out(self, flags: int, data: bytes = b"") -> bytes:
        d = self._seg(self.client, SERVER, self.sport, 80, self.cseq, self.sseq, flags, data)
        self.cseq += len(data) + (1 if flags & (tcp.SYN | tcp.FIN) else 0)
        return _frame(GW_LAN_MAC, self.cmac, d)

    def back(self, flags: int, data: bytes = b"") -> bytes:
        d = self._seg(SERVER, PUBLIC, 80, self.sport, self.sseq, self.cseq, flags, data)
        self.sseq += len(data) + (1 if flags & (tcp.SYN | tcp.FIN) else 0)
        return _frame(GW_WAN_MAC, bytes.fromhex("02000000aa02"), d)


def _workload(flows: int, packets: int) -> tuple[Engine, list[tuple[bytes, str]]]:
    """Open `flows` TCP and `flows` UDP flows, then build `packets` frames of established traffic."""
    engine = _gateway()
    tcp_flows = [_TcpFlow(_client(i), 20000 + i) for i in range(flows)]
    for f in tcp_flows:  # handshake (the server keeps the client's port: no clash with one flow per port)
        engine.receive(f.out(tcp.SYN), "eth0", 0.0)
        engine.receive(f.back(tcp.SYN | tcp.ACK), "eth1", 0.0)
        engine.receive(f.out(tcp.ACK), "eth0", 0.0)
    udp_out, udp_back = [], []
    for i in range(flows):
        c = _client(i)
        cmac = b"\x02\x00" + c.to_bytes(4, "big")
        d = ipv4.build_ipv4(c, SERVER, 17, udp.build_udp(c, SERVER, 30000 + i, 53, PAYLOAD), ttl=64)
        udp_out.append(_frame(GW_LAN_MAC, cmac, d))
        r = ipv4.build_ipv4(SERVER, PUBLIC, 17, udp.build_udp(SERVER, PUBLIC, 53, 30000 + i, PAYLOAD), ttl=64)
        udp_back.append(_frame(GW_WAN_MAC, bytes.fromhex("02000000aa02"), r))
        engine.receive(udp_out[-1], "eth0", 0.0)
        engine.receive(udp_back[-1], "eth1", 0.0)
    return engine, steady_work(tcp_flows, udp_out, udp_back, packets)


class SteadyFlow(Protocol):
    """A TCP flow of a workload: its next segment each way (the benchmarks' _TcpFlow and bench6's _TcpFlow6)."""

    def out(self, flags: int, data: bytes = b"") -> bytes: ...
    def back(self, flags: int, data: bytes = b"") -> bytes: ...


def steady_work(tcp_flows: Sequence[SteadyFlow], udp_out: Sequence[bytes], udp_back: Sequence[bytes],
                packets: int) -> list[tuple[bytes, str]]:
    """The steady-state packets of both families' workloads: per flow in turn, a TCP data segment out and its
    ACK back, a UDP request out and its reply back; `packets` of them."""
    flows = len(tcp_flows)
    work: list[tuple[bytes, str]] = []
    i = 0
    while len(work) < packets:
        f = tcp_flows[i % flows]
        work.append((f.out(tcp.ACK | tcp.PSH, PAYLOAD), "eth0"))
        work.append((f.back(tcp.ACK), "eth1"))
        work.append((udp_out[i % flows], "eth0"))
        work.append((udp_back[i % flows], "eth1"))
        i += 1
    return work[:packets]


def _run_engine(engine: Engine, work: list[tuple[bytes, str]]) -> tuple[float, int]:
    receive = engine.receive
    sent = 0
    gc.collect()
    t0 = time.perf_counter()
    now = 1.0
    for n, (frame, iface) in enumerate(work):
        if not n & 1023:
            now += 0.001
        sent += len(receive(frame, iface, now).emitted)
    return time.perf_counter() - t0, sent


def _run_floor(work: list[tuple[bytes, str]]) -> float:
    """The least a NAT does per frame: copy, rewrite saddr and sport, patch IP and L4 checksums."""
    new_addr = PUBLIC
    # the header fields it touches, bound as locals before the loop (as cheap as literal offsets)
    ip = ETH_HDR_LEN
    saddr, saddr_end, ipcheck, ipcheck_end = ip + IPH_SADDR, ip + IPH_SADDR + 4, ip + IPH_CHECK, ip + IPH_CHECK + 2
    proto_at, tcp_check, udp_check = ip + IPH_PROTOCOL, TCPH_CHECK, UDPH_CHECK
    gc.collect()
    t0 = time.perf_counter()
    for frame, _iface in work:
        buf = bytearray(frame)
        old = int.from_bytes(buf[saddr:saddr_end], "big")
        buf[saddr:saddr_end] = new_addr.to_bytes(4, "big")
        buf[ipcheck:ipcheck_end] = csum_replace4(int.from_bytes(buf[ipcheck:ipcheck_end], "big"), old,
                                                 new_addr).to_bytes(2, "big")
        l4 = ip + (buf[ip] & 0x0F) * 4
        cpos = l4 + (tcp_check if buf[proto_at] == 6 else udp_check)
        check = int.from_bytes(buf[cpos:cpos + 2], "big")
        check = csum_replace4(check, old, new_addr)
        oport = int.from_bytes(buf[l4:l4 + 2], "big")
        buf[l4:l4 + 2] = (oport ^ 1).to_bytes(2, "big")
        buf[cpos:cpos + 2] = csum_replace2(check, oport, oport ^ 1).to_bytes(2, "big")
    return time.perf_counter() - t0


def _memory_per_entry(entries: int) -> float:
    """tracemalloc bytes per confirmed TCP entry in a ConntrackTable (both tuples hashed)."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    table = ConntrackTable(max_entries=entries + 1)
    base = parse_addr("10.0.0.0")
    for i in range(entries):
        src = base + (i >> 8)
        sport = 1024 + (i & 0xFF)
        orig = ConnTuple(src, sport, SERVER, 80, 6)
        reply = ConnTuple(SERVER, 80, PUBLIC, sport + (i >> 8 & 0x3F), 6)
        conn = Conn(orig, reply, now=0.0, ct_id=i + 1)
        conn.tcp = TcpConntrack()
        conn.tcp.state = TcpState.ESTABLISHED
        conn.status = CtStatus.SEEN_REPLY | CtStatus.ASSURED | CtStatus.SRC_NAT
        conn.timeout = 432000.0
        table.insert(conn, 0.0)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    per = (after - before) / entries
    del table
    return per


def _docker_forward_rules(ports: int) -> str:
    """Docker's classic filter table (§6) with `ports` published container ports."""
    lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]", ":DOCKER - [0:0]",
             ":DOCKER-ISOLATION-STAGE-1 - [0:0]", ":DOCKER-ISOLATION-STAGE-2 - [0:0]", ":DOCKER-USER - [0:0]",
             "-A FORWARD -j DOCKER-USER", "-A FORWARD -j DOCKER-ISOLATION-STAGE-1",
             "-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
             "-A FORWARD -o docker0 -j DOCKER", "-A FORWARD -i docker0 ! -o docker0 -j ACCEPT",
             "-A FORWARD -i docker0 -o docker0 -j ACCEPT"]
    lines += [f"-A DOCKER -d 172.17.0.{2 + i // 200}/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport {8000 + i} "
              "-j ACCEPT" for i in range(ports)]
    lines += ["-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2",
              "-A DOCKER-ISOLATION-STAGE-1 -j RETURN", "-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP",
              "-A DOCKER-ISOLATION-STAGE-2 -j RETURN", "-A DOCKER-USER -j RETURN", "COMMIT", ""]
    return "\n".join(lines)


def _bench_rules(ports: int, packets: int) -> None:
    """Per-packet cost of the filter FORWARD chain: Docker's with `ports` published ports, and an empty one."""
    from natbox.netfilter import CtInfo, Hook
    from natbox.skb import Skb

    engine = _gateway()
    ctx = engine._ctx
    ctx.hook = Hook.FORWARD
    docker = Ruleset()
    docker.restore(parse_restore(_docker_forward_rules(ports), file="docker-forward"))
    empty = Ruleset()
    empty.restore(parse_restore("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                                "COMMIT\n", file="empty"))
    src, dst = parse_addr("198.51.100.7"), parse_addr("172.17.0.2")

    def packet(dport: int, ctinfo: CtInfo, iif: str, oif: str) -> Skb:
        seg = tcp.build_tcp(src, dst, 40000, dport, seq=1, ack=0, flags=tcp.SYN, window=1024)
        skb = Skb(bytearray(ipv4.build_ipv4(src, dst, 6, seg, ttl=63)), iif=iif)
        skb.oif = oif
        skb.ct = Conn(ConnTuple(src, 40000, dst, dport, 6), ConnTuple(dst, dport, src, 40000, 6), now=0.0, ct_id=1)
        skb.ctinfo = ctinfo
        return skb

    cases = [
        ("new connection to the last published port", packet(8000 + ports - 1, CtInfo.NEW, "eth0", "docker0")),
        ("established reply towards a container", packet(8000, CtInfo.ESTABLISHED_REPLY, "eth0", "docker0")),
        ("container to the outside", packet(443, CtInfo.NEW, "docker0", "eth0")),
    ]

    def cost(rs: Ruleset, skb: Skb) -> float:
        run = rs.run
        for _ in range(100):
            run("filter", Hook.FORWARD, skb, ctx)
        t0 = time.process_time()
        for _ in range(packets):
            run("filter", Hook.FORWARD, skb, ctx)
        return (time.process_time() - t0) / packets * 1e6

    print(f"natbox bench rules: filter FORWARD, Docker's chains with {ports} published ports, {packets:,} runs each")
    for label, skb in cases:
        full, base = cost(docker, skb), cost(empty, skb)
        print(f"  {label:<44} {full:7.2f} us/packet   empty chain {base:5.2f} us   ratio {full / base:6.1f}")


def bench_main(argv: Sequence[str]) -> int:
    if list(argv[:1]) == ["builds"]:
        from natbox.cli.builds import builds_main

        return builds_main(argv[1:])
    parser = argparse.ArgumentParser(prog="natbox bench", description="Measure the engine's packet rate.")
    parser.add_argument("what", nargs="?", choices=("engine", "rules", "all", "builds"), default="engine",
                        help="engine: packets through a MASQUERADE gateway; rules: filter chain cost; builds: the "
                             "pure and the compiled build side by side (natbox bench builds --help)")
    parser.add_argument("--ports", type=int, default=100, help="published ports for the rules benchmark")
    parser.add_argument("--services", type=int, default=1000,
                        help="kube-proxy services (3 endpoints each) for the rules benchmark")
    parser.add_argument("--packets", type=int, default=1_000_000, help="packets to push (default 1,000,000)")
    parser.add_argument("--flows", type=int, default=1000, help="TCP flows and as many UDP flows (default 1000)")
    parser.add_argument("--entries", type=int, default=1_000_000,
                        help="conntrack entries for the memory figure (default 1,000,000; 0 skips it)")
    args = parser.parse_args(list(argv))
    print(f"natbox bench: build: {build_name()}")
    if args.what in ("rules", "all"):
        from natbox.cli import bench_rules

        _bench_rules(args.ports, min(args.packets, 20000))
        syns = min(args.packets, 3000)
        bench_rules.bench_docker28(args.ports, syns, print)
        bench_rules.bench_kube_proxy(args.services, syns, print)
        bench_rules.bench_ipset(min(args.packets, 20000), print)
        if args.what == "rules":
            return 0
    print(f"natbox bench: {args.packets:,} packets of established TCP+UDP over {args.flows} + {args.flows} "
          "flows through a MASQUERADE gateway")
    engine, work = _workload(args.flows, args.packets)
    floor_s = _run_floor(work)
    engine_s, sent = _run_engine(engine, work)
    eng_pps, floor_pps = args.packets / engine_s, args.packets / floor_s
    print(f"  engine            {eng_pps:>12,.0f} packets/s  ({engine_s / args.packets * 1e6:6.2f} us/packet, "
          f"{sent:,} frames out)")
    print(f"  bare rewrite loop {floor_pps:>12,.0f} packets/s  ({floor_s / args.packets * 1e6:6.2f} us/packet)")
    print(f"  ratio engine/floor {eng_pps / floor_pps:.3f}  (aim: 0.5)")
    drops = sum(v for k, v in engine.stats.items())
    if drops:
        print(f"  engine counters: {dict(engine.stats)}")
    del engine, work
    from natbox.cli.bench6 import workload6

    engine6, work6 = workload6(args.flows, args.packets)
    engine6_s, sent6 = _run_engine(engine6, work6)
    pps6 = args.packets / engine6_s
    print(f"  engine IPv6       {pps6:>12,.0f} packets/s  ({engine6_s / args.packets * 1e6:6.2f} us/packet, "
          f"{sent6:,} frames out; NAT66 MASQUERADE, the same flows and mix)")
    print(f"  ratio IPv6/IPv4   {pps6 / eng_pps:.3f}  (aim: 0.8)")
    if any(engine6.stats.values()):
        print(f"  engine IPv6 counters: {dict(engine6.stats)}")
    del engine6, work6
    if args.entries:
        per = _memory_per_entry(args.entries)
        print(f"  memory per conntrack entry at {args.entries:,} entries: {per:,.0f} bytes "
              "(aim: <= 1000; the kernel uses about 383)")
    return 0
