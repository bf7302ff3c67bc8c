"""Saving and restoring the conntrack table, so that a restarted gateway keeps its connections.

The kernel keeps its table across a change of ruleset but loses it with the host; natbox's live
gateway is a process, so it writes the table out on a clean stop and reads it back at the next start
(what `conntrackd` state synchronisation does for a Linux fail-over pair). Every entry keeps its two
tuples (so its NAT bindings), its status bits, mark, zone, MASQUERADE interface, accounting and the
complete TCP tracking state (window edges included, so the restored entry accepts the next segment
exactly as the old one would have), the SCTP tracker's state and verification tags, and SYNPROXY's
extensions (the sequence and timestamp offsets of a proxied connection).

Times are stored relative to the moment of saving; `load_conns` takes the time that passed while the
gateway was down, and drops entries that expired meanwhile. Pure: the caller reads and writes files.
"""

from __future__ import annotations

from typing import Any, Final

from natbox.conntrack.conn import Conn, SctpConntrack, TcpConntrack
from natbox.conntrack.seqadj import NfConnSeqadj
from natbox.conntrack.synproxy import NfConnSynproxy
from natbox.conntrack.table import ConntrackTable, zone_id_dir, zone_key
from natbox.conntrack.tuple import ConnTuple
from natbox.netfilter import CtStatus, TcpState

__all__ = ["FORMAT", "dump_conns", "load_conns"]

FORMAT: Final = "natbox-conntrack-1"
_SEEN_FIELDS: Final = ("td_end", "td_maxend", "td_maxwin", "td_maxack", "td_scale", "flags")
_TCP_FIELDS: Final = ("last_dir", "retrans", "last_index", "last_seq", "last_ack", "last_end", "last_win",
               "last_wscale", "last_flags")
_KEEP: Final = ~(CtStatus.CONFIRMED | CtStatus.DYING)


def dump_conns(conns: list[Conn], now: float) -> dict[str, Any]:
    """A JSON-ready document of `conns` (live, confirmed entries) at time `now`."""
    entries = []
    for ct in conns:
        e: dict[str, Any] = {
            "original": list(ct.tuples[0]), "reply": list(ct.tuples[1]),
            "status": ct.status & _KEEP, "remaining": ct.timeout - now, "age": now - ct.start,
            "mark": ct.mark, "zone": ct.zone,
        }
        if ct.masq_index is not None:
            e["masq_index"] = ct.masq_index
        if ct.accounted:
            e["acct"] = [ct.acct_packets[0], ct.acct_packets[1], ct.acct_bytes[0], ct.acct_bytes[1]]
        if ct.tcp is not None:
            tcp = ct.tcp
            e["tcp"] = {"state": int(tcp.state), **{f: getattr(tcp, f) for f in _TCP_FIELDS},
                        "seen": [{f: getattr(s, f) for f in _SEEN_FIELDS} for s in tcp.seen]}
        if ct.synproxy is not None and ct.seqadj is not None:  # SYNPROXY's extensions (conntrack/synproxy.py)
            e["synproxy"] = [ct.synproxy.isn, ct.synproxy.its, ct.synproxy.tsoff]
            e["seqadj"] = [[w.correction_pos, w.offset_before, w.offset_after] for w in ct.seqadj.seq]
        if ct.sctp is not None:
            sc = ct.sctp
            e["sctp"] = {"state": sc.state, "vtag": list(sc.vtag), "init": [int(i) for i in sc.init],
                         "flags": sc.flags, "last_dir": sc.last_dir}
        entries.append(e)
    return {"format": FORMAT, "entries": entries}


def _int(v: Any, what: str, lo: int = 0, hi: int = 2**32 - 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"{what}: expected an integer in {lo}..{hi}, not {v!r}")
    return v


def _tuple(v: Any, what: str) -> ConnTuple:
    if not isinstance(v, list) or len(v) != 5:
        raise ValueError(f"{what}: expected [src, sport, dst, dport, proto]")
    return ConnTuple(_int(v[0], what), _int(v[1], what, hi=0xFFFF), _int(v[2], what), _int(v[3], what, hi=0xFFFF),
                     _int(v[4], what, hi=255))


def load_conns(doc: Any, table: ConntrackTable, now: float, *, elapsed: float = 0.0) -> list[Conn]:
    """Insert the entries of a `dump_conns` document into `table`, `elapsed` seconds after it was saved.

    Entries that expired meanwhile, or whose tuples are already in the table, are skipped. Raises
    ValueError (naming the entry) on a document that is not one natbox wrote.
    """
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("entries"), list):
        raise ValueError(f"not a {FORMAT} document")
    loaded = []
    for i, e in enumerate(doc["entries"]):
        what = f"entry {i}"
        if not isinstance(e, dict):
            raise ValueError(f"{what}: not an object")
        orig, reply = _tuple(e.get("original"), f"{what}.original"), _tuple(e.get("reply"), f"{what}.reply")
        remaining = e.get("remaining")
        age = e.get("age", 0.0)
        if not isinstance(remaining, (int, float)) or not isinstance(age, (int, float)):
            raise ValueError(f"{what}: remaining and age must be numbers")
        remaining -= elapsed
        zone = _int(e.get("zone", 0), what, hi=0x2FFFF)  # the id, and the directions of a directional zone
        if remaining <= 0 or table.lookup(zone_key(orig, zone_id_dir(zone, 0)), now) is not None \
                or table.lookup(zone_key(reply, zone_id_dir(zone, 1)), now) is not None:
            continue
        ct = Conn(orig, reply, now=now - age - elapsed, ct_id=table.new_id(), zone=zone)
        ct.status = _int(e.get("status", 0), f"{what}.status", hi=0xFFFF) & _KEEP
        ct.timeout = now + remaining
        ct.mark = _int(e.get("mark", 0), f"{what}.mark")
        masq = e.get("masq_index")
        ct.masq_index = masq if isinstance(masq, str) else None
        acct = e.get("acct")
        if acct is not None:
            if not isinstance(acct, list) or len(acct) != 4:
                raise ValueError(f"{what}.acct: expected 4 counters")
            ct.acct_packets = [_int(acct[0], what, hi=2**64), _int(acct[1], what, hi=2**64)]
            ct.acct_bytes = [_int(acct[2], what, hi=2**64), _int(acct[3], what, hi=2**64)]
        if "tcp" in e:
            ct.tcp = _load_tcp(e["tcp"], f"{what}.tcp")
        if "sctp" in e:
            ct.sctp = _load_sctp(e["sctp"], f"{what}.sctp")
        if "synproxy" in e:
            _load_synproxy(ct, e, what)
        table.insert(ct, now)
        loaded.append(ct)
    return loaded


def _load_tcp(t: Any, what: str) -> TcpConntrack:
    if not isinstance(t, dict) or not isinstance(t.get("seen"), list) or len(t["seen"]) != 2:
        raise ValueError(f"{what}: expected an object with two 'seen' directions")
    tcp = TcpConntrack()
    tcp.state = TcpState(_int(t.get("state", 0), f"{what}.state", hi=max(TcpState)))
    for f in _TCP_FIELDS:
        setattr(tcp, f, _int(t.get(f, 0), f"{what}.{f}"))
    for seen, src in zip(tcp.seen, t["seen"], strict=True):
        if not isinstance(src, dict):
            raise ValueError(f"{what}.seen: not an object")
        for f in _SEEN_FIELDS:
            setattr(seen, f, _int(src.get(f, 0), f"{what}.seen.{f}"))
    return tcp


def _load_synproxy(ct: Conn, e: dict[str, Any], what: str) -> None:
    """SYNPROXY's extensions: our ISN, timestamp and the server's clock offset; both directions' seqadj."""
    sp, adj = e.get("synproxy"), e.get("seqadj")
    if not isinstance(sp, list) or len(sp) != 3 or not isinstance(adj, list) or len(adj) != 2 \
            or not all(isinstance(w, list) and len(w) == 3 for w in adj):
        raise ValueError(f"{what}.synproxy: expected [isn, its, tsoff] and two seqadj [pos, before, after]")
    ct.synproxy, ct.seqadj = NfConnSynproxy(), NfConnSeqadj()
    ct.synproxy.isn, ct.synproxy.its, ct.synproxy.tsoff = (_int(v, f"{what}.synproxy") for v in sp)
    for way, src in zip(ct.seqadj.seq, adj, strict=True):
        way.correction_pos, way.offset_before, way.offset_after = (_int(v, f"{what}.seqadj") for v in src)


def _load_sctp(t: Any, what: str) -> SctpConntrack:
    if not isinstance(t, dict) or not isinstance(t.get("vtag"), list) or not isinstance(t.get("init"), list) \
            or len(t["vtag"]) != 2 or len(t["init"]) != 2:
        raise ValueError(f"{what}: expected an object with two 'vtag' and two 'init' entries")
    sc = SctpConntrack()
    sc.state = _int(t.get("state", 0), f"{what}.state", hi=8)
    sc.vtag = [_int(v, f"{what}.vtag") for v in t["vtag"]]
    sc.init = [bool(_int(v, f"{what}.init", hi=1)) for v in t["init"]]
    sc.flags = _int(t.get("flags", 0), f"{what}.flags", hi=1)
    sc.last_dir = _int(t.get("last_dir", 0), f"{what}.last_dir", hi=1)
    return sc
