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
IPv6 flows are not modelled offline yet: the model refuses them (`Engine.offload_refused`, as the gateway
does for a flow its datapath cannot take) and the engine forwards them itself.
"""

from __future__ import annotations

from dataclasses import replace

from natbox.engine.engine import Engine
from natbox.engine.family import FlowKey
from natbox.engine.fastpath import CompiledFlow
from natbox.engine.offload import OffloadAdd, OffloadDel
from natbox.engine.output import Output
from natbox.netfilter import NFPROTO_IPV6
from natbox.wire.layout import ETH_HDR_LEN, IPH_TOT_LEN

__all__ = ["ModelDatapath"]

_DIRS = ("ORIGINAL", "REPLY")
_TOT_LEN = ETH_HDR_LEN + IPH_TOT_LEN


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
        self._stamps = (engine.rules.version, offload.stamps[1])

    def receive(self, frame: bytes, iface: str, now: float, *, trace: bool = False) -> Output:
        """One Ethernet frame arriving on `iface`: carried by the datapath when its flow is installed and the
        executor takes it, else given to the engine (`Engine.receive`)."""
        out = self._carry(frame, iface, now, trace) if self.installed else None
        if out is None:
            out = self.engine.receive(frame, iface, now, trace=trace)
            self.sync(out, now, trace=trace)
        return out

    def _carry(self, frame: bytes, iface: str, now: float, trace: bool) -> Output | None:
        stamps = (self.engine.rules.version, self._offload.stamps[1])
        if stamps != self._stamps:
            self._restamp(stamps)
        out = self._exec.forward(frame, iface, now)
        if out is None:
            return None
        flow = self._exec.flows[self._exec.miss_key or ("", b"", 0, b"")]
        plan = flow.plan
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

    def _restamp(self, stamps: tuple[int, int]) -> None:
        self._stamps = stamps
        for flow in self._exec.flows.values():
            flow.plan = replace(flow.plan, rules_version=stamps[0], neigh_gen=stamps[1])

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
        if any(plan.family == NFPROTO_IPV6 for plan in req.plans):  # not modelled offline (yet): the
            self.engine.offload_refused(req.ct_id)  # flow stays the engine's, as one the datapath cannot take
            return None
        self._remove(OffloadDel(req.ct_id, "replaced"))
        stamps = (self.engine.rules.version, self._offload.stamps[1])
        for key, plan in zip(flow.keys, req.plans, strict=True):
            plan = replace(plan, rules_version=stamps[0], neigh_gen=stamps[1])
            self._exec.flows[key] = CompiledFlow(plan, flow.conn, flow.conn.tcp if plan.proto == 6 else None,
                                                 ifaces[plan.iif], ifaces[plan.oif])
        self.installed[req.ct_id] = list(flow.keys)
        return (f"flow offload: ct #{req.ct_id} installed in the datapath, both directions "
                f"({req.plans[0].iif} <-> {req.plans[0].oif}): its next packets skip the hooks")

    def _remove(self, req: OffloadDel) -> str | None:
        keys = self.installed.pop(req.ct_id, None)
        if keys is None:
            return None
        for key in keys:
            self._exec.flows.pop(key, None)
        packets = [self.counted.pop((req.ct_id, d), [0, 0])[0] for d in (0, 1)]
        return (f"flow offload: ct #{req.ct_id} back to the slow path ({req.reason}), its entries removed; the "
                f"datapath carried {packets[0]} + {packets[1]} packets of it")
