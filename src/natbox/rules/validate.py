"""Table validation: jump loops, jump depth, hook masks and every extension's checkentry, in linear time.

Mirrors what the kernel does when an iptables-nft (1.8.9) ruleset is committed: `nft_table_validate()`
walks every base chain's jumps and gotos (`nft_chain_validate()`), refusing a walk deeper than
`NFT_JUMP_STACK_SIZE` with -EMLINK ("Too many links"). A loop reachable from a base chain never ends, so it
is refused with the same error; a loop among chains no base chain reaches is never walked and is accepted
(recorded with iptables 1.8.9: `-A X -j X` is accepted, `-A INPUT -j X` then fails with "Too many links").
The hooks that reach each chain (`mark_source_chains` in ip_tables.c) give each rule's matches and target
the hook mask they are checked with (`xt_check_match` / `xt_check_target`, the extensions' `checkentry`).

The walk is a depth-first search from each built-in chain in hook order, following jumps and gotos in rule
order. A chain already explored is not walked again: its height (the longest chain of jumps below it)
tells whether entering it at the current depth would exceed the stack, and a chain whose exploration
finished cannot lead back onto the current path (that loop would have been found while exploring it). So
each chain and each rule is looked at once per validation (O(rules + chains)), with the result of walking
every path.

`skip` (a set of `id(rule)`) leaves rules out, as if they were not in the table: `Ruleset.restore` uses it
to look at the table as it was after an earlier command without copying it.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

from natbox.rules.model import BUILTIN_TARGETS, RESOURCE_PROBLEM, Chain, Rule, RulesError, Table

__all__ = ["MAX_JUMP_DEPTH", "check_rule", "hook_masks", "validate_table"]

MAX_JUMP_DEPTH: Final = 16  # NFT_JUMP_STACK_SIZE (nf_tables.h)

_NO_SKIP: frozenset[int] = frozenset()


def _jumps(table: Table, chain: Chain, skip: Collection[int]) -> list[Chain]:
    """The chains `chain`'s rules jump or go to, in rule order (jumps to missing chains are ignored)."""
    out: list[Chain] = []
    chains = table.chains
    if chain.raw is not None:
        for name in chain.raw_jumps():
            sub = chains.get(name)
            if sub is not None and name not in BUILTIN_TARGETS:
                out.append(sub)
        return out
    for r in chain.rules:
        if r.target is None and r.jump and r.jump not in BUILTIN_TARGETS:
            sub = chains.get(r.jump)
            if sub is not None and (not skip or id(r) not in skip):
                out.append(sub)
    return out


def _too_deep() -> RulesError:
    return RulesError("Too many links", RESOURCE_PROBLEM, kernel=True)


def _explore(table: Table, start: Chain, done: dict[str, int], adj: dict[str, list[Chain]],
             skip: Collection[int]) -> None:
    """Depth-first walk from `start` at depth 0; fills `done` with each explored chain's height and `adj`
    with its jump targets. Iterative: a frame per chain on the current path (at most MAX_JUMP_DEPTH + 1)."""
    on_path = {start.name}
    subs0 = adj[start.name] = _jumps(table, start, skip)
    # frame: (chain, its jump targets, [next index, height so far])
    stack: list[tuple[Chain, list[Chain], list[int]]] = [(start, subs0, [0, 0])]
    while stack:
        chain, subs, st = stack[-1]
        depth = len(stack) - 1
        if st[0] < len(subs):
            sub = subs[st[0]]
            st[0] += 1
            if sub.name in on_path:
                raise _too_deep()  # a reachable loop: the walk would overflow the jump stack
            if depth + 1 > MAX_JUMP_DEPTH:
                raise _too_deep()
            h = done.get(sub.name)
            if h is None:
                on_path.add(sub.name)
                sub_subs = adj[sub.name] = _jumps(table, sub, skip)
                stack.append((sub, sub_subs, [0, 0]))
                continue
            if depth + 1 + h > MAX_JUMP_DEPTH:
                raise _too_deep()
            st[1] = max(st[1], h + 1)
            continue
        stack.pop()
        on_path.discard(chain.name)
        done[chain.name] = st[1]
        if stack:
            parent = stack[-1][2]
            parent[1] = max(parent[1], st[1] + 1)


def hook_masks(table: Table, skip: Collection[int] = _NO_SKIP) -> dict[str, int]:
    """Which hooks reach each chain (the kernel's `mark_source_chains`). Raises on a loop or a deep jump."""
    done: dict[str, int] = {}
    adj: dict[str, list[Chain]] = {}
    builtins = table.builtin_chains()
    for c in builtins:
        if c.name not in done:
            _explore(table, c, done, adj, skip)
    masks: dict[str, int] = dict.fromkeys(table.chains, 0)
    for c in builtins:
        assert c.hook is not None
        masks[c.name] |= 1 << c.hook
    # `done` holds the explored chains in the order their walks finished, each after every chain it jumps to
    # (a loop would have been refused): backwards, a chain comes before the chains it jumps to, so one pass
    # hands each chain's hooks on to them
    for name in reversed(done):
        bits = masks[name]
        if bits:
            for sub in adj[name]:
                masks[sub.name] |= bits
    return masks


def validate_table(table: Table, skip: Collection[int] = _NO_SKIP) -> dict[str, int]:
    """Every rule's extensions checked with its chain's hook mask (kernel checkentry), after `hook_masks`;
    returns the hook masks."""
    masks = hook_masks(table, skip)
    name = table.name
    for c in table.chains.values():
        mask = masks[c.name]
        if c.raw is not None and c.trusted_mask == mask:
            continue  # unparsed lines already checked under this mask (natbox.rules.lazy)
        user = c.hook is None
        for r in c.rules:
            if skip and id(r) in skip:
                continue
            check_rule(name, mask, r, user)
    return masks


def check_rule(table: str, mask: int, r: Rule, user_chain: bool = False) -> None:
    """One rule's matches and target checked at the hooks `mask` (`xt_check_match` / `xt_check_target`); in a
    user-defined chain an extension whose hook test is in checkentry sees no hook (`checkentry_hooks`)."""
    for m in r.matches:
        m.check(table, 0 if user_chain and m.checkentry_hooks else mask, r)
    t = r.target
    if t is not None:
        t.check(table, 0 if user_chain and t.checkentry_hooks else mask, r)
