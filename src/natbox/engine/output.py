"""What one call into the engine produces: frames sent, packets dropped or delivered, log lines, trace steps.

Plain data, shared by the engine and its fast path (`natbox.engine.fastpath`); `natbox.engine.engine`
re-exports every name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from natbox.netfilter import DropReason

__all__ = ["Delivered", "Dropped", "Emitted", "LogLine", "Output"]


@dataclass(slots=True)
class Emitted:
    """A frame the host sends on `iface` (Ethernet, or the bare datagram on loopback-type links).

    Not frozen: a frozen dataclass's __init__ costs three times as much, and one is made per packet."""

    iface: str
    frame: bytes
    pkt_id: int  # the input packet that caused it (0 for timers)
    ct_id: int  # its conntrack entry, 0 if none
    gso_type: int = 0  # a GSO super-packet (virtio_net_hdr gso_type; 0: an ordinary frame)
    gso_size: int = 0  # its segments' payload size
    partial: bool = False  # its TCP/UDP checksum is partial (CHECKSUM_PARTIAL): the sender must finish it
    # The rest of the frame when it is still where it was received: a view into the device's receive
    # ring, valid until the device's next read. The frame sent is `frame + tail`. Only the compiled-flow
    # path makes one, and only from a frame handed to `Engine.receive` as a memoryview (the gateway's
    # zero-copy reads); replay and every other caller pass bytes and never see one.
    tail: memoryview | None = None


@dataclass(frozen=True, slots=True)
class Dropped:
    """A packet the host dropped: where, and why (a DropReason: a StrEnum, so it prints as its value)."""

    pkt_id: int
    reason: DropReason
    where: str
    detail: str = ""
    ct_id: int = 0  # the packet's conntrack entry, when it had one


@dataclass(frozen=True, slots=True)
class Delivered:
    """A datagram handed to the host's local stack (a socket, or the kernel's ICMP/TCP reply code)."""

    pkt_id: int
    datagram: bytes
    action: str  # e.g. "icmp echo reply sent", "tcp reset sent (port closed)", "socket udp:53"
    ct_id: int = 0


@dataclass(frozen=True, slots=True)
class LogLine:
    """A LOG target line, as the kernel would print it (without the syslog prefix)."""

    pkt_id: int
    text: str


@dataclass(slots=True)
class Output:
    """Everything one call into the engine produced."""

    emitted: list[Emitted] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    delivered: list[Delivered] = field(default_factory=list)
    logs: list[LogLine] = field(default_factory=list)
    trace: list[tuple[int, str]] = field(default_factory=list)  # (pkt_id, step)
