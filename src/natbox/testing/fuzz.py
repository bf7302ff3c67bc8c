"""Fuzzing natbox: damaged frames through every engine path, damaged files through every command that reads one.

Two campaigns, both deterministic for a seed (`random.Random(seed)`), both counting instead of stopping:

- `fuzz_frames`: frames go into three engines built from the example hosts — a MASQUERADE gateway with
  only a nat table (its established flows take the compiled flows), Docker's host with filter FORWARD
  rules (the second tier), and the same Docker host with tracing on (the slow path with its explanation).
  The frames are random bytes, well-formed TCP/UDP/ICMP/GRE/SCTP flows between the hosts' networks, ICMP
  errors quoting earlier packets, fragments cut at random places and sent out of order or overlapping,
  ARP, and frames from the third-party captures in shared/external/pcaps; a third of them are then
  damaged (bits flipped, cut short, padded, a header byte set at random). The clock runs forward at
  random with jumps past every timeout, and each engine's timers run when they fall due. Checked after
  every call: nothing raised; every IPv4 frame the engine sends has a valid header checksum; it leaves by
  an interface the host has; the conntrack table stays within nf_conntrack_max.
- `fuzz_files` (natbox.testing.fuzz_files): every kind of file a command reads, damaged, through the
  real command line; nothing but a one-line error and a normal exit status may come out.

`bench/fuzz.py` runs long campaigns (ten million frames); `tests/test_fuzz.py` a short one in CI.
"""

from __future__ import annotations

import random
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from natbox.adapters.pcap import CaptureError, iter_capture
from natbox.cli.replay import load_host_file
from natbox.engine.engine import Engine
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore
from natbox.testing.paths import EXAMPLES, PCAPS
from natbox.wire import icmp, ipv4, tcp, udp
from natbox.wire.checksum import internet_checksum
from natbox.wire.ethernet import BROADCAST, ETH_HLEN, ETH_P_ARP, ETH_P_IP, build_ethernet, is_ipv4_frame
from natbox.wire.layout import IPH_MIN_LEN

__all__ = ["FuzzReport", "fuzz_frames"]

_MAX_FAILURES_KEPT = 20


@dataclass
class FuzzReport:
    """What a campaign did and what it found (`failures` holds the first few, with their tracebacks)."""

    runs: int = 0
    exceptions: int = 0
    violations: int = 0
    outputs: int = 0
    failures: list[str] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)

    def fail(self, text: str, *, exception: bool) -> None:
        if exception:
            self.exceptions += 1
        else:
            self.violations += 1
        if len(self.failures) < _MAX_FAILURES_KEPT:
            self.failures.append(text)

    def count(self, kind: str) -> None:
        self.kinds[kind] = self.kinds.get(kind, 0) + 1

    @property
    def ok(self) -> bool:
        return not self.exceptions and not self.violations

    def summary(self, what: str) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.kinds.items()))
        return (f"{what}: {self.runs} runs ({kinds}); {self.outputs} outputs; "
                f"{self.exceptions} exceptions, {self.violations} broken invariants")


# --- frames ---------------------------------------------------------------------------------------------

class _Target:
    """One engine under fuzzing, with what the generator needs to know of its host."""

    def __init__(self, name: str, host_file: Path, *, trace: bool, seed: int) -> None:
        hf = load_host_file(str(host_file))
        ruleset = Ruleset()
        if hf.host.rules_text.strip():
            ruleset.restore(parse_restore(hf.host.rules_text, file=str(host_file)))
        self.name = name
        self.trace = trace
        self.engine = Engine(hf.host, ruleset=ruleset, seed=seed)
        self.names = set(hf.host.interfaces)
        self.macs = {i.name: i.mac for i in hf.host.interfaces.values() if i.mac and any(i.mac)}
        # (interface, network, prefix length, the host's address) of every connected subnet
        self.subnets: list[tuple[str, int, int, int]] = []
        for iface in hf.host.interfaces.values():
            if iface.name not in self.macs:
                continue
            for a in iface.addresses:
                mask = (0xFFFFFFFF << (32 - a.prefixlen)) & 0xFFFFFFFF
                self.subnets.append((iface.name, a.addr & mask, a.prefixlen, a.addr))
        defaults = [r.dev for r in hf.host.routes if r.prefixlen == 0 and r.dev in self.macs]
        self.wan = defaults[0] if defaults else next(iter(self.macs))

    def neighbour(self, rng: random.Random, iface: str | None = None) -> tuple[str, int]:
        """(interface, address) of a machine on one of the host's networks; outside ones arrive on the WAN."""
        choices = [s for s in self.subnets if iface is None or s[0] == iface]
        if not choices or (iface in (None, self.wan) and rng.random() < 0.4):
            return self.wan, rng.choice(_OUTSIDE)
        dev, net, plen, _own = rng.choice(choices)
        return dev, net + rng.randrange(2, max(3, min(60, (1 << (32 - plen)) - 1)))

    def iface_of(self, addr: int) -> str:
        for dev, net, plen, _own in self.subnets:
            if addr & ((0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF) == net:
                return dev
        return self.wan

    def timers(self, now: float) -> object:
        """The engine's timers, run when its one deadline has come."""
        deadline = self.engine.next_deadline()
        return self.engine.handle_timers(now) if deadline is not None and deadline <= now else None


_OUTSIDE = [ipv4.str_to_addr(a) for a in ("8.8.8.8", "198.51.100.9", "1.1.1.1", "93.184.216.34", "9.9.9.9")]
_ODD_ADDRS = [ipv4.str_to_addr(a) for a in ("0.0.0.0", "255.255.255.255", "224.0.0.5", "127.0.0.1", "169.254.1.1",
                                            "100.64.0.1", "240.0.0.1")]
_PROTOS = (6, 6, 6, 6, 17, 17, 17, 1, 1, 47, 132, 136, 33, 253)
_TCP_FLAGS = (tcp.SYN, tcp.SYN | tcp.ACK, tcp.ACK, tcp.ACK | tcp.PSH, tcp.FIN | tcp.ACK, tcp.RST, tcp.RST | tcp.ACK)


@dataclass
class _Flow:
    """A conversation the generator keeps going: its original tuple, where it entered, both sides' sequence."""

    src: int
    sport: int
    dst: int
    dport: int
    proto: int
    iface: str
    cseq: int
    sseq: int
    step: int = 0


class _FrameSource:
    """Frames for one target: flows and their replies, errors, fragments, ARP, captures, noise; some damaged."""

    def __init__(self, rng: random.Random, captures: list[bytes]) -> None:
        self.rng = rng
        self.captures = captures
        self.recent: list[bytes] = []  # datagrams sent lately, for ICMP errors to quote
        self.flows: list[_Flow] = []

    def new_flow(self, t: _Target) -> _Flow:
        rng = self.rng
        iface, src = t.neighbour(rng)
        roll = rng.random()
        if roll < 0.1:
            dst = rng.choice([own for _d, _n, _p, own in t.subnets])  # to the host itself (DNAT, local)
        elif roll < 0.15:
            dst = rng.choice(_ODD_ADDRS)
        else:
            dst = t.neighbour(rng)[1]
        if rng.random() < 0.03:
            src = rng.choice(_ODD_ADDRS)
        sport = rng.choice((33000 + rng.randrange(64), 1024, 53, 80, rng.randrange(65536)))
        dport = rng.choice((80, 53, 443, 10000, 8000, 0, 65535, rng.randrange(65536)))
        flow = _Flow(src, sport, dst, dport, rng.choice(_PROTOS), iface, rng.getrandbits(32), rng.getrandbits(32))
        if len(self.flows) < 48:
            self.flows.append(flow)
        else:
            self.flows[rng.randrange(48)] = flow
        return flow

    def datagram(self, t: _Target, now: float) -> tuple[str, bytes]:
        """(interface, datagram): the next packet of some flow, either direction, or of a new one."""
        rng = self.rng
        flow = rng.choice(self.flows) if self.flows and rng.random() < 0.8 else self.new_flow(t)
        src, sport, dst, dport, iface = flow.src, flow.sport, flow.dst, flow.dport, flow.iface
        reply = flow.step > 0 and rng.random() < 0.45
        if reply:  # the server answers whatever NAT made of the original: the ct's reply tuple
            found = t.engine.table.lookup((src, sport, dst, dport, flow.proto), now)
            if found is not None:
                r = found[0].tuples[1]
                src, sport, dst, dport = r.src, r.sport, r.dst, r.dport
                iface = t.iface_of(src)
            else:
                src, sport, dst, dport, iface = dst, dport, src, sport, t.iface_of(dst)
        flow.step += 1
        payload = rng.randbytes(rng.choice((0, 0, 1, 10, 100, 1400, rng.randrange(2000))))
        proto = flow.proto
        if proto == 6:
            if flow.step == 1:
                flags = tcp.SYN
            elif flow.step == 2 and reply:
                flags = tcp.SYN | tcp.ACK
            else:
                flags = tcp.ACK | tcp.PSH if rng.random() < 0.85 else rng.choice((*_TCP_FLAGS, rng.randrange(256)))
            if flags & (tcp.SYN | tcp.FIN | tcp.RST) and not flags & tcp.ACK:
                payload = b""
            seq, ack = (flow.sseq, flow.cseq) if reply else (flow.cseq, flow.sseq)
            l4 = tcp.build_tcp(src, dst, sport, dport, seq=seq, ack=ack, flags=flags, window=65535, payload=payload)
            grow = len(payload) + (1 if flags & (tcp.SYN | tcp.FIN) else 0)
            if reply:
                flow.sseq = (flow.sseq + grow) & 0xFFFFFFFF
            else:
                flow.cseq = (flow.cseq + grow) & 0xFFFFFFFF
        elif proto in (17, 136):
            l4 = udp.build_udp(src, dst, sport, dport, payload)
        elif proto == 1:
            if self.recent and rng.random() < 0.3:
                inner = rng.choice(self.recent)
                l4 = icmp.build_icmp(rng.choice((3, 11, 12, 4, 5)), rng.randrange(16), rng.randbytes(4),
                                     inner[: rng.choice((28, 48, 576, len(inner)))])
            else:
                l4 = icmp.build_icmp(0 if reply else rng.choice((8, 8, 8, 13, rng.randrange(256))), 0,
                                     flow.sport.to_bytes(2, "big") + flow.step.to_bytes(2, "big"), payload)
        else:
            l4 = sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + payload
        datagram = bytes(ipv4.build_ipv4(src, dst, proto, l4, ttl=rng.choice((64, 64, 64, 1, 2, 255)),
                                         ident=rng.getrandbits(16), df=rng.random() < 0.5))
        self.recent = [*self.recent[-15:], datagram]
        return iface, datagram

    def fragments(self, datagram: bytes) -> list[bytes]:
        """The datagram cut into fragments at random 8-byte boundaries, some shuffled, overlapping or lost."""
        rng = self.rng
        ihl = (datagram[0] & 0x0F) * 4
        body = datagram[ihl:]
        src, dst = int.from_bytes(datagram[12:16], "big"), int.from_bytes(datagram[16:20], "big")
        proto, ident = datagram[9], int.from_bytes(datagram[4:6], "big")
        cuts = sorted({0, *(rng.randrange(0, max(len(body), 8), 8) for _ in range(rng.randint(1, 4)))})
        out: list[bytes] = []
        for i, start in enumerate(cuts):
            end = cuts[i + 1] if i + 1 < len(cuts) else len(body)
            if rng.random() < 0.15:
                end = min(len(body), end + 8 * rng.randint(1, 3))  # overlap the next piece
            out.append(bytes(ipv4.build_ipv4(src, dst, proto, body[start:end], ident=ident, mf=i + 1 < len(cuts),
                                             frag_offset=start, ttl=datagram[8])))
        if rng.random() < 0.5:
            rng.shuffle(out)
        if len(out) > 1 and rng.random() < 0.2:
            out.pop(rng.randrange(len(out)))
        return out

    def damage(self, frame: bytes) -> bytes:
        rng = self.rng
        b = bytearray(frame)
        for _ in range(rng.randint(1, 4)):
            how = rng.randrange(5)
            if how == 0 and b:
                i = rng.randrange(len(b))
                b[i] ^= 1 << rng.randrange(8)
            elif how == 1:
                del b[rng.randrange(len(b) + 1):]
            elif how == 2:
                b += rng.randbytes(rng.randrange(1, 64))
            elif how == 3 and len(b) > ETH_HLEN:
                b[ETH_HLEN + rng.randrange(min(60, len(b) - ETH_HLEN))] = rng.randrange(256)
            elif how == 4 and len(b) > ETH_HLEN:
                b[ETH_HLEN] = 0x40 | rng.randrange(16)  # any IHL
        return bytes(b)

    def frames(self, t: _Target, now: float) -> Iterator[tuple[str, bytes, str]]:
        """(interface, frame, kind) for one step of the campaign."""
        rng = self.rng
        roll = rng.random()
        src = b"\x02" + rng.randbytes(5)
        if roll < 0.03:
            yield rng.choice(sorted(t.macs)), rng.randbytes(rng.randrange(80)), "noise"
            return
        if roll < 0.07:
            iface, sender = t.neighbour(rng)
            target = rng.choice([own for _d, _n, _p, own in t.subnets] + [t.neighbour(rng)[1]])
            arp = (b"\x00\x01\x08\x00\x06\x04" + rng.choice((b"\x00\x01", b"\x00\x02", rng.randbytes(2))) + src
                   + sender.to_bytes(4, "big") + rng.randbytes(6) + target.to_bytes(4, "big"))
            yield iface, bytes(build_ethernet(BROADCAST, src, ETH_P_ARP, arp)), "arp"
            return
        if roll < 0.13 and self.captures:
            yield rng.choice(sorted(t.macs)), self.damage(rng.choice(self.captures)), "capture"
            return
        iface, datagram = self.datagram(t, now)
        dst = t.macs[iface] if rng.random() < 0.95 else rng.choice((BROADCAST, rng.randbytes(6)))
        pieces = self.fragments(datagram) if roll < 0.2 and len(datagram) > IPH_MIN_LEN + 8 else [datagram]
        kind = "fragment" if len(pieces) > 1 else "flow"
        for piece in pieces:
            frame = bytes(build_ethernet(dst, src, ETH_P_IP, piece))
            if rng.random() < 0.2:
                yield iface, self.damage(frame), kind + "-damaged"
            else:
                yield iface, frame, kind


def _check_output(t: _Target, out: object, report: FuzzReport, where: str) -> None:
    emitted = getattr(out, "emitted", None) or []
    report.outputs += len(emitted)
    for e in emitted:
        if e.iface not in t.names:
            report.fail(f"{where}: sent on {e.iface!r}, which the host does not have", exception=False)
        frame = e.frame
        if e.gso_type or not is_ipv4_frame(frame):
            continue
        ihl = (frame[ETH_HLEN] & 0x0F) * 4
        if ihl >= IPH_MIN_LEN and len(frame) >= ETH_HLEN + ihl and internet_checksum(frame[ETH_HLEN:ETH_HLEN + ihl]):
            report.fail(f"{where}: sent an IPv4 header with a bad checksum: {frame[:ETH_HLEN + ihl].hex()}",
                        exception=False)
    if len(t.engine.table) > t.engine.cfg.max_entries:
        report.fail(f"{where}: conntrack holds {len(t.engine.table)} > max {t.engine.cfg.max_entries}",
                    exception=False)


def _capture_frames(limit: int = 4000) -> list[bytes]:
    frames: list[bytes] = []
    if not PCAPS.is_dir():
        return frames
    for path in sorted(PCAPS.iterdir()):
        if path.suffix not in (".pcap", ".pcapng"):
            continue
        try:
            for rec in iter_capture(path):
                if rec.ipv4 is not None and len(frames) < limit:
                    frames.append(bytes(build_ethernet(b"\x02" * 6, b"\x04" * 6, ETH_P_IP, rec.ipv4)))
        except (CaptureError, OSError):
            continue
    return frames


def fuzz_frames(n: int, seed: int = 0, *, progress: Callable[[int], None] | None = None) -> FuzzReport:
    """Drive about `n` frames through the three engines (see the module docstring)."""
    rng = random.Random(seed)
    targets = [
        _Target("masquerade (compiled flows)", EXAMPLES / "masquerade-host.toml", trace=False, seed=seed),
        _Target("docker (second tier)", EXAMPLES / "docker-host.toml", trace=False, seed=seed),
        _Target("docker (traced slow path)", EXAMPLES / "docker-host.toml", trace=True, seed=seed),
    ]
    captures = _capture_frames()
    sources = [_FrameSource(rng, captures) for _ in targets]
    report = FuzzReport()
    now = 1000.0
    while report.runs < n:
        now += rng.expovariate(50.0) if rng.random() < 0.999 else rng.choice((31.0, 121.0, 432001.0))
        which = report.runs % len(targets)
        t, source = targets[which], sources[which]
        try:
            _check_output(t, t.timers(now), report, f"{t.name} timers at {now:.3f}")
        except Exception:
            report.fail(f"{t.name} timers at {now:.3f}:\n{traceback.format_exc()}", exception=True)
        for iface, frame, kind in source.frames(t, now):
            report.runs += 1
            report.count(kind)
            try:
                out = t.engine.receive(frame, iface, now, trace=t.trace)
            except Exception:
                report.fail(f"{t.name} {iface} {frame.hex()}:\n{traceback.format_exc()}", exception=True)
                continue
            _check_output(t, out, report, f"{t.name} {iface} {frame.hex()}")
        if progress is not None and report.runs % 100_000 < 3:
            progress(report.runs)
    return report
