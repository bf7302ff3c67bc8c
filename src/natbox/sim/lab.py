"""A simulated network around one natbox host, in virtual time (sans-IO, reproducible).

A `Lab` puts end hosts (VMs, containers, servers "beyond the NAT") on the segments of the modelled
host's interfaces and lets them talk through it. End hosts answer as Linux end hosts do at the level
the experiments need: ARP is pre-resolved (the host's neighbour table is filled as a warm ARP cache
would be), ICMP echo is answered, UDP to a closed port gets a port unreachable, TCP runs a real
handshake, data transfer and close, and a segment to a closed port gets a reset.

Every frame crossing one of the host's interfaces is captured (direction "in" = towards the host),
so the lab yields what `tcpdump -i IFACE` would show on each interface.

Bounds: `run()` stops after `max_events` events (default 100,000) or at `until`.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

from natbox.conntrack.tuple import format_addr, parse_addr
from natbox.engine.engine import Engine, Output
from natbox.engine.host import Host, Neighbour
from natbox.rand import SplitMix64
from natbox.wire import ethernet, icmp, ipv4, tcp, udp
from natbox.wire.layout import (
    ICMPH_ID,
    ICMPH_LEN,
    ICMPH_SEQUENCE,
    ICMPH_TYPE,
    IPH_ADDRS_END,
    IPH_DADDR,
    IPH_PROTOCOL,
    IPH_SADDR,
    IPH_VER_IHL,
    L4_DPORT,
    L4_SPORT,
    TCPH_ACK_SEQ,
    TCPH_DOFF,
    TCPH_FLAGS,
    TCPH_SEQ,
    UDPH_LEN_BYTES,
)

__all__ = ["CapturedFrame", "EndHost", "Lab"]

LINK_DELAY = 0.0001  # seconds from one end of a segment to the other
MAX_EVENTS = 100_000

SYN, ACK, FIN, RST, PSH = tcp.SYN, tcp.ACK, tcp.FIN, tcp.RST, tcp.PSH


@dataclass(frozen=True, slots=True)
class CapturedFrame:
    """One frame seen on one of the host's interfaces."""

    time: float
    iface: str
    direction: str  # "in": towards the natbox host; "out": sent by it
    frame: bytes
    pkt_id: int = 0  # for "out": the input packet that caused it
    ct_id: int = 0


@dataclass
class _TcpConn:
    """A tiny Linux-like TCP endpoint: enough for handshakes, a request, a response and a close."""

    laddr: int
    lport: int
    raddr: int
    rport: int
    snd_nxt: int
    rcv_nxt: int = 0
    state: str = "CLOSED"
    to_send: bytes = b""  # application data to send once established
    close_after_send: bool = False
    received: bytearray = field(default_factory=bytearray)
    on_data: Callable[[_TcpConn, bytes], None] | None = None


class EndHost:
    """A host on one of the natbox host's segments."""

    def __init__(self, lab: Lab, name: str, iface: str, addr: int, prefixlen: int, gateway: int | None,
                 mac: bytes, extra_addrs: list[int]) -> None:
        self.lab = lab
        self.name = name
        self.iface = iface
        self.addr = addr
        self.prefixlen = prefixlen
        self.gateway = gateway
        self.mac = mac
        self.addrs = {addr, *extra_addrs}
        self.listen_tcp: dict[int, bytes] = {}  # port -> response sent to each request
        self.listen_udp: dict[int, bytes | None] = {}  # port -> reply (None: echo the request)
        self.udp_sockets: set[int] = set()  # local ports of sockets this host opened (replies accepted)
        self.conns: dict[tuple[int, int, int, int], _TcpConn] = {}
        self.received: list[tuple[float, bytes]] = []  # every datagram addressed to this host
        self.ident = 0

    # --- sending -----------------------------------------------------------------------------------

    def _router_mac(self) -> bytes:
        return self.lab.host.interfaces[self.iface].mac

    def _next_hop_mac(self, dst: int) -> bytes:
        mask = (0xFFFFFFFF << (32 - self.prefixlen)) & 0xFFFFFFFF if self.prefixlen else 0
        if (dst & mask) == (self.addr & mask):
            peer = self.lab.host_by_addr(dst)
            if peer is not None and peer.iface == self.iface:
                return peer.mac
        return self._router_mac()

    def send_ip(self, datagram: bytes | bytearray) -> None:
        dst = int.from_bytes(datagram[IPH_DADDR:IPH_ADDRS_END], "big")
        frame = ethernet.build_ethernet(self._next_hop_mac(dst), self.mac, ethernet.ETH_P_IP, datagram)
        self.lab.transmit(self, bytes(frame))

    def ping(self, dst: str | int, *, ident: int | None = None, seq: int = 1, ttl: int = 64,
             payload: bytes | None = None, src: int | None = None) -> None:
        """Send one echo request as iputils ping does: 56 data bytes (a timeval, then 0x10, 0x11...)."""
        daddr = parse_addr(dst) if isinstance(dst, str) else dst
        if ident is None:
            self.ident += 1
            ident = 0x1000 + self.ident
        if payload is None:
            usec = int(self.lab.now * 1_000_000)
            payload = (usec // 1_000_000).to_bytes(8, "little") + (usec % 1_000_000).to_bytes(8, "little")
            payload += bytes(range(0x10, 0x38))
        body = icmp.build_icmp_echo(ident, seq, payload)
        self.send_ip(ipv4.build_ipv4(src or self.addr, daddr, 1, body, ttl=ttl, ident=self._ip_id()))

    def udp_send(self, dst: str | int, dport: int, payload: bytes, *, sport: int = 40000, ttl: int = 64,
                 zero_checksum: bool = False) -> None:
        daddr = parse_addr(dst) if isinstance(dst, str) else dst
        self.udp_sockets.add(sport)
        seg = udp.build_udp(self.addr, daddr, sport, dport, payload, zero_checksum=zero_checksum)
        self.send_ip(ipv4.build_ipv4(self.addr, daddr, 17, seg, ttl=ttl, ident=self._ip_id(), df=True))

    def tcp_connect(self, dst: str | int, dport: int, *, sport: int = 40000, request: bytes = b"",
                    ttl: int = 64, src: str | None = None) -> _TcpConn:
        """Open a connection (SYN with Linux's options), send `request` once established."""
        daddr = parse_addr(dst) if isinstance(dst, str) else dst
        saddr = parse_addr(src) if src else self.addr
        conn = _TcpConn(saddr, sport, daddr, dport, snd_nxt=self.lab.rnd.getrandbits(32), state="SYN_SENT",
                        to_send=request)
        self.conns[(saddr, sport, daddr, dport)] = conn
        self._tcp_out(conn, SYN, b"", syn_options=True, ttl=ttl)
        conn.snd_nxt = (conn.snd_nxt + 1) & 0xFFFFFFFF
        return conn

    def _ip_id(self) -> int:
        self.lab.ip_ids += 1
        return self.lab.ip_ids & 0xFFFF

    def _tcp_out(self, conn: _TcpConn, flags: int, payload: bytes, *, syn_options: bool = False,
                 ttl: int = 64, seq: int | None = None) -> None:
        options = b""
        if syn_options:
            tsval = int(self.lab.now * 1000) & 0xFFFFFFFF
            options = tcp.encode_options(mss=1460, sack_perm=True, timestamp=(tsval, 0), wscale=7)
        seg = tcp.build_tcp(conn.laddr, conn.raddr, conn.lport, conn.rport,
                            seq=conn.snd_nxt if seq is None else seq,
                            ack=conn.rcv_nxt if flags & ACK else 0, flags=flags, window=64240,
                            options=options, payload=payload)
        self.send_ip(ipv4.build_ipv4(conn.laddr, conn.raddr, 6, seg, ttl=ttl, ident=self._ip_id(), df=True))

    # --- receiving ---------------------------------------------------------------------------------

    def receive(self, frame: bytes) -> None:
        eth = ethernet.parse_ethernet(frame)
        if eth is None or eth[2] != ethernet.ETH_P_IP:
            return
        data, _reason = ipv4.ip_rcv_core(frame[eth[3]:])
        if data is None:
            return
        dst = int.from_bytes(data[IPH_DADDR:IPH_ADDRS_END], "big")
        if dst not in self.addrs:
            return
        self.received.append((self.lab.now, bytes(data)))
        ihl = (data[IPH_VER_IHL] & 0x0F) * 4
        proto = data[IPH_PROTOCOL]
        l4 = bytes(data[ihl:])
        src = int.from_bytes(data[IPH_SADDR:IPH_DADDR], "big")
        if proto == 1 and len(l4) >= 8 and l4[ICMPH_TYPE] == icmp.ICMP_ECHO:
            ident = (l4[ICMPH_ID] << 8) | l4[ICMPH_ID + 1]
            reply = icmp.build_icmp_echo(ident, (l4[ICMPH_SEQUENCE] << 8) | l4[ICMPH_SEQUENCE + 1], l4[ICMPH_LEN:],
                                         reply=True)
            self.send_ip(ipv4.build_ipv4(dst, src, 1, reply, ttl=64, ident=self._ip_id()))
        elif proto == 17 and len(l4) >= 8:
            self._udp_in(src, dst, l4, bytes(data))
        elif proto == 6 and len(l4) >= 20:
            self._tcp_in(src, dst, l4, bytes(data))

    def _udp_in(self, src: int, dst: int, l4: bytes, datagram: bytes) -> None:
        sport, dport = (l4[L4_SPORT] << 8) | l4[L4_SPORT + 1], (l4[L4_DPORT] << 8) | l4[L4_DPORT + 1]
        if dport in self.listen_udp:
            reply = self.listen_udp[dport]
            body = l4[UDPH_LEN_BYTES:] if reply is None else reply
            seg = udp.build_udp(dst, src, dport, sport, body)
            self.send_ip(ipv4.build_ipv4(dst, src, 17, seg, ttl=64, ident=self._ip_id(), df=True))
            return
        if dport in self.udp_sockets:
            return  # a reply to a socket this host opened: the application reads it
        err = icmp.build_icmp_error(3, 3, datagram)
        self.send_ip(ipv4.build_ipv4(dst, src, 1, err, ttl=64, ident=self._ip_id()))

    def _tcp_in(self, src: int, dst: int, l4: bytes, datagram: bytes) -> None:
        sport, dport = (l4[L4_SPORT] << 8) | l4[L4_SPORT + 1], (l4[L4_DPORT] << 8) | l4[L4_DPORT + 1]
        seq = int.from_bytes(l4[TCPH_SEQ:TCPH_ACK_SEQ], "big")
        flags = l4[TCPH_FLAGS]
        doff = (l4[TCPH_DOFF] >> 4) * 4
        payload = l4[doff:]
        key = (dst, dport, src, sport)
        conn = self.conns.get(key)
        if conn is None:
            if flags & SYN and not flags & ACK and dport in self.listen_tcp:
                conn = _TcpConn(dst, dport, src, sport, snd_nxt=self.lab.rnd.getrandbits(32),
                                rcv_nxt=(seq + 1) & 0xFFFFFFFF, state="SYN_RECV",
                                to_send=self.listen_tcp[dport], close_after_send=True)
                self.conns[key] = conn
                self._tcp_out(conn, SYN | ACK, b"", syn_options=True)
                conn.snd_nxt = (conn.snd_nxt + 1) & 0xFFFFFFFF
            elif not flags & RST:
                self._send_reset(dst, src, l4, len(payload))
            return
        if flags & RST:
            conn.state = "CLOSED"
            del self.conns[key]
            return
        if conn.state == "SYN_SENT":
            if flags & SYN and flags & ACK:
                conn.rcv_nxt = (seq + 1) & 0xFFFFFFFF
                conn.state = "ESTABLISHED"
                self._tcp_out(conn, ACK, b"")
                self._send_pending(conn)
            return
        if conn.state == "SYN_RECV" and flags & ACK:
            conn.state = "ESTABLISHED"
        if payload and seq == conn.rcv_nxt:
            conn.rcv_nxt = (conn.rcv_nxt + len(payload)) & 0xFFFFFFFF
            conn.received += payload
            self._tcp_out(conn, ACK, b"")
            if conn.close_after_send and conn.to_send:
                self._send_pending(conn)
        if flags & FIN:
            conn.rcv_nxt = (conn.rcv_nxt + 1) & 0xFFFFFFFF
            if conn.state in ("ESTABLISHED", "SYN_RECV"):
                # passive close: ACK the FIN and close our side at once (FIN+ACK)
                conn.state = "LAST_ACK"
                self._tcp_out(conn, FIN | ACK, b"")
                conn.snd_nxt = (conn.snd_nxt + 1) & 0xFFFFFFFF
            elif conn.state in ("FIN_WAIT1", "FIN_WAIT2"):
                conn.state = "TIME_WAIT"
                self._tcp_out(conn, ACK, b"")
            return
        if conn.state == "FIN_WAIT1" and flags & ACK:
            conn.state = "FIN_WAIT2"
        elif conn.state == "LAST_ACK" and flags & ACK:
            conn.state = "CLOSED"
            del self.conns[key]

    def _send_pending(self, conn: _TcpConn) -> None:
        if conn.to_send:
            data, conn.to_send = conn.to_send, b""
            self._tcp_out(conn, PSH | ACK, data)
            conn.snd_nxt = (conn.snd_nxt + len(data)) & 0xFFFFFFFF
            if conn.close_after_send:
                self.close(conn)

    def close(self, conn: _TcpConn) -> None:
        """Active close: FIN+ACK."""
        if conn.state != "ESTABLISHED":
            return
        conn.state = "FIN_WAIT1"
        self._tcp_out(conn, FIN | ACK, b"")
        conn.snd_nxt = (conn.snd_nxt + 1) & 0xFFFFFFFF

    def _send_reset(self, laddr: int, raddr: int, l4: bytes, paylen: int) -> None:
        """`tcp_v4_send_reset`: RST (seq = their ack) if they sent ACK, else RST+ACK acking their segment."""
        sport, dport = (l4[L4_SPORT] << 8) | l4[L4_SPORT + 1], (l4[L4_DPORT] << 8) | l4[L4_DPORT + 1]
        seq, ack, flags = (int.from_bytes(l4[TCPH_SEQ:TCPH_ACK_SEQ], "big"),
                            int.from_bytes(l4[TCPH_ACK_SEQ:TCPH_DOFF], "big"), l4[TCPH_FLAGS])
        if flags & ACK:
            seg = tcp.build_tcp(laddr, raddr, dport, sport, seq=ack, ack=0, flags=RST, window=0)
        else:
            end = (seq + paylen + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)) & 0xFFFFFFFF
            seg = tcp.build_tcp(laddr, raddr, dport, sport, seq=0, ack=end, flags=RST | ACK, window=0)
        self.send_ip(ipv4.build_ipv4(laddr, raddr, 6, seg, ttl=64, ident=0, df=True))


class Lab:
    """A natbox host with end hosts on its segments, advanced in virtual time."""

    def __init__(self, host: Host, engine: Engine | None = None, *, seed: int = 1, start: float = 0.0,
                 link_delay: float = LINK_DELAY) -> None:
        self.host = host
        self.engine = engine if engine is not None else Engine(host, seed=seed)
        self.rnd = SplitMix64(seed ^ 0x5EED)
        self.now = start
        self.link_delay = link_delay
        self.hosts: dict[str, EndHost] = {}
        self.captures: list[CapturedFrame] = []
        self.outputs: list[Output] = []
        self.ip_ids = 0
        self._queue: list[tuple[float, int, Callable[[], object]]] = []
        self._seq = 0

    def add_host(self, name: str, iface: str, addr: str, *, gateway: str | None = None, mac: str | None = None,
                 extra_addrs: tuple[str, ...] = ()) -> EndHost:
        """Attach an end host with `addr` ("a.b.c.d/len") to the segment of the host's `iface`."""
        if iface not in self.host.interfaces:
            raise ValueError(f"no interface {iface!r} on the host")
        ip_text, _, plen = addr.partition("/")
        ip = parse_addr(ip_text)
        hw = bytes(int(x, 16) for x in mac.split(":")) if mac else b"\x02\x42" + ip.to_bytes(4, "big")
        end = EndHost(self, name, iface, ip, int(plen or 24), parse_addr(gateway) if gateway else None, hw,
                      [parse_addr(a) for a in extra_addrs])
        self.hosts[name] = end
        # a warm ARP cache on the natbox host for every address this end host answers for on-link
        for a in end.addrs:
            self.host.neighbours.append(Neighbour(iface, a, hw))
            self.engine.neighs.add_permanent(iface, a, hw)
        return end

    def host_by_addr(self, addr: int) -> EndHost | None:
        return next((h for h in self.hosts.values() if addr in h.addrs), None)

    # --- time --------------------------------------------------------------------------------------

    def at(self, when: float, action: Callable[[], object]) -> None:
        """Schedule `action` at virtual time `when`."""
        self._seq += 1
        heapq.heappush(self._queue, (when, self._seq, action))

    def run(self, until: float | None = None, *, max_events: int = MAX_EVENTS) -> None:
        """Process scheduled events in time order, then run the host's timers once at the end."""
        events = 0
        while self._queue and events < max_events:
            when, _seq, action = self._queue[0]
            if until is not None and when > until:
                break
            heapq.heappop(self._queue)
            self.now = max(self.now, when)
            action()
            events += 1
        if until is not None:
            self.now = max(self.now, until)
        self.engine.handle_timers(self.now)

    # --- the wire ----------------------------------------------------------------------------------

    def transmit(self, sender: EndHost, frame: bytes) -> None:
        """An end host puts `frame` on its segment: the natbox host (and peers on the segment) get it."""
        arrive = self.now + self.link_delay
        dst_mac = frame[:6]
        for peer in self.hosts.values():
            if peer is not sender and peer.iface == sender.iface and (peer.mac == dst_mac or dst_mac[0] & 1):
                self.at(arrive, functools.partial(peer.receive, frame))
        if dst_mac == self.host.interfaces[sender.iface].mac or dst_mac[0] & 1:
            self.at(arrive, lambda: self._to_host(sender.iface, frame))

    def _to_host(self, iface: str, frame: bytes) -> None:
        self.captures.append(CapturedFrame(self.now, iface, "in", frame))
        out = self.engine.receive(frame, iface, self.now)
        self.outputs.append(out)
        for em in out.emitted:
            self.captures.append(CapturedFrame(self.now, em.iface, "out", em.frame, em.pkt_id, em.ct_id))
            dst_mac = em.frame[:6]
            for peer in self.hosts.values():
                if peer.iface == em.iface and (peer.mac == dst_mac or dst_mac[0] & 1):
                    self.at(self.now + self.link_delay, functools.partial(peer.receive, em.frame))

    def on(self, iface: str) -> list[CapturedFrame]:
        """Frames captured on one interface, in time order."""
        return [c for c in self.captures if c.iface == iface]

    def describe_addr(self, addr: int) -> str:
        h = self.host_by_addr(addr)
        return f"{format_addr(addr)} ({h.name})" if h else format_addr(addr)
