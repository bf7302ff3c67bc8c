"""The iptables data model: tables, chains, rules, and the extension registry (x_tables, §5, §7).

A `Ruleset`'s tables hold `Chain`s, which hold `Rule`s. A rule carries the standard `struct ipt_ip`
selectors (`-s -d -i -o -p -f`), a list of match instances and either a standard verdict / chain jump or
a target instance. Every match and target is a subclass of `Match` / `Target` defined in one module under
`rules/matches/` or `rules/targets/`; the class is listed in that package's `ALL` and
found by name through `rules.extensions`, and an *instance* of it is one `-m name …` / `-j NAME …` occurrence in a rule.

Extension protocol (iptables' `struct xtables_match` + the kernel's `struct xt_match`):

- `options`: the long options table (`Opt(name, has_arg, invertible)`).
- `parse(opt, arg, inverted, rule)`: one option of this extension (iptables' `x6_parse`).
- `final_check(rule)`: after the whole command line (`x6_fcheck`); userspace errors, exit 2.
- `save()`: the `iptables-save` text after `-m name` / `-j NAME` (leading space per option).
- `print_list(numeric)`: the `-L` text (leading space), as the extension's `print()`.
- `check(table, hook_mask, rule)`: the kernel's `checkentry`/hook validation; raises `RulesError` with
  exit code 4 (`RULE_APPEND failed (Invalid argument)` in iptables-nft).
- `compile()`: a closure `(skb, ctx) -> bool` (match) or `(skb, ctx) -> int` (target verdict), built once
  at load time.
- `why(skb, ctx)`: for traces, a short reason why the match did not match.
"""

from __future__ import annotations

import copy
import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import ClassVar, Final, NamedTuple

from natbox.errors import NatboxError
from natbox.netfilter import NFPROTO_IPV4, NFPROTO_IPV6, Hook  # a rule's family: iptables or ip6tables
from natbox.rules.api import XtContext
from natbox.skb import Skb

__all__ = [
    "BUILTIN_TARGETS",
    "HOOK_ALL",
    "IPTABLES_MATCH_NAMES",
    "IPTABLES_TARGET_NAMES",
    "NFPROTO_IPV4",
    "NFPROTO_IPV6",
    "OTHER_PROBLEM",
    "PARAMETER_PROBLEM",
    "RESOURCE_PROBLEM",
    "TABLE_HOOKS",
    "TABLE_NAMES",
    "Chain",
    "Match",
    "MatchFn",
    "Opt",
    "Rule",
    "RulesError",
    "Table",
    "Target",
    "TargetFn",
    "collector_paused",
    "format_addr_mask",
    "hook_mask_of",
    "mask_to_prefix",
    "parse_ipv4",
    "parse_ipv4_mask",
]

# iptables exit codes (xtables.h `enum xtables_exittype`)
OTHER_PROBLEM: Final = 1
PARAMETER_PROBLEM: Final = 2
RESOURCE_PROBLEM: Final = 4  # iptables-nft reports kernel refusals (checkentry -EINVAL) with exit status 4

# `iptables_*` tables and the hooks their built-in chains run at (§1.1), in hook order.
TABLE_HOOKS: dict[str, tuple[Hook, ...]] = {
    "raw": (Hook.PRE_ROUTING, Hook.LOCAL_OUT),
    "mangle": (Hook.PRE_ROUTING, Hook.LOCAL_IN, Hook.FORWARD, Hook.LOCAL_OUT, Hook.POST_ROUTING),
    "nat": (Hook.PRE_ROUTING, Hook.LOCAL_IN, Hook.LOCAL_OUT, Hook.POST_ROUTING),
    "filter": (Hook.LOCAL_IN, Hook.FORWARD, Hook.LOCAL_OUT),
    "security": (Hook.LOCAL_IN, Hook.FORWARD, Hook.LOCAL_OUT),  # iptable_security.c, after filter (§1.1)
}
TABLE_NAMES: Final = tuple(TABLE_HOOKS)
HOOK_ALL: Final = (1 << 5) - 1

# Verdict names that are not chains (`-j ACCEPT` etc. are the standard target).
BUILTIN_TARGETS: Final = ("ACCEPT", "DROP", "RETURN", "QUEUE")

# Every target iptables 1.8.9 can load for IPv4 (libxt_*.so / libipt_*.so), whether natbox implements it or
# not, and "standard" (the verdict target; `xtables_find_target` also maps "" and the verdicts to it): `-N`
# refuses these names ("chain name may not clash with target name"), recorded with the real iptables.
IPTABLES_TARGET_NAMES: Final = frozenset({
    "", "standard", *BUILTIN_TARGETS, "AUDIT", "CHECKSUM", "CLASSIFY", "CLUSTERIP", "CONNMARK", "CONNSECMARK",
    "CT", "DNAT", "DSCP", "ECN", "HMARK", "IDLETIMER", "LED", "LOG", "MARK", "MASQUERADE", "NETMAP", "NFLOG",
    "NFQUEUE", "NOTRACK", "RATEEST", "REDIRECT", "REJECT", "SECMARK", "SET", "SNAT", "SYNPROXY", "TCPMSS",
    "TCPOPTSTRIP", "TEE", "TOS", "TPROXY", "TRACE", "TTL", "ULOG",
})
# Every match iptables 1.8.9 can load for IPv4 (the lower-case libxt_*.so / libipt_*.so).
IPTABLES_MATCH_NAMES: Final = frozenset({
    "addrtype", "ah", "bpf", "cgroup", "cluster", "comment", "connbytes", "connlabel", "connlimit", "connmark",
    "conntrack", "cpu", "dccp", "devgroup", "dscp", "ecn", "esp", "hashlimit", "helper", "icmp", "ipcomp",
    "iprange", "ipvs", "length", "limit", "mac", "mark", "multiport", "nfacct", "osf", "owner", "physdev",
    "pkttype", "policy", "quota", "rateest", "realm", "recent", "rpfilter", "sctp", "set", "socket", "state",
    "statistic", "string", "tcp", "tcpmss", "time", "tos", "ttl", "u32", "udp",
})

# IFNAMSIZ (linux/if.h): names are at most 15 characters.
IFNAMSIZ: Final = 16
# XT_EXTENSION_MAXNAMELEN - 1 (x_tables.h): chain names are at most 28 characters.
XT_CHAIN_MAXNAMELEN: Final = 29


def hook_mask_of(*hooks: Hook) -> int:
    mask = 0
    for h in hooks:
        mask |= 1 << h
    return mask


class RulesError(NatboxError):
    """A refused command or ruleset line: iptables' message, exit code and (for files) the location."""

    def __init__(
        self,
        message: str,
        exit_code: int = PARAMETER_PROBLEM,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
        kernel: bool = False,
        plain: bool = False,
        bare: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.file = file
        self.line = line
        self.column = column
        self.kernel = kernel  # a checkentry refusal (reported as "RULE_APPEND failed (Invalid argument)")
        self.plain = plain  # reported as "iptables: MESSAGE" (libiptc/nft strerror style), no help hint
        self.bare = bare  # reported without the "iptables vX (nf_tables): " prefix (still with the help hint)

    @property
    def location(self) -> str:
        """`file:line:[column:]` (empty when unknown)."""
        if self.line is None:
            return f"{self.file}:" if self.file else ""
        loc = f"{self.file or '<stdin>'}:{self.line}:"
        if self.column is not None:
            loc += f"{self.column}:"
        return loc

    def __str__(self) -> str:
        loc = self.location
        return f"{loc} {self.message}" if loc else self.message


class Opt(NamedTuple):
    """One long option of an extension (`struct xt_option_entry`)."""

    name: str
    nargs: int = 1  # 0 (a flag), 1, 2 (`--tcp-flags MASK COMP`), or -1 (optional: libxt_rateest's rates)
    invertible: bool = False

    @staticmethod
    def optional_arg(argv: list[str], pos: int, inline: str | None) -> tuple[str | None, int]:
        """An optional argument (nargs -1), as old-style parsers take `argv[optind]` (libxt_rateest): the
        `--opt=value` value, else the next word unless it starts with '-' or '!'; and the new position."""
        if inline is not None:
            return inline, pos
        if pos < len(argv) and not argv[pos].startswith(("-", "!")):
            return argv[pos], pos + 1
        return None, pos


MatchFn = Callable[[Skb, XtContext], bool]
TargetFn = Callable[[Skb, XtContext], int]


class _Extension:
    name: ClassVar[str] = ""
    revision: ClassVar[int] = 0
    aliases: ClassVar[tuple[str, ...]] = ()
    options: ClassVar[tuple[Opt, ...]] = ()
    # True when an instance never changes once `parse` is done with it (final_check, check, compile, save,
    # print_list and why only read it; it keeps no per-rule state such as counters or a token bucket) and
    # its `parse` reads nothing of the rule but `proto` and `inv_proto` (and `family`, always IPv4 on that
    # path): iptables-restore may then give the rules of one file that spell this extension's options the
    # same way one shared instance (natbox.rules.fastparse's option-group cache). Only a class's own
    # declaration counts, never one inherited from a base class. Leave it False for anything else.
    shareable: ClassVar[bool] = False
    family: int = NFPROTO_IPV4  # the rule's; the parser sets NFPROTO_IPV6 on an ip6tables rule's extensions
    # the message of an option with two arguments given one (libxt_tcp's; libxt_sctp's lacks the period)
    two_args_message: ClassVar[str] = "--{opt} requires two args."
    # True when `check`'s hook test is the kernel checkentry's (`par->hook_mask`), not the xt_match/xt_target's
    # static `.hooks`: nft_compat gives checkentry the hook of the rule's own chain when it is a base chain
    # and 0 in a user-defined chain (nft_match_set_mtchk_param), while the static hooks are checked along
    # every jump from a base chain (nft_match_validate in nft_chain_validate); natbox.rules.validate
    # passes such an extension 0 for a rule in a user-defined chain
    checkentry_hooks: ClassVar[bool] = False

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        raise RulesError(f'unknown option "--{opt}"')

    def final_check(self, rule: Rule) -> None:
        """Userspace checks once the whole rule is parsed (`x6_fcheck`): exit 2 on error."""

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        """The kernel's `checkentry`: raise `RulesError(..., RESOURCE_PROBLEM, kernel=True)`."""

    def save(self) -> str:
        return ""

    def print_list(self, numeric: bool) -> str:
        return ""

    def has_option(self, opt: str) -> Opt | None:
        for o in self.options:
            if o.name == opt:
                return o
        return None

    def clone(self) -> _Extension:
        return copy.deepcopy(self)


class Match(_Extension):
    """Base class of `-m` extensions (also the implicit protocol matches)."""

    def compile(self) -> MatchFn:
        raise NotImplementedError

    def why(self, skb: Skb, ctx: XtContext) -> str:
        """A short reason for a non-match, for `natbox explain` traces."""
        return "no match"

    @property
    def save_name(self) -> str:
        return self.name


class Target(_Extension):
    """Base class of `-j` extensions."""

    real_name: ClassVar[str | None] = None  # the name -L shows when `name` is an alias (NOTRACK → CT)

    def compile(self) -> TargetFn:
        raise NotImplementedError


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a whole ruleset is built (and back on after, if it was).

    Parsing 50,000 rules allocates millions of container objects, none of them in a reference cycle, and
    each allocation burst triggers collections that walk the growing heap: a third of the time of a load.
    Reference counting still frees everything as usual; cycles made meanwhile wait for the next collection.
    When the collector comes back on, what was built is moved to the oldest generation in one step
    (`gc.freeze()` then `gc.unfreeze()`, when nothing else is frozen), where a collection would move it after
    walking it once more; the next full collection looks at it as it would have.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if gc.get_freeze_count() == 0:
                gc.freeze()
                gc.unfreeze()
            gc.enable()


# --- addresses -------------------------------------------------------------------------------------


def parse_ipv4(text: str) -> int | None:
    """`xtables_numeric_to_ipaddr`: 1 to 4 dotted decimal bytes (missing trailing bytes are 0)."""
    parts = text.split(".")
    if len(parts) == 4:  # the usual four bytes, checked in the same order as the loop below
        v = 0
        for p in parts:
            if not p.isdigit() or len(p) > 3:
                return None
            n = int(p)
            if n > 255:
                return None
            v = (v << 8) | n
        return v
    if not 1 <= len(parts) <= 4:
        return None
    val = 0
    for i in range(4):
        if i < len(parts):
            p = parts[i]
            if not p.isdigit() or len(p) > 3:
                return None
            b = int(p)
            if b > 255:
                return None
        else:
            b = 0
        val = (val << 8) | b
    return val


def parse_ipv4_mask(text: str) -> tuple[int, int]:
    """`xtables_ipparse_any` for one address: `addr[/len|/mask]` → (addr & mask, mask). Exit 2 on error."""
    if "/" in text:
        a, m = text.split("/", 1)
        if m.isdigit():
            bits = int(m)
            if bits > 32:
                raise RulesError(f"invalid mask `{m}' specified")
            mask = (0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF if bits else 0
        else:
            pm = parse_ipv4(m) if m.count(".") == 3 else None
            if pm is None:
                raise RulesError(f"invalid mask `{m}' specified")
            mask = pm
    else:
        a, mask = text, 0xFFFFFFFF
    addr = parse_ipv4(a) if a else None
    if addr is None:
        if a == "localhost":
            addr = 0x7F000001
        else:
            raise RulesError(f"host/network `{a}' not found")
    return addr & mask, mask


def mask_to_prefix(mask: int) -> int:
    """Prefix length of a contiguous mask, or -1 (`xtables_ipmask_to_cidr`)."""
    if mask == 0:
        return 0
    inv = (~mask) & 0xFFFFFFFF
    if inv & (inv + 1):
        return -1
    return 32 - inv.bit_length()


def _dotted(a: int) -> str:
    return f"{(a >> 24) & 0xFF}.{(a >> 16) & 0xFF}.{(a >> 8) & 0xFF}.{a & 0xFF}"


def format_addr_mask(addr: int, mask: int, *, numeric: bool = True, always_prefix: bool = True) -> str:
    """`addr/len` (`/mask` if not contiguous). `always_prefix=False` omits `/32` (the -L form)."""
    p = mask_to_prefix(mask)
    name = _dotted(addr)
    if not numeric and addr == 0x7F000001:
        name = "localhost"
    if p == 32 and not always_prefix:
        return name
    return f"{name}/{p}" if p >= 0 else f"{name}/{_dotted(mask)}"


# --- rules -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class Rule:
    """`struct ipt_entry` (or `struct ip6t_entry` with `family` NFPROTO_IPV6): standard selectors, matches, a
    target, counters."""

    src: int = 0
    smsk: int = 0
    inv_src: bool = False
    dst: int = 0
    dmsk: int = 0
    inv_dst: bool = False
    iniface: str = ""
    inv_in: bool = False
    outiface: str = ""
    inv_out: bool = False
    proto: int = 0
    inv_proto: bool = False
    frag: bool = False
    inv_frag: bool = False
    matches: list[Match] = field(default_factory=list)
    jump: str = ""  # ACCEPT/DROP/RETURN, a chain name, or the name of `target`; "" for no target
    goto: bool = False
    target: Target | None = None
    packets: int = 0
    bytes: int = 0
    family: int = NFPROTO_IPV4  # NFPROTO_IPV6: an ip6tables rule (`struct ip6t_entry`, 128-bit addresses)

    def clone(self) -> Rule:
        return copy.deepcopy(self)


class Chain:
    """A built-in chain (with a policy and policy counters) or a user-defined chain.

    A chain read from a ruleset file natbox wrote itself (see `natbox.rules.lazy`) may keep its rules as the
    saved lines (`raw`) until something needs them as `Rule`s: `rules` parses them on first use. Until then
    the lines are what iptables-save prints for them, `raw_jumps()` gives the chains they jump to, and
    `trusted_mask` is the hook mask under which their extensions were last checked (-1: never).
    """

    __slots__ = ("_loader", "_raw_jumps", "_rules", "builtin", "bytes", "hook", "name", "packets", "policy", "raw",
                 "trusted_mask")

    def __init__(self, name: str, hook: Hook | None = None, policy: str = "ACCEPT") -> None:
        self.name = name
        self.hook = hook
        self.builtin = hook is not None
        self.policy = policy if hook is not None else ""
        self.packets = 0
        self.bytes = 0
        self._rules: list[Rule] = []
        self.raw: list[tuple[int, str]] | None = None  # (line number, `[p:b] -A CHAIN ...`) until parsed
        self._loader: Callable[[list[tuple[int, str]]], list[Rule]] | None = None
        self.trusted_mask = -1
        self._raw_jumps: list[str] = []

    @property
    def rules(self) -> list[Rule]:
        if self.raw is not None:
            assert self._loader is not None
            self._rules = self._loader(self.raw)
            self.raw = self._loader = None
            self.trusted_mask = -1
        return self._rules

    @rules.setter
    def rules(self, rules: list[Rule]) -> None:
        self._rules = rules
        self.raw = self._loader = None
        self.trusted_mask = -1

    def set_raw(self, raw: list[tuple[int, str]], loader: Callable[[list[tuple[int, str]]], list[Rule]],
                jumps: list[str]) -> None:
        """Keep saved rule lines unparsed (`jumps`: the chains they jump to); `loader` parses them when needed."""
        self._rules = []
        self.raw, self._loader, self._raw_jumps = raw, loader, jumps

    def copy_raw_from(self, other: Chain) -> None:
        """Share `other`'s unparsed lines (they are never changed in place)."""
        self.raw, self._loader, self.trusted_mask = other.raw, other._loader, other.trusted_mask
        self._raw_jumps = other._raw_jumps

    def raw_jumps(self) -> list[str]:
        """The chains the unparsed lines jump or go to, in order (as `natbox.rules.lazy` read them)."""
        return self._raw_jumps if self.raw is not None else []


class Table:
    """One of raw / mangle / nat / filter: built-in chains in hook order, then user chains."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.chains: dict[str, Chain] = {}
        for h in TABLE_HOOKS[name]:
            self.chains[h.chain_name] = Chain(h.chain_name, h)

    def builtin_chains(self) -> list[Chain]:
        return [c for c in self.chains.values() if c.builtin]

    def user_chains(self) -> list[Chain]:
        """User chains sorted by name (iptables-save's order, §7.2)."""
        return sorted((c for c in self.chains.values() if not c.builtin), key=lambda c: c.name)

    def ordered_chains(self) -> list[Chain]:
        return self.builtin_chains() + self.user_chains()

    def references(self, name: str) -> int:
        """How many rules jump or go to chain `name` (the -L header's "N references")."""
        return self.reference_counts().get(name, 0)

    def reference_counts(self) -> dict[str, int]:
        """How many rules jump or go to each chain that is jumped to, in one pass over the rules (listing
        every chain's header asks for all of them: one pass each would be quadratic in the rules)."""
        counts: dict[str, int] = {}
        get = counts.get
        for c in self.chains.values():
            if c.raw is not None:
                for name in c.raw_jumps():
                    counts[name] = get(name, 0) + 1
                continue
            for r in c.rules:
                if r.target is None and r.jump:
                    counts[r.jump] = get(r.jump, 0) + 1
        return counts

    def clone(self) -> Table:
        return copy.deepcopy(self)
