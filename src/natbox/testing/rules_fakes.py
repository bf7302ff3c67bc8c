"""A tiny fake XtContext and packet builders for rule evaluation tests."""

from __future__ import annotations

import ipaddress
import struct

from natbox.conntrack.synproxy import SynproxyOptions, SynproxyStats
from natbox.ipset.core import IpsetRegistry
from natbox.nat.range import NatRange
from natbox.netfilter import Hook, ManipType
from natbox.rules.api import NF_ACCEPT
from natbox.rules.evaluate import Ruleset
from natbox.rules.printer import save_tables
from natbox.rules.xtstate import XtState
from natbox.skb import Skb

RTN_UNICAST, RTN_LOCAL, RTN_BROADCAST, RTN_MULTICAST = 1, 2, 3, 5


def ip(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


class FakeCtx:
    """Records what targets asked for; address types from a dict (default UNICAST)."""

    def __init__(self, hook: Hook = Hook.PRE_ROUTING, *, local: tuple[str, ...] = (), now: float = 0.0) -> None:
        self._hook = hook
        self._now = now
        self.local = {ip(a) for a in local}
        self.nat_calls: list[tuple[NatRange, ManipType]] = []
        self.masq_calls: list[NatRange] = []
        self.rejects: list[str] = []
        self.logs: list[tuple[str, int]] = []
        self.notracked = 0
        self.randoms: list[int] = []
        self.iface_addrs: dict[str, int] = {}
        self.sets: IpsetRegistry | None = None
        self.dups: list[tuple[bytes, int, str]] = []
        self.listening: set[tuple[int, int]] = set()  # (protocol, port) of transparent listeners
        self.xt = XtState()
        self.routes: list[tuple[int, int, int, str | None]] = []  # (network, prefixlen, RTN_* type, device)
        self.synproxy = SynproxyStats()
        self.synacks: list[SynproxyOptions] = []  # what SYNPROXY answered SYNs with
        self.client_acks: list[int] = []  # the recv_seq of the ACKs SYNPROXY was given
        self.cookie_ok = True  # what synproxy_recv_client_ack answers

    @property
    def hook(self) -> Hook:
        return self._hook

    @property
    def now(self) -> float:
        return self._now

    def set_now(self, t: float) -> None:
        self._now = t

    def random_u32(self) -> int:
        return self.randoms.pop(0) if self.randoms else 0

    def addr_type(self, addr: int, dev: str | None) -> int:
        if addr in self.local or (addr >> 24) == 127:
            return RTN_LOCAL
        if addr >> 28 == 0xE:
            return RTN_MULTICAST
        if addr in (0, 0xFFFFFFFF):
            return RTN_BROADCAST
        return RTN_UNICAST

    def iface_primary_addr(self, dev: str) -> int | None:
        return self.iface_addrs.get(dev)

    def nat_setup_info(self, skb: Skb, rng: NatRange, manip: ManipType) -> int:
        self.nat_calls.append((rng, manip))
        return NF_ACCEPT

    def masquerade(self, skb: Skb, rng: NatRange) -> int:
        self.masq_calls.append(rng)
        return NF_ACCEPT

    def send_reject(self, skb: Skb, reject_with: str) -> None:
        self.rejects.append(reject_with)

    def log(self, skb: Skb, prefix: str, level: int, flags: int = 0) -> None:
        self.logs.append((prefix, level))

    def notrack(self, skb: Skb) -> None:
        self.notracked += 1

    def ipsets(self) -> IpsetRegistry | None:
        return self.sets

    def dup(self, skb: Skb, gw: int, oif: str) -> None:
        self.dups.append((bytes(skb.data), gw, oif))

    def socket_listening(self, proto: int, laddr: int, lport: int) -> bool:
        return (proto, lport) in self.listening

    def xt_state(self) -> XtState:
        return self.xt

    def fib_lookup(self, daddr: int) -> tuple[int, str | None] | None:
        """Longest prefix of `routes`."""
        best: tuple[int, int, str | None] | None = None
        for net, plen, rtype, dev in self.routes:
            mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF if plen else 0
            if daddr & mask == net and (best is None or plen > best[0]):
                best = (plen, rtype, dev)
        return None if best is None else (best[1], best[2])

    def synproxy_stats(self) -> SynproxyStats:
        return self.synproxy

    def synproxy_send_client_synack(self, skb: Skb, opts: SynproxyOptions) -> None:
        self.synacks.append(opts)

    def synproxy_recv_client_ack(self, skb: Skb, opts: SynproxyOptions, recv_seq: int) -> bool:
        self.client_acks.append(recv_seq)
        return self.cookie_ok


def ipv4(src: str, dst: str, proto: int, payload: bytes, *, ttl: int = 64, frag_off: int = 0) -> bytearray:
    """An IPv4 datagram (RFC 791 header, checksum left 0: rules never look at it)."""
    total = 20 + len(payload)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, frag_off, ttl, proto, 0,
                      ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    return bytearray(hdr + payload)


def tcp(src: str, sport: int, dst: str, dport: int, flags: int = 0x02, *, options: bytes = b"",
        iif: str = "", oif: str = "") -> Skb:
    doff = (20 + len(options)) // 4
    seg = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, doff << 4, flags, 65535, 0, 0) + options
    skb = Skb(ipv4(src, dst, 6, seg), iif=iif)
    skb.oif = oif
    return skb


def udp(src: str, sport: int, dst: str, dport: int, *, iif: str = "", oif: str = "", size: int = 0) -> Skb:
    seg = struct.pack("!HHHH", sport, dport, 8 + size, 0) + bytes(size)
    skb = Skb(ipv4(src, dst, 17, seg), iif=iif)
    skb.oif = oif
    return skb


def icmp(src: str, dst: str, itype: int, code: int = 0, *, iif: str = "", oif: str = "") -> Skb:
    skb = Skb(ipv4(src, dst, 1, bytes([itype, code, 0, 0, 0, 1, 0, 1])), iif=iif)
    skb.oif = oif
    return skb


def rule_packets(rs: Ruleset, rules: dict[str, str]) -> dict[str, int]:
    """The packet counters of `rs`'s rules, each named by a key of `rules` whose value is the rule as
    iptables-save prints it (`-A CHAIN ...`); each must appear once."""
    saved = save_tables(rs.saved_tables(), "D", counters=True).splitlines()
    counts = {}
    for key, rule in rules.items():
        (line,) = [line for line in saved if line.endswith("] " + rule)]
        counts[key] = int(line[1:line.index(":")])
    return counts
