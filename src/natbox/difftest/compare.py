"""Comparing a kernel run with natbox's replay of it, as §10 of the reference recommends.

- **Frames**: per router interface, the sequence of frames the router sent, field by field (Ethernet
  addresses, the whole IP header incl. TTL and checksum, ports, TCP fields and options, checksums,
  payload; for ICMP errors also the quoted datagram). Frames are visited in the kernel's time order.
- **Random choices** (§10): a port or ICMP id the kernel chose itself (one that no input frame carried
  before that moment) may differ from natbox's choice; the pair is then recorded in a bijection and
  every later occurrence must map the same way. Checksums that differ only because of such a mapping
  must both be valid.
- **SYNPROXY's cookies**: in a flow whose SYN-ACK the router generated, sequence and acknowledgment numbers may
  differ by exactly that flow's ISN offset and timestamps by its TSval offset (natbox.difftest.seqmap); the
  checksums must then be valid on both sides.
- **Kernel-generated ICMP errors and echo replies** (the IP ID is not one an input frame had): IP ID and
  TTL are ignored and the IP header checksum must merely be valid on both sides.
- **conntrack -L**: lines with mapped ports, `use=` dropped, sorted; the timeout column (§10: truncated
  seconds left, which fall as time passes) within the window `timeout_window` derives from what was
  measured: when each side's listing started and returned, and how far apart the two runs handled the same
  packets (live runs), plus one jiffy of the kernel's clock.
- **Counters**: `iptables-save -c` per table, exactly (comment lines dropped).
- **nfacct**: `nfacct list` (scenarios with nfacct objects), line by line, byte for byte.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from natbox.difftest.kernel import KernelRun
from natbox.difftest.natbox_side import NatboxRun
from natbox.difftest.packets import (
    ICMP_ERRORS,
    Field,
    decode_frame,
    ip_checksum_ok,
    is_compared_frame,
    l4_checksum_ok,
)
from natbox.difftest.portmap import PortMap, first_seen
from natbox.difftest.seqmap import SynproxyOffsets, field_agrees

__all__ = ["Difference", "compare", "compare_conntrack", "compare_counters", "compare_frames", "compare_nfacct",
           "timeout_window"]

# The kernel counts conntrack time in jiffies (nfct_time_stamp): an interval it measures may be off by one
# jiffy, 10 ms at the smallest CONFIG_HZ (100).
JIFFY = 0.01
_PORT_KEYS = re.compile(r"^(sport|dport|id)=(\d+)$")


@dataclass(frozen=True)
class Difference:
    """One disagreement, with the kernel's and natbox's versions side by side."""

    kind: str  # frame, missing, extra, conntrack, counters, nfacct, error
    where: str
    kernel: str
    natbox: str
    detail: str = ""

    def __str__(self) -> str:
        head = f"[{self.kind}] {self.where}" + (f": {self.detail}" if self.detail else "")
        return f"{head}\n    kernel: {self.kernel}\n    natbox: {self.natbox}"


def _summary(fields: list[Field]) -> str:
    d = {name: value for name, value, _ in fields}
    src, dst, proto = (d.get("ip.src", d.get("ip6.src", "?")), d.get("ip.dst", d.get("ip6.dst", "?")),
                       d.get("ip.proto", d.get("ip6.nh", "?")))
    l4 = ""
    if "sport" in d:
        l4 = f" {d['sport']} > {d['dport']}"
    elif "icmp6.type" in d:
        l4 = f" icmp6 {d['icmp6.type']}/{d['icmp6.code']}" + (f" id {d['icmp6.id']}" if "icmp6.id" in d else "")
    elif "icmp.type" in d:
        l4 = f" icmp {d['icmp.type']}/{d['icmp.code']}" + (f" id {d['icmp.id']}" if "icmp.id" in d else "")
        if "inner.ip.src" in d:
            l4 += (f" [{d['inner.ip.src']}:{d.get('inner.sport', '')} > "
                   f"{d['inner.ip.dst']}:{d.get('inner.dport', '')}]")
    if "ip6.src" in d:
        return f"{src} > {dst} nh {proto}{l4} hlim {d.get('ip6.hlim', '?')} plen {d.get('ip6.plen', '?')}"
    return (f"{src} > {dst} proto {proto}{l4} ttl {d.get('ip.ttl', '?')} id {d.get('ip.id', '?')} "
            f"len {d.get('ip.len', '?')}")


LOCAL_ICMP = (0, *ICMP_ERRORS)  # ICMP types the router itself sends: echo replies and errors


def _generated_icmp(fields: list[Field], input_ids: set[int]) -> bool:
    """An ICMP error or echo reply the router generated itself (its IP ID is no input frame's): the kernel
    takes that ID from `ip_idents` hashed with a boot-time secret (`ip_select_ident`), so it is not
    reproducible (docs/differences.md)."""
    d = {name: value for name, value, _ in fields}
    return d.get("ip.proto") == 1 and d.get("icmp.type") in LOCAL_ICMP and d.get("ip.id") not in input_ids


# Fields two separate live runs of the same end hosts choose afresh (IP IDs, TCP initial sequence numbers and
# timestamps, ping's timeval payload): §10 says to ignore them. Only a live natbox run is compared this way.
LIVE_IGNORED = frozenset({"ip.id", "tcp.seq", "tcp.ack", "tcp.options", "payload", "inner.ip.id", "inner.tcp.seq",
                          "inner.payload"})


def _compare_frame(kf: bytes, nf: bytes, ts: float, ports: PortMap, input_ids: set[int],
                   live: bool = False, cookies: SynproxyOffsets | None = None) -> str | None:
    """None if the frames agree, else the differing fields ("name: kernel | natbox; ...").

    `live`: natbox ran as the router in a second, separate run: the end hosts' own choices (LIVE_IGNORED)
    may differ, and checksums must then only be valid on both sides."""
    fk, fn = decode_frame(kf), decode_frame(nf)
    if [n for n, _, _ in fk] != [n for n, _, _ in fn]:
        return "different structure: " + ", ".join(sorted({n for n, _, _ in fk} ^ {n for n, _, _ in fn})[:8])
    # the kernel generated it (its IP ID is no input's) and natbox's is an ICMP error too; natbox's own ID
    # may coincide with an input's (e.g. 0, which DF senders use), so only the kernel's decides
    generated = _generated_icmp(fk, input_ids) and _generated_icmp(fn, set())
    offsets = cookies.of(nf) if cookies is not None else None  # a SYNPROXY flow's (ISN, TSval) offsets
    mapped = relaxed = False
    bad: list[str] = []
    deferred: list[tuple[str, object, object, str]] = []
    for (name, vk, kind), (_, vn, _) in zip(fk, fn, strict=True):
        if vk == vn:
            if kind == "port" and isinstance(vk, int):
                ports.identity(vk, ts)
            continue
        if live and name in LIVE_IGNORED:
            mapped = True  # the checksums follow these fields: judged by validity below
            continue
        if ((kind == "port" and isinstance(vk, int) and isinstance(vn, int) and ports.accept(vk, vn, ts))
                or (offsets is not None and field_agrees(name, vk, vn, offsets))):
            mapped = True
        elif kind in ("ipid", "ttl") and generated and not name.startswith("inner."):
            relaxed = True
        elif kind in ("ipcsum", "l4csum"):
            deferred.append((name, vk, vn, kind))
        else:
            bad.append(f"{name}: {vk} | {vn}")
    for name, vk, vn, kind in deferred:
        inner = name.startswith("inner.")
        if kind == "ipcsum" and not inner and (relaxed or live) and ip_checksum_ok(kf) and ip_checksum_ok(nf):
            continue
        if kind == "ipcsum" and inner and mapped:
            continue
        if kind == "l4csum" and mapped and (inner or (l4_checksum_ok(kf) and l4_checksum_ok(nf))):
            continue
        bad.append(f"{name}: {vk:#06x} | {vn:#06x}" if isinstance(vk, int) and isinstance(vn, int)
                   else f"{name}: {vk} | {vn}")
    return "; ".join(bad) if bad else None


def compare_frames(kernel: KernelRun, natbox: NatboxRun, ports: PortMap, input_ids: set[int],
                   live: bool = False) -> list[Difference]:
    diffs: list[Difference] = []
    cookies = SynproxyOffsets(natbox.synproxy_offsets)
    ifaces = sorted({c.iface for c in kernel.frames} | set(natbox.sent))
    ksent = {i: [c for c in kernel.sent(i) if is_compared_frame(c.frame)] for i in ifaces}
    nsent = {i: [f for _, f in natbox.sent.get(i, []) if is_compared_frame(f)] for i in ifaces}
    order = sorted((c.ts, i, n) for i in ifaces for n, c in enumerate(ksent[i]))
    for ts, iface, n in order:
        kf = ksent[iface][n].frame
        where = f"{iface} frame #{n + 1} at {ts:.4f}s"
        if n >= len(nsent[iface]):
            diffs.append(Difference("missing", where, _summary(decode_frame(kf)), "(nothing sent)"))
            continue
        nf = nsent[iface][n]
        why = _compare_frame(kf, nf, ts, ports, input_ids, live, cookies)
        if why is not None:
            diffs.append(Difference("frame", where, _summary(decode_frame(kf)), _summary(decode_frame(nf)), why))
    diffs.extend(Difference("extra", f"{iface} frame #{n + 1}", "(nothing sent)",
                            _summary(decode_frame(nsent[iface][n])))
                 for iface in ifaces for n in range(len(ksent[iface]), len(nsent[iface])))
    return diffs


def _ct_key(line: str, ports: PortMap | None) -> tuple[str, int | None]:
    """(line without timeout and use=, with kernel ports mapped; the timeout)."""
    toks = line.split()
    timeout: int | None = None
    if len(toks) > 2 and toks[2].isdigit():
        timeout = int(toks[2])
        toks = toks[:2] + toks[3:]
    out = []
    for t in toks:
        if t.startswith("use="):
            continue
        m = _PORT_KEYS.match(t)
        if m and ports is not None:
            t = f"{m.group(1)}={ports.map_kernel(int(m.group(2)))}"
        out.append(t)
    return " ".join(out), timeout


def timeout_window(kernel_run: KernelRun, natbox_run: NatboxRun) -> tuple[int, int]:
    """(lo, hi): natbox's timeout column may be the kernel's plus lo..hi.

    Both print seconds left, truncated (`ctnetlink_dump_timeout`: (ct->timeout - nfct_time_stamp) / HZ), of
    an entry last refreshed at p, printed at t: T - (t - p). The kernel printed at some tk within its
    listing's span [kb, ka], natbox at some tn within [nb, na] (a replay: at kb exactly), and natbox handled
    each packet at most `skew` apart from the kernel (a replay: the same times). So natbox - kernel =
    (tk - tn) - (pk - pn) lies in [kb - na - skew, ka - nb + skew]; the difference of two truncated values
    lies between the floor and the ceiling of those bounds (widened by the kernel's one jiffy)."""
    kb = kernel_run.conntrack_time
    ka = max(kernel_run.conntrack_end, kb)
    nb, na = natbox_run.listed if natbox_run.listed is not None else (kb, kb)
    skew = natbox_run.skew
    return math.floor(kb - na - skew - JIFFY), math.ceil(ka - nb + skew + JIFFY)


def compare_conntrack(kernel_lines: list[str], natbox_lines: list[str], ports: PortMap,
                      window: tuple[int, int]) -> list[Difference]:
    """Entries by their lines without timeout and use= (kernel ports mapped); natbox's timeout may be the
    kernel's plus `window` (timeout_window)."""
    diffs: list[Difference] = []
    kern = sorted((_ct_key(ln, ports), ln) for ln in kernel_lines)
    nat = sorted((_ct_key(ln, None), ln) for ln in natbox_lines)
    unmatched_n = list(nat)
    unmatched_k = []
    lo, hi = window
    for (kkey, kto), kline in kern:
        hit = next((j for j, ((nkey, _), _) in enumerate(unmatched_n) if nkey == kkey), None)
        if hit is None:
            unmatched_k.append(kline)
            continue
        (_, nto), nline = unmatched_n.pop(hit)
        if kto is not None and nto is not None and not kto + lo <= nto <= kto + hi:
            diffs.append(Difference("conntrack", "timeout", kline, nline,
                                    f"timeout {nto} outside {kto + lo}..{kto + hi}"))
    rest_n = [ln for _, ln in unmatched_n]
    for i in range(max(len(unmatched_k), len(rest_n))):
        k = unmatched_k[i] if i < len(unmatched_k) else "(no entry)"
        n = rest_n[i] if i < len(rest_n) else "(no entry)"
        diffs.append(Difference("conntrack", "entry", k, n))
    return diffs


def _tables(text: str) -> dict[str, list[str]]:
    tables: dict[str, list[str]] = {}
    cur: list[str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            cur = tables.setdefault(line[1:], [])
        elif cur is not None and line != "COMMIT":
            cur.append(line)
    return tables


def compare_counters(kernel_save: str, natbox_save: str) -> list[Difference]:
    diffs: list[Difference] = []
    kt, nt = _tables(kernel_save), _tables(natbox_save)
    for name in sorted(set(kt) | set(nt)):
        k, n = kt.get(name), nt.get(name)
        if k is None or n is None:
            diffs.append(Difference("counters", f"table {name}", "present" if k is not None else "(absent)",
                                    "present" if n is not None else "(absent)"))
            continue
        for i in range(max(len(k), len(n))):
            kl = k[i] if i < len(k) else "(no line)"
            nl = n[i] if i < len(n) else "(no line)"
            if kl != nl:
                diffs.append(Difference("counters", f"table {name} line {i + 1}", kl, nl))
    return diffs


def compare(kernel_run: KernelRun, natbox_run: NatboxRun, *, live: bool = False) -> list[Difference]:
    """Every difference between the kernel's behaviour and natbox's (see the module docstring)."""
    diffs = [Difference("error", "natbox", "", "", e) for e in natbox_run.errors]
    seen, ids = first_seen(kernel_run)
    ports = PortMap(seen)
    for k, n in natbox_run.port_pairs.items():  # learned while replaying (natbox_side)
        ports.k2n[k] = n
        ports.n2k[n] = k
    diffs += compare_frames(kernel_run, natbox_run, ports, ids, live)
    diffs += compare_conntrack(kernel_run.conntrack, natbox_run.conntrack, ports,
                               timeout_window(kernel_run, natbox_run))
    diffs += compare_counters(kernel_run.iptables_save, natbox_run.iptables_save)
    if kernel_run.ip6tables_save.strip():
        # rule counters only: the built-in chains' policy counters also count the ND/MLD chatter of the
        # hosts and of the kernel router itself (some of it before the capture starts), which is no traffic
        def rules_only(text: str) -> str:
            return "\n".join(ln for ln in text.splitlines() if not ln.startswith(":"))
        diffs += compare_counters(rules_only(kernel_run.ip6tables_save), rules_only(natbox_run.ip6tables_save))
    diffs += compare_nfacct(kernel_run.nfacct, natbox_run.nfacct)
    return diffs


def compare_nfacct(kernel_list: str, natbox_list: str) -> list[Difference]:
    """`nfacct list` of both sides, line by line (an object's counters, quota and overquota flag)."""
    k, n = kernel_list.splitlines(), natbox_list.splitlines()
    return [Difference("nfacct", f"nfacct list line {i + 1}", k[i] if i < len(k) else "(no line)",
                       n[i] if i < len(n) else "(no line)")
            for i in range(max(len(k), len(n))) if (k[i] if i < len(k) else None) != (n[i] if i < len(n) else None)]
