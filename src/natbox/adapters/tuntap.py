"""TAP devices: natbox holds the file descriptor (the "wire" side, as qemu does), the kernel side is a
network device that a namespace (the "VM") uses.

`TapDevice(name, vnet_hdr=True)` opens /dev/net/tun with IFF_TAP | IFF_NO_PI (| IFF_VNET_HDR), which
creates the device or attaches to an existing persistent one (`ip tuntap add ... mode tap`). With
`netns=NAME` the device is looked up / created in that namespace (the tun fd is opened while the thread
is inside it), so a TAP whose kernel side lives in a "VM" namespace is driven from the gateway's.

With vnet headers, TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO_ECN) lets the kernel side hand us
partial checksums and 64 KiB TSO frames; reads return the same `RxFrame` tuples as
`natbox.adapters.packet_socket` (checksums completed, GSO fields kept).
"""

from __future__ import annotations

import fcntl
import os
import struct
from typing import Final

from natbox.adapters.packet_socket import PLAIN_BUF
from natbox.adapters.vnet import NO_VNET_HDR, VNET_HDR_LEN, RxFrame, parse_vnet_rx, tx_hdr_ready, tx_parts
from natbox.errors import NatboxError

__all__ = ["TapDevice", "TapError"]

TUN_PATH = "/dev/net/tun"
IFF_TAP: Final = 0x0002
IFF_NO_PI: Final = 0x1000
IFF_VNET_HDR: Final = 0x4000
TUNSETIFF: Final = 0x400454CA
TUNSETPERSIST: Final = 0x400454CB
TUNSETOFFLOAD: Final = 0x400454D0
TUNSETVNETHDRSZ: Final = 0x400454D8
TUN_F_CSUM: Final = 0x01
TUN_F_TSO4: Final = 0x02
TUN_F_TSO_ECN: Final = 0x08
IFREQ = struct.Struct("16sH22x")  # struct ifreq: name, flags (the union padded to 40 bytes)


class TapError(NatboxError, OSError):
    """Creating or configuring the TAP failed; the message names the device."""


class TapDevice:
    """One TAP device, non-blocking; `recv_batch`/`send` mirror `PacketSocket`'s."""

    def __init__(self, name: str, *, vnet_hdr: bool = False, offload: bool = True,
                 netns: str | None = None, complete_csum: bool = True) -> None:
        self.ifname = name
        self.complete_csum = complete_csum
        self.vnet_hdr = vnet_hdr
        self.stats = {"rx": 0, "tx": 0, "rx_partial": 0, "rx_gso": 0, "tx_error": 0, "rx_truncated": 0}
        if netns is not None:
            from natbox.adapters.netns import NetnsError, enter_netns

            try:
                with enter_netns(netns):
                    self.fd = self._open(name)
            except NetnsError as exc:
                raise TapError(f"{name}: {exc}") from None
        else:
            self.fd = self._open(name)
        try:
            self._configure(offload)
        except OSError as exc:
            os.close(self.fd)
            raise TapError(f"{name}: {exc.strerror or exc}") from None
        self.name = self.ifname

    def _open(self, name: str) -> int:
        if len(name.encode()) > 15:
            raise TapError(f"{name}: interface names are at most 15 characters")
        try:
            fd = os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise TapError(f"{TUN_PATH}: {exc.strerror}") from None
        flags = IFF_TAP | IFF_NO_PI | (IFF_VNET_HDR if self.vnet_hdr else 0)
        try:
            res = fcntl.ioctl(fd, TUNSETIFF, IFREQ.pack(name.encode(), flags))
        except OSError as exc:
            os.close(fd)
            hint = " (an existing TAP of that name with other flags, e.g. vnet_hdr?)" if exc.errno == 22 else ""
            raise TapError(f"{name}: TUNSETIFF: {exc.strerror}{hint}") from None
        self.ifname = IFREQ.unpack(res)[0].rstrip(b"\0").decode()
        return fd

    def _configure(self, offload: bool) -> None:
        if self.vnet_hdr:
            fcntl.ioctl(self.fd, TUNSETVNETHDRSZ, struct.pack("=i", VNET_HDR_LEN))
            flags = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO_ECN if offload else 0
            fcntl.ioctl(self.fd, TUNSETOFFLOAD, flags)
        else:
            fcntl.ioctl(self.fd, TUNSETOFFLOAD, 0)

    def fileno(self) -> int:
        return self.fd

    def set_persist(self, persist: bool) -> None:
        fcntl.ioctl(self.fd, TUNSETPERSIST, int(persist))

    def recv_batch(self, max_frames: int) -> list[RxFrame]:
        out: list[RxFrame] = []
        read = os.read
        fd = self.fd
        vnet = self.vnet_hdr
        for _ in range(max_frames):
            try:
                data = read(fd, PLAIN_BUF)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # EIO while the device is down: nothing to read
                break
            if vnet:
                if len(data) <= VNET_HDR_LEN:
                    continue
                rx = parse_vnet_rx(data, data[VNET_HDR_LEN:], self.complete_csum)
                self.stats["rx_partial"] += rx[3]
                self.stats["rx_gso"] += bool(rx[1])
                out.append(rx)
            else:
                out.append((data, 0, 0, False))
        self.stats["rx"] += len(out)
        return out

    def send(self, frame: bytes | bytearray, gso_type: int = 0, gso_size: int = 0, partial: bool = False,
             csum_ready: bool = False, tail: memoryview | None = None) -> bool:
        """As `PacketSocket.send`."""
        if tail is not None:  # TAP reads are never views: only another port's ring gives a tail
            frame = b"".join((frame, tail))
        try:
            if self.vnet_hdr:
                if partial or gso_type:
                    ready = tx_hdr_ready(frame, gso_type, gso_size) if csum_ready else None
                    if ready is not None:
                        os.writev(self.fd, (ready, frame))
                    else:
                        hdr, head, split = tx_parts(frame, gso_type, gso_size, partial)  # headers only: no copy
                        os.writev(self.fd, (hdr, head, memoryview(frame)[split:]) if split else (hdr, frame))
                else:
                    os.writev(self.fd, (NO_VNET_HDR, frame))
            else:
                os.write(self.fd, frame)
        except OSError:
            self.stats["tx_error"] += 1
            return False
        self.stats["tx"] += 1
        return True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
