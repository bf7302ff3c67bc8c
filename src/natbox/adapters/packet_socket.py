"""AF_PACKET sockets bound to one interface: plain recv/send or a memory-mapped TPACKET_V2 ring, with
optional PACKET_VNET_HDR so TCP moves as 64 KiB GSO segments with partial checksums.

Frames handed to the caller are `RxFrame = (frame, gso_type, gso_size, csum_was_partial)`:

* `frame` is the Ethernet frame as bytes. When the kernel passed the packet with `CHECKSUM_PARTIAL`
  (virtio flag `VIRTIO_NET_HDR_F_NEEDS_CSUM`, or `TP_STATUS_CSUMNOTREADY` without a vnet header) its
  checksum field holds only the pseudo-header sum; the adapter finishes it (`complete_partial_csum`)
  when asked to (`complete_csum=True`, always without vnet headers) so the engine can check and update
  it like any other.
* `gso_type`/`gso_size` are the virtio GSO fields (0 when the frame is one wire packet).
* `csum_was_partial` says the frame's TCP/UDP checksum field still holds only the pseudo-header sum
  (when the socket was opened with `complete_csum=False`): the L4 checksum must not be verified (the
  kernel never verifies CHECKSUM_PARTIAL packets) and the transmit side hands the packet back to the
  kernel as partial, as the kernel's forwarding path keeps `ip_summed == CHECKSUM_PARTIAL`: either the
  field already holds the final header's pseudo-header sum (`send(..., csum_ready=True)`: the engine NATs
  it in that form) or only the headers are rewritten (`tx_parts`); the payload is never copied.
  With `complete_csum=True` the checksum is finished on receipt and the flag is False.

The virtio_net_hdr and checksum helpers are natbox.adapters.vnet (shared with the TAP adapter). The ring
reader never stalls for good on a slot the kernel skipped (see `PacketSocket._unstick_ring`).

Our own transmissions are never read back (`PACKET_IGNORE_OUTGOING`, Linux 4.20+; older kernels: the
`PACKET_OUTGOING` packet type is skipped). Every queue is bounded: the ring has `ring_frames` slots, a
read returns at most `max_frames`.

A ring's slots hold a whole 64 KiB GSO frame with vnet headers (17.8 MB for 256 slots), else a frame of the
device's MTU (`ring_slot_size`: a page for 1500; `compact_ring` with vnet headers too: 1 MB). A longer frame (a
GSO frame in a compact ring, any frame once the MTU is raised) is queued whole on the socket as well
(PACKET_COPY_THRESH; at most COPY_RCVBUF bytes of them) and its slot, marked TP_STATUS_COPY, holds its head:
the reader takes the whole frame from the socket queue, in slot order, where it used to be cut short.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import select
import socket
import struct
import sys
from collections.abc import Callable
from typing import Final

from natbox.adapters.vnet import (
    GSO_ECN,
    NO_VNET_HDR,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VNET_HDR,
    VNET_HDR_LEN,
    RxFrame,
    complete_notready,
    l4_csum_location,
    parse_vnet_rx,
    tx_hdr_ready,
    tx_parts,
    vnet_rx,
)
from natbox.errors import NatboxError
from natbox.wire.ethernet import ETH_P_ALL

__all__ = [
    "ETH_P_ALL",
    "PacketSocket",
    "PacketSocketError",
    "interface_is_up",
    "interface_mac",
    "interface_mtu",
]


# <linux/if_packet.h>, <linux/if_ether.h>, <linux/virtio_net.h>
SOL_PACKET: Final = 263
PACKET_ADD_MEMBERSHIP: Final = 1
PACKET_RX_RING: Final = 5
PACKET_AUXDATA: Final = 8
PACKET_VERSION: Final = 10
PACKET_COPY_THRESH: Final = 7
PACKET_VNET_HDR: Final = 15
PACKET_QDISC_BYPASS: Final = 20
PACKET_IGNORE_OUTGOING: Final = 23
PACKET_MR_PROMISC: Final = 1
PACKET_MR_ALLMULTI: Final = 2
PACKET_OUTGOING: Final = 4
TPACKET_V2: Final = 1
TP_STATUS_KERNEL: Final = 0
TP_STATUS_USER: Final = 1
TP_STATUS_COPY: Final = 2
TP_STATUS_LOSING: Final = 4
TP_STATUS_CSUMNOTREADY: Final = 8
TPACKET2_HDR = struct.Struct("=IIIHHIIHH4x")  # tp_status tp_len tp_snaplen tp_mac tp_net sec nsec vlan
TPACKET2_HEAD = struct.Struct("=IIIH")  # the part of it the reader needs: tp_status tp_len tp_snaplen tp_mac
TP_STATUS = struct.Struct("=I")
TP_STATUS_BYTE = 0 if sys.byteorder == "little" else 3  # the byte of tp_status holding TP_STATUS_USER
SLL_PKTTYPE = 32 + 10  # sockaddr_ll.sll_pkttype, after the (16-aligned) tpacket2_hdr
AUXDATA = struct.Struct("=IIIHHHH")  # struct tpacket_auxdata
SIOCGIFFLAGS: Final = 0x8913
IFF_UP: Final = 0x1
SIOCGIFMTU: Final = 0x8921
SIOCGIFHWADDR: Final = 0x8927
SO_RCVBUFFORCE: Final = 33

PLAIN_BUF = 65536 + 256  # largest frame a plain read returns (a 64 KiB GSO frame plus headers)
RING_FRAMES_DEFAULT = 256  # ring slots (each a frame); bounds kernel->natbox buffering per interface
RING_SLOT_HEAD = 128  # a slot's bytes before the frame's end beyond the MTU: tpacket2_hdr, sockaddr_ll, the vnet
# header, Ethernet and a VLAN tag (tpacket_rcv's macoff is 76 with a vnet header)
RING_SLOT_MAX = 69632  # 17 pages: a whole 64 KiB frame (lo's MTU)
COPY_RCVBUF = 8 << 20  # bytes of whole frames longer than a slot waiting in the socket queue (PACKET_COPY_THRESH)
COPY_POOL = 16  # read buffers for such frames reused from one read to the next (more in a read: a fresh bytes each)
ZERO_COPY_MIN = 2048  # zero_copy: ring frames longer than this are handed out as views (shorter: copied)
CSUM_HEAD = 128  # bytes l4_csum_location reads at most: Ethernet, IPv4 with options or IPv6's fixed header, TCP
RING_STALL_READS = 256  # consecutive reads that found nothing although poll said readable: the ring is stuck
RCVBUF = 4 << 20  # socket buffers (plain mode) in bytes
SNDBUF = 4 << 20


class PacketSocketError(NatboxError, OSError):
    """Opening or configuring the socket failed; the message names the interface."""


def _ifreq_ioctl(ifname: str, request: int) -> bytes:
    """An interface ioctl (SIOCGIF*) through a socket of the calling thread's namespace (sysfs would show
    the namespace /sys was mounted in, which `setns` does not change)."""
    name = ifname.encode()
    if not name or len(name) > 15:
        raise PacketSocketError(f"{ifname!r}: bad interface name")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            return fcntl.ioctl(s.fileno(), request, struct.pack("16s24x", name))
        except OSError as exc:
            raise PacketSocketError(f"{ifname}: {exc.strerror}") from None


def interface_mac(ifname: str) -> bytes:
    """The interface's MAC address (SIOCGIFHWADDR), in the calling thread's namespace."""
    return _ifreq_ioctl(ifname, SIOCGIFHWADDR)[18:24]


def interface_is_up(ifname: str) -> bool:
    """IFF_UP (SIOCGIFFLAGS), in the calling thread's namespace."""
    return bool(struct.unpack_from("=H", _ifreq_ioctl(ifname, SIOCGIFFLAGS), 16)[0] & IFF_UP)


def interface_mtu(ifname: str) -> int:
    """The interface's MTU (SIOCGIFMTU), in the calling thread's namespace."""
    return int(struct.unpack_from("=i", _ifreq_ioctl(ifname, SIOCGIFMTU), 16)[0])


def ring_slot_size(ifname: str) -> int:
    """A ring slot's size for `ifname`: its MTU's frames and their headers in whole pages (4096 bytes for an
    MTU of 1500), at most RING_SLOT_MAX. Longer frames (GSO, an MTU raised later) arrive whole through the
    socket queue (PACKET_COPY_THRESH). Slots sized for a 64 KiB GSO frame made each ring 17.8 MB."""
    try:
        mtu = interface_mtu(ifname)
    except PacketSocketError:
        mtu = 1500
    need = max(0, mtu) + RING_SLOT_HEAD
    return min(RING_SLOT_MAX, -(-need // mmap.PAGESIZE) * mmap.PAGESIZE)


class PacketSocket:
    """One AF_PACKET socket on `ifname` (in the caller's namespace), non-blocking.

    `ring=True` maps a TPACKET_V2 receive ring of `ring_frames` slots; otherwise frames are read with
    recv/recvmsg. A slot holds a 64 KiB GSO frame with vnet headers (17.8 MB for 256 slots), else a frame of
    the device's MTU; `compact_ring=True` sizes it for the MTU with vnet headers too (1 MB), for a socket
    that sees few GSO frames (--offload's: the BPF program carries the bulk flows): each longer frame then
    costs a syscall and holds its skb until read, which took 25-45 % of the pure gateway's TCP rate when
    it carried bulk TCP itself. `vnet_hdr=True` sets PACKET_VNET_HDR (GSO frames and partial checksums pass through).
    `complete_csum=False` leaves partial checksums partial (the frame's field then holds only the
    pseudo-header sum): for consumers that do not verify L4 checksums; transmission recomputes the
    pseudo-header sum anyway, so NAT's changes to addresses stay correct.
    Transmission is `send()` (with PACKET_QDISC_BYPASS where available). `protocol`: the ethertype the
    socket receives (`bind`), every one by default."""

    def __init__(self, ifname: str, *, vnet_hdr: bool = False, ring: bool = False, promisc: bool = False,
                 ring_frames: int = RING_FRAMES_DEFAULT, qdisc_bypass: bool = True,
                 complete_csum: bool = True, zero_copy: bool = False, protocol: int = ETH_P_ALL,
                 allmulti: bool = False, compact_ring: bool = False) -> None:
        self.ifname = ifname
        # the ethertype bound to: ETH_P_ALL sees every frame before tc ingress runs (tcpdump's place); one
        # protocol sees only what tc ingress passed up (--offload: not the frames a BPF program redirected)
        self.protocol = protocol
        self.complete_csum = complete_csum
        self.zero_copy = zero_copy and ring and vnet_hdr and not complete_csum
        self._view: memoryview | None = None  # of the ring, for zero-copy frames
        self._held: list[int] = []  # ring slots whose frames were handed out as views
        self.vnet_hdr = vnet_hdr
        self.ring = ring
        self.compact_ring = compact_ring
        self.stats = {"rx": 0, "tx": 0, "rx_truncated": 0, "rx_partial": 0, "rx_gso": 0, "tx_error": 0,
                      "rx_losing": 0, "rx_csum_completed": 0, "rx_ring_resync": 0, "rx_ring_reset": 0,
                      "rx_in_place": 0, "rx_copied": 0, "rx_copy_lost": 0}
        # rx_in_place: frames handed out as views (of the ring, or of a read buffer: zero_copy); rx_copied: frames
        # longer than a ring slot read whole from the socket queue; rx_copy_lost: such a frame missing or not
        # the slot's (dropped)
        self._pool: list[bytearray] = []  # read buffers of the frames longer than a slot (COPY_POOL)
        self._pool_used = 0
        # called with the length of each received frame its slot (or the read buffer) cut short, which is then
        # dropped: without vnet headers, a peer's TSO/GRO super-packet larger than a ring slot (the loop warns)
        self.on_truncated: Callable[[int], None] | None = None
        self._ignore_outgoing = False
        self._mm: mmap.mmap | None = None
        self._slot = 0
        self._slots = 0
        self._slot_size = 0
        self._empty_reads = 0  # consecutive ring reads that found the next slot not ready
        try:
            self.ifindex = socket.if_nametoindex(ifname)
        except OSError:
            raise PacketSocketError(f"{ifname}: no such interface") from None
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: nothing queued before bind
        except OSError as exc:
            raise PacketSocketError(f"{ifname}: AF_PACKET socket: {exc.strerror} (needs CAP_NET_RAW)") from None
        self.sock = sock
        try:
            self._setup(promisc, ring_frames, qdisc_bypass, allmulti)
        except OSError as exc:
            self.close()
            raise PacketSocketError(f"{ifname}: {exc.strerror or exc}") from None

    def _setup(self, promisc: bool, ring_frames: int, qdisc_bypass: bool, allmulti: bool) -> None:
        sock = self.sock
        try:
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            self._ignore_outgoing = True
        except OSError:
            self._ignore_outgoing = False
        if self.vnet_hdr:
            sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        elif not self.ring:
            sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        if qdisc_bypass:
            with contextlib.suppress(OSError):
                sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
        if self.ring:
            sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
            self._slots = ring_frames
            self._slot_size = RING_SLOT_MAX if self.vnet_hdr and not self.compact_ring else ring_slot_size(self.ifname)
            # a frame longer than a slot (a GSO frame, a device's MTU raised later) is also queued whole on the
            # socket (tpacket_rcv: TP_STATUS_COPY), where _recv_copied reads it, instead of only cut short
            sock.setsockopt(SOL_PACKET, PACKET_COPY_THRESH, 1)
            try:  # beyond net.core.rmem_max, as root
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, COPY_RCVBUF)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, COPY_RCVBUF)
            self._map_ring()
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        if promisc:
            mreq = struct.pack("=iHH8s", self.ifindex, PACKET_MR_PROMISC, 0, b"")
            sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        elif allmulti:  # every multicast frame, whatever the device's filter holds (ND's solicited-node groups)
            mreq = struct.pack("=iHH8s", self.ifindex, PACKET_MR_ALLMULTI, 0, b"")
            sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        sock.bind((self.ifname, self.protocol))
        sock.setblocking(False)

    def _map_ring(self) -> None:
        slot, n = self._slot_size, self._slots
        self.sock.setsockopt(SOL_PACKET, PACKET_RX_RING, struct.pack("=IIII", slot, n, slot, n))  # a frame per block
        self._mm = mmap.mmap(self.sock.fileno(), slot * n, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._slot = 0
        self._held = []
        if self.zero_copy:
            self._view = memoryview(self._mm)

    def _release_held(self) -> None:
        """Give the slots of the last batch's view frames back to the kernel."""
        mm = self._mm
        if mm is not None:
            release = TP_STATUS.pack_into
            for base in self._held:
                release(mm, base, TP_STATUS_KERNEL)
        self._held.clear()

    def _unmap(self) -> None:
        """Unmap the ring. A view of it still held somewhere (a caller that kept a frame past the next
        read, against the contract) keeps the mapping alive until it is dropped, instead of failing."""
        mm = self._mm
        self._mm = None
        self._held.clear()
        if self._view is not None:
            self._view.release()
            self._view = None
        if mm is not None:
            with contextlib.suppress(BufferError):
                mm.close()

    def _unstick_ring(self) -> None:
        """The socket keeps polling readable but the next slot never becomes ready. Either the kernel
        left a hole (it moved past a slot it never handed over), then reading goes on at the next slot
        it did hand over; or no slot is ready at all although frames keep arriving (tpacket_rcv keeps
        dropping them), then the ring is replaced by a new one. The frames in flight are lost, as the
        kernel had already lost them."""
        mm = self._mm
        assert mm is not None
        self._empty_reads = 0
        slots, size = self._slots, self._slot_size
        for i in range(1, slots):
            j = (self._slot + i) % slots
            if mm[j * size + TP_STATUS_BYTE] & TP_STATUS_USER:
                self.stats["rx_ring_resync"] += 1
                self._slot = j
                return
        self.stats["rx_ring_reset"] += 1
        self._unmap()
        self.sock.setsockopt(SOL_PACKET, PACKET_RX_RING, bytes(16))  # tear the ring down
        for _ in range(self._slots):  # the whole frames of slots gone with it: no later slot's
            try:
                self.sock.recv(1)
            except (BlockingIOError, InterruptedError):
                break
        self._map_ring()

    def fileno(self) -> int:
        return self.sock.fileno()

    # --- receive -----------------------------------------------------------------------------------

    def recv_batch(self, max_frames: int) -> list[RxFrame]:
        """Up to `max_frames` frames that are ready now (never blocks).

        With `zero_copy`, a long frame is a memoryview of the ring: it stays valid until the next
        `recv_batch` or `close` of this socket, which gives its slot back to the kernel. The caller
        must be done with it (sent, or copied) by then."""
        if self._mm is not None:
            return self._recv_ring(max_frames)
        if self.vnet_hdr:
            return self._recv_vnet(max_frames)
        return self._recv_aux(max_frames)

    def _recv_vnet(self, max_frames: int) -> list[RxFrame]:
        out: list[RxFrame] = []
        recv = self.sock.recv
        complete = self.complete_csum
        for _ in range(max_frames):
            try:
                data = recv(PLAIN_BUF)
            except (BlockingIOError, InterruptedError):
                break
            if len(data) <= VNET_HDR_LEN:
                continue
            out.append(parse_vnet_rx(data, data[VNET_HDR_LEN:], complete))
        self._count(out)
        return out

    def _recv_aux(self, max_frames: int) -> list[RxFrame]:
        out: list[RxFrame] = []
        recvmsg = self.sock.recvmsg
        cmsg_space = socket.CMSG_SPACE(AUXDATA.size)
        for _ in range(max_frames):
            try:
                data, anc, flags, addr = recvmsg(PLAIN_BUF, cmsg_space)
            except (BlockingIOError, InterruptedError):
                break
            if not self._ignore_outgoing and addr[2] == PACKET_OUTGOING:
                continue
            if flags & socket.MSG_TRUNC:
                self.stats["rx_truncated"] += 1
                if self.on_truncated is not None:
                    self.on_truncated(len(data))
                continue
            for level, kind, cdata in anc:
                if level == SOL_PACKET and kind == PACKET_AUXDATA and len(cdata) >= AUXDATA.size:
                    if AUXDATA.unpack_from(cdata)[0] & TP_STATUS_CSUMNOTREADY:
                        frame = bytearray(data)
                        self.stats["rx_csum_completed"] += complete_notready(frame)
                        data = bytes(frame)
            out.append((data, 0, 0, False))
        self._count(out)
        return out

    def _recv_ring(self, max_frames: int) -> list[RxFrame]:
        """Up to `max_frames` slots of the ring, in order; each slot goes back to the kernel at once."""
        if self._held:
            self._release_held()
        self._pool_used = 0
        mm = self._mm
        assert mm is not None
        out: list[RxFrame] = []
        append = out.append
        view = self._view
        held = self._held
        slot_size, slots, slot = self._slot_size, self._slots, self._slot
        start_slot = slot
        unpack = TPACKET2_HEAD.unpack_from
        vunpack = VNET_HDR.unpack_from
        release = TP_STATUS.pack_into
        vnet = self.vnet_hdr
        complete = self.complete_csum
        check_outgoing = not self._ignore_outgoing
        stats = self.stats
        n_partial = n_gso = 0
        for _ in range(max_frames):
            base = slot * slot_size
            if not mm[base + TP_STATUS_BYTE] & TP_STATUS_USER:
                break
            status, tp_len, snaplen, mac = unpack(mm, base)
            if status & TP_STATUS_LOSING:
                stats["rx_losing"] += 1
            if status & TP_STATUS_COPY:
                rx = self._recv_copied(tp_len, status)
                if rx is not None and (not check_outgoing or mm[base + SLL_PKTTYPE] != PACKET_OUTGOING):
                    append(rx)
                    n_partial += rx[3]
                    n_gso += rx[1] != 0
            elif snaplen < tp_len:
                stats["rx_truncated"] += 1
                if self.on_truncated is not None and mm[base + SLL_PKTTYPE] != PACKET_OUTGOING:
                    self.on_truncated(tp_len)
            elif not check_outgoing or mm[base + SLL_PKTTYPE] != PACKET_OUTGOING:
                start = base + mac
                if view is not None and snaplen > ZERO_COPY_MIN:
                    flags, gso_type, _hl, gso_size, cstart, coff = vunpack(mm, start - VNET_HDR_LEN)
                    needs = flags & VIRTIO_NET_HDR_F_NEEDS_CSUM
                    loc = l4_csum_location(mm[start:start + CSUM_HEAD]) if needs else None
                    if not needs or (loc is not None and loc[0] == cstart and loc[1] == coff):
                        # handed out in place (a partial checksum left partial, as vnet_rx does)
                        append((view[start:start + snaplen], gso_type & ~GSO_ECN, gso_size if gso_type else 0,
                               bool(needs)))
                        n_partial += bool(needs)
                        n_gso += gso_type != 0
                        held.append(base)
                        slot += 1
                        if slot == slots:
                            slot = 0
                        continue
                frame = mm[start:start + snaplen]
                if vnet:
                    flags, gso_type, _hl, gso_size, cstart, coff = vunpack(mm, start - VNET_HDR_LEN)
                    if flags or gso_type:
                        rx = vnet_rx(frame, flags, gso_type, gso_size, cstart, coff, complete)
                        n_partial += rx[3]
                        n_gso += rx[1] != 0
                        append(rx)
                    else:
                        append((frame, 0, 0, False))
                elif status & TP_STATUS_CSUMNOTREADY:
                    buf = bytearray(frame)
                    stats["rx_csum_completed"] += complete_notready(buf)
                    append((bytes(buf), 0, 0, False))
                else:
                    append((frame, 0, 0, False))
            release(mm, base, TP_STATUS_KERNEL)
            slot += 1
            if slot == slots:
                slot = 0
        self._slot = slot
        if slot == start_slot and not out and max_frames:  # nothing was ready although poll said so
            self._empty_reads += 1
            if self._empty_reads >= RING_STALL_READS:
                self._unstick_ring()
            return out
        self._empty_reads = 0
        stats["rx"] += len(out)
        stats["rx_partial"] += n_partial
        stats["rx_gso"] += n_gso
        if held:
            stats["rx_in_place"] += len(held)
        return out

    def _recv_copied(self, tp_len: int, status: int) -> RxFrame | None:
        """The whole frame of a ring slot marked TP_STATUS_COPY (longer than a slot: tpacket_rcv queued it on the
        socket, in slot order, before handing the slot over), read from the socket queue. With zero_copy into a
        read buffer of the pool and handed out as a view, valid until the next read as a ring view is; else
        bytes. None when it is not there (the socket buffer was full: the kernel then sets no TP_STATUS_COPY, so
        this is a slot skipped after a hole) or is not `tp_len` long: dropped, counted."""
        stats = self.stats
        head = VNET_HDR_LEN if self.vnet_hdr else 0
        data: bytes | memoryview
        try:
            if self.zero_copy and self._pool_used < COPY_POOL:
                if self._pool_used == len(self._pool):
                    self._pool.append(bytearray(PLAIN_BUF))
                buf = self._pool[self._pool_used]
                n = self.sock.recv_into(buf)
                self._pool_used += 1
                data = memoryview(buf)[:n]
            else:
                data = self.sock.recv(PLAIN_BUF)
        except (BlockingIOError, InterruptedError):
            stats["rx_copy_lost"] += 1
            return None
        if len(data) - head != tp_len:
            stats["rx_copy_lost"] += 1
            return None
        stats["rx_copied"] += 1
        if not self.vnet_hdr:
            if status & TP_STATUS_CSUMNOTREADY:
                frame = bytearray(data)
                stats["rx_csum_completed"] += complete_notready(frame)
                return bytes(frame), 0, 0, False
            return bytes(data), 0, 0, False
        flags, gso_type, _hl, gso_size, cstart, coff = VNET_HDR.unpack_from(data)
        rx = vnet_rx(data[head:], flags, gso_type, gso_size, cstart, coff, self.complete_csum)
        if isinstance(rx[0], memoryview):  # zero_copy (complete_csum off): vnet_rx left it as it came, in place
            stats["rx_in_place"] += 1
        return rx

    def _count(self, out: list[RxFrame]) -> None:
        st = self.stats
        st["rx"] += len(out)
        for _f, gso_type, _gs, partial in out:
            if partial:
                st["rx_partial"] += 1
            if gso_type:
                st["rx_gso"] += 1

    def wait(self, timeout: float) -> bool:
        """Block up to `timeout` seconds for a frame (for simple callers without a selector)."""
        p = select.poll()
        p.register(self.sock.fileno(), select.POLLIN)
        return bool(p.poll(int(timeout * 1000)))

    # --- transmit ----------------------------------------------------------------------------------

    def send(self, frame: bytes | bytearray, gso_type: int = 0, gso_size: int = 0, partial: bool = False,
             csum_ready: bool = False, tail: memoryview | None = None) -> bool:
        """Transmit one frame. With vnet headers, a frame from a partial-checksum or GSO packet is handed
        back to the kernel in partial form: `csum_ready` says its checksum field already holds the
        pseudo-header sum of its final header (see `tx_hdr_ready`), else only its headers are rewritten
        (see `tx_parts`); the payload is never copied. `tail`, when given, is the rest of the frame
        (`Emitted.tail`: still in a receive ring), sent after `frame` in the same call.
        Returns False (counted) when the kernel refused it."""
        try:
            if tail is not None:
                hdr = tx_hdr_ready(frame, gso_type, gso_size) if self.vnet_hdr and (partial or gso_type) else None
                if hdr is not None:
                    self.sock.sendmsg((hdr, frame, tail))
                    self.stats["tx"] += 1
                    return True
                frame = b"".join((frame, tail))  # not an IPv4 TCP/UDP frame after all: the plain way
            if self.vnet_hdr:
                if partial or gso_type:
                    hdr = tx_hdr_ready(frame, gso_type, gso_size) if csum_ready else None
                    if hdr is not None:
                        self.sock.sendmsg((hdr, frame))
                    else:
                        hdr, head, split = tx_parts(frame, gso_type, gso_size, partial)
                        if split:
                            self.sock.sendmsg((hdr, head, memoryview(frame)[split:]))
                        else:
                            self.sock.sendmsg((hdr, frame))
                else:
                    self.sock.sendmsg((NO_VNET_HDR, frame))
            else:
                self.sock.send(frame)
        except OSError:  # full socket buffer (EAGAIN), EMSGSIZE, ENETDOWN...: the frame is dropped
            self.stats["tx_error"] += 1
            return False
        self.stats["tx"] += 1
        return True

    def close(self) -> None:
        self._unmap()
        self.sock.close()
