"""`natbox gateway`: the host model running on real interfaces, from start to clean stop.

Start: read the host file and rules, check that the kernel will not fight natbox (natbox.gateway.kernel),
open the devices (natbox.gateway.ports), build the engine, open the control socket, restore --state,
drop root (--user), tell systemd READY=1, and run the packet loop until SIGTERM/SIGINT or --duration.
SIGHUP rereads the files between two batches of packets. Stop: save --state, report the counters, close
the control socket and the devices; each step runs even when one before it fails.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable

from natbox.engine.engine import Engine
from natbox.gateway.adopt import run_adopted
from natbox.gateway.config import GatewayConfig
from natbox.gateway.control import ControlPathError, ControlServer
from natbox.gateway.kernel import check_kernel
from natbox.gateway.log import ERR, say
from natbox.gateway.loop import EventLoop
from natbox.gateway.offload import Offload, remove_stale_filters, start_offload
from natbox.gateway.ports import open_ports
from natbox.gateway.privileges import CAP_NET_ADMIN, drop_privileges
from natbox.gateway.sdnotify import Notifier
from natbox.gateway.state import load, reload, restore_state, save_state

__all__ = ["COLLECTOR_THRESHOLDS", "run_gateway", "settle_collector"]

COLLECTOR_THRESHOLDS = (5_000, 20, 40)  # gc.set_threshold for the packet loop (CPython's default: 700, 10, 10)


def settle_collector() -> None:
    """Ready the cyclic garbage collector for a long-running packet loop: what start-up built (the host, the
    rules, the engine) is moved out of the collector's sight (`gc.freeze()`), and collections come less often.

    A gateway's heap is mostly the conntrack table: tens of thousands of entries, each a handful of container
    objects, none in a reference cycle (reference counting frees them when their connection dies). CPython's
    default thresholds walk the whole heap in a full collection every few hundred thousand allocations, so a
    gateway's cost per new connection grew with its table: under `--offload-new`, 110 -> 165 µs of CPU per
    connection as the table went from 20k to 66k entries, 109 -> 125 µs with the collector off (live_bench,
    this session). The thresholds keep young collections (cycles still die in the first generations) and make
    full ones rare: 1 instead of 6 over 40,000 connections of slowpath_bench's gateway.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*COLLECTOR_THRESHOLDS)



def run_gateway(cfg: GatewayConfig) -> int:
    """Run the gateway `cfg` describes; its exit status (0 clean stop, 1 failure, 2 refused to start)."""
    if cfg.adopt:
        return run_adopted(cfg, _run)
    return _run(cfg)


def _run(cfg: GatewayConfig) -> int:
    notifier = Notifier()
    try:
        hf, ruleset = load(cfg)
    except (ValueError, OSError) as exc:
        say(str(exc), ERR)
        return 2
    host = hf.host
    owned = [i for i in host.interfaces.values() if i.kind != "loopback" and i.name not in cfg.not_owned]
    if not owned:
        say(f"{cfg.host_file}: the model has no interfaces to run on", ERR)
        return 2
    if not check_kernel(cfg, host, owned):
        return 2
    if cfg.offload:
        from natbox.offload.datapath import probe

        missing = probe()
        if missing is not None:
            say(f"--offload: {missing}", ERR)
            return 2
    opened = open_ports(cfg, owned)
    if opened is None:
        return 1
    remove_stale_filters([i.name for i in owned if i.kind != "tap"])
    seed = cfg.seed if cfg.seed is not None else int.from_bytes(os.urandom(8), "little")
    # ARP as the kernel does it (resolve_neighbours): held packets, ICMP host unreachable on failure
    engine = Engine(host, ruleset=ruleset, ruleset6=hf.ruleset6, seed=seed, resolve_neighbours=True,
                    listeners=hf.listen, offload=cfg.offload, templates=cfg.offload_new)
    engine.ipsets = hf.sets
    engine.xt_state.nfacct = hf.nfacct  # a snapshot's (--adopt: the kernel's) objects, which its rules count into
    loop = EventLoop(engine, opened.ports, mtus=opened.mtus)  # it runs the engine's timers when they are due
    loop.warn = say
    control = None
    if cfg.control is not None:
        try:
            control = ControlServer(cfg.control, engine, loop)
        except ControlPathError as exc:
            loop.close()
            say(str(exc), ERR)
            return 2
        except OSError as exc:
            loop.close()
            say(f"--control {cfg.control}: {exc.strerror or exc}", ERR)
            return 1
    offload = None
    if cfg.offload:
        offload = start_offload(engine, loop, [i.name for i in owned if i.kind != "tap"], seal=cfg.user is not None,
                                new_flows=cfg.offload_new)
        if offload is None:
            if control is not None:
                control.close()
            loop.close()
            return 2
        if control is not None:
            control.commands.reports.append(offload.report)
            control.commands.before_conntrack.append(offload.fold)  # conntrack -L/-E see what it counted
    if cfg.state is not None:
        restore_state(cfg.state, engine)
    if cfg.user is not None:
        # --offload(-new): maps and ring need no capability (their descriptors are open); the stop's tc needs one
        why = drop_privileges(cfg.user, keep=(CAP_NET_ADMIN,) if offload is not None else ())
        if why is not None:
            if control is not None:
                control.close()
            loop.close()
            say(why, ERR)
            return 1

    def hangup() -> None:
        notifier.reloading()
        reload(cfg, engine)
        notifier.ready("forwarding")

    loop.on_hangup = hangup
    loop.install_signal_handlers()
    say(f"ready: {host.name} on " + ", ".join(opened.described)
        + ("" if offload is None else f"; offload: tc BPF datapath on {', '.join(offload.ifnames)}")
        + (" with new connections" if offload is not None and offload.newconn is not None else ""))
    notifier.ready(f"forwarding on {', '.join(opened.ports)}")
    settle_collector()
    try:
        loop.run(duration=cfg.duration)
    finally:
        _shutdown(cfg, engine, loop, control, notifier, offload)
    return 0


def _shutdown(cfg: GatewayConfig, engine: Engine, loop: EventLoop, control: ControlServer | None,
              notifier: Notifier, offload: Offload | None = None) -> None:
    """Each step of the stop, whatever the one before did (a step that fails says so and the rest go on)."""
    notifier.stopping()
    steps: list[tuple[str, Callable[[], None]]] = []
    if offload is not None:  # the datapath's counters into the cts before they are saved; then it goes
        steps += [("reading the offload counters", offload.fold), ("closing the offload datapath", offload.close)]
    if cfg.state is not None:
        state = cfg.state
        steps.append(("saving --state", lambda: save_state(state, engine)))
    steps.append(("report", lambda: say(f"stopped: {loop.report()}; conntrack entries {len(engine.table)}")))
    if control is not None:
        steps.append(("closing --control", control.close))
    steps += [("closing the devices", loop.close), ("notify", notifier.close)]
    for what, step in steps:
        try:
            step()
        except Exception as exc:  # the rest of the stop must run: devices closed, adopted state given back
            say(f"warning: stopping: {what} failed: {exc!r}")
