"""Output and neighbours: `ip_output` → POSTROUTING → `ip_finish_output` → `neigh_output`.

After POSTROUTING (mangle, nat SRC, confirm) a datagram is refragmented or GSO-segmented when it must
be (`__ip_finish_output`, `ip_finish_output_gso`), gets its next hop's MAC and leaves as a frame in
`Output.emitted`. The next hop's MAC comes from the neighbour table (engine/neigh.py): offline, a known
(static or learned) MAC, else a stable synthetic one; with `resolve_neighbours` (the live gateway), the
kernel's ARP state machine, which holds packets while it resolves and fails them with ICMP host
unreachable (`neigh_timer_handler` → `neigh_invalidate` → `arp_error_report`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from natbox.conntrack.tuple import format_addr
from natbox.engine.checks import gso_fits
from natbox.engine.family import AddressFamily
from natbox.engine.hooks import Hooks, XtHost
from natbox.engine.host import Host, Interface
from natbox.engine.icmp_send import IcmpSender
from natbox.engine.neigh import NeighTable, arp_solicit_saddr, build_arp_solicit, skb_truesize
from natbox.engine.output import Emitted
from natbox.engine.path import Drop, Held, PathState, piece_of
from natbox.engine.routing import Fib
from natbox.netfilter import DropReason, Hook
from natbox.rules.api import NF_ACCEPT
from natbox.skb import Skb
from natbox.wire import ipv4
from natbox.wire.checksum import complete_partial_csum
from natbox.wire.gso import gso_network_seglen, gso_segment
from natbox.wire.icmp import ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, ICMP_HOST_UNREACH

__all__ = ["IpOutput"]

_HOOK_POST_ROUTING: Final = Hook.POST_ROUTING
_BROADCAST_MAC: Final = b"\xff" * 6
_ETH_P_IP_BYTES: Final = b"\x08\x00"
NEIGH_MAC_CACHE_MAX: Final = 4096  # next hops whose offline MAC IpOutput.neigh_mac keeps (emptied when full)


class IpOutput:
    """The output stage of one engine (see the module docstring)."""

    def __init__(self, host: Host, fib: Fib, hooks: Hooks, icmp: IcmpSender, family: AddressFamily,
                 neighs: NeighTable[Held], state: PathState, ctx: XtHost,
                 *, resolve_neighbours: bool) -> None:
        self._host, self._fib, self._hooks, self._icmp, self._family = host, fib, hooks, icmp, family
        self._neighs, self._st = neighs, state
        self.resolve_neighbours = resolve_neighbours
        self._ctx = ctx
        # each device's subnet broadcasts (`AddressFamily.subnet_broadcasts`), for one FIB generation: every
        # address change rebuilds the FIB (see `_broadcasts`)
        self._bcast: dict[str, frozenset[int]] = {}
        self._bcast_gen = -1
        # neigh_mac's answers, valid while the FIB and the neighbour table keep their generations (every
        # address, link or learned MAC change bumps one), at most NEIGH_MAC_CACHE_MAX (emptied when full)
        self._macs: dict[tuple[str, int], tuple[bytes, bool]] = {}
        self._heads: dict[tuple[str, int], tuple[bytes, bool]] = {}  # (the header neigh_output puts on, synthetic)
        self._macs_fib = self._macs_neigh = -1
        # bound by the engine: loopback_xmit (LocalStack) and the flow caches' recording of a forwarded
        # packet (`Forwarder.remember_flow`)
        self.loopback_xmit: Callable[[Skb], None] = lambda skb: None
        self.remember_flow: Callable[[Skb], None] = lambda skb: None

    def ip_output(self, skb: Skb) -> None:
        """`ip_output` → POSTROUTING → `ip_finish_output` (fragment, resolve neighbour, transmit)."""
        if self._hooks.run(_HOOK_POST_ROUTING, skb) != NF_ACCEPT:
            return
        dev = self._host.interfaces[skb.oif]
        if dev.kind == "loopback":
            self.loopback_xmit(skb)
            return
        if skb.gso_size and not skb.frag_max_size:
            self._ip_finish_output_gso(skb, dev)
            return
        # __ip_finish_output: refragment reassembled datagrams to their largest fragment, fragment what
        # exceeds the MTU, or refuse with FRAG_NEEDED when DF forbids it (ip_fragment)
        partial = skb.csum_partial
        if partial and len(skb.data) > dev.mtu:
            complete_partial_csum(skb.data)  # ip_do_fragment: "cleanup checksum before fragmentation"
            skb.csum_partial = partial = False
        pieces: list[bytearray]
        if len(skb.data) <= dev.mtu and not skb.frag_max_size:
            # ip_output_fragments' first case (nothing to fragment) without its copy: the piece is only read
            pieces, icmp_mtu = [skb.data], 0
        else:
            pieces, icmp_mtu = ipv4.ip_output_fragments(
                skb.data, dev.mtu, frag_max_size=skb.frag_max_size, frag_pmtu=skb.frag_pmtu,
                frag_list=skb.frag_list, ignore_df=bool(skb.frag_max_size))
        if not pieces:
            self._icmp.icmp_send(skb, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, info=icmp_mtu)
            raise Drop(DropReason.FRAG_NEEDED, "ip_fragment", f"{len(skb.data)} > mtu {icmp_mtu} with DF")
        nexthop = skb.nexthop or skb.daddr
        for piece in pieces:
            self.neigh_output(dev, nexthop, skb, piece, 0, 0, partial)
        if skb.fast_key is not None and len(pieces) == 1:
            self.remember_flow(skb)
        if skb.trace is not None:
            skb.add_trace(f"ip_finish_output: sent on {dev.name}"
                          + (f" as {len(pieces)} fragments" if len(pieces) > 1 else "")
                          + f": {self._family.describe(skb)}")

    def _ip_finish_output_gso(self, skb: Skb, dev: Interface) -> None:
        """`ip_finish_output_gso()`: a GSO packet leaves whole when its segments fit the MTU; otherwise it
        is segmented in software and each segment goes through `ip_fragment` (natbox.wire.gso)."""
        mtu = dev.mtu
        nexthop = skb.nexthop or skb.daddr
        if gso_fits(gso_network_seglen(skb.data, skb.gso_size), mtu) or len(skb.data) <= mtu:
            whole = len(skb.data) > mtu
            self.neigh_output(dev, nexthop, skb, skb.data, skb.gso_type if whole else 0,
                              skb.gso_size if whole else 0, skb.csum_partial)
            if skb.fast_key is not None:
                self.remember_flow(skb)
            return
        segs = gso_segment(skb.data, skb.gso_type, skb.gso_size)
        if segs is None:
            raise Drop(DropReason.GSO_SEGMENT, "skb_gso_segment",
                       f"gso_type {skb.gso_type} gso_size {skb.gso_size} on a {len(skb.data)}-byte packet")
        sent = 0
        for seg in segs:
            pieces, icmp_mtu = ipv4.ip_output_fragments(seg, mtu)
            if not pieces:
                self._icmp.icmp_send(piece_of(skb, seg), ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, info=icmp_mtu)
                self._st.stats[str(DropReason.FRAG_NEEDED)] += 1
                continue
            for piece in pieces:
                self.neigh_output(dev, nexthop, skb, piece, 0, 0, False)
                sent += 1
        if skb.trace is not None:
            skb.add_trace(f"ip_finish_output_gso: segments of {skb.gso_size} bytes exceed mtu {mtu}: "
                          f"{len(segs)} segments, {sent} frames sent on {dev.name}")

    def neigh_output(self, dev: Interface, nexthop: int, skb: Skb, datagram: bytes | bytearray, gso_type: int,
                     gso_size: int, partial: bool) -> None:
        """`ip_finish_output2` → `neigh_output()`: put the next hop's MAC on `datagram` and send it, or (live
        mode, next hop unresolved) hold it while ARP resolves (`neigh_resolve_output`)."""
        mac: bytes | None
        if not self.resolve_neighbours:
            # neigh_mac's answer as the frame's Ethernet header, kept beside it for the same generations
            key = (dev.name, nexthop)
            hit = (self._heads.get(key) if self._macs_fib == self._fib.generation
                   and self._macs_neigh == self._neighs.generation else None)
            if hit is None:
                mac, synthetic = self.neigh_mac(dev, nexthop)  # (clears _heads with _macs when they go stale)
                heads = self._heads
                if len(heads) >= NEIGH_MAC_CACHE_MAX:
                    heads.clear()
                hit = heads[key] = (mac + dev.mac + _ETH_P_IP_BYTES, synthetic)
            if hit[1]:
                self._st.stats["neigh_synthetic"] += 1  # the synthetic MACs are counted
            ct = skb.ct
            self._st.out.emitted.append(Emitted(dev.name, hit[0] + datagram, skb.pkt_id,
                                                ct.ct_id if ct is not None else 0, gso_type, gso_size, partial))
            return
        if nexthop == 0xFFFFFFFF or nexthop in self._broadcasts(dev):
            mac = _BROADCAST_MAC
        elif nexthop >> 28 == 0xE:
            mac = b"\x01\x00\x5e" + (nexthop & 0x7FFFFF).to_bytes(3, "big")  # ip_eth_mc_map
        else:
            now = self._ctx.now
            neighs = self._neighs
            mac = neighs.lookup(dev.name, nexthop, now)
            if mac is None:
                held = (skb, bytes(datagram), gso_type, gso_size, partial)
                reqs, dropped = neighs.queue(dev.name, nexthop, held, skb_truesize(len(datagram)), now,
                                             saddr=skb.saddr)
                for req in reqs:
                    self._st.out.emitted.append(Emitted(req.dev, build_arp_solicit(
                        req, dev.mac, arp_solicit_saddr(req, dev, self._fib)), skb.pkt_id, 0))
                for old in dropped:
                    self._st.record_held_drop(old, DropReason.NEIGH_QUEUEFULL, "__neigh_event_send",
                                              format_addr(old[0].daddr))
                if skb.trace is not None:
                    skb.add_trace(f"neighbour {format_addr(nexthop)} on {dev.name} unresolved: held while ARP "
                                  "resolves")
                return
        # emit_held, without copying the datagram first (bytes + bytearray is bytes)
        ct = skb.ct
        self._st.out.emitted.append(Emitted(dev.name, mac + dev.mac + _ETH_P_IP_BYTES + datagram, skb.pkt_id,
                                            ct.ct_id if ct is not None else 0, gso_type, gso_size, partial))

    def emit_held(self, dev: Interface, mac: bytes, held: Held) -> None:
        """Send a packet that waited for its next hop's MAC (released by an ARP message)."""
        skb, datagram, gso_type, gso_size, partial = held
        self._st.out.emitted.append(Emitted(dev.name, mac + dev.mac + _ETH_P_IP_BYTES + datagram, skb.pkt_id,
                                            skb.ct.ct_id if skb.ct is not None else 0, gso_type, gso_size, partial))

    def neigh_timers(self, now: float) -> None:
        """`neigh_timer_handler()` for every entry due: requests go out; each packet held by an entry that
        FAILED earns its sender ICMP host unreachable (`arp_error_report` → `ipv4_link_failure` →
        `icmp_send`, which skips non-first fragments and is rate-limited) and is dropped."""
        st = self._st
        reqs, failed = self._neighs.timers(now)
        for req in reqs:
            dev = self._host.interfaces.get(req.dev)
            if dev is not None:
                st.out.emitted.append(Emitted(req.dev, build_arp_solicit(
                    req, dev.mac, arp_solicit_saddr(req, dev, self._fib)), 0, 0))
        for held in failed:
            skb, datagram = held[0], held[1]
            nskb = piece_of(skb, bytearray(datagram))
            st.skb = nskb
            self._icmp.icmp_send(nskb, ICMP_DEST_UNREACH, ICMP_HOST_UNREACH)
            st.record_held_drop(held, DropReason.NEIGH_FAILED, "neigh_invalidate", format_addr(skb.daddr))
        st.skb = None

    def neigh_mac(self, dev: Interface, nexthop: int) -> tuple[bytes, bool]:
        """The next hop's MAC offline: broadcast, known (static or learned), else a stable synthetic one
        (02:00 and the address; then True: `neigh_output` counts these as `neigh_synthetic`). Runs for every
        packet the slow path sends, so the answer is kept for the FIB and neighbour generations it holds for."""
        key = (dev.name, nexthop)
        if self._macs_fib == self._fib.generation and self._macs_neigh == self._neighs.generation:
            hit = self._macs.get(key)
            if hit is not None:
                return hit
        else:
            self._macs.clear()
            self._heads.clear()
            self._macs_fib, self._macs_neigh = self._fib.generation, self._neighs.generation
        if nexthop == 0xFFFFFFFF or nexthop in self._broadcasts(dev):
            answer = (_BROADCAST_MAC, False)
        else:
            mac = self._neighs.known(dev.name, nexthop)
            answer = (b"\x02\x00" + nexthop.to_bytes(4, "big"), True) if mac is None else (mac, False)
        macs = self._macs
        if len(macs) >= NEIGH_MAC_CACHE_MAX:
            macs.clear()
        macs[key] = answer
        return answer

    def _broadcasts(self, dev: Interface) -> frozenset[int]:
        """`dev`'s subnet broadcast addresses, worked out once per device and FIB generation (`Fib.rebuild`
        runs on every address or link change, so the generation stamps the addresses)."""
        gen = self._fib.generation
        if gen != self._bcast_gen:
            self._bcast.clear()
            self._bcast_gen = gen
        bcast = self._bcast.get(dev.name)
        if bcast is None:
            bcast = self._bcast[dev.name] = self._family.subnet_broadcasts(dev)
        return bcast
