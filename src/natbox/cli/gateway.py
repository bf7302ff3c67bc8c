"""`natbox gateway HOST_FILE`: run a host model on real interfaces, forwarding with NAT through the engine.

Every interface of the host model except `lo` is *owned* by natbox: an existing interface (veth, bridge,
physical) is opened as an AF_PACKET socket; a `kind = "tap"` interface is a TAP device natbox creates (or
attaches to, when persistent). The kernel must not answer for natbox: natbox refuses to start (exit 2,
one line) when an owned interface carries kernel IPv4 addresses while the kernel forwards on it, or
carries one of the model's own addresses (the kernel would answer ARP and reset natbox's connections).

Options:
  --rules FILE          iptables-save text (default: the host file's [rules])
  --no-vnet-hdr         plain frames (no GSO/partial checksums; peers then need TSO/GSO off)
  --no-ring             recv() instead of a TPACKET_V2 ring
  --promisc             put AF_PACKET interfaces in promiscuous mode
  --qdisc-bypass        send with PACKET_QDISC_BYPASS (faster; but then tcpdump on those interfaces does
                        not see the frames natbox sends)
  --complete-csum       finish partial checksums before the engine (instead of skipping its check for
                        them, as the kernel does for CHECKSUM_PARTIAL)
  --tap-netns NAME=NS[/DEV]  the TAP for model interface NAME lives in namespace NS (as DEV)
  --seed N              the engine's RNG seed (default: random)
  --duration SECONDS    stop after that long (tests, benchmarks)
  --control PATH        the control socket: `natbox iptables|iptables-save|iptables-restore|conntrack
                        --control PATH ...` act on the running gateway (see natbox.adapters.control)
  --adopt               no HOST_FILE: take over the router the kernel runs in this namespace as it is
                        (natbox snapshot of it), withdraw its addresses and forwarding from the kernel,
                        and give them back when natbox stops
  --user NAME           once the devices and the control socket are open, drop root: run as NAME (its
                        group, no supplementary groups); open sockets keep working, nothing new is opened
  --state FILE          save the conntrack table there on a clean stop (SIGTERM) and restore it at the
                        next start, so established connections survive a restart
  --force               start even when the kernel would fight natbox
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from natbox.adapters.control import read_request
from natbox.errors import UsageError

__all__ = ["GatewayConfig", "cli_gateway", "kernel_conflicts", "parse_gateway_args"]

USAGE = """\
usage: natbox gateway (HOST_FILE | --adopt) [--rules FILE] [--no-vnet-hdr] [--no-ring] [--promisc]
                      [--qdisc-bypass] [--complete-csum]
                      [--tap-netns NAME=NETNS[/DEV]] [--seed N] [--duration S] [--control PATH] [--state FILE]
                      [--user NAME] [--force]
"""


@dataclass
class GatewayConfig:
    host_file: str
    rules: str | None = None
    vnet_hdr: bool = True
    ring: bool = True
    promisc: bool = False
    tap_netns: dict[str, tuple[str, str]] = field(default_factory=dict)  # model name -> (netns, device)
    seed: int | None = None
    duration: float | None = None
    control: str | None = None
    force: bool = False
    complete_csum: bool = False
    state: str | None = None  # conntrack table saved on stop, restored on start
    user: str | None = None  # drop privileges to this user once the devices are open
    qdisc_bypass: bool = False  # PACKET_QDISC_BYPASS: faster, but tcpdump no longer sees what natbox sends
    adopt: bool = False  # take over the namespace the kernel routes now, give it back on exit
    not_owned: set[str] = field(default_factory=set)  # interfaces left to the kernel (bridge ports)


def parse_gateway_args(argv: Sequence[str]) -> GatewayConfig:
    args = list(argv)
    host: str | None = None
    cfg = GatewayConfig("")
    i = 0

    def value(opt: str) -> str:
        nonlocal i
        if i + 1 >= len(args):
            raise UsageError(f"option {opt} needs a value")
        i += 1
        return args[i]

    while i < len(args):
        a = args[i]
        if a == "--rules":
            cfg.rules = value(a)
        elif a == "--no-vnet-hdr":
            cfg.vnet_hdr = False
        elif a == "--no-ring":
            cfg.ring = False
        elif a == "--promisc":
            cfg.promisc = True
        elif a == "--force":
            cfg.force = True
        elif a == "--complete-csum":
            cfg.complete_csum = True
        elif a == "--state":
            cfg.state = value(a)
        elif a == "--user":
            cfg.user = value(a)
        elif a == "--adopt":
            cfg.adopt = True
        elif a == "--qdisc-bypass":
            cfg.qdisc_bypass = True
        elif a == "--control":
            cfg.control = value(a)
        elif a == "--tap-netns":
            spec = value(a)
            name, sep, where = spec.partition("=")
            if not sep or not name or not where:
                raise UsageError(f"--tap-netns {spec!r}: expected NAME=NETNS[/DEV]")
            ns, _, dev = where.partition("/")
            cfg.tap_netns[name] = (ns, dev or name)
        elif a == "--seed":
            text = value(a)
            try:
                cfg.seed = int(text)
            except ValueError:
                raise UsageError("--seed needs an integer") from None
        elif a == "--duration":
            text = value(a)
            try:
                cfg.duration = float(text)
            except ValueError:
                raise UsageError("--duration needs a number of seconds") from None
        elif a.startswith("-"):
            raise UsageError(f"unknown option {a!r}")
        elif host is None:
            host = a
        else:
            raise UsageError(f"unexpected argument {a!r}")
        i += 1
    if host is None and not cfg.adopt:
        raise UsageError("missing HOST_FILE (or --adopt)")
    if host is not None and cfg.adopt:
        raise UsageError("--adopt takes the host from the kernel: give no HOST_FILE")
    cfg.host_file = host or ""
    return cfg


def _kernel_addresses(ifname: str) -> list[str]:
    """The kernel's IPv4 addresses on `ifname` (`ip -j -4 addr show dev IFNAME`)."""
    try:
        proc = subprocess.run(["ip", "-j", "-4", "addr", "show", "dev", ifname], capture_output=True,
                              text=True, timeout=10, check=False)
        data = json.loads(proc.stdout or "[]")
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return []
    return [f"{a['local']}/{a['prefixlen']}" for d in data for a in d.get("addr_info", [])
            if a.get("family", "inet") == "inet" and "local" in a]


def _all_kernel_addresses() -> list[tuple[str, str]]:
    """(interface, "a.b.c.d/len") for every kernel IPv4 address in this namespace."""
    try:
        proc = subprocess.run(["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True, timeout=10,
                              check=False)
        data = json.loads(proc.stdout or "[]")
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return []
    return [(d.get("ifname", "?"), f"{a['local']}/{a['prefixlen']}") for d in data for a in d.get("addr_info", [])
            if "local" in a]


def _read_sysctl(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return None


def kernel_conflicts(ifname: str, model_addrs: Sequence[str], kernel_addrs: Sequence[str],
                     forwarding: bool) -> str | None:
    """Why the kernel would fight natbox on `ifname`, or None. `model_addrs`/`kernel_addrs` are
    "a.b.c.d/len" strings; `forwarding` is net.ipv4.conf.IFNAME.forwarding."""
    if not kernel_addrs:
        return None
    if forwarding:
        return (f"{ifname} has kernel address {kernel_addrs[0]} and net.ipv4.conf.{ifname}.forwarding=1: "
                f"the kernel would route natbox's traffic too (ip addr flush dev {ifname}, or forwarding=0)")
    model_ips = {a.split("/")[0] for a in model_addrs}
    clash = [a for a in kernel_addrs if a.split("/")[0] in model_ips]
    if clash:
        return (f"{ifname} has kernel address {clash[0]}, which the model gives natbox: the kernel would "
                f"answer ARP and reset natbox's connections (ip addr del {clash[0]} dev {ifname})")
    return None


def _iface_exists(name: str) -> bool:
    import socket

    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def _tap_mac(name: str) -> bytes:
    """A stable locally administered MAC for a TAP the model gives none: 02:4e:42 + crc32(name)."""
    return b"\x02\x4e\x42" + (zlib.crc32(name.encode()) & 0xFFFFFF).to_bytes(3, "big")


EVENT_SUBSCRIBERS_MAX = 16  # concurrent `conntrack -E` listeners on the control socket


class ControlSocket:
    """The gateway's control socket: one command per connection, answered from the loop's thread (the
    engine is never touched concurrently). The seam for iptables/conntrack commands on a live gateway."""

    def __init__(self, path: str, engine: Any, loop: Any) -> None:
        import socket

        self.path = path
        self.engine = engine
        self.loop = loop
        if os.path.exists(path):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o077)  # the socket is its owner's only (mode 0600) from its creation on
        try:
            self.sock.bind(path)
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        self.sock.listen(8)
        self.subscribers: list[Any] = []  # `conntrack -E` connections
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        try:
            raw = read_request(conn)
            text = raw.decode(errors="replace").strip()
            if text.startswith("{") and self._is_event_request(text):
                self._subscribe(conn)
                return
            answer = self.answer_json(text) if text.startswith("{") else self.answer(text)
            conn.sendall(answer.encode())
        except OSError:
            pass
        conn.close()

    # --- conntrack -E: event subscribers -----------------------------------------------------------

    @staticmethod
    def _is_event_request(text: str) -> bool:
        import json

        try:
            req = json.loads(text)
        except ValueError:
            return False
        argv = req.get("argv") if isinstance(req, dict) else None
        return req.get("cmd") == "conntrack" and isinstance(argv, list) and argv[:1] in (["-E"], ["--event"])

    def _subscribe(self, conn: Any) -> None:
        """`conntrack -E`: the connection stays open and receives every event as conntrack prints it."""
        if len(self.subscribers) >= EVENT_SUBSCRIBERS_MAX:
            conn.sendall(b"conntrack v1.4.7 (conntrack-tools): too many event listeners\n")
            conn.close()
            return
        conn.setblocking(False)
        self.subscribers.append(conn)
        self.engine.table.events_enabled = True

    def pump(self) -> None:
        """Send the engine's new conntrack events to the subscribers (called by the loop after each wakeup).
        A subscriber that cannot keep up (socket buffer full) or went away is dropped, as netlink drops
        a listener with ENOBUFS."""
        if not self.subscribers:
            return
        events = self.engine.table.drain_events()
        if not events:
            return
        from natbox.conntrack.format import format_event

        data = "".join(format_event(ev) + "\n" for ev in events).encode()
        alive = []
        for conn in self.subscribers:
            try:
                sent = conn.send(data)
            except (BlockingIOError, OSError):
                sent = -1
            if sent == len(data):
                alive.append(conn)
            else:
                conn.close()
        self.subscribers = alive
        if not alive:
            self.engine.table.events_enabled = False
            self.engine.table.drain_events()

    def answer_json(self, text: str) -> str:
        """A JSON request (natbox.adapters.control): iptables commands and conntrack on the live engine."""
        import io
        import json

        try:
            req = json.loads(text)
            cmd = str(req["cmd"])
            argv = [str(a) for a in req.get("argv", [])]
            stdin = io.StringIO(str(req.get("stdin", "")))
        except (ValueError, KeyError, TypeError):
            return json.dumps({"exit": 2, "stdout": "", "stderr": "natbox gateway: malformed control request\n"})
        out, err = io.StringIO(), io.StringIO()
        code = self.run_command(cmd, argv, stdin, out, err)
        return json.dumps({"exit": code, "stdout": out.getvalue(), "stderr": err.getvalue()})

    def run_command(self, cmd: str, argv: list[str], stdin: Any, out: Any, err: Any) -> int:
        from natbox.cli.iptables import iptables_main, iptables_restore_main, iptables_save_main

        rules = self.engine.rules
        if cmd == "iptables":
            return iptables_main(argv, ruleset=rules, stdout=out, stderr=err)
        if cmd == "iptables-save":
            return iptables_save_main(argv, ruleset=rules, stdout=out, stderr=err)
        if cmd == "iptables-restore":
            return iptables_restore_main(argv, ruleset=rules, stdin=stdin, stdout=out, stderr=err)
        if cmd == "conntrack":
            return self.conntrack(argv, out, err)
        if cmd == "status":
            out.write(self.status())
            return 0
        err.write(f"natbox gateway: unknown command {cmd!r}\n")
        return 2

    def status(self) -> str:
        """`natbox status`: the interfaces natbox owns, the loop's counters, drops and conntrack figures."""
        import time

        engine = self.engine
        lines = [f"host {engine.host.name}"]
        for iface in engine.host.interfaces.values():
            if iface.kind == "loopback":
                continue
            addrs = ", ".join(str(a) for a in iface.addresses) or "no address"
            mac = ":".join(f"{b:02x}" for b in iface.mac)
            lines.append(f"  {iface.name:<10} {'up' if iface.up else 'DOWN':<5} {mac}  {addrs}")
        from natbox.engine.neigh import format_ip_neigh

        neigh = format_ip_neigh(engine.neighs.show())
        lines.append(f"neighbours: {len(neigh)}" + "".join(f"\n  {line}" for line in neigh))
        lines.append(f"loop: {self.loop.report()}")
        drops = ", ".join(f"{k} {v}" for k, v in sorted(engine.stats.items())) or "none"
        lines.append(f"engine counters: {drops}")
        stats = engine.table.stats
        lines.append(f"conntrack: {len(engine.table.live(time.monotonic()))} entries (max {engine.table.max_entries}), "
                     f"insert_failed {stats.insert_failed}, drop {stats.drop}, early_drop {stats.early_drop}, "
                     f"invalid {stats.invalid}")
        return "\n".join(lines) + "\n"

    def conntrack(self, argv: list[str], out: Any, err: Any) -> int:
        """`conntrack -L | -S | -F | -C` on the live table (conntrack-tools 1.4.7 output, §7.3)."""
        import time

        from natbox.conntrack.format import format_conntrack, format_stats, summary_line

        now = time.monotonic()
        table = self.engine.table
        op = argv[0] if argv else "-L"
        if op in ("-L", "--dump"):
            conns = table.live(now)
            out.write("".join(format_conntrack(c, now) + "\n" for c in conns))
            err.write(summary_line(len(conns)) + "\n")
            return 0
        if op in ("-S", "--stats"):
            out.write(format_stats(table.stats) + "\n")
            return 0
        if op in ("-C", "--count"):
            out.write(f"{len(table.live(now))}\n")
            return 0
        if op in ("-D", "--delete"):
            try:
                keep = _conntrack_filter(argv[1:])
            except ValueError as exc:
                err.write(f"conntrack v1.4.7 (conntrack-tools): {exc}\n")
                return 2
            victims = [c for c in table.live(now) if keep(c)]
            for ct in victims:
                out.write(format_conntrack(ct, now) + "\n")
                table.delete(ct, now, reason="conntrack -D")
                self.engine.nat.forget(ct)
            err.write(f"conntrack v1.4.7 (conntrack-tools): {len(victims)} flow entries have been deleted.\n")
            return 0 if victims else 1
        if op in ("-F", "--flush"):
            table.flush(now)
            err.write("conntrack v1.4.7 (conntrack-tools): connection tracking table has been emptied.\n")
            return 0
        err.write(f"conntrack v1.4.7 (conntrack-tools): natbox gateway supports -L, -S, -C, -D and -F, not {op}\n")
        return 2

    def answer(self, cmd: str) -> str:
        """The plain-text commands: `stats` (loop and engine counters) and `conntrack` (conntrack -L)."""
        import time

        from natbox.conntrack.format import format_conntrack

        if cmd == "stats":
            engine_stats = " ".join(f"{k}={v}" for k, v in sorted(self.engine.stats.items()))
            return f"loop: {self.loop.report()}\nengine: {engine_stats}\n"
        if cmd == "conntrack":
            now = time.monotonic()
            return "".join(format_conntrack(c, now) + "\n" for c in self.engine.table.live(now))
        return f"unknown command {cmd!r} (stats, conntrack; or a JSON request, see natbox.adapters.control)\n"

    def close(self) -> None:
        for conn in self.subscribers:
            conn.close()
        self.subscribers = []
        self.sock.close()
        if os.path.exists(self.path):
            os.unlink(self.path)


def cli_gateway(argv: Sequence[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        sys.stdout.write(USAGE + (__doc__ or "").split("Options:", 1)[-1])
        return 0
    try:
        cfg = parse_gateway_args(argv)
    except UsageError as exc:
        sys.stderr.write(f"natbox gateway: {exc}\n{USAGE}")
        return 2
    return run_gateway(cfg)


def _err(text: str) -> None:
    sys.stderr.write(f"natbox gateway: {text}\n")
    sys.stderr.flush()


def run_gateway(cfg: GatewayConfig) -> int:
    if cfg.adopt:
        return _run_adopted(cfg)
    return _run_gateway(cfg)


def _run_adopted(cfg: GatewayConfig) -> int:
    """--adopt: snapshot this namespace's router (interfaces, addresses, routes, sysctls, iptables-save -c),
    withdraw its addresses and forwarding from the kernel so that only natbox answers, run the gateway on
    that snapshot, and give everything back to the kernel when natbox stops (whatever the reason)."""
    import tempfile

    from natbox.adapters.snapshot import take_snapshot

    with tempfile.TemporaryDirectory(prefix="natbox-adopt-") as tmp:
        try:
            take_snapshot(tmp)
            with open(os.path.join(tmp, "link.json"), encoding="utf-8") as f:
                links = json.load(f)
            with open(os.path.join(tmp, "addr.json"), encoding="utf-8") as f:
                addrs = json.load(f)
        except (OSError, ValueError) as exc:
            _err(f"--adopt: cannot read this namespace's setup: {exc}")
            return 1
        cfg.not_owned = {link["ifname"] for link in links if link.get("master")}  # bridge ports
        saved = _Withdrawn.capture(addrs, cfg.not_owned)
        cfg.host_file = tmp
        saved.withdraw()
        _err(f"--adopt: took {', '.join(saved.devices) or 'nothing'} from the kernel "
             f"(ip_forward was {saved.ip_forward})")
        try:
            return _run_gateway(cfg)
        finally:
            saved.give_back()
            _err("--adopt: addresses, routes and forwarding given back to the kernel")


@dataclass
class _Withdrawn:
    """What --adopt took from the kernel, to give it back: addresses, the routes that go with them, and
    net.ipv4.ip_forward."""

    addresses: list[tuple[str, str]]  # (device, a.b.c.d/len), in the kernel's order
    routes: list[str]  # `ip -4 route show table main|default` lines that the kernel did not make itself
    ip_forward: str

    @property
    def devices(self) -> list[str]:
        return sorted({dev for dev, _ in self.addresses})

    @staticmethod
    def capture(addr_json: Any, skip: set[str]) -> _Withdrawn:
        addresses = [(link["ifname"], f"{a['local']}/{a['prefixlen']}")
                     for link in addr_json if link.get("ifname") not in skip and link.get("ifname") != "lo"
                     for a in link.get("addr_info", []) if a.get("family") == "inet"]
        routes = []
        for table in ("main", "default"):
            out = subprocess.run(["ip", "-4", "route", "show", "table", table], capture_output=True, text=True,
                                 check=False).stdout
            routes += [f"{line} table {table}" for line in out.splitlines() if line and "proto kernel" not in line]
        ip_forward = (_read_sysctl("/proc/sys/net/ipv4/ip_forward") or "0").strip()
        return _Withdrawn(addresses, routes, ip_forward)

    def withdraw(self) -> None:
        for dev in self.devices:
            subprocess.run(["ip", "-4", "addr", "flush", "dev", dev], capture_output=True, check=False)
        _write_sysctl("/proc/sys/net/ipv4/ip_forward", "0")

    def give_back(self) -> None:
        for dev, prefix in self.addresses:
            subprocess.run(["ip", "addr", "add", prefix, "dev", dev], capture_output=True, check=False)
        for route in self.routes:
            subprocess.run(["ip", "route", "add", *route.split()], capture_output=True, check=False)
        _write_sysctl("/proc/sys/net/ipv4/ip_forward", self.ip_forward)


def _write_sysctl(path: str, value: str) -> None:
    try:
        with open(path, "w", encoding="ascii") as f:
            f.write(value)
    except OSError as exc:
        _err(f"warning: cannot write {path}: {exc.strerror or exc}")


def _run_gateway(cfg: GatewayConfig) -> int:
    from natbox.adapters.loop import EventLoop, Port
    from natbox.adapters.packet_socket import (
        PacketSocket,
        PacketSocketError,
        interface_is_up,
        interface_mac,
        interface_mtu,
    )
    from natbox.adapters.tuntap import TapDevice, TapError
    from natbox.engine.engine import Engine

    try:
        hf, ruleset = _load(cfg)
    except ValueError as exc:
        _err(str(exc))
        return 2
    host = hf.host

    owned = [i for i in host.interfaces.values() if i.kind != "loopback" and i.name not in cfg.not_owned]
    if not owned:
        _err(f"{cfg.host_file}: the model has no interfaces to run on")
        return 2
    for name in cfg.tap_netns:
        if name not in host.interfaces or host.interfaces[name].kind != "tap":
            _err(f"--tap-netns {name}: the model has no tap interface {name!r}")
            return 2
    # --- the kernel must not fight natbox --------------------------------------------------------
    for iface in owned:
        if iface.kind == "tap" and iface.name in cfg.tap_netns:
            continue  # its kernel side is in another namespace (the "VM"): nothing of ours there
        exists = _iface_exists(iface.name)
        if iface.kind != "tap" and not exists:
            _err(f"{iface.name}: no such interface in this namespace (the model's interfaces must exist, "
                 "except kind = \"tap\" ones, which natbox creates)")
            return 2
        if not exists:
            continue
        kaddrs = _kernel_addresses(iface.name)
        fwd = _read_sysctl(f"/proc/sys/net/ipv4/conf/{iface.name}/forwarding") == "1"
        why = kernel_conflicts(iface.name, [str(a) for a in iface.addresses], kaddrs, fwd)
        if why is not None and not cfg.force:
            _err(f"refusing to start: {why}")
            return 2
        if why is None and kaddrs:
            _err(f"warning: {iface.name} has kernel address {kaddrs[0]} (forwarding off): the kernel will "
                 "answer traffic for it alongside natbox")

    owned_names = {i.name for i in owned}
    others = [f"{name} {addr}" for name, addr in _all_kernel_addresses() if name not in owned_names and name != "lo"]
    if others:
        arp_ignore = _read_sysctl("/proc/sys/net/ipv4/conf/all/arp_ignore")
        if arp_ignore in (None, "0"):
            _err(f"warning: the kernel has {others[0]} on an interface natbox does not own; with "
                 "net.ipv4.conf.all.arp_ignore=0 it answers ARP for it on natbox's interfaces too")
    # --- open the ports --------------------------------------------------------------------------
    ports: dict[str, Port] = {}
    mtus: dict[str, int] = {}
    # The kernel never verifies a CHECKSUM_PARTIAL packet's L4 checksum (nf_ip_checksum). The loop skips
    # the engine's check for exactly those packets (see EventLoop), so the adapters leave them partial;
    # the transmit side writes the pseudo-header sum of the final (NATed) header back. --complete-csum
    # instead finishes every partial checksum before the engine sees it (one pass over each packet).
    complete = cfg.complete_csum
    described: list[str] = []
    try:
        for iface in owned:
            if iface.kind == "tap":
                ns, dev = cfg.tap_netns.get(iface.name, (None, iface.name))
                tap = TapDevice(dev, vnet_hdr=cfg.vnet_hdr, netns=ns, complete_csum=complete)
                tap.ifname = iface.name
                ports[iface.name] = tap
                if iface.mac == b"\x00" * 6:
                    iface.mac = _tap_mac(iface.name)
                mtus[iface.name] = iface.mtu
                described.append(f"{iface.name} (tap{' ' + ns + '/' + dev if ns else ''}"
                                 f"{', vnet_hdr' if cfg.vnet_hdr else ''})")
                if ns is None:
                    subprocess.run(["ip", "link", "set", dev, "up"], check=False, capture_output=True)
                continue
            real_mac = interface_mac(iface.name)
            promisc = cfg.promisc
            if iface.mac == b"\x00" * 6:
                iface.mac = real_mac
            elif iface.mac != real_mac:
                promisc = True  # the model's MAC is not the device's: see frames sent to it
            mtus[iface.name] = interface_mtu(iface.name)
            if not interface_is_up(iface.name):
                _err(f"warning: {iface.name} is down: natbox can neither receive nor send on it "
                     f"(ip link set {iface.name} up)")
            if mtus[iface.name] != iface.mtu:
                _err(f"warning: {iface.name}: model mtu {iface.mtu}, device mtu {mtus[iface.name]}")
            ports[iface.name] = PacketSocket(iface.name, vnet_hdr=cfg.vnet_hdr, ring=cfg.ring, promisc=promisc,
                                             complete_csum=complete, qdisc_bypass=cfg.qdisc_bypass,
                                             zero_copy=True)  # long frames leave from the ring itself
            described.append(f"{iface.name} (af_packet{', vnet_hdr' if cfg.vnet_hdr else ''}"
                             f"{', ring' if cfg.ring else ''}{', promisc' if promisc else ''})")
    except (PacketSocketError, TapError) as exc:
        for p in ports.values():
            p.close()
        _err(str(exc))
        return 1
    for name in ports:
        # the engine checks packets against the device's MTU; GSO super-packets (vnet headers) pass when
        # their segments fit (skb_gso_validate_network_len), else it segments or answers frag-needed
        host.interfaces[name].mtu = mtus[name]
    seed = cfg.seed if cfg.seed is not None else int.from_bytes(os.urandom(8), "little")
    # ARP as the kernel does it (resolve_neighbours): held packets, ICMP host unreachable on failure
    engine = Engine(host, ruleset=ruleset, seed=seed, resolve_neighbours=True, listeners=hf.listen)
    loop = EventLoop(engine, ports, mtus=mtus)  # it runs the engine's neighbour timers when they are due
    loop.warn = _err
    control = None
    if cfg.control is not None:
        try:
            control = ControlSocket(cfg.control, engine, loop)
        except OSError as exc:
            loop.close()
            _err(f"--control {cfg.control}: {exc.strerror or exc}")
            return 1
        loop.add_reader(control.fileno(), control.serve)
        loop.after_wakeup.append(control.pump)
    if cfg.state is not None:
        _restore_state(cfg.state, engine)
    if cfg.user is not None:
        why = _drop_privileges(cfg.user)
        if why is not None:
            if control is not None:
                control.close()
            loop.close()
            _err(why)
            return 1
    loop.on_hangup = lambda: _reload(cfg, engine)
    loop.install_signal_handlers()
    _err(f"ready: {host.name} on " + ", ".join(described))
    try:
        loop.run(duration=cfg.duration)
    finally:
        if cfg.state is not None:
            _save_state(cfg.state, engine)
        _err(f"stopped: {loop.report()}; conntrack entries {len(engine.table)}")
        if control is not None:
            control.close()
        loop.close()
    return 0


_PROTOS = {"tcp": 6, "udp": 17, "icmp": 1, "udplite": 136, "sctp": 132, "dccp": 33, "gre": 47}
# conntrack's filter options: (tuple direction, field)
_CT_FILTERS = {
    "-s": (0, "src"), "--orig-src": (0, "src"), "--src": (0, "src"),
    "-d": (0, "dst"), "--orig-dst": (0, "dst"), "--dst": (0, "dst"),
    "-r": (1, "src"), "--reply-src": (1, "src"), "-q": (1, "dst"), "--reply-dst": (1, "dst"),
    "--sport": (0, "sport"), "--orig-port-src": (0, "sport"), "--dport": (0, "dport"), "--orig-port-dst": (0, "dport"),
    "--reply-port-src": (1, "sport"), "--reply-port-dst": (1, "dport"),
}


def _conntrack_filter(args: list[str]) -> Any:
    """conntrack's -D filters (-s -d -r -q, -p, ports) as a predicate on a ct; ValueError on bad options."""
    import ipaddress

    want: list[tuple[int, str, int]] = []
    proto: int | None = None
    i = 0
    while i < len(args):
        opt = args[i]
        if i + 1 >= len(args):
            raise ValueError(f"option `{opt}' requires an argument")
        val = args[i + 1]
        i += 2
        if opt in ("-p", "--proto", "--protonum"):
            proto = _PROTOS.get(val.lower()) if not val.isdigit() else int(val)
            if proto is None:
                raise ValueError(f"unknown protocol `{val}'")
        elif opt in _CT_FILTERS:
            direction, field_name = _CT_FILTERS[opt]
            try:
                value = int(val) if field_name.endswith("port") else int(ipaddress.IPv4Address(val))
            except ValueError:
                raise ValueError(f"bad value `{val}' for {opt}") from None
            want.append((direction, field_name, value))
        else:
            raise ValueError(f"unknown option `{opt}'")

    def keep(ct: Any) -> bool:
        if proto is not None and ct.tuples[0].proto != proto:
            return False
        return all(getattr(ct.tuples[d], f) == v for d, f, v in want)

    return keep


def _drop_privileges(user: str) -> str | None:
    """setgroups([]), setgid, setuid to `user` (the kernel keeps the already-open sockets usable).
    Returns why it failed, or None."""
    import pwd

    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return f"--user {user}: no such user"
    try:
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    except OSError as exc:
        return f"--user {user}: cannot switch to it ({exc.strerror or exc})"
    if os.getuid() == 0 or os.geteuid() == 0:
        return f"--user {user}: still root after switching"
    _err(f"running as {user} (uid {pw.pw_uid}, gid {pw.pw_gid})")
    return None


def _load(cfg: GatewayConfig) -> tuple[Any, Any]:
    """The host file and its ruleset (--rules, or the file's [rules]); ValueError with one line on any problem."""
    from natbox.adapters.snapshot import load_host
    from natbox.rules.evaluate import Ruleset
    from natbox.rules.model import RulesError
    from natbox.rules.parser import parse_restore

    hf = load_host(cfg.host_file)  # a TOML host file (its [rules] read) or a snapshot directory
    host = hf.host
    rules_text, origin = host.rules_text, host.rules_origin
    if cfg.rules is not None:
        try:
            with open(cfg.rules, encoding="utf-8") as f:
                rules_text, origin = f.read(), cfg.rules
        except OSError as exc:
            raise ValueError(f"{cfg.rules}: {exc.strerror}") from None
    ruleset = Ruleset()
    if rules_text.strip():
        try:
            ruleset.restore(parse_restore(rules_text, file=origin, with_counters=cfg.adopt))
        except RulesError as exc:
            raise ValueError(f"{origin}: {exc}") from None
    return hf, ruleset


def _reload(cfg: GatewayConfig, engine: Any) -> None:
    """SIGHUP: read the host file (and rules) again and apply what can change while running: the ruleset
    (new connections only, as in Linux), conntrack sysctls, ip_forward and per-interface knobs, routes
    and addresses. Interfaces cannot come or go (their sockets are open): that is refused with a warning.
    """
    try:
        hf, ruleset = _load(cfg)
    except ValueError as exc:
        _err(f"SIGHUP: not reloaded: {exc}")
        return
    host = hf.host
    old = engine.host
    if set(host.interfaces) != set(old.interfaces):
        _err("SIGHUP: not reloaded: the host file's interfaces changed (restart natbox for that)")
        return
    for name, iface in host.interfaces.items():
        cur = old.interfaces[name]
        cur.addresses, cur.route_localnet, cur.forwarding = iface.addresses, iface.route_localnet, iface.forwarding
    old.routes, old.neighbours, old.ip_forward = host.routes, host.neighbours, host.ip_forward
    import dataclasses

    for f in dataclasses.fields(host.conntrack):
        if f.init:
            setattr(engine.cfg, f.name, getattr(host.conntrack, f.name))  # setattr: keeps its caches right
    engine.table.max_entries = engine.cfg.max_entries
    engine.fib.rebuild()
    engine.rules.tables, engine.rules.present = ruleset.tables, ruleset.present
    engine.rules.invalidate()
    engine.listeners = set(hf.listen)
    _err(f"SIGHUP: reloaded {cfg.host_file}")


def _restore_state(path: str, engine: Any) -> None:
    """Load the conntrack table a previous run saved (--state): established connections survive."""
    import time

    from natbox.conntrack.persist import load_conns

    if not os.path.exists(path):
        return
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        elapsed = max(0.0, time.time() - float(doc.get("saved_at", time.time())))
        conns = load_conns(doc, engine.table, time.monotonic(), elapsed=elapsed)
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        _err(f"warning: --state {path}: not restored ({exc}); starting with an empty conntrack table")
        return
    for ct in conns:
        engine.nat.restore(ct, engine.table)
    _err(f"restored {len(conns)} conntrack entries from {path} ({elapsed:.1f} s old)")


def _save_state(path: str, engine: Any) -> None:
    """Write the live conntrack table for the next start (atomically: a crash leaves the old file)."""
    import time

    from natbox.conntrack.persist import dump_conns

    now = time.monotonic()
    doc = dump_conns(engine.table.live(now), now)
    doc["saved_at"] = time.time()
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f)
        os.replace(tmp, path)
    except OSError as exc:
        _err(f"warning: --state {path}: not saved ({exc.strerror or exc})")
        return
    _err(f"saved {len(doc['entries'])} conntrack entries to {path}")


if __name__ == "__main__":
    sys.exit(cli_gateway(sys.argv[1:]))
