"""natbox as a service: the host model on real interfaces (`natbox gateway`).

    config      GatewayConfig: what the command line asked for
    app         run_gateway: start, run, stop (the order of everything below)
    kernel      what the kernel of this namespace does on natbox's interfaces; refusals and warnings
    ports       opening the devices: AF_PACKET sockets, TAP devices
    loop        EventLoop: frames in, engine, frames out; timers; other descriptors in the same poll
    control     the control socket, non-blocking and bounded (ControlServer)
    commands    what the control socket answers (iptables, conntrack, status) on the live engine
    ctcommand   conntrack's commands, filters and output on the live table
    adopt       --adopt: take over the kernel's router, give it back
    state       the host file and rules (start, SIGHUP) and the saved conntrack table (--state)
    privileges  --user: drop root, the capability bounding set, no_new_privs
    sdnotify    systemd readiness notifications
    log         stderr lines that read well on a terminal and in the journal
"""

from natbox.gateway.config import GatewayConfig

__all__ = ["GatewayConfig"]
