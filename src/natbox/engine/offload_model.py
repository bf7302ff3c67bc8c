"""The kernel datapath of `--offload`, modelled offline (`natbox replay --offload`, `natbox explain --offload`).

Live, the engine decides (engine/offload.py: `nft_flow_offload_eval`'s choice, `OffloadAdd`/`OffloadDel`) and
natbox_offload.bpf.c forwards the offloaded flows' packets in the kernel, from map entries made of the
engine's plans. Offline there is no kernel; `ModelDatapath` stands in front of the engine as tc ingress
does, and models the kernel's flowtable with the same two pieces:

- the decision is the engine's own: after every engine call (and timer run) its requests are carried out,
  an `OffloadAdd` installing both directions' plans, an `OffloadDel` removing them;
- a frame of an installed flow is forwarded by executing its plan with the compiled flows' executor
  (`FlowCache.datapath()`: the same code the engine's fast path runs, whose output the BPF program's
  rewrite matches byte for byte, tests/offload/test_entry.py), without the conntrack step, as the
  flowtable's packets bypass the tracker. Whatever the executor declines (SYN, FIN, RST, a segment
  without ACK, TTL 1, over the MTU, options, fragments...) goes to the engine, as the BPF program passes
  it up to the stack.

A carried packet meets no netfilter hook: no rule counts it, no LOG or NFLOG sees it. Its direction's
packet and byte counts go into the ct at once (`Engine.offload_stats`: what the live gateway folds at
least once a second, exact here) and restart the flow's idle timer. With `trace`, the packet's explanation
is one step saying it was offloaded, and the packets whose engine call installed or removed a flow's
entries say so; `events` keeps those moments for a summary, timers' (idle flows) included.

The datapath's entries do not depend on the ruleset or the neighbour table (a rule change leaves offloaded
flows alone; a next hop's new MAC brings a flow back through the engine's revalidation), so a plan the
engine stamped under an older ruleset or neighbour generation is re-stamped, not dropped. Only Ethernet
frames are carried (a raw-IP record goes to the engine: tc ingress sees frames); the match is the engine's
flow key, which also holds the frame's MAC addresses, where the BPF program's key holds the ifindex only.
IPv6 flows are carried the same way by the IPv6 compiled flows' executor (`FlowCache6.datapath()`, what
natbox_offload.bpf.c's IPv6 branch does: tests/offload/test_entry6.py), counted by their IPv6 length.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final

from natbox.engine.engine import Engine
from natbox.engine.family import FlowKey
from natbox.engine.fastpath import CompiledFlow, FlowCache
from natbox.engine.fastpath6 import FlowCache6
from natbox.engine.offload import OffloadAdd, OffloadDel
from natbox.engine.output import Output
from natbox.netfilter import NFPROTO_IPV6
from natbox.wire.layout import ETH_HDR_LEN, IP6H_LEN, IP6H_PAYLOAD_LEN, IPH_TOT_LEN

__all__ = ["ModelDatapath"]

_DIRS: Final = ("ORIGINAL", "REPLY")
_TOT_LEN: Final = ETH_HDR_LEN + IPH_TOT_LEN
_PAYLOAD_LEN: Final = ETH_HDR_LEN + IP6H_PAYLOAD_LEN


class ModelDatapath:
    """The offloaded flows' entries and their counters, in front of one engine (see the module docstring)."""

    def __init__(self, engine: Engine) -> None:
        offload = engine.offload
        if offload is None:
            raise ValueError("ModelDatapath: the engine was made without offload=True")
        self.engine = engine
        self._offload = offload
        self._exec = offload.executor()
        self.installed: dict[int, list[FlowKey]] = {}  # ct id -> its entries' keys
        self.counted: dict[tuple[int, int], list[int]] = {}  # (ct id, direction) -> [packets, bytes]
        self.carried = [0, 0]  # packets and bytes the datapath forwarded
        self.events: list[tuple[float, str]] = []  # (time, what): flows offloaded and come back
        self._stamps = self._now_stamps()

    def receive(self, frame: bytes, iface: str, now: float, *, trace: bool = False) -> Output:
        """One Ethernet frame arriving on `iface`: carried by the datapath when its flow is installed and the
        executor takes it, else given to the engine (`Engine.receive`)."""
        out = self._carry(frame, iface, now, trace) if self.installed else None
        if out is None:
            out = self.engine.receive(frame, iface, now, trace=trace)
            self.sync(out, now, trace=trace)
        return out

    def _now_stamps(self) -> tuple[int, int, int, int, int]:
        """The rulesets' versions and the neighbour tables' generations the installed plans are stamped with
        (IPv4's, then IPv6's with its ruleset object)."""
        engine = self.engine
        return (engine.rules.version, self._offload.stamps[1], engine.rules6.version, self._offload.stamps6[1],
                id(engine.rules6))

    def _executor(self, family: int) -> FlowCache:
        """The executor of a family's plans (the IPv6 one is the IPv4 one's sibling, which hands it IPv6 frames)."""
        v6 = self._exec.v6
        return v6 if family == NFPROTO_IPV6 and v6 is not None else self._exec

    def _carry(self, frame: bytes, iface: str, now: float, trace: bool) -> Output | None:
        stamps = self._now_stamps()
        if stamps != self._stamps:
            self._restamp(stamps)
        out = self._exec.forward(frame, iface, now)
        if out is None:
            return None
        ex = self._exec if self._exec.miss_key is not None else self._executor(NFPROTO_IPV6)  # (IPv6: no IPv4 key)
        flow = ex.flows[ex.miss_key or ("", b"", 0, b"")]
        plan = flow.plan
        if plan.family == NFPROTO_IPV6:
            tot_len = IP6H_LEN + (frame[_PAYLOAD_LEN] << 8 | frame[_PAYLOAD_LEN + 1])
        else:
            tot_len = frame[_TOT_LEN] << 8 | frame[_TOT_LEN + 1]
        counted = self.counted.setdefault((plan.ct_id, plan.direction), [0, 0])
        counted[0] += 1
        counted[1] += tot_len
        self.carried[0] += 1
        self.carried[1] += tot_len
        self.engine.offload_stats(plan.ct_id, plan.direction, counted[0], counted[1], now)
        if trace:
            out.trace.append((out.emitted[0].pkt_id, f"offloaded: ct #{plan.ct_id} {_DIRS[plan.direction]} carried "
                              f"by the datapath ({plan.iif} -> {plan.oif}, the flow's plan): no hook, rule, LOG or "
                              "NFLOG sees it; its counters go to the ct"))
        return out

    def _restamp(self, stamps: tuple[int, int, int, int, int]) -> None:
        self._stamps = stamps
        for flow in self._exec.flows.values():
            flow.plan = replace(flow.plan, rules_version=stamps[0], neigh_gen=stamps[1])
        v6 = self._executor(NFPROTO_IPV6)
        if isinstance(v6, FlowCache6):
            v6.current_ruleset()
            for flow in v6.flows.values():
                flow.plan = replace(flow.plan, rules_version=stamps[2], neigh_gen=stamps[3])

    def sync(self, out: Output | None, now: float, *, trace: bool = False) -> None:
        """Carry out the engine's requests (after an engine call, or a timer run: `out` None); with `trace`,
        say so in `out`'s trace."""
        for req in self.engine.offload_requests():
            if isinstance(req, OffloadAdd):
                text = self._install(req)
            else:
                text = self._remove(req)
            if text is None:
                continue
            self.events.append((now, text))
            if trace and out is not None:
                pkt_id = out.trace[0][0] if out.trace else 0
                if isinstance(req, OffloadDel) and req.reason in ("fin", "rst"):
                    out.trace.insert(0, (pkt_id, text))  # nf_flow_state_check: before the slow path saw it
                else:
                    out.trace.append((pkt_id, text))

    def _install(self, req: OffloadAdd) -> str | None:
        flow = self._offload.flows.get(req.ct_id)
        ifaces = self.engine.host.interfaces
        if flow is None:
            return None  # gone again within the same call
        self._remove(OffloadDel(req.ct_id, "replaced"))
        stamps = self._now_stamps()
        if stamps != self._stamps:
            self._restamp(stamps)
        for key, plan in zip(flow.keys, req.plans, strict=True):
            at = 2 if plan.family == NFPROTO_IPV6 else 0
            plan = replace(plan, rules_version=stamps[at], neigh_gen=stamps[at + 1])
            self._executor(plan.family).flows[key] = CompiledFlow(
                plan, flow.conn, flow.conn.tcp if plan.proto == 6 else None, ifaces[plan.iif], ifaces[plan.oif])
        self.installed[req.ct_id] = list(flow.keys)
        return (f"flow offload: ct #{req.ct_id} installed in the datapath, both directions "
                f"({req.plans[0].iif} <-> {req.plans[0].oif}): its next packets skip the hooks")

    def _remove(self, req: OffloadDel) -> str | None:
        keys = self.installed.pop(req.ct_id, None)
        if keys is None:
            return None
        for key in keys:
            self._exec.flows.pop(key, None)
            self._executor(NFPROTO_IPV6).flows.pop(key, None)
        packets = [self.counted.pop((req.ct_id, d), [0, 0])[0] for d in (0, 1)]
        return (f"flow offload: ct #{req.ct_id} back to the slow path ({req.reason}), its entries removed; the "
                f"datapath carried {packets[0]} + {packets[1]} packets of it")
