"""Target extensions; importing this package registers them all."""

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
