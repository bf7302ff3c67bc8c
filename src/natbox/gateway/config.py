"""What `natbox gateway` was asked to do: the parsed command line (natbox.cli.gateway builds it)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["GatewayConfig"]


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
    offload: bool = False  # hand established flows to a tc BPF datapath (natbox.gateway.offload)
    offload_new: bool = False  # and new TCP connections from templates (natbox.gateway.newconn); implies offload
