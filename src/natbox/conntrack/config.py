"""`ConntrackConfig`: the `net.netfilter.nf_conntrack_*` sysctls that change conntrack's behaviour (§3.1).

Defaults are the kernel's (verified on Linux 6.18, §3.1). Timeouts are whole seconds, as the sysctls are
(the kernel stores jiffies; `proc_dointvec_jiffies` converts). Booleans are the `0`/`1` sysctls.

`set_sysctl()` accepts the full name (`net.netfilter.nf_conntrack_tcp_timeout_established`), the name
without the `net.netfilter.` prefix, and the `/proc/sys` path form with slashes. Values are parsed the way
`proc_dointvec`/`proc_dou8vec_minmax` parse them (a decimal integer, surrounding whitespace ignored) and
range-checked like the kernel's `extra1`/`extra2` bounds; anything else raises `ValueError`.

Not modelled: DCCP timeouts (Linux 6.16+ tracks DCCP with the generic tracker, as natbox does), per-ct
timeout policies (`nfct timeout`), and the flowtable offload timeouts.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Final

from natbox.netfilter import TcpState

__all__ = ["SYSCTL_PREFIX", "TCP_CONNTRACK_RETRANS", "TCP_CONNTRACK_UNACK", "ConntrackConfig"]

SYSCTL_PREFIX: Final = "net.netfilter."
INT_MAX: Final = 2**31 - 1
HZ: Final = 250  # jiffies per second on the reference box (§0); bounds the timeout sysctls

# Extra indices of the kernel's `tcp_timeouts[]` after the states (`enum tcp_conntrack`).
TCP_CONNTRACK_RETRANS: Final = 12
TCP_CONNTRACK_UNACK: Final = 13
_TCP_TIMEOUT_SLOTS: Final = 14  # TCP_CONNTRACK_TIMEOUT_MAX

# Field holding `tcp_timeouts[i]`; index 0 (NONE) is "the new timeout" = SYN_SENT (nf_conntrack_tcp_init_net).
_TCP_TIMEOUT_FIELDS: dict[int, str] = {
    TcpState.NONE: "tcp_timeout_syn_sent",
    TcpState.SYN_SENT: "tcp_timeout_syn_sent",
    TcpState.SYN_RECV: "tcp_timeout_syn_recv",
    TcpState.ESTABLISHED: "tcp_timeout_established",
    TcpState.FIN_WAIT: "tcp_timeout_fin_wait",
    TcpState.CLOSE_WAIT: "tcp_timeout_close_wait",
    TcpState.LAST_ACK: "tcp_timeout_last_ack",
    TcpState.TIME_WAIT: "tcp_timeout_time_wait",
    TcpState.CLOSE: "tcp_timeout_close",
    TcpState.SYN_SENT2: "tcp_timeout_syn_sent2",
    TCP_CONNTRACK_RETRANS: "tcp_timeout_max_retrans",
    TCP_CONNTRACK_UNACK: "tcp_timeout_unacknowledged",
}

# sysctl name (after "net.netfilter.nf_conntrack_") -> (field, minimum, maximum).
# Bounds: timeouts are proc_dointvec_jiffies (0..INT_MAX/HZ here: negative timeouts are refused);
# booleans are proc_dou8vec_minmax with SYSCTL_ZERO..SYSCTL_ONE; tcp_max_retrans and log_invalid are u8;
# nf_conntrack_events is 0..2; nf_conntrack_max is proc_dointvec_minmax with SYSCTL_ZERO..INT_MAX.
_TIMEOUT_MAX: Final = INT_MAX // HZ
_SYSCTLS: dict[str, tuple[str, int, int]] = {
    "tcp_timeout_syn_sent": ("tcp_timeout_syn_sent", 0, _TIMEOUT_MAX),
    "tcp_timeout_syn_recv": ("tcp_timeout_syn_recv", 0, _TIMEOUT_MAX),
    "tcp_timeout_established": ("tcp_timeout_established", 0, _TIMEOUT_MAX),
    "tcp_timeout_fin_wait": ("tcp_timeout_fin_wait", 0, _TIMEOUT_MAX),
    "tcp_timeout_close_wait": ("tcp_timeout_close_wait", 0, _TIMEOUT_MAX),
    "tcp_timeout_last_ack": ("tcp_timeout_last_ack", 0, _TIMEOUT_MAX),
    "tcp_timeout_time_wait": ("tcp_timeout_time_wait", 0, _TIMEOUT_MAX),
    "tcp_timeout_close": ("tcp_timeout_close", 0, _TIMEOUT_MAX),
    "tcp_timeout_max_retrans": ("tcp_timeout_max_retrans", 0, _TIMEOUT_MAX),
    "tcp_timeout_unacknowledged": ("tcp_timeout_unacknowledged", 0, _TIMEOUT_MAX),
    "tcp_loose": ("tcp_loose", 0, 1),
    "tcp_be_liberal": ("tcp_be_liberal", 0, 1),
    "tcp_ignore_invalid_rst": ("tcp_ignore_invalid_rst", 0, 1),
    "tcp_max_retrans": ("tcp_max_retrans", 0, 255),
    "udp_timeout": ("udp_timeout", 0, _TIMEOUT_MAX),
    "udp_timeout_stream": ("udp_timeout_stream", 0, _TIMEOUT_MAX),
    "icmp_timeout": ("icmp_timeout", 0, _TIMEOUT_MAX),
    "icmpv6_timeout": ("icmpv6_timeout", 0, _TIMEOUT_MAX),
    "generic_timeout": ("generic_timeout", 0, _TIMEOUT_MAX),
    "gre_timeout": ("gre_timeout", 0, _TIMEOUT_MAX),
    "gre_timeout_stream": ("gre_timeout_stream", 0, _TIMEOUT_MAX),
    **{f"sctp_timeout_{n}": (f"sctp_timeout_{n}", 0, _TIMEOUT_MAX) for n in (
        "closed", "cookie_wait", "cookie_echoed", "established", "shutdown_sent", "shutdown_recd",
        "shutdown_ack_sent", "heartbeat_sent")},
    "checksum": ("checksum", 0, 1),
    "acct": ("acct", 0, 1),
    "timestamp": ("timestamp", 0, 1),
    "log_invalid": ("log_invalid", 0, 255),
    "events": ("events", 0, 2),
    "max": ("max_entries", 0, INT_MAX),
    "expect_max": ("expect_max", 1, INT_MAX),
}
# Read-only sysctls (in a non-initial netns, §2.6): reading is fine, writing raises.
_READ_ONLY: dict[str, str] = {"buckets": "buckets", "count": ""}


@dataclass
class ConntrackConfig:
    """The conntrack sysctls of one network namespace, with the kernel's defaults (§3.1, §2.6)."""

    # TCP timeouts (nf_conntrack_proto_tcp.c `tcp_timeouts[]`), seconds
    tcp_timeout_syn_sent: int = 120
    tcp_timeout_syn_recv: int = 60
    tcp_timeout_established: int = 432000  # 5 days
    tcp_timeout_fin_wait: int = 120
    tcp_timeout_close_wait: int = 60
    tcp_timeout_last_ack: int = 30
    tcp_timeout_time_wait: int = 120
    tcp_timeout_close: int = 10
    tcp_timeout_syn_sent2: int = 120  # no sysctl exists for SYN_SENT2; the kernel's constant 2 MINS
    tcp_timeout_max_retrans: int = 300  # TCP_CONNTRACK_RETRANS
    tcp_timeout_unacknowledged: int = 300  # TCP_CONNTRACK_UNACK
    # TCP knobs
    tcp_loose: bool = True
    tcp_be_liberal: bool = False
    tcp_ignore_invalid_rst: bool = False
    tcp_max_retrans: int = 3
    # other protocols
    udp_timeout: int = 30  # UDP_CT_UNREPLIED
    udp_timeout_stream: int = 120  # UDP_CT_REPLIED
    icmp_timeout: int = 30
    icmpv6_timeout: int = 30
    generic_timeout: int = 600
    gre_timeout: int = 30  # GRE_CT_UNREPLIED
    gre_timeout_stream: int = 180  # GRE_CT_REPLIED
    # SCTP timeouts (nf_conntrack_proto_sctp.c `sctp_timeouts[]`), seconds
    sctp_timeout_closed: int = 10
    sctp_timeout_cookie_wait: int = 3
    sctp_timeout_cookie_echoed: int = 3
    sctp_timeout_established: int = 210
    sctp_timeout_shutdown_sent: int = 3
    sctp_timeout_shutdown_recd: int = 3
    sctp_timeout_shutdown_ack_sent: int = 3
    sctp_timeout_heartbeat_sent: int = 30
    # core
    checksum: bool = True  # verify L4 checksums at PRE_ROUTING only (§9)
    acct: bool = False
    timestamp: bool = False
    log_invalid: int = 0
    events: int = 2
    max_entries: int = 262144  # nf_conntrack_max (§2.6); the engine gives it to ConntrackTable.max_entries
    buckets: int = 262144  # nf_conntrack_buckets (read-only in a netns)
    expect_max: int = 4096
    # tcp_timeouts() once worked out, None after any field changed (read directly on the per-packet path)
    tcp_timeout_table: tuple[int, ...] | None = field(default=None, init=False, repr=False, compare=False)

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name != "tcp_timeout_table":
            object.__setattr__(self, "tcp_timeout_table", None)

    def tcp_timeouts(self) -> tuple[int, ...]:
        """The kernel's `tn->timeouts[]` (indexed by TcpState, TCP_CONNTRACK_RETRANS, TCP_CONNTRACK_UNACK).

        Cached until a field changes, so the per-packet timeout choice is two tuple indexings.
        """
        cache = self.tcp_timeout_table
        if cache is None:
            slots = [0] * _TCP_TIMEOUT_SLOTS
            for idx, name in _TCP_TIMEOUT_FIELDS.items():
                slots[idx] = int(getattr(self, name))
            cache = tuple(slots)
            object.__setattr__(self, "tcp_timeout_table", cache)
        return cache

    def sctp_timeouts(self) -> tuple[int, ...]:
        """The kernel's `sn->timeouts[]`, indexed by `enum sctp_conntrack` (index 0, NONE, is CLOSED's: the
        "new" timeout, nf_conntrack_sctp_init_net)."""
        return (self.sctp_timeout_closed, self.sctp_timeout_closed, self.sctp_timeout_cookie_wait,
                self.sctp_timeout_cookie_echoed, self.sctp_timeout_established, self.sctp_timeout_shutdown_sent,
                self.sctp_timeout_shutdown_recd, self.sctp_timeout_shutdown_ack_sent,
                self.sctp_timeout_heartbeat_sent)

    # --- sysctl interface ----------------------------------------------------------------------

    @staticmethod
    def _short_name(name: str) -> str:
        key = name.strip().replace("/", ".").lstrip(".")
        if key.startswith("proc.sys."):
            key = key[len("proc.sys.") :]
        if key.startswith(SYSCTL_PREFIX):
            key = key[len(SYSCTL_PREFIX) :]
        if not key.startswith("nf_conntrack_"):
            raise ValueError(f"unknown conntrack sysctl {name!r}")
        return key[len("nf_conntrack_") :]

    def set_sysctl(self, name: str, value: str) -> None:
        """Write one sysctl, as `sysctl -w net.netfilter.nf_conntrack_<name>=<value>` would.

        Raises ValueError for an unknown name, a read-only one, a non-integer value or one out of range.
        """
        short = self._short_name(name)
        if short in _READ_ONLY:
            raise ValueError(f"sysctl net.netfilter.nf_conntrack_{short} is read-only")
        spec = _SYSCTLS.get(short)
        if spec is None:
            raise ValueError(f"unknown conntrack sysctl {name!r}")
        attr, lo, hi = spec
        text = value.strip() if isinstance(value, str) else str(value)
        try:
            number = int(text, 10)
        except ValueError:
            raise ValueError(f"bad value {value!r} for net.netfilter.nf_conntrack_{short}: not an integer") from None
        if not lo <= number <= hi:
            raise ValueError(
                f"bad value {number} for net.netfilter.nf_conntrack_{short}: must be between {lo} and {hi}"
            )
        # two calls, not one with `bool(number) if ... else number`: compiled, that expression is an int
        if isinstance(getattr(self, attr), bool):
            setattr(self, attr, bool(number))
        else:
            setattr(self, attr, number)

    def get_sysctl(self, name: str) -> str:
        """Read one sysctl as `sysctl -n` prints it (booleans as 0/1). `count` is not known here: ValueError."""
        short = self._short_name(name)
        if short in _READ_ONLY:
            attr = _READ_ONLY[short]
            if not attr:
                raise ValueError(f"sysctl net.netfilter.nf_conntrack_{short} is the table's, not the config's")
            return str(int(getattr(self, attr)))
        spec = _SYSCTLS.get(short)
        if spec is None:
            raise ValueError(f"unknown conntrack sysctl {name!r}")
        return str(int(getattr(self, spec[0])))

    @staticmethod
    def sysctl_names() -> list[str]:
        """Every writable sysctl this config understands, full names, sorted as `sysctl -a` lists them."""
        return sorted(SYSCTL_PREFIX + "nf_conntrack_" + short for short in _SYSCTLS)

    def as_sysctls(self) -> dict[str, str]:
        """Full sysctl name -> current value text, for `sysctl -a`-style output."""
        return {name: self.get_sysctl(name) for name in self.sysctl_names()}


# Sanity: every field named in the tables exists (checked once at import; a typo fails loudly in tests).
_FIELD_NAMES: Final = {f.name for f in fields(ConntrackConfig)}
assert all(spec[0] in _FIELD_NAMES for spec in _SYSCTLS.values())
assert all(name in _FIELD_NAMES for name in _TCP_TIMEOUT_FIELDS.values())
