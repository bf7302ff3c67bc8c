"""`natbox demo docker6`: Docker 27+ with an IPv6 default bridge (`ip6tables: true`, on by default since 27.0).

The ruleset is the one /work/shared/reference/ipv6-semantics.md §6 records: moby's `setupIPTables` and
`port_mapping_linux.go` (`setPerPortNAT`: the IPv6 DNAT gets `! -s fe80::/10`, OUTPUT excludes `::1/128`),
whose PREROUTING, OUTPUT, subnet MASQUERADE and DNAT lines are those of moby 28.x's golden file
`TestIptabler_hairpin=false,…,masq=true,…,gwm=nat,bindlh=false__ip6tables.golden`; loaded with the real
ip6tables-restore and printed back by ip6tables-save on Linux 6.18; the text is read from difftest's
scenario scenarios/ipv6/docker6-published-port.toml, which checks it against the kernel. Docker 27,
userland-proxy=true, ULA subnet fd00:d0c::/64 (bridge ::1, container ::2), `-p 8080:80`.

The end hosts here speak just enough IPv6 for the demo (`EndHost6`: ping6, one UDP datagram, one TCP
request/response and its close); the host's neighbours are permanent, as the IPv4 demos' ARP caches are warm.
"""

from __future__ import annotations

import functools
import tomllib

from natbox.demos.modern import SCENARIOS
from natbox.engine.host import Host, Interface, Neighbour, Route6
from natbox.sim.lab import EndHost, Lab
from natbox.wire import ethernet, tcp, udp
from natbox.wire.icmpv6 import build_icmpv6_echo
from natbox.wire.ipv6 import build_ipv6, parse_addr6
from natbox.wire.layout import (
    ETH_PROTO,
    ICMP6H_IDENTIFIER,
    ICMP6H_LEN,
    ICMP6H_SEQUENCE,
    ICMP6H_TYPE,
    IP6H_DADDR,
    IP6H_LEN,
    IP6H_NEXTHDR,
    IP6H_SADDR,
    TCPH_ACK_SEQ,
    TCPH_DEST,
    TCPH_DOFF,
    TCPH_FLAGS,
    TCPH_MIN_LEN,
    TCPH_SEQ,
    TCPH_SOURCE,
    UDPH_DEST,
    UDPH_LEN_BYTES,
    UDPH_SOURCE,
)

__all__ = ["DOCKER6_QUESTIONS", "EndHost6", "docker6_host", "docker6_rules", "docker6_script"]


@functools.cache
def docker6_rules() -> str:
    """The ruleset: scenarios/ipv6/docker6-published-port.toml's `[router] rules6` (difftest checks that very
    text against the kernel; one copy for both)."""
    path = SCENARIOS / "ipv6" / "docker6-published-port.toml"
    return str(tomllib.loads(path.read_text(encoding="utf-8"))["router"]["rules6"]).lstrip("\n")


_SYN, _ACK, _FIN, _RST, _PSH = tcp.SYN, tcp.ACK, tcp.FIN, tcp.RST, tcp.PSH


def _mac(text: str) -> bytes:
    return bytes(int(x, 16) for x in text.split(":"))


class EndHost6(EndHost):
    """An IPv6 end host on one of the natbox host's segments (a sim.lab.EndHost with 128-bit addresses):
    answers echo requests, echoes UDP to its `listen_udp` ports, serves `listen_tcp` (one response, then
    FIN) and runs one client connection at a time; anything else to a closed TCP port gets a reset."""

    def __init__(self, lab: Lab, name: str, iface: str, addr: str, *, gateway: str | None, mac: str,
                 extra_addrs: tuple[str, ...] = ()) -> None:
        text, _, plen = addr.partition("/")
        super().__init__(lab, name, iface, parse_addr6(text), int(plen or 64),
                         parse_addr6(gateway) if gateway else None, _mac(mac), [parse_addr6(a) for a in extra_addrs])
        self.tcp6: dict[tuple[int, int, int, int], list[int]] = {}  # (laddr, lport, raddr, rport) -> [snd, rcv]
        self.requests: dict[tuple[int, int, int, int], bytes] = {}
        lab.hosts[name] = self
        for a in self.addrs:  # the natbox host's permanent neighbour entries for this host
            lab.host.neighbours.append(Neighbour(iface, a, self.mac))
            lab.engine.neighs6.add_permanent(iface, a, self.mac)

    def send_ip(self, datagram: bytes | bytearray) -> None:
        dst = int.from_bytes(datagram[IP6H_DADDR:IP6H_LEN], "big")
        peer = self.lab.host_by_addr(dst)
        mac = peer.mac if peer is not None and peer.iface == self.iface else self._router_mac()
        self.lab.transmit(self, bytes(ethernet.build_ethernet(mac, self.mac, ethernet.ETH_P_IPV6, datagram)))

    def ping6(self, dst: str, ident: int, seq: int) -> None:
        self.send_ip(build_icmpv6_echo(self.addr, parse_addr6(dst), ident, seq, bytes(range(0x10, 0x48)),
                                       reply=False))

    def udp6_send(self, dst: str, dport: int, payload: bytes, sport: int) -> None:
        d = parse_addr6(dst)
        self.send_ip(build_ipv6(self.addr, d, 17, udp.build_udp(self.addr, d, sport, dport, payload)))

    def tcp6_connect(self, dst: str, dport: int, sport: int, request: bytes, src: str | None = None) -> None:
        d = parse_addr6(dst)
        key = (parse_addr6(src) if src else self.addr, sport, d, dport)
        self.tcp6[key] = [0x6E61_7400 + sport, 0]
        self.requests[key] = request
        self._tcp6_out(key, _SYN, b"")
        self.tcp6[key][0] += 1

    def _tcp6_out(self, key: tuple[int, int, int, int], flags: int, payload: bytes) -> None:
        laddr, lport, raddr, rport = key
        snd, rcv = self.tcp6[key]
        seg = tcp.build_tcp(laddr, raddr, lport, rport, seq=snd, ack=rcv if flags & _ACK else 0, flags=flags,
                            window=64800, options=tcp.tcp_opt_mss(1440) if flags & _SYN else b"", payload=payload)
        self.send_ip(build_ipv6(laddr, raddr, 6, seg))

    def receive(self, frame: bytes) -> None:
        if frame[ETH_PROTO:ethernet.ETH_HLEN] != ethernet.ETH_P_IPV6.to_bytes(2, "big"):
            return
        dg = frame[ethernet.ETH_HLEN:]
        if len(dg) < IP6H_LEN:
            return
        src, dst = int.from_bytes(dg[IP6H_SADDR:IP6H_DADDR], "big"), int.from_bytes(dg[IP6H_DADDR:IP6H_LEN], "big")
        if dst not in self.addrs:
            return
        self.received.append((self.lab.now, bytes(dg)))
        nh, l4 = dg[IP6H_NEXTHDR], dg[IP6H_LEN:]
        if nh == 58 and l4[ICMP6H_TYPE] == 128:
            ident = int.from_bytes(l4[ICMP6H_IDENTIFIER:ICMP6H_SEQUENCE], "big")
            seq = int.from_bytes(l4[ICMP6H_SEQUENCE:ICMP6H_SEQUENCE + 2], "big")
            self.send_ip(build_icmpv6_echo(dst, src, ident, seq, bytes(l4[ICMP6H_LEN:]), reply=True))
        elif nh == 17 and len(l4) >= UDPH_LEN_BYTES:
            sport = int.from_bytes(l4[UDPH_SOURCE:UDPH_DEST], "big")
            dport = int.from_bytes(l4[UDPH_DEST:UDPH_DEST + 2], "big")
            if dport in self.listen_udp:
                seg = udp.build_udp(dst, src, dport, sport, bytes(l4[UDPH_LEN_BYTES:]))
                self.send_ip(build_ipv6(dst, src, 17, seg))
        elif nh == 6 and len(l4) >= TCPH_MIN_LEN:
            self._tcp6_in(src, dst, l4)

    def _tcp6_in(self, src: int, dst: int, l4: bytes) -> None:
        sport = int.from_bytes(l4[TCPH_SOURCE:TCPH_DEST], "big")
        dport = int.from_bytes(l4[TCPH_DEST:TCPH_DEST + 2], "big")
        seq = int.from_bytes(l4[TCPH_SEQ:TCPH_ACK_SEQ], "big")
        ack = int.from_bytes(l4[TCPH_ACK_SEQ:TCPH_ACK_SEQ + 4], "big")
        flags, payload = l4[TCPH_FLAGS], l4[(l4[TCPH_DOFF] >> 4) * 4:]
        key = (dst, dport, src, sport)
        conn = self.tcp6.get(key)
        if flags & _RST:
            self.tcp6.pop(key, None)
            return
        if conn is None:
            if flags & _SYN and dport in self.listen_tcp:  # a listener: SYN-ACK
                self.tcp6[key] = [0x5E57_0000 + sport, seq + 1]
                self._tcp6_out(key, _SYN | _ACK, b"")
                self.tcp6[key][0] += 1
            elif not flags & _SYN or dport not in self.listen_tcp:
                self.tcp6[key] = [ack if flags & _ACK else 0, seq + len(payload) + (flags & _SYN)]
                self._tcp6_out(key, _RST | _ACK, b"")
                del self.tcp6[key]
            return
        if flags & _SYN and flags & _ACK:  # our connection is accepted: ACK, then the request
            conn[1] = seq + 1
            self._tcp6_out(key, _ACK, b"")
            request = self.requests.pop(key, b"")
            self._tcp6_out(key, _PSH | _ACK, request)
            conn[0] += len(request)
            return
        conn[1] = seq + len(payload) + (1 if flags & _FIN else 0)
        if payload and dport in self.listen_tcp:  # a request to our listener: the response and FIN
            response = self.listen_tcp[dport]
            self._tcp6_out(key, _PSH | _ACK, response)
            conn[0] += len(response)
            self._tcp6_out(key, _FIN | _ACK, b"")
            conn[0] += 1
        elif flags & _FIN and dport not in self.listen_tcp:  # the server closed: ACK and close too
            self._tcp6_out(key, _FIN | _ACK, b"")
            conn[0] += 1
        elif flags & _FIN:
            self._tcp6_out(key, _ACK, b"")


def docker6_host() -> tuple[Host, str]:
    """The Docker host: eth0 2001:db8:300::1/64 (default route via ::fffe), docker0 fd00:d0c::1/64, forwarding on."""
    host = Host(name="docker-host", ipv6_forward=True)
    host.add_interface(Interface("eth0", mac=_mac("52:54:00:12:00:0a")))
    host.add_interface(Interface("docker0", mac=_mac("02:42:d5:35:3a:3c"), kind="bridge"))
    host.add_address6("eth0", parse_addr6("2001:db8:300::1"), 64)
    host.add_address6("docker0", parse_addr6("fd00:d0c::1"), 64)
    host.routes6.append(Route6(0, 0, "eth0", parse_addr6("2001:db8:300::fffe")))
    return host, docker6_rules()


def docker6_script(lab: Lab) -> None:
    ctr = EndHost6(lab, "container", "docker0", "fd00:d0c::2/64", gateway="fd00:d0c::1", mac="02:42:ac:11:00:02")
    internet = EndHost6(lab, "internet", "eth0", "2001:db8:300::fffe/64", gateway=None, mac="52:54:00:12:00:01",
                        extra_addrs=("2001:db8:77::7",))
    ctr.listen_tcp[80] = b"HTTP/1.0 200 OK\r\n\r\nhello from the container over IPv6\n"
    internet.listen_udp[53] = None
    # 1. the container goes out: FORWARD -i docker0 ! -o docker0 ACCEPT, MASQUERADE to 2001:db8:300::1
    lab.at(0.0, lambda: ctr.ping6("2001:db8:77::7", 0x6406, 1))
    lab.at(0.5, lambda: ctr.udp6_send("2001:db8:77::7", 53, b"\x12\x34\x01\x00\x00\x01" + bytes(6)
                                      + b"\x06docker\x03com\x00\x00\x1c\x00\x01", 45000))
    # 2. the published port from outside: PREROUTING addrtype LOCAL -> DOCKER -> DNAT to [fd00:d0c::2]:80
    lab.at(1.0, lambda: internet.tcp6_connect("2001:db8:300::1", 8080, 47000, b"GET / HTTP/1.0\r\n\r\n",
                                                   src="2001:db8:77::7"))
    # 3. the container to the published port: `-i docker0 -j RETURN`, no DNAT: the host's closed port resets
    lab.at(3.0, lambda: ctr.tcp6_connect("2001:db8:300::1", 8080, 47001, b"GET / HTTP/1.0\r\n\r\n"))


DOCKER6_QUESTIONS = (
    "What does Docker write for IPv6? The same chains as for IPv4, through ip6tables: MASQUERADE for the ULA "
    "subnet fd00:d0c::/64 out of any other interface, and the published port's DNAT in nat DOCKER, which "
    "PREROUTING reaches for packets to a LOCAL address (-m addrtype, answered from the IPv6 routes).",
    "Why `! -s fe80::/10` in the DNAT? Docker skips link-local sources: a link-local client could not be "
    "answered from the container's ULA address (moby's setPerPortNAT).",
    "Why does the container's own request to [2001:db8:300::1]:8080 get a reset? nat DOCKER starts with "
    "`-i docker0 -j RETURN` (with userland-proxy=true, docker-proxy serves that case); without the proxy the "
    "host's port 8080 is closed.",
    "Does NAT66 keep ports? As NAT44 does: MASQUERADE keeps the source port and the echo id unless they clash.",
)
