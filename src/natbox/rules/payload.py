"""iptables-nft's tcp/udp payload matches read back as iptables-save prints them (nft-shared.c): several
`-m tcp`/`-m udp` port and flag tests of one rule become one match at the first one's place."""

from __future__ import annotations

import copy

from natbox.rules.matches.tcp import PortMatch, Tcp
from natbox.rules.model import Match, Rule

__all__ = ["merge_payload_matches"]


def merge_payload_matches(rule: Rule) -> None:
    """iptables-nft turns tcp/udp port and flag tests into payload expressions; reading the rule back
    rebuilds them as one `-m tcp`/`-m udp` at the first one's place (`-p tcp --dport 80 -m tcp --sport 5`
    saves as `-p tcp -m tcp --sport 5 --dport 80`). Instances the kernel keeps as xt matches (all-zero,
    `--tcp-option`) are left alone."""
    if sum(isinstance(m, PortMatch) for m in rule.matches) < 2:
        return
    first: dict[str, int] = {}  # name -> index in `kept`
    kept: list[Match] = []
    for m in rule.matches:
        if isinstance(m, PortMatch) and not m._all_zero() and not (isinstance(m, Tcp) and m.option):
            at = first.get(m.name)
            if at is None:
                first[m.name] = len(kept)
            else:
                # the first instance may be shared with other rules (natbox.rules.fastparse): change a copy
                head = kept[at] = copy.copy(kept[at])
                assert isinstance(head, PortMatch)
                if m.spts != (0, 0xFFFF) or m.inv_spt:
                    head.spts, head.inv_spt = m.spts, m.inv_spt
                if m.dpts != (0, 0xFFFF) or m.inv_dpt:
                    head.dpts, head.inv_dpt = m.dpts, m.inv_dpt
                if isinstance(m, Tcp) and isinstance(head, Tcp) and (m.flg_mask or m.inv_flags):
                    head.flg_mask, head.flg_cmp, head.inv_flags = m.flg_mask, m.flg_cmp, m.inv_flags
                continue
        kept.append(m)
    rule.matches = kept
