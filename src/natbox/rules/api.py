"""What a rule's match or target may ask of the host it runs in (the kernel's `xt_action_param`).

Matches and targets are pure functions of the packet and this context: they never reach into the
engine directly. The engine implements `XtContext`; tests can implement it with a small fake.

Verdict protocol for targets (the kernel's `XT_CONTINUE` / `XT_RETURN` / `NF_*`):
a target returns one of `XT_CONTINUE`, `XT_RETURN`, `NF_ACCEPT`, `NF_DROP`, `NF_STOLEN` (ints below). NAT targets
return the verdict of `XtContext.nat_setup_info` (NF_ACCEPT once the binding is made).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Protocol

from natbox.nat.range import NatRange
from natbox.netfilter import NF_ACCEPT, NF_DROP, Hook, ManipType
from natbox.skb import Skb

if TYPE_CHECKING:
    from natbox.conntrack.synproxy import SynproxyOptions, SynproxyStats
    from natbox.ipset.core import IpsetRegistry
    from natbox.rules.xtstate import XtState

__all__ = ["NF_ACCEPT", "NF_DROP", "NF_STOLEN", "XT_CONTINUE", "XT_RETURN", "XtContext"]

XT_CONTINUE: Final = -1  # IPT_CONTINUE / XT_CONTINUE: go on with the next rule
XT_RETURN: Final = -(4 + 1)  # XT_RETURN = -NF_REPEAT - 1
NF_STOLEN: Final = 2  # the target consumed the packet (SYNPROXY answered it)


class XtContext(Protocol):
    """The host seen from a rule: time, randomness, addresses, routing and the NAT core."""

    @property
    def hook(self) -> Hook:
        """The hook the chain runs at."""

    @property
    def now(self) -> float:
        """Current time in seconds (injected; `-m limit` counts on it)."""

    def random_u32(self) -> int:
        """A random 32-bit value from the injected RNG (`-m statistic --mode random`)."""

    def addr_type(self, addr: int, dev: str | None) -> int:
        """`inet_dev_addr_type()`: RTN_* type of `addr` (UNICAST=1, LOCAL=2, BROADCAST=3, MULTICAST=5...).

        With `dev`, a LOCAL/BROADCAST answer counts only if its local-table route is on `dev` (§5.3).
        """

    def iface_primary_addr(self, dev: str) -> int | None:
        """The first primary IPv4 address of `dev` (REDIRECT in PREROUTING), or None."""

    def nat_setup_info(self, skb: Skb, rng: NatRange, manip: ManipType) -> int:
        """`nf_nat_setup_info()` for the skb's ct: make the binding, return NF_ACCEPT (or NF_DROP)."""

    def masquerade(self, skb: Skb, rng: NatRange) -> int:
        """`nf_nat_masquerade_ipv4()`: choose the out interface's address, then bind (§5.2)."""

    def send_reject(self, skb: Skb, reject_with: str) -> None:
        """Emit REJECT's ICMP error or TCP reset for `skb` (`nf_send_unreach`/`nf_send_reset`)."""

    def log(self, skb: Skb, prefix: str, level: int, flags: int = 0) -> None:
        """Record a LOG target line (kept as an event); `flags` are the XT_LOG_* options."""

    def notrack(self, skb: Skb) -> None:
        """Mark the skb untracked (raw NOTRACK / CT --notrack)."""

    def ipsets(self) -> IpsetRegistry | None:
        """The network namespace's ipsets (`-m set`, `-j SET`), or None when the host has none."""

    def dup(self, skb: Skb, gw: int, oif: str) -> None:
        """`nf_dup_ipv4()` (-j TEE): send an untracked copy of `skb` routed via the gateway `gw` (and the
        device `oif`, when named and present) through LOCAL_OUT now; the original goes on."""

    def socket_listening(self, proto: int, laddr: int, lport: int) -> bool:
        """`nf_tproxy_get_sock_v4(..., NF_TPROXY_LOOKUP_LISTENER)` and `nf_tproxy_sk_is_transparent`
        (-j TPROXY): whether a transparent socket of the host listens on `laddr:lport`."""

    def xt_state(self) -> XtState:
        """The namespace's recent lists, hashlimit tables, nfacct objects and rate estimators."""

    def fib_lookup(self, daddr: int) -> tuple[int, str | None] | None:
        """`fib_lookup()` of `daddr` in the host's FIB: (RTN_* type, device), or None without a route."""

    def synproxy_stats(self) -> SynproxyStats:
        """The namespace's SYNPROXY counters (`synproxy_pernet(net)->stats`)."""

    def synproxy_send_client_synack(self, skb: Skb, opts: SynproxyOptions) -> None:
        """`synproxy_send_client_synack()`: answer the client's SYN with a SYN cookie SYN-ACK."""

    def synproxy_recv_client_ack(self, skb: Skb, opts: SynproxyOptions, recv_seq: int) -> bool:
        """`synproxy_recv_client_ack()`: check the ACK's cookie; if valid, send the SYN to the server."""
