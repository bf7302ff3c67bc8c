"""`-p tcp -j SYNPROXY [--sack-perm] [--timestamp] [--wscale N] [--mss N] [--ecn]` (libxt_SYNPROXY.c,
net/netfilter/xt_SYNPROXY.c `synproxy_tg4`).

The target answers a client's SYN itself with a SYN-ACK carrying a SYN cookie, and once the client's ACK
proves the cookie, opens the connection to the server; the engine's synproxy hook then splices the two
with sequence adjustment (engine/synproxy.py, natbox.conntrack.synproxy). Valid in INPUT and FORWARD, for
`-p tcp` only; it needs connection tracking. The usual setup (iptables-extensions(8)) sends it the
untracked SYNs (raw `--syn -j CT --notrack`) and the ACKs conntrack finds INVALID
(`net.netfilter.nf_conntrack_tcp_loose = 0`).

`synproxy_tg4` (and `synproxy_tg6`, the same steps for ip6tables rules): a bad TCP checksum or a truncated
header drops the packet; a SYN (no ACK, FIN or RST) is counted (syn_received) and answered, the options
limited to the rule's (with `--timestamp` the client's window scale, SACK-permitted and ECN ride in our
timestamp, without it they are not offered); an ACK (no SYN, FIN or RST) is consumed when its cookie checks,
else dropped; anything else continues.
"""

from __future__ import annotations

from typing import Final

from natbox.conntrack.proto.udp import nf_checksum_ok
from natbox.conntrack.synproxy import (
    NF_SYNPROXY_OPT_ECN,
    NF_SYNPROXY_OPT_SACK_PERM,
    NF_SYNPROXY_OPT_TIMESTAMP,
    NF_SYNPROXY_OPT_WSCALE,
    synproxy_init_timestamp_cookie,
    synproxy_parse_options,
)
from natbox.netfilter import IPPROTO_TCP, Hook
from natbox.rules.api import NF_DROP, NF_STOLEN, XT_CONTINUE, XtContext
from natbox.rules.matches._common import parse_uint
from natbox.rules.model import RESOURCE_PROBLEM, Opt, Rule, RulesError, Target, TargetFn, hook_mask_of
from natbox.skb import Skb
from natbox.wire.layout import TCPH_FLAGS, TCPH_SEQ
from natbox.wire.tcp import ACK, CWR, ECE, FIN, RST, SYN

__all__ = ["Synproxy"]

XT_SYNPROXY_OPT_MSS, XT_SYNPROXY_OPT_WSCALE, XT_SYNPROXY_OPT_SACK_PERM = 0x01, 0x02, 0x04
XT_SYNPROXY_OPT_TIMESTAMP, XT_SYNPROXY_OPT_ECN = 0x08, 0x10
SYNPROXY_HOOKS: Final = hook_mask_of(Hook.LOCAL_IN, Hook.FORWARD)
_FLAG_OPTS: Final = {"sack-perm": XT_SYNPROXY_OPT_SACK_PERM, "timestamp": XT_SYNPROXY_OPT_TIMESTAMP,
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
        info_options, info_wscale, info_mss = self.options_set, self.wscale, self.mss

        def synproxy_tg4(skb: Skb, ctx: XtContext) -> int:
            data, th = skb.data, skb.ihl
            if not skb.csum_partial and not nf_checksum_ok(data, th, IPPROTO_TCP, family=skb.family):
                return NF_DROP  # nf_ip_checksum
            opts = synproxy_parse_options(data, th)
            if opts is None:
                return NF_DROP  # skb_header_pointer / synproxy_parse_options failure
            flags = data[th + TCPH_FLAGS]
            if flags & (SYN | ACK | FIN | RST) == SYN:
                ctx.synproxy_stats().syn_received += 1
                if flags & (ECE | CWR) == ECE | CWR:
                    opts.options |= NF_SYNPROXY_OPT_ECN
                opts.options &= info_options
                opts.mss_encode = opts.mss_option
                opts.mss_option = info_mss
                if opts.options & NF_SYNPROXY_OPT_TIMESTAMP:
                    synproxy_init_timestamp_cookie(info_wscale, opts, ctx.now)
                else:
                    opts.options &= ~(NF_SYNPROXY_OPT_WSCALE | NF_SYNPROXY_OPT_SACK_PERM | NF_SYNPROXY_OPT_ECN)
                ctx.synproxy_send_client_synack(skb, opts)
                return NF_STOLEN
            if flags & (SYN | ACK | FIN | RST) == ACK:
                seq = int.from_bytes(data[th + TCPH_SEQ:th + TCPH_SEQ + 4], "big")
                return NF_STOLEN if ctx.synproxy_recv_client_ack(skb, opts, seq) else NF_DROP
            return XT_CONTINUE

        return synproxy_tg4
