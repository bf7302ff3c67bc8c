"""Target extensions: `ALL` lists every class, and `natbox.rules.extensions` finds them by name."""

from natbox.rules.model import Target
from natbox.rules.targets import (
    checksum,
    connmark,
    dscp,
    log,
    mark,
    masquerade,
    nat,
    netmap,
    nflog,
    notrack,
    redirect,
    reject,
    tcpmss,
    trace,
    ttl,
)

__all__ = [
    "ALL",
    "checksum",
    "connmark",
    "dscp",
    "log",
    "mark",
    "masquerade",
    "nat",
    "netmap",
    "nflog",
    "notrack",
    "redirect",
    "reject",
    "tcpmss",
    "trace",
    "ttl",
]

ALL: tuple[type[Target], ...] = (
    checksum.Checksum,
    connmark.ConnmarkTarget,
    dscp.DscpTarget,
    log.Log,
    mark.MarkTarget,
    masquerade.Masquerade,
    nat.Snat,
    nat.Dnat,
    netmap.Netmap,
    nflog.Nflog,
    notrack.Notrack,
    notrack.Ct,
    redirect.Redirect,
    reject.Reject,
    tcpmss.Tcpmss,
    trace.Trace,
    ttl.TtlTarget,
)
