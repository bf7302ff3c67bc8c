"""IPv6 output: `ip6_local_out` → LOCAL_OUT, `ip6_output` → POSTROUTING → `ip6_finish_output`, the
neighbour output, and the ICMPv6 errors the host sends (net/ipv6/ip6_output.c, icmp.c; ipv6-semantics.md
§1.4, §4).

- Routers never fragment: forwarded packets too big were answered with Packet Too Big in `ip6_forward`.
  Here a datagram reassembled by conntrack defrag leaves refragmented at its received geometry under a new
  fragment id (§1.5), and a locally generated one bigger than the MTU is fragmented (`ip6_fragment`).
- `icmp6_send` (§4.1): never about a multicast destination or a packet not for this host at L2 (except
  Packet Too Big), an unspecified or multicast source, or an ICMPv6 error (`is_ineligible`); rate-limited
  per destination (`icmpv6_xrlim_allow`, §4.3: every error type but Packet Too Big, 100 ms, burst 6); the
  source is the offending daddr if it is ours, else `ipv6_dev_get_saddr(in device, offending saddr)`; the
  quote is cut so the error fits 1280 bytes; the error is attached to the offending packet's ct
  (`nf_ct_attach`), so NAT translates it at LOCAL_OUT/POSTROUTING.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, NoReturn

from natbox.engine.hooks import XtHost
from natbox.engine.hooks6 import Hooks6
from natbox.engine.host import Host, Interface
from natbox.engine.icmp_rate import IcmpRateLimiter
from natbox.engine.local import LocalSend
from natbox.engine.neigh import NeighTable
from natbox.engine.nud import ArpRequest
from natbox.engine.output import Emitted
from natbox.engine.path import NF_STOLEN, Drop, Held, PathState
from natbox.engine.route6 import RTF_REJECT, RTN_LOCAL, RTN_UNICAST, Fib6
from natbox.netfilter import NF_ACCEPT, CtInfo, Direction, DropReason, Hook
from natbox.rand import RandomSource
from natbox.skb import PacketType, Skb, Skb6
from natbox.wire import icmpv6
from natbox.wire.checksum import csum_fold, csum_partial
from natbox.wire.ipv6 import (
    IPV6_MIN_MTU,
    NEXTHDR_FRAGMENT,
    build_frag_hdr,
    format_addr6,
    ip6_rcv_core,
    is_link_local,
    is_multicast,
    pseudo6_sum,
    solicited_node,
)
from natbox.wire.layout import (
    ICMP6H_CKSUM,
    IP6H_HOP_LIMIT,
    IP6H_LEN,
    IP6H_NEXTHDR,
    IP6H_PAYLOAD_LEN,
    IP6H_SADDR,
    TCPH_CHECK,
    UDPH_CHECK,
)

__all__ = ["ICMPV6_RATEMASK", "Ip6Output", "multicast_mac"]

_ETH_P_IPV6: Final = b"\x86\xdd"
ICMPV6_RATELIMIT: Final = 0.1  # net.ipv6.icmp.ratelimit: 100 ms on 6.18 (§4.3)
ICMPV6_RATEMASK: Final = ((1 << 128) - 1) & ~(1 << icmpv6.ICMPV6_PKT_TOOBIG)  # net.ipv6.icmp.ratemask "0-1,3-127"
_HOST_LIKE: Final = (PacketType.HOST, PacketType.LOOPBACK)


def multicast_mac(addr: int) -> bytes:
    """`ipv6_eth_mc_map`: 33:33 and the address's low 32 bits."""
    return b"\x33\x33" + (addr & 0xFFFFFFFF).to_bytes(4, "big")


class Ip6Output:
    """The IPv6 output side of one engine (see the module docstring)."""

    def __init__(self, host: Host, fib6: Fib6, hooks6: Hooks6, neighs: NeighTable[Held], state: PathState,
                 rnd: RandomSource, ctx: XtHost, *, resolve_neighbours: bool) -> None:
        self._host, self._fib6, self._hooks6, self._neighs, self._st, self._rnd = host, fib6, hooks6, neighs, state, rnd
        self.resolve_neighbours = resolve_neighbours
        self.rate = IcmpRateLimiter(ICMPV6_RATELIMIT, ICMPV6_RATEMASK)
        self._ctx = ctx
        # bound by the engine: a packet sent to this host comes back in on lo (`Ip6Input.rcv_skb`)
        self.loopback_rcv: Callable[[Skb6], None] = lambda skb: None
        self._send = LocalSend(state, ctx)  # IPv4's nesting bound and nf_skb_duplicated, shared

    # --- locally generated packets ---------------------------------------------------------------

    def queue_local(self, datagram: bytes | bytearray, attach: Skb6 | None, oif: str = "") -> None:
        """Send a datagram the host generated, at once (`ip6_local_out`), attached to `attach`'s ct in the
        other direction (`nf_ct_attach`). `oif` forces the device (ND replies, link-local destinations)."""
        nskb = Skb6(bytearray(datagram), pkt_id=attach.pkt_id if attach is not None else self._st.current_pkt_id())
        if attach is not None and attach.ct is not None:
            nskb.ct = attach.ct
            nskb.ctinfo = (CtInfo.RELATED_REPLY if attach.ctinfo.direction == Direction.ORIGINAL
                           else CtInfo.RELATED)
        if attach is not None and attach.trace is not None:
            nskb.trace = []
        self._send_now(nskb, oif)

    def send_skb6(self, nskb: Skb6) -> None:
        """Send a segment SYNPROXY built, its ct already set (`synproxy_send_tcp_ipv6` → `ip6_local_out`)."""
        self._send_now(nskb)

    def _send_now(self, nskb: Skb6, oif: str = "") -> None:
        """`ip6_local_out` of a packet the host generates while handling another one, at once, as IPv4's
        (`LocalSend.local_out`: nesting bounded by LOCAL_NESTING_MAX, the other's hook and skb given back)."""
        self._send.local_out(nskb, (lambda s: self.local_out(s, oif)) if oif else self.local_out)

    def send_local6(self, datagram: bytes, pkt_id: int, trace: bool) -> None:
        """A local process sends an IPv6 datagram (`Engine.send_local`): `ip6_rcv_core`'s checks, the source
        chosen by `ipv6_dev_get_saddr` when it is :: (the TCP/UDP/ICMPv6 checksum then computed for it), then
        `ip6_local_out`."""
        data, reason = ip6_rcv_core(datagram, loopback=True)
        st = self._st
        if data is None:
            st.record_drop(pkt_id, Drop(reason or DropReason.IP6_HDR_TRUNCATED, "ip6_local_out"))
            return
        skb = Skb6(data, pkt_id=pkt_id)
        if trace:
            skb.trace = []
        st.skb = skb
        try:
            if skb.saddr == 0:
                self.route_output(skb)
                src = self._fib6.ipv6_dev_get_saddr(skb.oif, skb.daddr)
                if src is None:
                    raise Drop(DropReason.NO_ROUTE, "ip6_route_output", "no source address")
                data[IP6H_SADDR:IP6H_SADDR + 16] = src.to_bytes(16, "big")
                csum_at = {6: TCPH_CHECK, 17: UDPH_CHECK, 58: ICMP6H_CKSUM}.get(skb.protocol)
                if csum_at is not None and len(data) >= skb.ihl + csum_at + 2:
                    pos = skb.ihl + csum_at
                    data[pos:pos + 2] = b"\0\0"
                    check = csum_fold(csum_partial(memoryview(data)[skb.ihl:], pseudo6_sum(
                        src, skb.daddr, skb.protocol, len(data) - skb.ihl)))
                    data[pos:pos + 2] = (check or (0xFFFF if skb.protocol == 17 else 0)).to_bytes(2, "big")
            self.local_out(skb)
        except Drop as d:
            st.record_drop(pkt_id, d)
        finally:
            st.flush_trace(skb)

    def route_output(self, skb: Skb6, oif: str = "") -> None:
        """`ip6_route_output`: the out device and next hop (a local destination goes out `lo`). An unreachable,
        prohibit or blackhole route is an error (`ip6_dst_lookup_tail`: dst.error, no packet); a reject route
        `fib6_is_reject` made of a route out lo has none, and the skb carries it (RTF_REJECT) to `output`."""
        daddr = skb.daddr
        skb.rt_flags = 0
        if oif:
            skb.oif, skb.nexthop = oif, daddr
            return
        res = self._fib6.lookup(daddr)
        if res is None or res.type not in (RTN_UNICAST, RTN_LOCAL) or res.dev is None:
            raise Drop(DropReason.NO_ROUTE, "ip6_route_output", f"no route to {format_addr6(daddr)}")
        skb.oif = "lo" if res.type == RTN_LOCAL else res.dev
        skb.nexthop = res.nexthop
        if res.reject:
            skb.rt_flags = RTF_REJECT

    def local_out(self, skb: Skb6, oif: str = "") -> None:
        """`ip6_local_out` → LOCAL_OUT → (reroute after DNAT) → `ip6_output`."""
        self.route_output(skb, oif)
        daddr = skb.daddr
        if self._hooks6.run(Hook.LOCAL_OUT, skb) != NF_ACCEPT:
            return
        if skb.daddr != daddr:  # nf_nat_ipv6_local_fn → nf_ip6_route_me_harder
            self.route_output(skb)
        self.output(skb)

    def nf_dup_ipv6(self, skb: Skb, gw: int, oif: str) -> None:
        """Mirrors `nf_dup_ipv6()` (-j TEE in ip6tables): a copy of `skb`, untracked, its hop limit one lower
        at PREROUTING and INPUT, routed to `gw` as its next hop (`nf_dup_ipv6_route`: FLOWI_FLAG_KNOWN_NH; with
        `--oif` only routes through that device) and sent through LOCAL_OUT and `ip6_output` at once. No
        route: the copy is freed. A copy never makes another (`nf_skb_duplicated`)."""
        if self._send.duplicating:
            return
        data = bytearray(skb.data)
        if skb.hook in (Hook.PRE_ROUTING, Hook.LOCAL_IN):
            data[IP6H_HOP_LIMIT] = (data[IP6H_HOP_LIMIT] - 1) & 0xFF
        nskb = Skb6(data, iif=skb.iif, pkt_id=skb.pkt_id)
        nskb.mark, nskb.priority, nskb.secmark = skb.mark, skb.priority, skb.secmark  # __copy_skb_header
        nskb.untracked, nskb.ctinfo = True, CtInfo.UNTRACKED  # nf_ct_set(skb, NULL, IP_CT_UNTRACKED)
        res = self._fib6.lookup_via(gw, oif) if oif else self._fib6.lookup(gw)
        if res is None or res.type != RTN_UNICAST or res.dev is None:
            self._st.stats["tee_no_route"] += 1
            return
        nskb.oif, nskb.nexthop = res.dev, res.nexthop
        if res.reject:  # no dst.error: the copy passes LOCAL_OUT and meets ip6_pkt_discard_out
            nskb.rt_flags = RTF_REJECT
        if skb.trace is not None:
            skb.add_trace(f"nf_dup_ipv6: a copy goes to {format_addr6(gw)} via {res.dev}")
            nskb.trace = skb.trace
        self._send.dup_copy(nskb, self._hooks6.run, self.output)

    # --- output ----------------------------------------------------------------------------------

    def output(self, skb: Skb6) -> None:
        """`dst_output` → `ip6_output` → POSTROUTING → `ip6_finish_output`: refragment (defrag's datagrams,
        local ones over the MTU), then the neighbour output. A reject route's dst.output is
        `ip6_pkt_discard_out` instead. Out lo, the packet comes back in as `loopback_xmit` leaves it:
        PACKET_HOST (measured on 6.18: `-i lo -m pkttype --pkt-type unicast` counts a ping of ::1)."""
        if skb.rt_flags & RTF_REJECT:
            self.ip6_pkt_discard_out(skb)
        if self._hooks6.run(Hook.POST_ROUTING, skb) == NF_STOLEN:
            return
        dev = self._host.interfaces[skb.oif]
        if dev.kind == "loopback":
            skb.iif, skb.oif, skb.pkt_type = "lo", "", PacketType.HOST
            self.loopback_rcv(skb)
            return
        mtu = max(dev.mtu, IPV6_MIN_MTU)
        data = skb.data
        # __ip6_finish_output: too big for the MTU (not GSO), or reassembled from smaller fragments
        if (len(data) > mtu and not skb.gso_size) or (skb.frag_max_size and len(data) > skb.frag_max_size):
            pieces = self.ip6_fragment(skb, mtu)
        else:
            pieces = [data]
        for piece in pieces:
            self.neigh_output(dev, skb.nexthop or skb.daddr, skb, piece, mtu)
        if skb.trace is not None:
            skb.add_trace(f"ip6_finish_output: sent on {dev.name}"
                          + (f" as {len(pieces)} fragments" if len(pieces) > 1 else ""))

    def ip6_pkt_discard_out(self, skb: Skb6) -> NoReturn:
        """Mirrors `ip6_pkt_discard_out()` → `ip6_pkt_drop(skb, ICMPV6_NOROUTE, IPSTATS_MIB_OUTNOROUTES)`
        (net/ipv6/route.c; ipv6-semantics.md §4.1): the dst.output of a reject route. An ICMPv6 destination
        unreachable, code 0 (no route), goes to the sender (`icmp6_send`) and the packet is dropped
        (Ip6OutNoRoutes) before POSTROUTING."""
        self.icmp6_send(skb, icmpv6.ICMPV6_DEST_UNREACH, icmpv6.ICMPV6_NOROUTE)
        raise Drop(DropReason.NO_ROUTE, "ip6_pkt_discard_out", f"reject route to {format_addr6(skb.daddr)}")

    def ip6_fragment(self, skb: Skb6, mtu: int) -> list[bytearray]:
        """`ip6_fragment()` (§1.4): pieces of payload `mtu - hlen - 8` (a multiple of 8), or the received
        fragment sizes (`frag_list`) for a reassembled datagram, under a fresh id (`ipv6_select_ident`). The
        unfragmentable part (the fixed header and Hop-by-Hop, Routing, Destination-before-Routing headers) is
        in every fragment; natbox treats the fixed header only as unfragmentable."""
        data = skb.data
        if skb.frag_max_size and skb.frag_max_size > mtu:
            raise Drop(DropReason.PKT_TOO_BIG, "ip6_fragment", f"largest fragment {skb.frag_max_size} > mtu {mtu}")
        hlen = IP6H_LEN
        nexthdr = data[IP6H_NEXTHDR]
        payload = data[hlen:]
        sizes: list[int]
        if skb.frag_list:
            sizes = list(skb.frag_list)
        else:
            size = ((min(mtu, skb.frag_max_size or mtu) - hlen - 8) // 8) * 8
            sizes = [size] * (len(payload) // size) + ([len(payload) % size] if len(payload) % size else [])
        ident = self._rnd.getrandbits(32)
        pieces: list[bytearray] = []
        off = 0
        for i, n in enumerate(sizes):
            chunk = payload[off:off + n] if i < len(sizes) - 1 else payload[off:]
            more = off + len(chunk) < len(payload)
            head = bytearray(data[:hlen])
            head[IP6H_NEXTHDR] = NEXTHDR_FRAGMENT
            body = build_frag_hdr(nexthdr, off, more, ident) + chunk
            head[IP6H_PAYLOAD_LEN:IP6H_PAYLOAD_LEN + 2] = len(body).to_bytes(2, "big")
            pieces.append(head + body)
            off += len(chunk)
            if not more:
                break
        return pieces

    def neigh_output(self, dev: Interface, nexthop: int, skb: Skb6, datagram: bytes | bytearray,
                     mtu: int = 0) -> None:
        """`ip6_finish_output2` → `neigh_output`: the next hop's MAC (multicast mapped, known, synthetic offline;
        resolved by ND when resolving), then the frame. A GSO super-packet over `mtu` leaves with its GSO
        metadata (the device segments it), a CHECKSUM_PARTIAL one marked partial (the device finishes it)."""
        gso_type, gso_size = (skb.gso_type, skb.gso_size) if skb.gso_size and mtu and len(datagram) > mtu else (0, 0)
        partial = skb.csum_partial and datagram is skb.data
        if is_multicast(nexthop):
            mac = multicast_mac(nexthop)
        elif not self.resolve_neighbours:
            mac, synthetic = self.neigh_mac(dev, nexthop)
            if synthetic:
                self._st.stats["neigh_synthetic"] += 1
        else:
            got = self._neighs.lookup(dev.name, nexthop, self._ctx.now)
            if got is None:
                held = (skb, bytes(datagram), gso_type, gso_size, partial)
                reqs, dropped = self._neighs.queue(dev.name, nexthop, held, 768 + len(datagram), self._ctx.now,
                                                   saddr=skb.saddr)
                for req in reqs:
                    self.emit_ns(req, skb.pkt_id)
                for old in dropped:
                    self._st.record_held_drop(old, DropReason.NEIGH_QUEUEFULL, "__neigh_event_send",
                                              format_addr6(old[0].daddr))
                return
            mac = got
        ct = skb.ct
        self._st.out.emitted.append(Emitted(dev.name, mac + dev.mac + _ETH_P_IPV6 + datagram, skb.pkt_id,
                                            ct.ct_id if ct is not None else 0, gso_type, gso_size, partial))

    def neigh_mac(self, dev: Interface, nexthop: int) -> tuple[bytes, bool]:
        """The next hop's MAC offline: multicast mapped, known (static or learned), else a stable synthetic
        02:00 and the address's low 32 bits (then True: `neigh_output` counts these as `neigh_synthetic`).
        The compiled flows (engine/fastpath6.py) put the same in their plans."""
        if is_multicast(nexthop):
            return multicast_mac(nexthop), False
        known = self._neighs.known(dev.name, nexthop)
        if known is None:
            return b"\x02\x00" + (nexthop & 0xFFFFFFFF).to_bytes(4, "big"), True
        return known, False

    def emit_held(self, dev: Interface, mac: bytes, held: Held) -> None:
        """Send a packet that waited for its next hop's MAC (released by an NA), with its GSO/partial state."""
        skb, datagram = held[0], held[1]
        self._st.out.emitted.append(Emitted(dev.name, mac + dev.mac + _ETH_P_IPV6 + datagram, skb.pkt_id,
                                            skb.ct.ct_id if skb.ct is not None else 0, held[2], held[3], held[4]))

    def emit_ns(self, req: ArpRequest, pkt_id: int) -> None:
        """`ndisc_solicit` → `ndisc_send_ns`: multicast to the solicited-node group (or unicast when probing),
        from the queued packet's source if it is ours, else the device's link-local or selected address."""
        dev = self._host.interfaces.get(req.dev)
        if dev is None:
            return
        saddr = req.saddr if req.saddr and self._fib6.is_local(req.saddr) else (
            self._fib6.link_local(dev) or self._fib6.ipv6_dev_get_saddr(dev.name, req.target) or 0)
        if req.dst_mac is None:
            daddr, mac = solicited_node(req.target), multicast_mac(solicited_node(req.target))
        else:
            daddr, mac = req.target, req.dst_mac
        ns = icmpv6.build_ns(saddr, daddr, req.target, dev.mac)
        self._st.out.emitted.append(Emitted(dev.name, mac + dev.mac + _ETH_P_IPV6 + ns, pkt_id, 0))

    # --- ICMPv6 errors ---------------------------------------------------------------------------

    def ndisc_send_redirect(self, skb: Skb6, target: int) -> None:
        """`ndisc_send_redirect()` (§4.4): from the in-device's link-local address to the offending source,
        only if the target is the destination itself or a link-local router, the source is on-link (its route
        has no gateway), and its own per-source pacing (1 s, burst 6) allows; the Target Link-Layer option
        when the target's neighbour entry is valid. Sent by `ndisc_send_skb` through LOCAL_OUT and POSTROUTING
        without a conntrack attachment."""
        dev = self._host.interfaces.get(skb.iif)
        if dev is None:
            return
        lladdr = self._fib6.link_local(dev)
        if lladdr is None:
            skb.add_trace(f"ndisc_send_redirect: no link-local address on {dev.name}")
            return
        daddr, saddr = skb.daddr, skb.saddr
        if target != daddr and not (is_link_local(target) and not is_multicast(target)):
            skb.add_trace("ndisc_send_redirect: target address is not link-local unicast")
            return
        res = self._fib6.lookup(saddr, dev.name)  # ip6_route_output with the device (RT6_LOOKUP_F_IFACE)
        if res is None or res.type != RTN_UNICAST or res.dev != dev.name or res.nexthop != saddr:
            skb.add_trace("ndisc_send_redirect: destination is not a neighbour")
            return
        if not self.rate.peer_allow(saddr, 1.0, self._ctx.now):
            skb.add_trace(f"ndisc_send_redirect: rate-limited for {format_addr6(saddr)}")
            return
        mac = self._neighs.valid_ha(dev.name, target)
        msg = icmpv6.build_redirect(lladdr, saddr, target, daddr, mac, skb.data)
        skb.add_trace(f"ndisc_send_redirect: {format_addr6(daddr)} to {format_addr6(target)} for {format_addr6(saddr)}")
        self.queue_local(msg, None, dev.name)

    def icmp6_send(self, skb: Skb6, icmp_type: int, code: int, info: int = 0) -> None:
        """`icmp6_send()` (see the module docstring)."""
        data = skb.data
        saddr, daddr = skb.saddr, skb.daddr
        always = icmp_type == icmpv6.ICMPV6_PKT_TOOBIG or (  # opt_unrec: an option whose type says "send"
            icmp_type == icmpv6.ICMPV6_PARAMPROB and code == icmpv6.ICMPV6_UNK_OPTION and info < len(data)
            and data[info] & 0xC0 == 0x80)
        if (is_multicast(daddr) or skb.pkt_type not in _HOST_LIKE) and not always:
            skb.add_trace("icmp6_send: no error about a multicast or not-for-us packet")
            return
        if saddr == 0 or is_multicast(saddr) or icmpv6.icmpv6_is_ineligible(data):
            skb.add_trace("icmp6_send: no error (unspecified/multicast source, or an ICMPv6 error)")
            return
        loopback = self._fib6.is_local(saddr)
        if not self.rate.allow_error(saddr, icmp_type, code, self._ctx.now, loopback=loopback):
            self._st.stats["icmp6_ratelimit_host"] += 1
            skb.add_trace(f"icmp6_send: type {icmp_type} to {format_addr6(saddr)} rate-limited (icmpv6_xrlim_allow)")
            return
        if self._fib6.is_local(daddr):
            src: int | None = daddr
        else:
            src = self._fib6.ipv6_dev_get_saddr(skb.iif or None, saddr)
        if src is None:
            skb.add_trace("icmp6_send: no source address")
            return
        err = icmpv6.build_icmpv6_error(src, saddr, icmp_type, code, data, info=info)
        skb.add_trace(f"icmp6_send: ICMPv6 type {icmp_type} code {code} to {format_addr6(saddr)}")
        self.queue_local(err, skb, skb.iif if is_link_local(saddr) and skb.iif else "")
