"""iptables command lines and iptables-restore text in (iptables/xshared.c `do_parse`, iptables-restore.c).

`parse_argv(argv)` turns one iptables command line (without the program name) into a `Command`;
`tokenize_restore_line(line)` splits a restore line as `add_param_to_argv` does; `parse_restore(text)`
turns a whole `iptables-restore` input into a list of `RestoreTable` blocks (commands per table).
Errors are `RulesError` with iptables' message and exit code (2 for parameter problems).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from natbox.rules.addr6 import parse_ipv6_mask
from natbox.rules.ext6 import IP6TABLES_MATCH_NAMES, IP6TABLES_TARGET_NAMES
from natbox.rules.extensions import MATCHES, MATCHES6, TARGETS, TARGETS6, find_match, find_target
from natbox.rules.fastparse import IP6_EXTHDR_PROTOS, FastRule, GroupCache, parse_fast, parse_fast_line
from natbox.rules.matches._common import parse_protocol
from natbox.rules.model import (
    BUILTIN_TARGETS,
    IPTABLES_MATCH_NAMES,
    IPTABLES_TARGET_NAMES,
    NFPROTO_IPV4,
    NFPROTO_IPV6,
    OTHER_PROBLEM,
    TABLE_NAMES,
    XT_CHAIN_MAXNAMELEN,
    Match,
    Opt,
    Rule,
    RulesError,
    Target,
    collector_paused,
    parse_ipv4_mask,
)
from natbox.rules.payload import merge_payload_matches
from natbox.rules.words import (
    BASE_OPTS,
    COMMANDS,
    LONG_BASE,
    LONG_COMMANDS,
    check_iface,
    check_new_chain_name,
    check_restore_chain_name,
    error_column,
    not_implemented,
    parse_counters,
    tokenize_restore_line,
)

__all__ = ["Command", "RestoreChain", "RestoreTable", "parse_argv", "parse_restore", "parse_restore_argv",
           "parse_restore_line", "tokenize_restore_line"]

# letters whose option value may be inverted
_INVERTIBLE: Final = set("psdiof")
# is_exthdr() of ip6tables: routing, fragment, AH, destination options (`-p` of these warns)
_IP6_EXTHDR_PROTOS: Final = IP6_EXTHDR_PROTOS


@dataclass(slots=True)
class Command:
    """One parsed iptables command."""

    op: str = ""  # A C D I R L S F Z N X E P (or "" when none)
    table: str = "filter"
    chain: str | None = None
    rule: Rule | None = None
    # with `-s a,b -d c,d` iptables makes one rule per (source, destination) pair, sources outermost
    rules: list[Rule] = field(default_factory=list)
    rulenum: int | None = None
    new_name: str | None = None  # -E
    policy: str | None = None  # -P
    numeric: bool = False
    verbose: int = 0
    exact: bool = False
    line_numbers: bool = False
    counters: tuple[int, int] | None = None  # -c PKTS BYTES
    table_given: bool = False
    zero: bool = False  # `-L -Z` / `-S -Z`: zero the counters after listing
    warnings: list[str] = field(default_factory=list)  # lines the tool prints on stderr, the command still runs


@dataclass
class RestoreChain:
    name: str
    policy: str  # "-" for user chains
    counters: tuple[int, int]
    line: int


@dataclass
class RestoreTable:
    """One `*table ... COMMIT` block."""

    name: str
    line: int
    chains: list[RestoreChain] = field(default_factory=list)
    commands: list[tuple[int, Command]] = field(default_factory=list)


class _ArgvParser:
    __slots__ = ("addr_args", "addr_parsed", "argv", "cmd", "dsts", "family", "loaded", "pos", "proto_text",
                 "proto_used", "rule", "seen_opts", "srcs", "target_name")

    def __init__(self, argv: list[str], default_table: str | None = None, family: int = NFPROTO_IPV4) -> None:
        self.argv = argv
        self.pos = 0
        self.cmd = Command()
        if default_table is not None:
            self.cmd.table = default_table
        self.family = family
        self.rule = Rule() if family == NFPROTO_IPV4 else Rule(family=family)
        self.target_name: str | None = None
        self.proto_used = False
        self.seen_opts: set[str] = set()
        self.proto_text = ""
        self.loaded: list[Match | Target] = []  # extensions in load order
        self.srcs: list[tuple[int, int]] = []
        self.addr_args: dict[str, tuple[str, bool]] = {}  # -s / -d text and inversion, parsed in _finish
        self.addr_parsed: dict[str, tuple[tuple[int, int], ...]] = {}  # ... unless fastparse read them
        self.dsts: list[tuple[int, int]] = []

    @classmethod
    def from_fast(cls, fast: FastRule, table: str) -> _ArgvParser:
        """The parser as the general loop would leave it after the words `parse_fast` read."""
        self = cls([])  # not cls.__new__(cls): mypyc's native classes have no __new__ to call
        self.cmd = Command(op="A", table=table, chain=fast.chain)
        self.family = fast.rule.family
        self.rule, self.target_name, self.proto_used = fast.rule, fast.target_name, False
        self.seen_opts, self.proto_text, self.loaded = fast.seen, fast.proto_text, fast.loaded
        self.srcs, self.dsts, self.addr_args, self.addr_parsed = [], [], fast.addr_args, fast.addrs
        return self

    # --- helpers ---------------------------------------------------------------------------------

    def _next_arg(self, what: str) -> str:
        if self.pos >= len(self.argv):
            raise RulesError(f"option \"{what}\" requires an argument")
        a = self.argv[self.pos]
        self.pos += 1
        return a

    def _optional_arg(self) -> str | None:
        if self.pos < len(self.argv):
            a = self.argv[self.pos]
            if not a.startswith("-") and a != "!":
                self.pos += 1
                return a
        return None

    def _set_command(self, letter: str) -> None:
        if self.cmd.op and {self.cmd.op, letter} in ({"L", "Z"}, {"S", "Z"}):
            # `-L -Z` / `-S -Z` (either order): list, then zero the counters (CMD_LIST|CMD_ZERO); a chain
            # given to either applies to both
            listing = self.cmd.op if self.cmd.op != "Z" else letter
            chain, rulenum = self.cmd.chain, self.cmd.rulenum
            self.cmd.op = ""
            self._set_command(letter)
            self.cmd.op, self.cmd.zero = listing, True
            if self.cmd.chain is None:
                self.cmd.chain = chain
            if self.cmd.rulenum is None:
                self.cmd.rulenum = rulenum
            return
        if self.cmd.op:
            raise RulesError(f"Cannot use -{letter} with -{self.cmd.op}")
        self.cmd.op = letter
        _long, nmand, nopt = COMMANDS[letter]
        if letter == "R" and (self.pos + 1 >= len(self.argv) or self.argv[self.pos + 1].startswith("-")):
            if self.pos < len(self.argv):
                raise RulesError("-R requires a rule number")
        args: list[str] = [self._next_arg(f"-{letter}") for _ in range(nmand)]
        for _ in range(nopt):
            o = self._optional_arg()
            if o is None:
                break
            args.append(o)
        if letter in ("A", "C", "N"):
            self.cmd.chain = args[0]
        elif letter in ("D", "I"):
            self.cmd.chain = args[0]
            if len(args) > 1:
                self.cmd.rulenum = self._rulenum(args[1])
        elif letter == "R":
            self.cmd.chain = args[0]
            self.cmd.rulenum = self._rulenum(args[1])
        elif letter == "L":
            self.cmd.chain = args[0] if args else None
            if len(args) > 1:
                self.cmd.rulenum = self._rulenum(args[1])
        elif letter in ("F", "Z", "X"):
            self.cmd.chain = args[0] if args else None
        elif letter == "S":
            self.cmd.chain = args[0] if args else None
            if len(args) > 1:
                self.cmd.rulenum = self._rulenum(args[1])
        elif letter == "E":
            self.cmd.chain, self.cmd.new_name = args
        elif letter == "P":
            self.cmd.chain, self.cmd.policy = args
        if letter == "N" and self.cmd.chain is not None:
            check_new_chain_name(self.cmd.chain, self.family)
        if letter == "E" and self.cmd.new_name is not None:
            check_new_chain_name(self.cmd.new_name, self.family)

    @staticmethod
    def _rulenum(text: str, allow_zero: bool = False) -> int:
        if not text.isdigit() or (int(text) < 1 and not allow_zero):
            raise RulesError(f"Invalid rule number `{text}'")
        return int(text)

    # --- extension options -----------------------------------------------------------------------

    def _owner_of(self, name: str) -> tuple[Match | Target, Opt] | None:
        """The extension an option belongs to: the most recently loaded one that has it.

        `xtables_merge_options` puts each newly loaded extension's options before the older ones, so
        getopt_long resolves a name shared by several instances (`-m mark ... -m mark ...`) to the newest.
        """
        for ext in reversed(self.loaded):
            o = ext.has_option(name)
            if o is not None:
                return ext, o
        return None

    def _extension_option(self, name: str, inline_value: str | None, invert: bool, token: str) -> None:
        found = self._owner_of(name)
        if found is None and not self.proto_used and self.rule.proto:
            # implicit protocol match: `-p tcp --dport 80` loads `-m tcp`
            self.proto_used = True
            from natbox.rules.matches._common import proto_name

            pname = proto_name(self.rule.proto, False)
            cls = find_match(pname, self.family) if pname else None
            if cls is not None:
                m = cls()
                if m.has_option(name) is not None:
                    self.rule.matches.append(m)
                    self.loaded.append(m)
                    found = (m, m.options[[o.name for o in m.options].index(name)])
        if found is None:
            raise RulesError(f'unknown option "{token}"')
        ext, opt = found
        if invert and not opt.invertible:
            raise RulesError(f"{ext.name}: option \"--{name}\" cannot be inverted.\n")
        arg, self.pos = opt.optional_arg(self.argv, self.pos, inline_value) if opt.nargs == -1 else (None, self.pos)
        if opt.nargs >= 1:
            arg = inline_value if inline_value is not None else self._next_arg(f"--{name}")
        if opt.nargs == 2:
            if self.pos >= len(self.argv) or self.argv[self.pos].startswith(("-", "!")):
                raise RulesError(ext.two_args_message.format(opt=name))
            arg = f"{arg} {self.argv[self.pos]}"
            self.pos += 1
        ext.parse(name, arg, invert, self.rule)

    # --- main loop -------------------------------------------------------------------------------

    def parse(self) -> Command:
        invert = False
        argv = self.argv
        while self.pos < len(argv):
            tok = argv[self.pos]
            self.pos += 1
            if tok == "!":
                if invert:
                    raise RulesError("multiple consecutive ! not allowed")
                invert = True
                continue
            if tok.startswith("--") and len(tok) > 2:
                name, eq, val = tok[2:].partition("=")
                inline = val if eq else None
                letter = LONG_COMMANDS.get(name) or LONG_BASE.get(name)
                if letter is not None:
                    if inline is not None:
                        self.argv = argv = [*argv[: self.pos], inline, *argv[self.pos:]]
                    self._option(letter, invert)
                else:
                    self._extension_option(name, inline, invert, tok)
                invert = False
                continue
            if tok.startswith("-") and len(tok) > 1:
                letters = tok[1:]
                i = 0
                while i < len(letters):
                    ch = letters[i]
                    i += 1
                    takes = ch in COMMANDS or (ch in BASE_OPTS and BASE_OPTS[ch][1])
                    if takes and i < len(letters):
                        # the rest of the cluster is the argument (`-tnat`, `-Ato`)
                        self.argv = argv = [*argv[: self.pos], letters[i:], *argv[self.pos:]]
                        i = len(letters)
                    if ch not in COMMANDS and ch not in BASE_OPTS:
                        raise RulesError(f"invalid option -- '{ch}'")
                    self._option(ch, invert)
                    invert = False
                continue
            raise RulesError(f"Bad argument `{tok}'", bare=True)
        if invert:
            raise RulesError("nothing appropriate following !")
        return self._finish()

    def _option(self, letter: str, invert: bool) -> None:
        r = self.rule
        if invert and letter not in _INVERTIBLE and letter not in ("m",) and letter not in COMMANDS:
            opt = "--" + (BASE_OPTS[letter][0][0] if letter in BASE_OPTS else COMMANDS[letter][0])
            raise RulesError(f"cannot have ! before -{letter}" if letter != "t" else f"unexpected ! flag before {opt}")
        if letter in COMMANDS:
            if invert:
                raise RulesError("unexpected '!' flag")
            self._set_command(letter)
            return
        if letter in "jg" and self.seen_opts & {"j", "g"}:
            raise RulesError("multiple -j flags not allowed")
        if letter in "psdiofjgc" and letter in self.seen_opts:  # -t may repeat
            names = {"p": "-p", "s": "-s", "d": "-d", "i": "-i", "o": "-o", "f": "-f", "j": "-j", "g": "-g",
                     "c": "-c"}
            raise RulesError(f"multiple {names[letter]} flags not allowed")
        self.seen_opts.add(letter)
        if letter == "t":
            name = self._next_arg("-t")
            self.cmd.table, self.cmd.table_given = name, True  # the last -t wins
        elif letter == "p":
            text = self._next_arg("-p")
            r.proto = parse_protocol(text)
            r.inv_proto = invert
            self.proto_text = text
            if r.proto == 0 and invert:
                raise RulesError("rule would never match protocol")
            if self.family == NFPROTO_IPV6 and r.proto in _IP6_EXTHDR_PROTOS and not invert:
                self.cmd.warnings.append(
                    f"Warning: never matched protocol: {text.lower()}. use extension match instead.")
        elif letter in "sd":
            # parsed once the whole line is (iptables' post_parse): `-s ! 1.2.3.4` is "Bad argument `1.2.3.4'"
            self.addr_args[letter] = (self._next_arg(f"-{letter}"), invert)
        elif letter == "i":
            r.iniface, r.inv_in = check_iface(self._next_arg("-i")), invert
        elif letter == "o":
            r.outiface, r.inv_out = check_iface(self._next_arg("-o")), invert
        elif letter == "f":
            if self.family == NFPROTO_IPV6:
                raise RulesError("`-f' is not supported in IPv6, use -m frag instead")
            r.frag, r.inv_frag = True, invert
        elif letter in "jg":
            name = self._next_arg(f"-{letter}")
            if not name:
                raise RulesError("Invalid target name (too short)")  # xt_parse_target
            if "j" in self.seen_opts and "g" in self.seen_opts:
                raise RulesError("Cannot use -j with -g" if letter == "g" else "Cannot use -g with -j")
            self.target_name = name
            r.jump = name
            if letter == "g":
                r.goto = True
            elif name not in BUILTIN_TARGETS:
                cls = find_target(name, self.family)
                if cls is not None:
                    r.target = cls()
                    self.loaded.append(r.target)
                elif name in (IPTABLES_TARGET_NAMES if self.family == NFPROTO_IPV4 else IP6TABLES_TARGET_NAMES):
                    raise RulesError(not_implemented("target", name, TARGETS if self.family == NFPROTO_IPV4
                                                     else TARGETS6))
        elif letter == "m":
            if invert:
                raise RulesError("unexpected ! flag before --match")
            name = self._next_arg("-m")
            mcls = find_match(name, self.family)
            if mcls is None:
                v4 = self.family == NFPROTO_IPV4
                if name in (IPTABLES_MATCH_NAMES if v4 else IP6TABLES_MATCH_NAMES):
                    raise RulesError(not_implemented("match", name, MATCHES if v4 else MATCHES6))
                raise RulesError(f"Couldn't load match `{name}':No such file or directory\n")
            r.matches.append(mcls())
            self.loaded.append(r.matches[-1])
        elif letter == "n":
            self.cmd.numeric = True
        elif letter == "v":
            self.cmd.verbose += 1
        elif letter == "x":
            self.cmd.exact = True
        elif letter == "0":
            self.cmd.line_numbers = True
        elif letter == "c":
            p = self._next_arg("-c")
            b = self._next_arg("-c")
            if not p.isdigit():
                raise RulesError("-c packet counter not numeric")
            if not b.isdigit():
                raise RulesError("-c byte counter not numeric")
            self.cmd.counters = (int(p), int(b))
        elif letter == "w":
            self._optional_arg()
        elif letter == "W":
            self._next_arg("-W")
        elif letter == ("4" if self.family == NFPROTO_IPV4 else "6"):
            pass
        elif letter == "4":
            raise RulesError("", bare=True)  # ip6tables -4: only the help hint (recorded)
        else:
            raise RulesError(f"option -{letter} is not supported by natbox")

    def _finish(self) -> Command:
        cmd, r = self.cmd, self.rule
        if self.family != NFPROTO_IPV4:
            for ext in self.loaded:
                ext.family = self.family
        if cmd.table not in TABLE_NAMES:
            prog = "ip6tables" if self.family == NFPROTO_IPV6 else "iptables"
            raise RulesError(
                f"table '{cmd.table}' does not exist\nPerhaps {prog} or your kernel needs to be upgraded.", 3)
        if cmd.table == "nat" and (cmd.policy == "DROP" or r.jump == "DROP"):
            raise RulesError(
                '\nThe "nat" table is not intended for filtering, the use of DROP is therefore inhibited.\n\n'
            )
        for m in r.matches:
            m.final_check(r)
        if r.target is not None:
            r.target.final_check(r)
        self._addresses()
        merge_payload_matches(r)
        if not cmd.op:
            raise RulesError("no command specified")
        if cmd.chain is not None and len(cmd.chain) >= XT_CHAIN_MAXNAMELEN:
            raise RulesError(f"chain name `{cmd.chain}' too long (must be under {XT_CHAIN_MAXNAMELEN} chars)")
        if cmd.op in "ADCIR":
            if cmd.chain in ("PREROUTING", "INPUT") and "o" in self.seen_opts:
                raise RulesError(f"Can't use -o with {cmd.chain}\n")
            if cmd.chain in ("POSTROUTING", "OUTPUT") and "i" in self.seen_opts:
                raise RulesError(f"Can't use -i with {cmd.chain}\n")
            if cmd.counters is not None and self.family == NFPROTO_IPV4:
                # ip6tables 1.8.9 (nf_tables) drops a rule's counters, from -c and from restore -c (recorded)
                r.packets, r.bytes = cmd.counters
            cmd.rule = r
            cmd.rules = [r]
            if len(self.srcs) > 1 or len(self.dsts) > 1:
                if cmd.op == "R":
                    raise RulesError("Replacement rule does not specify a unique address")
                cmd.rules = []
                for s_addr, s_mask in self.srcs or [(r.src, r.smsk)]:
                    for d_addr, d_mask in self.dsts or [(r.dst, r.dmsk)]:
                        one = r.clone()
                        one.src, one.smsk, one.dst, one.dmsk = s_addr, s_mask, d_addr, d_mask
                        cmd.rules.append(one)
                cmd.rule = cmd.rules[0]
            if cmd.op == "D" and cmd.rulenum is not None and self._has_rule_spec():
                opt = sorted(self.seen_opts & set("psdiofjg"))
                raise RulesError(f"Illegal option `-{opt[0] if opt else 'm'}' with this command")
        elif self._has_rule_spec():
            opt = sorted(self.seen_opts & set("psdiofjg"))
            raise RulesError(f"Illegal option `-{opt[0]}' with this command" if opt else
                             "Illegal option with this command")
        return cmd

    def _addresses(self) -> None:
        """`-s`/`-d` lists (`xtables_ipparse_multiple`, sources first), after the extensions' final checks."""
        r = self.rule
        for letter in "sd":
            if letter not in self.addr_args:
                continue
            text, invert = self.addr_args[letter]
            known = self.addr_parsed.get(letter)  # parsed by natbox.rules.fastparse (IPv4)
            if known is not None:
                addrs = list(known)
            else:
                parse = parse_ipv4_mask if self.family == NFPROTO_IPV4 else parse_ipv6_mask
                addrs = [parse(a) for a in text.split(",")]
            addr, mask = addrs[0]
            if letter == "s":
                r.src, r.smsk, r.inv_src = addr, mask, invert
                self.srcs = addrs
            else:
                r.dst, r.dmsk, r.inv_dst = addr, mask, invert
                self.dsts = addrs

    def _has_rule_spec(self) -> bool:
        return bool(self.seen_opts & set("psdiofjg")) or bool(self.rule.matches)


def parse_argv(argv: list[str], *, table: str | None = None, family: int = NFPROTO_IPV4) -> Command:
    """Parse one iptables command line (argv without the program name; `family` NFPROTO_IPV6 for ip6tables).
    Raises `RulesError`."""
    return _ArgvParser(list(argv), table, family).parse()


def parse_restore_line(line: str, table: str, groups: GroupCache, family: int = NFPROTO_IPV4) -> Command:
    """One restore line (after its `[p:b]`), as `parse_argv(tokenize_restore_line(line), table=table)`
    would read it: through natbox.rules.fastparse when it has iptables-save's (or ip6tables-save's) shape."""
    fast = parse_fast_line(line, groups, family)
    if fast is not None:
        return _ArgvParser.from_fast(fast, table)._finish()
    return parse_restore_argv(tokenize_restore_line(line), table, groups, family)


def parse_restore_argv(argv: list[str], table: str, groups: GroupCache, family: int = NFPROTO_IPV4) -> Command:
    """One restore line's words (`parse_argv(argv, table=table)`): iptables-save's shape of `-A` line through
    natbox.rules.fastparse, sharing the option groups in `groups`, anything else through the general loop."""
    fast = parse_fast(argv, groups, family)
    if fast is not None:
        return _ArgvParser.from_fast(fast, table)._finish()
    return parse_argv(argv, table=table, family=family)


def parse_restore(text: str, *, file: str | None = None, with_counters: bool = False,
                  table_filter: str | None = None, family: int = NFPROTO_IPV4) -> list[RestoreTable]:
    """Parse an iptables-restore input into table blocks. Errors carry `file:line:`.

    `with_counters` (`-c`) keeps `[p:b]` counters; otherwise they are ignored (policy counters zeroed), as
    iptables-restore does; a rule's own `-c p b` is kept either way.
    """
    with collector_paused():
        return _parse_restore(text, file, with_counters, table_filter, family)


def _parse_restore(text: str, file: str | None, with_counters: bool, table_filter: str | None,
                   family: int = NFPROTO_IPV4) -> list[RestoreTable]:
    blocks: list[RestoreTable] = []
    cur: RestoreTable | None = None
    groups = GroupCache()  # option groups parsed once for the whole input (natbox.rules.fastparse)
    lineno = 0
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            if line == "COMMIT":
                if cur is None:
                    raise RulesError("COMMIT without table", OTHER_PROBLEM)
                if table_filter is None or cur.name == table_filter:
                    blocks.append(cur)
                cur = None
                continue
            if line.startswith("*"):
                if cur is not None:
                    raise RulesError(f"COMMIT expected at line {lineno}", OTHER_PROBLEM)
                name = line[1:].strip()
                if name not in TABLE_NAMES:
                    prog = "ip6tables-restore" if family == NFPROTO_IPV6 else "iptables-restore"
                    raise RulesError(f"{prog}: line {lineno} table name '{name}' invalid")
                cur = RestoreTable(name, lineno)
                continue
            if cur is None:
                raise RulesError(f"Bad argument `{line.split()[0]}'")
            if line.startswith(":"):
                parts = line[1:].split()
                if len(parts) < 2:
                    prog = "ip6tables-restore" if family == NFPROTO_IPV6 else "iptables-restore"
                    raise RulesError(f"{prog}: line {lineno} policy invalid")
                cname, policy = parts[0], parts[1]
                check_restore_chain_name(cname)
                counters = (0, 0)
                if len(parts) > 2:
                    counters = parse_counters(parts[2], lineno)
                if policy != "-" and policy not in ("ACCEPT", "DROP"):
                    raise RulesError(f"iptables-restore: line {lineno} failed: Bad policy name.", OTHER_PROBLEM)
                if not with_counters:
                    counters = (0, 0)
                cur.chains.append(RestoreChain(cname, policy, counters, lineno))
                continue
            counters_prefix: tuple[int, int] | None = None
            if line.startswith("["):
                head, _, line = line.partition(" ")
                counters_prefix = parse_counters(head, lineno)
            cmd = parse_restore_line(line, cur.name, groups, family)
            if cmd.table_given and cmd.table != cur.name:
                raise RulesError(f"Bad argument `{cmd.table}'")
            if cmd.rule is not None and counters_prefix is not None and with_counters:
                # iptables-restore -c turns `[p:b]` into `-c p b` arguments
                if cmd.counters is not None:
                    raise RulesError("multiple -c flags not allowed")
                for r in (cmd.rules or [cmd.rule]) if family == NFPROTO_IPV4 else []:
                    r.packets, r.bytes = counters_prefix
            cur.commands.append((lineno, cmd))
        except RulesError as e:
            if e.line is None:
                e.line = lineno
            if e.column is None:
                e.column = error_column(raw, e.message)
            e.file = file
            raise
    if cur is not None:
        raise RulesError(f"COMMIT expected at line {lineno + 1}", OTHER_PROBLEM, file=file, line=lineno + 1)
    return blocks

