"""Connection templates (issue #16, new connections): the slow path's decision for a new TCP connection, cached
for a kernel datapath that handles the next ones' first packets itself. Sans-IO, no clock.

The model is Open vSwitch's megaflows: the slow path decides, the decision is cached with the fields it
consulted, the datapath applies it to later packets and hands up what misses. When the slow path forwards
the SYN that created a ct (ctinfo NEW, TCP flags exactly SYN) and the decision is *template-safe*, a
`ConnTemplate` is made: key (iif, proto, saddr, daddr, dport) → both directions' `FlowPlan`s (engine/fastpath.py)
with the client's source port a wildcard. natbox's datapath (natbox_offload.bpf.c, `--offload=new`) then
forwards a later SYN of the same key itself, creating the flow's entries and handing a copy of every packet
of it to natbox, which feeds the copies to the engine (the ct, its states, the rule counters are natbox's as
on the slow path; docs/differences.md).

Template-safe (`template_unsafe` says why not):
- nothing but conntrack and nat sees a forwarded packet (`Hooks.compilable`: raw PREROUTING, mangle, filter
  and security FORWARD are empty), so no rule sees the connection's later packets either;
- every rule of the nat table (all its chains: more than the traversal met, so conservative) consults only
  fields of the key and what every such SYN shares (flags SYN, ctstate NEW): -s/-d/-i/-o/-p and these options
  (`SAFE_MATCHES`): tcp/udp --dport and --syn/--tcp-flags, multiport --dports, conntrack/state --ctstate,
  addrtype --src-type/--dst-type, comment; and its target is ACCEPT, RETURN, a jump or goto to a user chain,
  MASQUERADE or SNAT/DNAT to one address (and port) without --random/--random-fully/--persistent
  (`SAFE_TARGETS`). Anything else anywhere in the table (statistic, recent, limit, connlimit, LOG, set, mark,
  --sport, -f, a port range...) refuses every template;
- the ct kept the client's port (reply tuple's dport = original sport): the wildcard is then the same port
  on both sides, and no checksum difference depends on it; no helper, no other status than NAT's;
- both directions have a route and a known next-hop MAC, the reply's back by the SYN's device.

A SYN of a key that has a template, forwarded by the slow path (the datapath sent it up), is reported to
`on_opened` with its ct: the datapath may carry the rest of that connection as if it had opened it.

Stamps: a template holds the FIB generation, ruleset version and neighbour generation of its plans. A
ruleset or FIB change drops every template (`TemplateFlush`, at the next `drain`), a next hop's MAC change
drops the templates using it.

Bounds: at most TEMPLATE_MAX templates; the oldest goes first (a `TemplateDel`).

Copies (`track_copy`): a packet of a connection the datapath opened is fed back as the packet it was. While
templates are safe nothing but conntrack sees a packet of an existing ct on the slow path (no raw, mangle,
filter or security table; the nat chains only see a ct's first packet), so for a packet of a confirmed TCP ct
that is not offloaded, in the handshake or the close (not ESTABLISHED and ASSURED, or a FIN or RST: the slow
path compiles and offloads none of those) `nf_conntrack_in` alone leaves the ct exactly as the whole slow path
would; the caller hands anything else (a new ct, an established packet, an offloaded ct's) to `Engine.receive`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, NamedTuple

from natbox.conntrack.config import ConntrackConfig
from natbox.conntrack.conn import Conn
from natbox.conntrack.core import nf_conntrack_confirm, nf_conntrack_in
from natbox.conntrack.table import ConntrackTable
from natbox.conntrack.tuple import ConnTuple
from natbox.engine.family import FlowKey
from natbox.engine.fastpath import FlowPlan, _diff2, _diff4, nat_steps
from natbox.engine.hooks import Hooks
from natbox.engine.host import Host, Interface
from natbox.engine.neigh import NeighTable
from natbox.engine.path import Held
from natbox.engine.routing import RTN_UNICAST, Fib
from natbox.nat.range import NatRange, RangeFlags
from natbox.netfilter import NF_ACCEPT, CtInfo, CtStatus, Hook, ManipType, TcpState
from natbox.rules.api import XtContext
from natbox.rules.evaluate import Ruleset
from natbox.rules.model import Chain, Rule
from natbox.skb import Skb
from natbox.wire.gso import GSO_TCPV4
from natbox.wire.layout import (
    ETH_HDR_LEN,
    ETH_PROTO,
    IPH_DADDR,
    IPH_MIN_LEN,
    IPH_SADDR,
    IPH_VER_IHL,
    TCPH_CHECK,
    TCPH_DEST,
    TCPH_FLAGS,
    TCPH_SOURCE,
)

__all__ = ["SAFE_MATCHES", "SAFE_TARGETS", "TEMPLATE_MAX", "ConnTemplate", "FlowTemplates", "TemplateAdd",
           "TemplateDel", "TemplateFlush", "TemplateKey", "TemplateRequest", "reply_tuple", "template_unsafe"]

TEMPLATE_MAX: Final = 4096  # templates kept (NB_MAX_TEMPLATES in natbox_offload.bpf.c); the oldest goes first
_SYN: Final = 0x02  # the flags byte of a template's SYN: exactly SYN (natbox_offload.bpf.c checks the same)
_ETH_P_IP_BYTES: Final = b"\x08\x00"
_VER_IHL: Final = ETH_HDR_LEN + IPH_VER_IHL
_SADDR, _DADDR = ETH_HDR_LEN + IPH_SADDR, ETH_HDR_LEN + IPH_DADDR
_SPORT, _DPORT = ETH_HDR_LEN + IPH_MIN_LEN + TCPH_SOURCE, ETH_HDR_LEN + IPH_MIN_LEN + TCPH_DEST
_FLAGS: Final = ETH_HDR_LEN + IPH_MIN_LEN + TCPH_FLAGS
_TCP_END: Final = _FLAGS + 1
_FIN_RST: Final = 0x05
_OFFLOAD: Final = int(CtStatus.OFFLOAD)
_ES: Final = TcpState.ESTABLISHED
_ASSURED, _CONFIRMED = int(CtStatus.ASSURED), int(CtStatus.CONFIRMED)
_PRE_ROUTING, _POST_ROUTING = Hook.PRE_ROUTING, Hook.POST_ROUTING
_NEW: Final = CtInfo.NEW
_SRC, _DST = ManipType.SRC, ManipType.DST
_SRC_NAT, _DST_NAT = int(CtStatus.SRC_NAT), int(CtStatus.DST_NAT)
_MAP_IPS, _PROTO_SPECIFIED = RangeFlags.MAP_IPS, RangeFlags.MAP_IPS | RangeFlags.PROTO_SPECIFIED
_CSUM_AT: Final = ETH_HDR_LEN + IPH_MIN_LEN + TCPH_CHECK
# what a template ct may carry: confirmed, NAT's bits (and SEEN_REPLY etc. later); never a helper or expectation
_REFUSE: Final = int(CtStatus.HELPER | CtStatus.EXPECTED | CtStatus.SEQ_ADJUST | CtStatus.NAT_CLASH
              | CtStatus.FIXED_TIMEOUT | CtStatus.DYING | CtStatus.OFFLOAD)

# -m NAME → the options (as iptables-save prints them) that read only the key's fields or what every SYN of
# the key shares; `!` is fine (the same field)
SAFE_MATCHES: dict[str, frozenset[str]] = {
    "tcp": frozenset({"--dport", "--tcp-flags", "--syn"}),
    "udp": frozenset({"--dport"}),
    "multiport": frozenset({"--dports"}),
    "conntrack": frozenset({"--ctstate"}),
    "state": frozenset({"--state"}),
    "addrtype": frozenset({"--src-type", "--dst-type"}),
    "comment": frozenset({"--comment"}),
}
# -j NAME → its allowed options (a value with a port range or an address range is refused below)
SAFE_TARGETS: dict[str, frozenset[str]] = {
    "MASQUERADE": frozenset(),
    "SNAT": frozenset({"--to-source"}),
    "DNAT": frozenset({"--to-destination"}),
}
_VERDICTS: Final = frozenset({"ACCEPT", "RETURN", ""})

TemplateKey = tuple[str, int, int, int, int]  # iif, proto, saddr, daddr, dport
Counted = Rule | Chain  # what a nat chain's traversal counted a packet in: a rule that matched, a policy
RulePath = tuple[tuple[Counted, ...], tuple[Counted, ...]]  # nat PREROUTING's, nat POSTROUTING's


class ConnTemplate(NamedTuple):
    """Both directions of a new connection as the slow path forwarded its SYN, the client's port a wildcard:
    `plans[0]` the ORIGINAL direction (its `match` holds the template SYN's own port, which a datapath
    replaces by each SYN's), `plans[1]` the REPLY one (the port is the match's and the rewrite's dport).
    The decision itself, for `FlowTemplates.open_copy`: `nat` the ranges the nat targets bound the DST and
    the SRC manip with (None: no target bound it, the null binding), `masq` MASQUERADE's out device, `path`
    the rules and policies the nat chains counted the SYN in."""

    key: TemplateKey
    plans: tuple[FlowPlan, FlowPlan]
    nat: tuple[NatRange | None, NatRange | None] = (None, None)
    masq: str | None = None
    path: RulePath = ((), ())


class TemplateAdd(NamedTuple):
    template: ConnTemplate


class TemplateDel(NamedTuple):
    key: TemplateKey
    reason: str  # evicted, neigh


class TemplateFlush(NamedTuple):
    reason: str  # rules, route


TemplateRequest = TemplateAdd | TemplateDel | TemplateFlush


def _rule_unsafe(rule: Rule, chains: dict[str, object]) -> str | None:
    if rule.frag:
        return "-f"
    for m in rule.matches:
        allowed = SAFE_MATCHES.get(m.name)
        if allowed is None:
            return f"-m {m.name}"
        for word in m.save().split():
            if word.startswith("--") and word not in allowed:
                return f"-m {m.name} {word}"
    jump = rule.jump
    target = rule.target
    if target is None:
        return None if jump in _VERDICTS or jump in chains else f"-j {jump}"
    allowed = SAFE_TARGETS.get(target.name)
    if allowed is None:
        return f"-j {target.name}"
    words = target.save().split()
    for i, word in enumerate(words):
        if word.startswith("--") and word not in allowed:
            return f"-j {target.name} {word}"
        if word in allowed and i + 1 < len(words) and "-" in words[i + 1]:
            return f"-j {target.name} {word} {words[i + 1]}"  # a range: the choice depends on more than the key
        if word == "--to-source" and i + 1 < len(words) and ":" in words[i + 1]:
            return f"-j {target.name} {word} {words[i + 1]}"  # a port for every client port: not the client's
    return None


def template_unsafe(rules: Ruleset, hooks: Hooks) -> str | None:
    """Why no template may be made under `rules` (None: templates are safe); see the module docstring."""
    if not hooks.compilable():
        return "tables besides nat see forwarded packets"
    nat = rules.tables["nat"]
    for chain in nat.chains.values():
        for rule in chain.rules:
            why = _rule_unsafe(rule, nat.chains)  # type: ignore[arg-type]
            if why is not None:
                return f"nat {chain.name}: {why}"
    return None


def _plan(conn: Conn, direction: int, dev: Interface, out: Interface, nexthop: int, dst_mac: bytes,
          stamps: tuple[int, int, int]) -> FlowPlan | None:
    """The plan of one direction of `conn`'s TCP flow, computed as `FlowCache._plan` computes it from a packet
    (the same NAT steps and checksum differences), from the ct alone."""
    cur, other = conn.tuples[direction], conn.tuples[1 - direction]
    steps, after = nat_steps(int(conn.status), direction, cur, other)
    ip_diff = l4_diff = 0
    for old_addr, new_addr, old_port, new_port in steps:
        d4, d2 = _diff4(old_addr, new_addr), _diff2(old_port, new_port)
        if not d4 or not d2:
            return None
        ip_diff += d4
        l4_diff += d4 + d2
    b = int.to_bytes
    match = b(cur.src, 4, "big") + b(cur.dst, 4, "big") + b(cur.sport, 2, "big") + b(cur.dport, 2, "big")
    new = b(after.src, 4, "big") + b(after.dst, 4, "big") + b(after.sport, 2, "big") + b(after.dport, 2, "big")
    pseudo = (cur.src >> 16) + (cur.src & 0xFFFF) + (cur.dst >> 16) + (cur.dst & 0xFFFF) + 6
    return FlowPlan(6, direction, 0, dev.name, out.name, nexthop, dst_mac, False, out.mac + _ETH_P_IP_BYTES, new,
                    b"", (0x100 - ip_diff) % 0xFFFF, l4_diff % 0xFFFF, ip_diff % 0xFFFF, bool(steps), pseudo,
                    _CSUM_AT, out.mtu, GSO_TCPV4, stamps[0], stamps[1], stamps[2], match)


class FlowTemplates:
    """The templates of one engine and the requests for the datapath (see the module docstring)."""

    def __init__(self, host: Host, fib: Fib, neighs: NeighTable[Held], hooks: Hooks, table: ConntrackTable,
                 cfg: ConntrackConfig) -> None:
        self._host, self._fib, self._neighs, self._hooks = host, fib, neighs, hooks
        self._table, self._cfg = table, cfg
        # copies conntrack alone took, SYNs opened from a template (`open_copy`), and those either dropped
        self.copies = {"tracked": 0, "opened": 0, "dropped": 0}
        self.templates: dict[TemplateKey, ConnTemplate] = {}
        self.requests: list[TemplateRequest] = []
        self.stats = {"made": 0, "unsafe": 0, "flushed": 0, "evicted": 0}
        self.unsafe = ""  # why the current ruleset allows none ("" when it does)
        self._checked: tuple[object, int] = (None, -1)  # (ruleset, version) `unsafe` holds the answer for
        self._gens = (fib.generation, hooks.rules.version, neighs.generation)
        self.on_made: Callable[[ConnTemplate], None] | None = None
        # the slow path forwarded the SYN of a connection a template covers, with the template's binding
        # (`consider`): the datapath may carry the rest of the connection (gateway/newconn.py)
        self.on_opened: Callable[[Conn, TemplateKey], None] | None = None
        # the rule path of the last new TCP ct the nat chains saw (`_watch_nat_chain`), per hook
        self._rec_ct: Conn | None = None
        self._rec: dict[Hook, tuple[Counted, ...]] = {}
        self._counters: tuple[object, int, list[Counted]] = (None, -1, [])  # (ruleset, version, nat counters)
        hooks.nat_chain_watch = self._watch_nat_chain

    def _nat_counters(self, rules: Ruleset) -> list[Counted]:
        """Every counter of the nat table: its built-in chains' policies and its rules."""
        if self._counters[0] is not rules or self._counters[1] != rules.version:
            chains = rules.tables["nat"].chains.values()
            counted: list[Counted] = [chain for chain in chains if chain.builtin]
            counted.extend(rule for chain in chains for rule in chain.rules)
            self._counters = (rules, rules.version, counted)
        return self._counters[2]

    def _watch_nat_chain(self, rules: Ruleset, hook: Hook, skb: Skb, ctx: XtContext) -> int:
        """`Hooks.nat_chain_watch`: the nat chain run for the first packet of a new TCP ct, recording the
        rules and policies that counted it (the counters that moved) while templates are safe."""
        conn = skb.ct
        if conn is None or skb.ctinfo != _NEW or conn.tuples[0][4] != 6 or not self._safe():
            return rules.run("nat", hook, skb, ctx)
        counted = self._nat_counters(rules)
        before = [c.packets for c in counted]
        verdict = rules.run("nat", hook, skb, ctx)
        path: list[Counted] = []
        for c, n in zip(counted, before, strict=True):
            if c.packets != n:
                path.extend([c] * (c.packets - n))
        if self._rec_ct is not conn:
            self._rec_ct, self._rec = conn, {}
        self._rec[hook] = tuple(path)
        return verdict

    def _safe(self) -> bool:
        rules = self._hooks.rules
        if self._checked != (rules, rules.version):
            self._checked = (rules, rules.version)
            self.unsafe = template_unsafe(rules, self._hooks) or ""
        return not self.unsafe

    def consider(self, skb: Skb, key: FlowKey) -> None:
        """After the slow path forwarded `skb` (`IpOutput.remember_flow`): make its template when it is the
        SYN of a new, template-safe TCP connection."""
        conn = skb.ct
        data = skb.data
        if (conn is None or skb.ctinfo != CtInfo.NEW or key[2] != 6 or skb.frag_max_size or not conn.confirmed
                or conn.status & _REFUSE or conn.tcp is None or len(key[3]) != 12):
            return
        thoff = (data[IPH_VER_IHL] & 0x0F) * 4
        if thoff != IPH_MIN_LEN or len(data) <= thoff + TCPH_FLAGS or data[thoff + TCPH_FLAGS] != _SYN:
            return
        self.revalidate()
        if not self._safe():
            self.stats["unsafe"] += 1
            return
        orig, reply = conn.tuples
        if reply.dport != orig.sport or orig.proto != 6:
            return  # NAT changed the client's port: the next SYN's binding is not this one's
        tkey: TemplateKey = (skb.iif, 6, orig.src, orig.dst, orig.dport)
        if tkey in self.templates:
            # a SYN of a key the datapath opens itself came up (its tuples held by a ct in TIME_WAIT, that this
            # SYN reopened; natbox behind on the copies; no room for them): natbox's own path decided it
            if self.on_opened is not None:
                self.on_opened(conn, tkey)
            return
        rec = self._rec if self._rec_ct is conn else {}
        pre, post = rec.get(_PRE_ROUTING), rec.get(_POST_ROUTING)
        if pre is None or post is None:
            return  # the nat chains' traversal was not recorded
        template = self._make(conn, tkey, skb, (pre, post))
        if template is None:
            return
        if len(self.templates) >= TEMPLATE_MAX:
            gone = next(iter(self.templates))
            del self.templates[gone]
            self.stats["evicted"] += 1
            self.requests.append(TemplateDel(gone, "evicted"))
        self.templates[tkey] = template
        self.stats["made"] += 1
        self.requests.append(TemplateAdd(template))
        skb.add_trace(f"template: ct {conn.ct_id}'s SYN is a template for {tkey}")

    def _make(self, conn: Conn, tkey: TemplateKey, skb: Skb, path: RulePath) -> ConnTemplate | None:
        ifaces = self._host.interfaces
        dev, out = ifaces.get(skb.iif), ifaces.get(skb.oif)
        if dev is None or out is None or out.kind in ("loopback", "bridge") or dev.kind == "bridge":
            return None
        if dev.master is not None or out.master is not None:
            return None
        client = conn.tuples[0].src
        back = self._fib.lookup(client)
        if back is None or back.dev != dev.name or back.type != RTN_UNICAST:  # back by the SYN's device
            return None
        fwd_mac = self._neighs.known(out.name, skb.nexthop)
        back_mac = self._neighs.known(dev.name, back.nexthop)
        if fwd_mac is None or back_mac is None:
            return None
        stamps = (self._fib.generation, self._hooks.rules.version, self._neighs.generation)
        first = _plan(conn, 0, dev, out, skb.nexthop, fwd_mac, stamps)
        second = _plan(conn, 1, out, dev, back.nexthop, back_mac, stamps)
        if first is None or second is None:
            return None
        orig, reply = conn.tuples
        status = int(conn.status)
        # the targets' ranges, one address each (`template_unsafe`), as the ct's tuples show them: DNAT's
        # port only when it changed the key's; the SRC port is the client's (checked in `consider`)
        dst = None
        if status & _DST_NAT:
            dst = (NatRange(_MAP_IPS, reply.src, reply.src) if reply.sport == orig.dport
                   else NatRange(_PROTO_SPECIFIED, reply.src, reply.src, reply.sport, reply.sport))
        src = NatRange(_MAP_IPS, reply.dst, reply.dst) if status & _SRC_NAT else None
        return ConnTemplate(tkey, (first, second), (dst, src), conn.masq_index, path)

    def revalidate(self) -> None:
        """After a ruleset, FIB or neighbour change: drop what no longer holds (`TemplateFlush`/`TemplateDel`)."""
        gens = (self._fib.generation, self._hooks.rules.version, self._neighs.generation)
        if gens == self._gens:
            return
        old, self._gens = self._gens, gens
        if gens[:2] != old[:2]:
            if self.templates:
                self.templates.clear()
                self.stats["flushed"] += 1
            self.requests.append(TemplateFlush("rules" if gens[1] != old[1] else "route"))
            return
        for tkey, template in list(self.templates.items()):
            if any(self._neighs.known(p.oif, p.nexthop) != p.dst_mac for p in template.plans):
                del self.templates[tkey]
                self.requests.append(TemplateDel(tkey, "neigh"))

    def track_copy(self, frame: bytes, iface: str, now: float) -> Conn | None:
        """Feed a copy of a TCP packet (an Ethernet frame, IPv4 with IHL 5, as natbox_offload.bpf.c forwarded it)
        to conntrack alone when that is all the slow path would do to state (see the module docstring): the ct;
        None: the caller must hand it to `Engine.receive`. Its L4 checksum is not verified (CHECKSUM_PARTIAL)."""
        if len(frame) < _TCP_END or frame[_VER_IHL] != 0x45 or not self._safe():
            return None
        b = int.from_bytes
        # the tuple as a plain tuple (equal to, and hashed like, the ConnTuple), as nf_conntrack_in looks it up
        hit = self._table.lookup((b(frame[_SADDR:_SADDR + 4], "big"), (frame[_SPORT] << 8) | frame[_SPORT + 1],
                                  b(frame[_DADDR:_DADDR + 4], "big"), (frame[_DPORT] << 8) | frame[_DPORT + 1], 6),
                                 now)
        if hit is None:
            return None
        conn = hit[0]
        tcp = conn.tcp
        status = conn.status
        if (tcp is None or status & _OFFLOAD or not status & _CONFIRMED
                or (tcp.state == _ES and status & _ASSURED and not frame[_FLAGS] & _FIN_RST)):
            return None
        skb = Skb(bytearray(frame[ETH_HDR_LEN:]), iif=iface)
        skb.csum_partial = True
        self.copies["tracked"] += 1
        if nf_conntrack_in(skb, _PRE_ROUTING, now, self._table, self._cfg) != NF_ACCEPT:
            self.copies["dropped"] += 1  # the slow path would have dropped it; the datapath forwarded it
        return conn

    def open_copy(self, frame: bytes, iface: str, now: float) -> bool:
        """Feed the copy of a SYN a datapath forwarded from a template, creating its ct from the template's
        decision instead of the whole slow path: `nf_conntrack_in` (init_conntrack and the tracker), the
        counters of the rules and policies the template SYN's nat chains counted it in, the DST and SRC
        bindings through `NatCore.setup_info` with the ranges the nat targets gave the template SYN (or
        `alloc_null_binding` where none did), `nf_conntrack_confirm`. What the slow path would do to the
        state of that SYN, in the same order: while templates are safe (the module docstring) its nat
        chains decide alike for every SYN of the key, nothing else sees the packet, and a binding differs
        only where the tuple is taken (get_unique_tuple's answer, the same function's) or the ct clashes at
        confirm (the same function's drop). A SYN whose tuple conntrack finds in the table is that ct's (a TCP
        reopen makes a new one, as on the slow path). False (nothing done): hand it to `Engine.receive` (no
        template of the key, a stale one, anything but a plain SYN)."""
        if (len(frame) < _TCP_END or frame[_VER_IHL] != 0x45 or frame[_FLAGS] != _SYN or not self._safe()
                or frame[ETH_PROTO:ETH_HDR_LEN] != _ETH_P_IP_BYTES):
            return False
        self.revalidate()
        b = int.from_bytes
        saddr, daddr = b(frame[_SADDR:_SADDR + 4], "big"), b(frame[_DADDR:_DADDR + 4], "big")
        dport = b(frame[_DPORT:_DPORT + 2], "big")
        template = self.templates.get((iface, 6, saddr, daddr, dport))
        if template is None:
            return False
        table = self._table
        skb = Skb(bytearray(frame[ETH_HDR_LEN:]), iif=iface)
        skb.csum_partial = True
        self.copies["opened"] += 1
        verdict = nf_conntrack_in(skb, _PRE_ROUTING, now, table, self._cfg)
        conn = skb.ct
        if verdict != NF_ACCEPT or conn is None or conn.status & _CONFIRMED:
            # conntrack's verdict is all: no ct (the NAT hooks leave the packet alone), or a ct in the table
            # (its NAT manips done: the NAT hooks only rewrite the packet, confirm has nothing to do)
            if verdict != NF_ACCEPT:
                self.copies["dropped"] += 1
            return True
        nat, rnd, size = self._hooks.nat, self._hooks.rnd, len(skb.data)
        pre, post = template.path
        dst, src = template.nat
        for c in pre:  # nat PREROUTING (nf_nat_inet_fn: the chain, then the null binding if none bound)
            c.packets += 1
            c.bytes += size
        verdict = (nat.setup_info(conn, dst, _DST, now=now, table=table, rnd=rnd) if dst is not None
                   else nat.alloc_null_binding(conn, _DST, now=now, table=table, rnd=rnd))
        if verdict == NF_ACCEPT:
            for c in post:  # nat POSTROUTING
                c.packets += 1
                c.bytes += size
            if template.masq is not None:
                conn.masq_index = template.masq  # nf_nat_masquerade_ipv4
            verdict = (nat.setup_info(conn, src, _SRC, now=now, table=table, rnd=rnd) if src is not None
                       else nat.alloc_null_binding(conn, _SRC, now=now, table=table, rnd=rnd))
        if verdict == NF_ACCEPT:
            verdict = nf_conntrack_confirm(skb, now, table)  # a clash: the ct dies here, the drop counted
        if verdict != NF_ACCEPT:
            self.copies["dropped"] += 1  # the slow path would have dropped it; the datapath forwarded it
        return True

    def drain(self) -> list[TemplateRequest]:
        """The requests since the last call (after revalidating)."""
        self.revalidate()
        out, self.requests = self.requests, []
        return out


def reply_tuple(template: ConnTemplate, sport: int) -> ConnTuple:
    """The REPLY tuple a SYN of `template` from port `sport` gets (the datapath claims it)."""
    m = template.plans[1].match
    return ConnTuple(int.from_bytes(m[0:4], "big"), int.from_bytes(m[8:10], "big"), int.from_bytes(m[4:8], "big"),
                     sport, 6)
