"""Opening the devices the gateway owns: an AF_PACKET socket on each existing interface of the model,
a TAP device for each `kind = "tap"` one."""

from __future__ import annotations

import select
import subprocess
import zlib
from collections.abc import Callable

from natbox.adapters.packet_socket import (
    PacketSocket,
    PacketSocketError,
    interface_is_up,
    interface_mac,
    interface_mtu,
)
from natbox.adapters.tuntap import TapDevice, TapError
from natbox.adapters.vnet import RxFrame
from natbox.engine.host import Interface
from natbox.gateway.config import GatewayConfig
from natbox.gateway.log import ERR, say
from natbox.gateway.loop import Port
from natbox.wire.ethernet import ETH_P_ARP, ETH_P_IP, ETH_P_IPV6
from natbox.wire.layout import ETH_PROTO

__all__ = ["OpenPorts", "ProtocolPort", "open_ports", "tap_mac"]

NO_MAC = b"\x00" * 6


def tap_mac(name: str) -> bytes:
    """A stable locally administered MAC for a TAP the model gives none: 02:4e:42 + crc32(name)."""
    return b"\x02\x4e\x42" + (zlib.crc32(name.encode()) & 0xFFFFFF).to_bytes(3, "big")


class OpenPorts:
    """The devices opened for the owned interfaces: ports and device MTUs by model name, and a
    description of each for the `ready:` line."""

    def __init__(self) -> None:
        self.ports: dict[str, Port] = {}
        self.mtus: dict[str, int] = {}
        self.described: list[str] = []

    def close(self) -> None:
        for p in self.ports.values():
            p.close()
        self.ports.clear()


class ProtocolPort:
    """An AF_PACKET interface under --offload: one socket per ethertype natbox handles (IPv4 and IPv6 each with a
    ring of its own and vnet headers, ARP plain), polled as one descriptor (an epoll set).

    A packet socket bound to one protocol is served after tc ingress (`__netif_receive_skb_core` delivers
    `ptype_all` first, then runs `sch_handle_ingress`, then the protocol's `ptype_base` handlers), so it never
    sees a frame the offload datapath redirected; an ETH_P_ALL socket would receive a copy of every one and
    natbox would forward it a second time. Each frame leaves by the socket of its own ethertype, so the
    kernel's skb->protocol is right for it.

    What a ring socket keeps is its own: its slots, the slots of the frames it handed out in place (zero-copy,
    given back at its next read) and its stall recovery (consecutive empty reads), so IPv4's and IPv6's rings
    never disturb each other; `stats` are the sockets' counters summed."""

    def __init__(self, ifname: str, sockets: dict[int, PacketSocket]) -> None:
        self.ifname = ifname
        self._sockets = list(sockets.values())
        self._by_type = {t.to_bytes(2, "big"): s for t, s in sockets.items()}
        self._main = sockets[ETH_P_IP]
        self._ep = select.epoll()
        for sock in self._sockets:
            self._ep.register(sock.fileno(), select.EPOLLIN)

    @property
    def stats(self) -> dict[str, int]:
        """Every socket's counters summed (what the loop reports for the interface)."""
        total: dict[str, int] = {}
        for sock in self._sockets:
            for key, value in sock.stats.items():
                total[key] = total.get(key, 0) + value
        return total

    @property
    def on_truncated(self) -> Callable[[int], None] | None:
        """Each socket's `on_truncated` (PacketSocket): called with the length of a frame cut short."""
        return self._main.on_truncated

    @on_truncated.setter
    def on_truncated(self, fn: Callable[[int], None] | None) -> None:
        for sock in self._sockets:
            sock.on_truncated = fn

    def fileno(self) -> int:
        return self._ep.fileno()

    def recv_batch(self, max_frames: int) -> list[RxFrame]:
        """Frames from the sockets that are readable now, IPv4's first. Only those are read: a ring read that
        finds nothing counts towards the ring's stall recovery (PacketSocket._unstick_ring), and IPv6 or ARP
        traffic alone must not make the IPv4 ring look stuck (it was torn down every 256 such wake-ups)."""
        ready = {fd for fd, _events in self._ep.poll(0)}
        frames: list[RxFrame] = []
        for sock in self._sockets:
            if len(frames) < max_frames and sock.fileno() in ready:
                frames += sock.recv_batch(max_frames - len(frames))
        return frames

    def send(self, frame: bytes | bytearray, gso_type: int = 0, gso_size: int = 0, partial: bool = False,
             csum_ready: bool = False, tail: memoryview | None = None) -> bool:
        sock = self._by_type.get(bytes(frame[ETH_PROTO:ETH_PROTO + 2]), self._main)
        return sock.send(frame, gso_type, gso_size, partial, csum_ready, tail)

    def close(self) -> None:
        self._ep.close()
        for sock in self._sockets:
            sock.close()


def _open_tap(cfg: GatewayConfig, iface: Interface, opened: OpenPorts) -> None:
    # The kernel never verifies a CHECKSUM_PARTIAL packet's L4 checksum (nf_ip_checksum). The loop skips
    # the engine's check for exactly those packets (see EventLoop), so the adapters leave them partial;
    # the transmit side writes the pseudo-header sum of the final (NATed) header back. --complete-csum
    # instead finishes every partial checksum before the engine sees it (one pass over each packet).
    ns, dev = cfg.tap_netns.get(iface.name, (None, iface.name))
    tap = TapDevice(dev, vnet_hdr=cfg.vnet_hdr, netns=ns, complete_csum=cfg.complete_csum)
    tap.ifname = iface.name
    opened.ports[iface.name] = tap
    if iface.mac == NO_MAC:
        iface.mac = tap_mac(iface.name)
    opened.mtus[iface.name] = iface.mtu
    opened.described.append(f"{iface.name} (tap{' ' + ns + '/' + dev if ns else ''}"
                            f"{', vnet_hdr' if cfg.vnet_hdr else ''})")
    if ns is None:
        subprocess.run(["ip", "link", "set", dev, "up"], check=False, capture_output=True)


def _open_packet_socket(cfg: GatewayConfig, iface: Interface, opened: OpenPorts) -> None:
    real_mac = interface_mac(iface.name)
    promisc = cfg.promisc
    if iface.mac == NO_MAC:
        iface.mac = real_mac
    elif iface.mac != real_mac:
        promisc = True  # the model's MAC is not the device's: see frames sent to it
    mtu = opened.mtus[iface.name] = interface_mtu(iface.name)
    if not interface_is_up(iface.name):
        say(f"warning: {iface.name} is down: natbox can neither receive nor send on it "
            f"(ip link set {iface.name} up)")
    if mtu != iface.mtu:
        say(f"warning: {iface.name}: model mtu {iface.mtu}, device mtu {mtu}")
    # IPv6: Neighbour Solicitations go to solicited-node groups (33:33:ff:..) that nothing joined on the
    # device (the kernel's IPv6 is off there, or knows none of natbox's addresses): allmulti lets them in
    allmulti = bool(iface.addresses6)
    if cfg.offload:  # one socket per ethertype, served after tc ingress (see ProtocolPort)
        sockets: dict[int, PacketSocket] = {}
        try:
            for proto in (ETH_P_IP, ETH_P_ARP, ETH_P_IPV6):
                ip = proto != ETH_P_ARP  # IPv4 and IPv6 carry GSO packets: vnet headers, a ring each, zero-copy
                sockets[proto] = PacketSocket(iface.name, vnet_hdr=cfg.vnet_hdr and ip, ring=cfg.ring and ip,
                                              promisc=promisc, complete_csum=cfg.complete_csum,
                                              qdisc_bypass=cfg.qdisc_bypass, zero_copy=ip, protocol=proto,
                                              allmulti=allmulti and proto == ETH_P_IPV6,
                                              compact_ring=True)  # the program carries the bulk: 1 MB rings
        except PacketSocketError:
            for sock in sockets.values():
                sock.close()
            raise
        opened.ports[iface.name] = ProtocolPort(iface.name, sockets)
    else:
        opened.ports[iface.name] = PacketSocket(iface.name, vnet_hdr=cfg.vnet_hdr, ring=cfg.ring, promisc=promisc,
                                                complete_csum=cfg.complete_csum, qdisc_bypass=cfg.qdisc_bypass,
                                                zero_copy=True,  # long frames leave from the ring itself
                                                allmulti=allmulti)
    opened.described.append(f"{iface.name} (af_packet{', vnet_hdr' if cfg.vnet_hdr else ''}"
                            f"{', ring' if cfg.ring else ''}{', promisc' if promisc else ''}"
                            f"{', per-protocol for --offload' if cfg.offload else ''})")


def open_ports(cfg: GatewayConfig, owned: list[Interface]) -> OpenPorts | None:
    """Open every owned interface; on failure close what was opened, say why and return None. The model's
    MTU of each becomes the device's: the engine checks packets against it; GSO super-packets (vnet
    headers) pass when their segments fit (skb_gso_validate_network_len), else it segments or answers
    frag-needed."""
    opened = OpenPorts()
    try:
        for iface in owned:
            if iface.kind == "tap":
                _open_tap(cfg, iface, opened)
            else:
                _open_packet_socket(cfg, iface, opened)
    except (PacketSocketError, TapError) as exc:
        opened.close()
        say(str(exc), ERR)
        return None
    for iface in owned:
        iface.mtu = opened.mtus[iface.name]
    return opened
