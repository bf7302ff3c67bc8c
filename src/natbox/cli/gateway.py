"""`natbox gateway HOST_FILE`: run a host model on real interfaces, forwarding with NAT through the engine.

Every interface of the host model except `lo` is *owned* by natbox: an existing interface (veth, bridge,
physical) is opened as an AF_PACKET socket; a `kind = "tap"` interface is a TAP device natbox creates (or
attaches to, when persistent). The kernel must not answer for natbox: natbox refuses to start (exit 2,
one line) when an owned interface carries kernel IPv4 addresses while the kernel forwards on it, or
carries one of the model's own addresses (the kernel would answer ARP and reset natbox's connections).

This module parses the command line; the gateway itself is natbox.gateway.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from natbox.errors import UsageError
from natbox.gateway.config import GatewayConfig

__all__ = ["cli_gateway", "parse_gateway_args"]


USAGE = """natbox gateway (HOST_FILE | --adopt) [--rules FILE] [--no-vnet-hdr] [--no-ring] [--promisc]
                      [--qdisc-bypass] [--complete-csum] [--tap-netns NAME=NETNS[/DEV]] [--seed N]
                      [--duration S] [--control PATH] [--state FILE] [--user NAME] [--offload] [--offload-new]
                      [--force]"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _tap_netns(spec: str) -> tuple[str, str, str]:
    name, sep, where = spec.partition("=")
    if not sep or not name or not where:
        raise argparse.ArgumentTypeError(f"--tap-netns {spec!r}: expected NAME=NETNS[/DEV]")
    ns, _, dev = where.partition("/")
    return name, ns, dev or name


def _seed(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("--seed needs an integer") from None


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("--duration needs a number of seconds") from None


def _parser() -> _Parser:
    p = _Parser(prog="natbox gateway", usage=USAGE, add_help=False, allow_abbrev=False,
                formatter_class=argparse.RawDescriptionHelpFormatter,
                description="Run a host model on real interfaces: a live NAT (root).",
                epilog="Every interface of the model except lo is owned by natbox (AF_PACKET sockets on existing "
                       "ones, TAPs it creates);\nnatbox refuses to start (exit 2) when the kernel would answer "
                       "or route for it there.")
    a = p.add_argument
    a("host_file", nargs="*", metavar="HOST_FILE", help="the host model (a TOML host file or a snapshot directory)")
    a("-h", "--help", action="store_true", help="show this help and exit")
    a("--rules", metavar="FILE", help="iptables-save text (default: the host file's [rules])")
    a("--no-vnet-hdr", dest="vnet_hdr", action="store_false",
      help="plain frames (no GSO/partial checksums; peers then need TSO/GSO off)")
    a("--no-ring", dest="ring", action="store_false", help="recv() instead of a TPACKET_V2 ring")
    a("--promisc", action="store_true", help="put AF_PACKET interfaces in promiscuous mode")
    a("--qdisc-bypass", action="store_true", help="send with PACKET_QDISC_BYPASS (faster; but then tcpdump on "
      "those interfaces does not see the frames natbox sends)")
    a("--complete-csum", action="store_true", help="finish partial checksums before the engine (instead of "
      "skipping its check for them, as the kernel does for CHECKSUM_PARTIAL)")
    a("--tap-netns", metavar="NAME=NS[/DEV]", type=_tap_netns, action="append", default=[],
      help="the TAP for model interface NAME lives in namespace NS (as DEV)")
    a("--seed", metavar="N", type=_seed, help="the engine's RNG seed (default: random)")
    a("--duration", metavar="SECONDS", type=_seconds, help="stop after that long (tests, benchmarks)")
    a("--control", metavar="PATH", help="the control socket: `natbox iptables|iptables-save|iptables-restore|"
      "conntrack|status --control PATH ...` act on the running gateway; a stale socket there is replaced, "
      "anything else is refused")
    a("--adopt", action="store_true", help="no HOST_FILE: take over the router the kernel runs in this namespace "
      "as it is (natbox snapshot of it), withdraw its addresses and forwarding from the kernel, and give them "
      "back when natbox stops")
    a("--user", metavar="NAME", help="once the devices and the control socket are open, drop root: run as NAME "
      "(its group, no supplementary groups, no capabilities (with --offload or --offload-new: CAP_NET_ADMIN, to "
      "remove its tc filters at the stop), no_new_privs); open sockets keep working, "
      "a --state FILE must be writable by NAME")
    a("--state", metavar="FILE", help="save the conntrack table there on a clean stop (SIGTERM) and restore it at "
      "the next start, so established connections survive a restart")
    a("--offload", action="store_true", help="hand established TCP/UDP flows to a tc BPF program on the AF_PACKET "
      "interfaces (not TAPs natbox holds: nothing crosses the kernel there); natbox still decides and sees "
      "FIN/RST; needs clang, tc and bpf() (root); conntrack shows such flows [OFFLOAD] "
      "(docs/differences.md)")
    a("--offload-new", action="store_true", help="--offload, and new TCP connections too: the BPF program "
      "forwards a SYN natbox's decision for an earlier one covers (a template: MASQUERADE/SNAT/DNAT keeping the "
      "client's port, a nat table of simple rules, no other table) and copies the connection's packets to "
      "natbox, which tracks them (docs/differences.md)")
    a("--force", action="store_true", help="start even when the kernel would fight natbox")
    return p


def parse_gateway_args(argv: Sequence[str]) -> GatewayConfig:
    """The configuration `argv` asks for; UsageError (one line) when it is not a valid command line."""
    ns, extra = _parser().parse_known_args(list(argv))
    for arg in extra:
        raise UsageError(f"unknown option {arg!r}" if arg.startswith("-") else f"unexpected argument {arg!r}")
    if len(ns.host_file) > 1:
        raise UsageError(f"unexpected argument {ns.host_file[1]!r}")
    host_file = ns.host_file[0] if ns.host_file else None
    if host_file is None and not ns.adopt:
        raise UsageError("missing HOST_FILE (or --adopt)")
    if host_file is not None and ns.adopt:
        raise UsageError("--adopt takes the host from the kernel: give no HOST_FILE")
    if ns.adopt and ns.user is not None:
        raise UsageError("--adopt cannot be combined with --user: giving the router back to the kernel at the "
                         "stop needs root")
    if ns.offload_new:
        ns.offload = True
    return GatewayConfig(
        host_file=host_file or "", rules=ns.rules, vnet_hdr=ns.vnet_hdr, ring=ns.ring, promisc=ns.promisc,
        tap_netns={name: (netns, dev) for name, netns, dev in ns.tap_netns}, seed=ns.seed, duration=ns.duration,
        control=ns.control, force=ns.force, complete_csum=ns.complete_csum, state=ns.state, user=ns.user,
        qdisc_bypass=ns.qdisc_bypass, adopt=ns.adopt, offload=ns.offload,
        offload_new=ns.offload_new)


def cli_gateway(argv: Sequence[str]) -> int:
    parser = _parser()
    if "-h" in argv or "--help" in argv:
        sys.stdout.write(parser.format_help())
        return 0
    try:
        cfg = parse_gateway_args(argv)
    except UsageError as exc:
        sys.stderr.write(f"natbox gateway: {exc}\n{parser.format_usage()}")
        return 2
    from natbox.gateway.app import run_gateway

    return run_gateway(cfg)


if __name__ == "__main__":
    sys.exit(cli_gateway(sys.argv[1:]))
