"""Replaying captures through an `Engine`: merging inputs by time, driving the clock, classifying records.

Sans-IO: the caller opens the captures (`natbox.adapters.pcap.CaptureReader`) and the output files; this
module only iterates records and calls the engine and the sinks.

- `merge_inputs(streams)` merges any number of record iterators by timestamp with `heapq.merge`, so memory
  holds one pending record per input, whatever the captures' sizes. Ties keep input order (file, then
  packet index).
- `Replayer.feed(file_no, index, record)` turns one record into one engine call: an Ethernet frame goes to
  `engine.receive`; a raw-IP, Linux SLL/SLL2 or loopback record (or a VLAN-tagged Ethernet frame) carrying
  IPv4 goes to `engine.receive_ip`. Records the engine cannot be given (a foreign link type, a record cut
  short by the snap length, IPv6 on a link without an Ethernet header, a pcapng packet on an unnamed
  interface) are counted per reason in `Replayer.skipped`; nothing here raises on capture contents.
- The capture's timestamps are the engine's clock: before a record is fed, `engine.handle_timers(now)`
  (conntrack gc, fragment-queue expiry) runs if `engine.next_deadline()` has passed, and once at the end. A
  timestamp earlier than the last one (captures are not always sorted) does not move the clock back; it is
  counted in `Replayer.backwards`.
- Every input (fed or skipped) is handed to the sinks as an `InputPacket` with the engine's `Output`.
- With `datapath` (`--offload`: engine/offload_model.py's ModelDatapath, in front of an engine made with
  offload=True) Ethernet frames go through the modelled kernel datapath, which carries the offloaded flows'
  packets and hands the rest to the engine; after each timer run its requests are carried out too.
"""

from __future__ import annotations

import heapq
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol

from natbox.engine.engine import Engine, Output
from natbox.replay.split import NO_MAC, DirectionSplit, MacFixer
from natbox.wire.ethernet import ETH_P_IPV6
from natbox.wire.layout import ETH_HDR_LEN, ETH_PROTO

if TYPE_CHECKING:
    from natbox.adapters.pcap import PcapRecord
    from natbox.engine.offload_model import ModelDatapath

__all__ = [
    "InputPacket",
    "PacketSink",
    "Replayer",
    "Source",
    "ct_of",
    "merge_inputs",
    "verdict_of",
]

LINKTYPE_ETHERNET = 1
LINKTYPE_LINUX_SLL = 113
_VLAN_TPIDS = frozenset({0x8100, 0x88A8, 0x9100})
_LINK_NAMES: dict[int, str] = {0: "null", 1: "ethernet", 12: "raw", 14: "raw", 101: "raw", 108: "loop",
                               113: "sll", 228: "ipv4", 229: "ipv6", 276: "sll2"}
_CT_RE = re.compile(r"ct #(\d+)")  # compiled once; used only on trace lines (when explaining)

# skip reasons (keys of Replayer.skipped)
SKIP_TRUNCATED = "truncated record (caplen < wirelen)"
SKIP_NO_IFACE = "no interface name (pcapng without if_name: use --in IFACE=FILE)"
SKIP_IPV6 = "IPv6 (natbox models IPv4 only)"


class Source(NamedTuple):
    """One input: its name (for messages and comments) and the host interface its packets arrive on
    (None: the pcapng interface name of each packet)."""

    name: str
    iface: str | None


class InputPacket(NamedTuple):
    """One input record as the sinks see it."""

    n: int                 # 1-based position in the merged input (what `natbox explain --packet N` counts)
    source: str            # the input's name
    number: int            # 1-based packet number within its input (Wireshark's frame number)
    iface: str             # the host interface it arrived on ("" if unknown)
    ts_ns: int             # capture timestamp, integer nanoseconds
    data: bytes            # what was captured (link layer included)
    link: str              # how to render `data` with render.tcpdump: "ether", "raw" or "sll"
    skipped: str | None    # why it was not given to the engine, or None
    out: Output | None     # what the engine did (None when skipped)


class PacketSink(Protocol):
    """Receives every input packet, the timers' outputs, and the end of the run."""

    def packet(self, pkt: InputPacket) -> None: ...

    def timer(self, out: Output, ts_ns: int) -> None: ...

    def close(self) -> None: ...


def _tag(records: Iterable[PcapRecord], file_no: int) -> Iterator[tuple[int, int, int, PcapRecord]]:
    for index, rec in enumerate(records, start=1):
        yield rec.ts_ns, file_no, index, rec


def merge_inputs(streams: Sequence[Iterable[PcapRecord]]) -> Iterator[tuple[int, int, int, PcapRecord]]:
    """(ts_ns, file_no, index, record) from every stream, in timestamp order (a streaming k-way merge;
    `(ts_ns, file_no, index)` is unique, so records themselves are never compared)."""
    return heapq.merge(*(_tag(s, n) for n, s in enumerate(streams)))


def ct_of(out: Output) -> int | None:
    """The conntrack id of an input packet: from what it caused (sent, delivered, dropped), else its trace."""
    ids = [e.ct_id for e in out.emitted] + [d.ct_id for d in out.delivered] + [d.ct_id for d in out.dropped]
    for ct_id in ids:
        if ct_id:
            return ct_id
    for _pid, step in out.trace:
        m = _CT_RE.search(step)
        if m:
            return int(m.group(1))
    return None


def verdict_of(out: Output | None) -> str:
    """The input packet's fate in one word: skipped, delivered, dropped, forwarded or held (no output: a
    fragment kept for reassembly, an ARP request for someone else...)."""
    if out is None:
        return "skipped"
    if out.delivered:
        return "delivered"
    if out.dropped:
        return "dropped"
    if out.emitted:
        return "forwarded"
    return "held"


class Replayer:
    """Feeds records to an engine in order and tells the sinks what happened (see the module doc)."""

    def __init__(self, engine: Engine, sources: Sequence[Source], sinks: Sequence[PacketSink] = (), *,
                 trace: bool = False, trace_packet: int | None = None) -> None:
        self.engine = engine
        self.sources = list(sources)
        self.sinks = list(sinks)
        self.trace = trace
        self.trace_packet = trace_packet
        self.skipped: Counter[str] = Counter()
        self.packets = 0   # records seen
        self.fed = 0       # records given to the engine
        self.backwards = 0  # records whose timestamp was earlier than the clock
        self.now_ns = 0
        self.invalid_forwarded = 0  # packets conntrack marked INVALID that the host forwarded (so un-NATed)
        self._ifaces = engine.host.interfaces
        self._ct_stats = engine.table.stats
        self.split: DirectionSplit | None = None  # --lan-net: replies of a one-sided capture enter on the WAN
        self.datapath: ModelDatapath | None = None  # --offload: the modelled kernel datapath in front of the engine
        no_mac = [n for n, i in engine.host.interfaces.items() if i.mac == NO_MAC and i.kind != "loopback"]
        self.macs = MacFixer(engine.host.name, no_mac) if no_mac else None

    def _count_invalid(self, out: Output) -> None:
        """A packet conntrack found INVALID (`conntrack -S` invalid went up): forwarded, it left un-NATed."""
        if out.emitted and not out.delivered and not out.dropped:
            self.invalid_forwarded += 1

    @property
    def now(self) -> float:
        return self.now_ns / 1e9

    def run(self, streams: Sequence[Iterable[PcapRecord]], *,
            progress: Callable[[Replayer], None] | None = None) -> None:
        """Replay every record of `streams` (one per source) and finish. `progress`, if given, is called as
        `progress(replayer)` every 1024 records."""
        for _ts, file_no, index, rec in merge_inputs(streams):
            self.feed(file_no, index, rec)
            if progress is not None and not self.packets & 0x3FF:
                progress(self)
        self.finish()

    def _clock(self, ts_ns: int) -> None:
        if ts_ns < self.now_ns:
            self.backwards += 1
            return
        self.now_ns = ts_ns
        due = self.engine.next_deadline()
        if due is not None and ts_ns / 1e9 >= due:
            self._timer()

    def _timer(self) -> None:
        out = self.engine.handle_timers(self.now_ns / 1e9)
        if self.datapath is not None:
            self.datapath.sync(None, self.now_ns / 1e9)  # idle flows come back: their entries go
        if self.macs is not None:
            self.macs.fix(out)
        for sink in self.sinks:
            sink.timer(out, self.now_ns)

    def feed(self, file_no: int, index: int, rec: PcapRecord) -> Output | None:
        """Give one record to the engine (or count why not). Returns the engine's output, if any."""
        self.packets += 1
        src = self.sources[file_no]
        iface = src.iface or rec.ifname or ""
        self._clock(rec.ts_ns)
        now = self.now_ns / 1e9
        lt = rec.linktype
        data = rec.data
        if lt == LINKTYPE_ETHERNET:
            link = "ether"
        elif lt == LINKTYPE_LINUX_SLL:
            link = "sll"
        else:
            link = "raw"  # raw IP as is; null/loop/sll2 headers stripped so the datagram renders
            if rec.ipv4 is not None:
                data = rec.ipv4
        reason: str | None = None
        out: Output | None = None
        trace = self.trace or self.trace_packet == self.packets
        if rec.foreign is not None:
            reason = rec.foreign
        elif rec.truncated:
            reason = SKIP_TRUNCATED
        elif not iface:
            reason = SKIP_NO_IFACE
        elif iface not in self._ifaces:
            reason = f"arrived on {iface}, an interface the host does not have (say where with --in IFACE=FILE)"
        elif self.split is not None and rec.ipv4 is not None and (placed := self.split.place(rec.ipv4, now)):
            if isinstance(placed, str):
                reason = placed
            else:
                iface = placed[0]
                invalid = self._ct_stats.invalid
                out = self.engine.receive_ip(placed[1], iface, now, trace=trace)
                if self._ct_stats.invalid != invalid:
                    self._count_invalid(out)
        elif lt == LINKTYPE_ETHERNET and not (rec.ipv4 is not None and len(data) >= ETH_HDR_LEN
                                              and (data[ETH_PROTO] << 8 | data[ETH_PROTO + 1]) in _VLAN_TPIDS):
            invalid = self._ct_stats.invalid
            receive = self.engine.receive if self.datapath is None else self.datapath.receive
            out = receive(data, iface, now, trace=trace)
            if self._ct_stats.invalid != invalid:
                self._count_invalid(out)
        elif rec.ipv4 is not None:
            invalid = self._ct_stats.invalid
            out = self.engine.receive_ip(rec.ipv4, iface, now, trace=trace)
            if self._ct_stats.invalid != invalid:
                self._count_invalid(out)
        elif rec.ethertype == ETH_P_IPV6:
            reason = SKIP_IPV6
        elif rec.ethertype is None:
            reason = f"{_LINK_NAMES.get(lt, str(lt))} header cut short or unknown family"
        else:
            reason = f"not IPv4 ({_LINK_NAMES.get(lt, str(lt))} protocol 0x{rec.ethertype:04x})"
        if reason is not None:
            self.skipped[reason] += 1
        else:
            self.fed += 1
            if self.macs is not None and out is not None:
                self.macs.fix(out)
        if self.sinks:
            pkt = InputPacket(self.packets, src.name, index, iface, rec.ts_ns, data, link, reason, out)
            for sink in self.sinks:
                sink.packet(pkt)
        return out

    def feed_output(self, n: int, source: str, iface: str, ts_ns: int, data: bytes, link: str,
                    out: Output) -> None:
        """Tell the sinks about a packet some other driver (the scenario lab) gave the engine itself."""
        self.packets += 1
        self.fed += 1
        self.now_ns = max(self.now_ns, ts_ns)
        pkt = InputPacket(n, source, n, iface, ts_ns, data, link, None, out)
        for sink in self.sinks:
            sink.packet(pkt)

    def finish(self, now_ns: int | None = None) -> None:
        """Run the timers once at the final time and close the sinks."""
        if now_ns is not None:
            self.now_ns = max(self.now_ns, now_ns)
        self._timer()
        for sink in self.sinks:
            sink.close()
