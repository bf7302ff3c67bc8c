"""`-p tcp -j SYNPROXY [--sack-perm] [--timestamp] [--wscale N] [--mss N] [--ecn]` (libxt_SYNPROXY.c,
net/netfilter/xt_SYNPROXY.c `synproxy_tg4`).

The kernel answers a client's SYN itself with a SYN-ACK carrying a SYN cookie (`synproxy_send_client_synack`)
and, once the client's ACK proves the cookie, opens the connection to the server and splices the two
(sequence adjustment). Valid in INPUT and FORWARD, for `-p tcp` only; it needs connection tracking.

natbox does not answer the handshake: its cookies would be keyed by a boot-time secret and the splice
needs conntrack's sequence adjustment, which natbox does not have. A SYN the target sees is dropped (the
kernel consumes it too, NF_STOLEN after answering), an ACK is dropped (the kernel drops one whose cookie
does not check), and other packets continue as in the kernel (docs/differences.md).
"""

from __future__ import annotations

from natbox.netfilter import Hook
from natbox.rules.api import NF_DROP, XT_CONTINUE, XtContext
from natbox.rules.matches._common import parse_uint
from natbox.rules.model import RESOURCE_PROBLEM, Opt, Rule, RulesError, Target, TargetFn, hook_mask_of
from natbox.skb import Skb
from natbox.wire.layout import TCPH_FLAGS
from natbox.wire.tcp import ACK, FIN, RST, SYN

__all__ = ["Synproxy"]

XT_SYNPROXY_OPT_MSS, XT_SYNPROXY_OPT_WSCALE, XT_SYNPROXY_OPT_SACK_PERM = 0x01, 0x02, 0x04
XT_SYNPROXY_OPT_TIMESTAMP, XT_SYNPROXY_OPT_ECN = 0x08, 0x10
SYNPROXY_HOOKS = hook_mask_of(Hook.LOCAL_IN, Hook.FORWARD)
_FLAG_OPTS = {"sack-perm": XT_SYNPROXY_OPT_SACK_PERM, "timestamp": XT_SYNPROXY_OPT_TIMESTAMP,
              "ecn": XT_SYNPROXY_OPT_ECN}


class Synproxy(Target):
    name = "SYNPROXY"
    options = (Opt("sack-perm", 0), Opt("timestamp", 0), Opt("wscale", 1), Opt("mss", 1), Opt("ecn", 0))

    def __init__(self) -> None:
        self.options_set = 0
        self.wscale = 0
        self.mss = 0
        self.given: set[str] = set()

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if not any(o.name == opt for o in self.options):
            super().parse(opt, arg, inverted, rule)
        if opt in self.given:
            raise RulesError(f'SYNPROXY: option "--{opt}" can only be used once.\n')
        self.given.add(opt)
        if opt in _FLAG_OPTS:
            self.options_set |= _FLAG_OPTS[opt]
            return
        v = parse_uint(arg or "", 0, 0xFFFFFFFF)
        if v is None:
            raise RulesError(f'SYNPROXY: bad value for option "--{opt}", or out of range (0-4294967295).\n')
        if opt == "wscale":
            self.options_set |= XT_SYNPROXY_OPT_WSCALE
            self.wscale = v & 0xFF  # struct xt_synproxy_info.wscale is a u8
        else:
            self.options_set |= XT_SYNPROXY_OPT_MSS
            self.mss = v & 0xFFFF  # .mss is a u16

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        """`synproxy_tg4_check`: INPUT and FORWARD, `-p tcp` not inverted."""
        if hook_mask & ~SYNPROXY_HOOKS or rule.proto != 6 or rule.inv_proto:
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def _items(self) -> list[tuple[int, str]]:
        o = self.options_set
        items = [(XT_SYNPROXY_OPT_SACK_PERM, "sack-perm"), (XT_SYNPROXY_OPT_TIMESTAMP, "timestamp"),
                 (XT_SYNPROXY_OPT_WSCALE, f"wscale {self.wscale}"), (XT_SYNPROXY_OPT_MSS, f"mss {self.mss}"),
                 (XT_SYNPROXY_OPT_ECN, "ecn")]
        return [(bit, text) for bit, text in items if o & bit]

    def save(self) -> str:
        return "".join(f" --{text}" for _bit, text in self._items())

    def print_list(self, numeric: bool) -> str:
        return " SYNPROXY " + "".join(f"{text} " for _bit, text in self._items())

    def compile(self) -> TargetFn:
        def synproxy_tg4(skb: Skb, ctx: XtContext) -> int:
            data, th = skb.data, skb.ihl
            if len(data) <= th + TCPH_FLAGS:
                return NF_DROP  # synproxy_parse_options / skb_header_pointer failure
            flags = data[th + TCPH_FLAGS]
            if flags & (SYN | ACK | RST | FIN) == SYN:
                skb.note = "SYNPROXY: the SYN would be answered with a cookie (natbox does not answer it)"
                return NF_DROP
            if flags & (SYN | ACK | RST | FIN) == ACK:
                skb.note = "SYNPROXY: the ACK would be checked against a cookie (natbox has none)"
                return NF_DROP
            return XT_CONTINUE

        return synproxy_tg4
