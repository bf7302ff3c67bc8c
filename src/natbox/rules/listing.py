"""`iptables -L [-n] [-v] [-x] [--line-numbers] [chain]` text (xshared.c `print_header`,
`print_rule_details`, nft-ipv4.c `nft_ipv4_print_rule`; §7.1)."""

from __future__ import annotations

from natbox.rules.addr6 import format_addr6_mask
from natbox.rules.matches._common import proto_name
from natbox.rules.model import NFPROTO_IPV4, Chain, Rule, Table, format_addr_mask

__all__ = ["format_num", "list_chain", "list_table", "rule_line", "rule_line_verbose"]


def format_num(n: int, exact: bool) -> str:
    """`xtables_print_num` (with the trailing space)."""
    if exact:
        return f"{n:8d} "
    if n <= 99999:
        return f"{n:5d} "
    n = (n + 500) // 1000
    for unit in "KMG":
        if n <= 9999:
            return f"{n:4d}{unit} "
        n = (n + 500) // 1000
    return f"{n:4d}T "


def _num_notable(n: int) -> str:
    """`xtables_print_num` with FMT_NOTABLE|FMT_KILOMEGAGIGA (policy counters in the header)."""
    if n <= 99999:
        return f"{n} "
    n = (n + 500) // 1000
    for unit in "KMG":
        if n <= 9999:
            return f"{n}{unit} "
        n = (n + 500) // 1000
    return f"{n}T "


def header(c: Chain, refs: int, *, verbose: bool, exact: bool, line_numbers: bool) -> str:
    out = f"Chain {c.name}"
    if c.builtin:
        out += f" (policy {c.policy}"
        if verbose:
            if exact:
                out += f" {c.packets} packets, {c.bytes} bytes"
            else:
                out += " " + _num_notable(c.packets) + "packets, " + _num_notable(c.bytes) + "bytes"
        out += ")\n"
    else:
        out += f" ({refs} references)\n"
    if line_numbers:
        out += f"{'num':<4} "
    if verbose:
        out += f"{'pkts':>8} {'bytes':>10} " if exact else f"{'pkts':>5} {'bytes':>5} "
    out += f"{'target':<9} "
    out += " prot opt"
    if verbose:
        out += f" {'in':<6} {'out':<6} "
    out += f" {'source':<19} "
    out += f" {'destination':<19} "
    return out + "\n"


def _addr(addr: int, mask: int, numeric: bool, family: int = NFPROTO_IPV4) -> str:
    if not mask and not numeric:
        return "anywhere"
    if family != NFPROTO_IPV4:
        return format_addr6_mask(addr, mask, always_prefix=False)
    return format_addr_mask(addr, mask, numeric=numeric, always_prefix=False)


def rule_line(rule: Rule, num: int, *, numeric: bool, verbose: bool, exact: bool, line_numbers: bool,
              memo: dict[int, str] | None = None) -> str:
    """One rule row (nft_ipv4_print_rule with the table format); `memo` as format_rule_spec's (printer.py),
    for one value of `numeric`."""
    out = f"{num:<4} " if line_numbers else ""
    if verbose:
        out += format_num(rule.packets, exact) + format_num(rule.bytes, exact)
    shown = rule.jump
    if rule.target is not None and rule.target.real_name:
        shown = rule.target.real_name
    out += f"{shown:<9} "
    out += "!" if rule.inv_proto else " "
    pname = proto_name(rule.proto, numeric)
    out += f"{rule.proto:<4} " if numeric or pname is None else f"{pname:<4} "
    out += ("!" if rule.inv_frag else "-") + ("f" if rule.frag else "-") + " "
    if verbose:
        anyname = "*" if numeric else "any"
        out += f" {('!' if rule.inv_in else '') + (rule.iniface or anyname):<6} "
        out += f"{('!' if rule.inv_out else '') + (rule.outiface or anyname):<6} "
    out += ("!" if rule.inv_src else " ") + f"{_addr(rule.src, rule.smsk, numeric, rule.family):<19} "
    out += ("!" if rule.inv_dst else " ") + f"{_addr(rule.dst, rule.dmsk, numeric, rule.family):<19} "
    if rule.goto:
        out += "[goto] "
    for ext in (*rule.matches, rule.target) if rule.target is not None else rule.matches:
        if memo is None:
            out += ext.print_list(numeric)
        else:
            text = memo.get(id(ext))
            if text is None:
                text = memo[id(ext)] = ext.print_list(numeric)
            out += text
    return out + "\n"


def rule_line_verbose(rule: Rule) -> str:
    """The line `iptables -v -A/-I/-D/-C/-R` prints (FMT_PRINT_RULE: no table, numeric, no counters)."""
    shown = rule.target.real_name if rule.target is not None and rule.target.real_name else rule.jump
    out = f"{shown} " + ("!" if rule.inv_proto else " ")
    pname = proto_name(rule.proto, True)
    out += f"{pname} " if pname is not None else f"{rule.proto} "
    out += "opt " + ("!" if rule.inv_frag else "-") + ("f" if rule.frag else "-") + " "
    out += f"in {('!' if rule.inv_in else '') + (rule.iniface or '*')} "
    out += f"out {('!' if rule.inv_out else '') + (rule.outiface or '*')} "
    out += ("!" if rule.inv_src else " ") + _addr(rule.src, rule.smsk, True, rule.family) + " "
    out += ("!" if rule.inv_dst else " ") + "-> " + _addr(rule.dst, rule.dmsk, True, rule.family)
    out += "  "
    if rule.goto:
        out += "[goto] "
    for m in rule.matches:
        out += m.print_list(True)
    if rule.target is not None:
        out += rule.target.print_list(True)
    return out + "\n"


def list_chain(table: Table, c: Chain, *, numeric: bool, verbose: bool, exact: bool, line_numbers: bool,
               rulenum: int | None = None, refs: int | None = None, memo: dict[int, str] | None = None) -> str:
    """One chain's header and rows; `refs`: its reference count when the caller has it."""
    if refs is None:
        refs = table.references(c.name)
    out = [header(c, refs, verbose=verbose, exact=exact, line_numbers=line_numbers)]
    for i, r in enumerate(c.rules, 1):
        if rulenum is not None and i != rulenum:
            continue
        out.append(rule_line(r, i, numeric=numeric, verbose=verbose, exact=exact, line_numbers=line_numbers,
                             memo=memo))
    return "".join(out)


def list_table(table: Table, chain: str | None = None, *, numeric: bool = False, verbose: bool = False,
               exact: bool = False, line_numbers: bool = False) -> str:
    """The whole `-L` output: chains separated by one blank line, none after the last."""
    chains = [table.chains[chain]] if chain is not None else table.ordered_chains()
    counts = table.reference_counts()
    memo: dict[int, str] = {}
    parts = [list_chain(table, c, numeric=numeric, verbose=verbose, exact=exact, line_numbers=line_numbers,
                        refs=counts.get(c.name, 0), memo=memo) for c in chains]
    return "\n".join(parts)
