"""Neighbour Discovery a router needs (net/ipv6/ndisc.c; ipv6-semantics.md §4.5).

- A Neighbour Solicitation for one of the receiving device's own addresses is answered with a Neighbour
  Advertisement to its source (ff02::1 when the source is ::), flags Router (forwarding on), Solicited
  (unless to ff02::1) and Override, with the Target Link-Layer option; hop limit 255. The solicitor is
  learned (`neigh_event_ns`). No NA for other devices' addresses or NAT pools (no proxy NDP).
- A Neighbour Advertisement updates the neighbour table (`ndisc_recv_na` → `neigh_update`, REACHABLE when
  solicited) and releases the packets waiting for it.
- Every ND message must have hop limit 255 and code 0 (`ndisc_rcv`), else it is dropped.
Resolution itself (multicast NS to the solicited-node group, NUD probes) is the neighbour table's state
machine (engine/neigh.py, shared with ARP) and `Ip6Output.emit_ns`.
"""

from __future__ import annotations

from typing import Final

from natbox.engine.host import Host
from natbox.engine.ip6_output import Ip6Output
from natbox.engine.neigh import NeighTable
from natbox.engine.path import Held
from natbox.skb import Skb6
from natbox.wire import icmpv6
from natbox.wire.layout import ICMP6H_CODE, ICMP6H_TYPE, ND_FLAGS, ND_TARGET, ND_TARGET_END

__all__ = ["Ndisc"]

_ALL_NODES: Final = 0xFF02_0000_0000_0000_0000_0000_0000_0001


class Ndisc:
    """ND for one engine (see the module docstring)."""

    def __init__(self, host: Host, neighs: NeighTable[Held], output: Ip6Output, *, resolve_neighbours: bool) -> None:
        self._host, self._neighs, self._output = host, neighs, output
        self.resolve_neighbours = resolve_neighbours

    def rcv(self, skb: Skb6, now: float) -> str | None:
        """`ndisc_rcv` for an ICMPv6 message delivered to this host: what was done, or None when it is no ND
        message (the caller handles it)."""
        data = skb.data
        off = skb.ihl
        itype = data[off + ICMP6H_TYPE]
        if itype not in (icmpv6.NDISC_NEIGHBOUR_SOLICITATION, icmpv6.NDISC_NEIGHBOUR_ADVERTISEMENT):
            return None
        if skb.ttl != icmpv6.NDISC_HOP_LIMIT or data[off + ICMP6H_CODE] != 0 or len(data) < off + ND_TARGET_END:
            return "ndisc: invalid ND message dropped"
        target = int.from_bytes(data[off + ND_TARGET:off + ND_TARGET_END], "big")
        opts = data[off + ND_TARGET_END:]
        dev = self._host.interfaces.get(skb.iif)
        if dev is None:
            return "ndisc: unknown device"
        if itype == icmpv6.NDISC_NEIGHBOUR_SOLICITATION:
            return self._recv_ns(skb, dev.name, target, opts, now)
        lladdr = icmpv6.nd_option(opts, icmpv6.ND_OPT_TARGET_LL_ADDR) or skb.src_mac
        if lladdr and len(lladdr) >= 6:
            solicited = bool(data[off + ND_FLAGS] & icmpv6.NA_SOLICITED)
            if self.resolve_neighbours:
                for held in self._neighs.confirm(dev.name, target, lladdr[:6], now, reachable=solicited):
                    self._output.emit_held(dev, lladdr[:6], held)
            else:
                self._neighs.learn(dev.name, target, lladdr[:6], now)
        return "ndisc: neighbour advertisement"

    def _recv_ns(self, skb: Skb6, devname: str, target: int, opts: bytes | bytearray, now: float) -> str:
        dev = self._host.interfaces[devname]
        if not any(a.addr == target for a in dev.addresses6):
            return "ndisc: solicitation for an address not on this device"
        saddr = skb.saddr
        lladdr = icmpv6.nd_option(opts, icmpv6.ND_OPT_SOURCE_LL_ADDR)
        if saddr and lladdr is not None and len(lladdr) >= 6:
            if self.resolve_neighbours:
                for held in self._neighs.event_ns(devname, saddr, lladdr[:6], now):
                    self._output.emit_held(dev, lladdr[:6], held)
            else:
                self._neighs.learn(devname, saddr, lladdr[:6], now)
        flags = icmpv6.NA_OVERRIDE | (icmpv6.NA_ROUTER if self._host.ipv6_forward else 0)
        daddr = saddr if saddr else _ALL_NODES
        if saddr:
            flags |= icmpv6.NA_SOLICITED
        na = icmpv6.build_na(target, daddr, target, flags, dev.mac)
        self._output.queue_local(na, None, devname)
        return "ndisc: neighbour solicitation answered"
