"""The usual shape of an iptables-save rule line, parsed without the general option loop (issue #12).

iptables-save prints every rule the same way (nft-shared.c `save_matches_and_target`): `-A CHAIN`, the
standard selectors (`[!] -s/-d/-i/-o/-p ARG`, `[!] -f`), then each match as `-m NAME` followed by its own
options, then `-j TARGET [its options]` or `-g CHAIN`. `parse_fast` reads exactly that shape and nothing
else: anything it does not expect (long base options, `-c`, `-t`, an option that belongs to an earlier
extension, the implicit `-p tcp --dport` match, `--opt=value`, a refusal of any kind) makes it answer None,
and the caller parses the line with the general loop (natbox.rules.parser), which gives the same rule or
iptables' error. What it produces is what that loop would hold before its final checks (`_finish`).

Real rulesets spell the same option group thousands of times (`-m comment --comment "ns/svc:http"` on
every rule of a service, `-m tcp --dport 80`, `-m conntrack --ctstate RELATED,ESTABLISHED`, `-j MARK
--set-xmark 0x4000/0x4000`). For an extension whose instances never change once parsed (`shareable`,
natbox.rules.model) one instance is parsed per distinct group and shared by every rule that spells it:
the cache key is the extension, the words of the group and the rule's protocol and its inversion (the
only part of the rule such a `parse` may read). The cache lives for one iptables-restore input, so the
ipsets in scope (which `-m set` looks names up in) cannot change under it.
"""

from __future__ import annotations

from natbox.rules.extensions import MATCHES, TARGETS
from natbox.rules.matches._common import parse_protocol
from natbox.rules.model import BUILTIN_TARGETS, IPTABLES_TARGET_NAMES, Match, Opt, Rule, RulesError, Target
from natbox.rules.words import LONG_BASE, LONG_COMMANDS, check_iface

__all__ = ["FastRule", "GroupCache", "parse_fast"]

Extension = Match | Target
# (extension class, rule.proto, rule.inv_proto, the group's words...) -> the shared instance
GroupCache = dict[tuple[object, ...], Extension]

# extension class -> its long options by name, without those the base parser takes first; None when the
# class looks its options up its own way (then the general loop parses its rules)
_OPT_TABLES: dict[type[Extension], dict[str, Opt] | None] = {}


def _opt_table(cls: type[Extension]) -> dict[str, Opt] | None:
    try:
        return _OPT_TABLES[cls]
    except KeyError:
        pass
    table: dict[str, Opt] | None = None
    if cls.has_option is Match.has_option or cls.has_option is Target.has_option:
        table = {}
        for o in cls.options:
            # getopt_long would give a base option of that name to the base parser; the first entry of a
            # name wins, as `has_option` returns it
            if o.name not in LONG_COMMANDS and o.name not in LONG_BASE and o.name not in table:
                table[o.name] = o
    _OPT_TABLES[cls] = table
    return table


class FastRule:
    """What the general loop holds after the words of a `-A CHAIN ...` line, before `_finish`."""

    __slots__ = ("addr_args", "chain", "loaded", "proto_text", "rule", "seen", "target_name")

    def __init__(self, chain: str, rule: Rule) -> None:
        self.chain = chain
        self.rule = rule
        self.seen: set[str] = set()
        self.addr_args: dict[str, tuple[str, bool]] = {}
        self.loaded: list[Extension] = []
        self.target_name: str | None = None
        self.proto_text = ""


_Group = list[tuple[str, str | None, bool]]


def _scan(opts: dict[str, Opt], argv: list[str], i: int) -> tuple[int, _Group] | None:
    """The options of the newest extension from argv[i] on, as the general loop would hand them to it: up to
    the first word that is not one of them (None: a word the general loop would refuse)."""
    n = len(argv)
    group: _Group = []
    while i < n:
        tok = argv[i]
        k = i
        inv = tok == "!"
        if inv:
            if i + 1 >= n:
                break
            k = i + 1
            tok = argv[k]
        if tok[:2] != "--":
            break
        o = opts.get(tok[2:])
        if o is None:
            break  # `--opt=value`, another extension's option, or a base option: the general loop decides
        if inv and not o.invertible:
            return None
        k += 1
        arg: str | None = None
        if o.nargs == 1:
            if k >= n:
                return None
            arg = argv[k]
            k += 1
        elif o.nargs == 2:
            if k + 1 >= n or argv[k + 1].startswith("-"):
                return None
            arg = f"{argv[k]} {argv[k + 1]}"
            k += 2
        group.append((o.name, arg, inv))
        i = k
    return i, group


def _extension(cls: type[Extension], argv: list[str], i: int, fr: FastRule,
               groups: GroupCache) -> tuple[Extension, int] | None:
    """An extension instance and its options from argv[i] on (shared when it may be); None: not this shape.

    `add` puts the new instance where the general loop puts it before it parses the options (the rule's
    matches or target), so an extension that is not shareable sees the rule exactly as it would there.
    """
    opts = _opt_table(cls)
    if opts is None:
        return None
    scanned = _scan(opts, argv, i)
    if scanned is None:
        return None
    end, group = scanned
    rule = fr.rule
    if cls.__dict__.get("shareable") is True:  # declared by the class itself, not inherited
        key = (cls, rule.proto, rule.inv_proto, *argv[i:end])
        ext = groups.get(key)
        if ext is None:
            ext = cls()
            for name, arg, inv in group:
                ext.parse(name, arg, inv, rule)
            groups[key] = ext
        _add(ext, fr)
        return ext, end
    ext = cls()
    _add(ext, fr)
    for name, arg, inv in group:
        ext.parse(name, arg, inv, rule)
    return ext, end


def _add(ext: Extension, fr: FastRule) -> None:
    if isinstance(ext, Match):
        fr.rule.matches.append(ext)
    else:
        fr.rule.target = ext
    fr.loaded.append(ext)


def parse_fast(argv: list[str], groups: GroupCache) -> FastRule | None:
    """A `-A CHAIN ...` restore line's words in iptables-save's shape, or None (see the module's text)."""
    try:
        return _parse(argv, groups)
    except RulesError:
        return None  # the general loop reports it, with everything it checks before


def _parse(argv: list[str], groups: GroupCache) -> FastRule | None:
    n = len(argv)
    if n < 2 or argv[0] != "-A":
        return None
    rule = Rule()
    fr = FastRule(argv[1], rule)
    seen = fr.seen
    i = 2
    invert = False
    while i < n:
        tok = argv[i]
        if tok == "!":
            if invert:
                return None
            invert = True
            i += 1
            continue
        if len(tok) != 2 or tok[0] != "-":
            return None
        letter = tok[1]
        if letter == "f":
            if "f" in seen:
                return None
            seen.add("f")
            rule.frag, rule.inv_frag = True, invert
            invert = False
            i += 1
            continue
        if i + 1 >= n or (letter != "m" and letter in seen) or (letter in "jg" and ("j" in seen or "g" in seen)):
            return None
        arg = argv[i + 1]
        i += 2
        if letter in ("m", "j"):
            if invert:
                return None
            seen.add(letter)
            if letter == "j":
                if not arg:
                    return None
                fr.target_name = rule.jump = arg
                if arg in BUILTIN_TARGETS:
                    continue
                tcls = TARGETS.get(arg)
                if tcls is None:
                    if arg in IPTABLES_TARGET_NAMES:
                        return None
                    continue  # a jump to a chain
                got = _extension(tcls, argv, i, fr, groups)
            else:
                mcls = MATCHES.get(arg)
                if mcls is None:
                    return None
                got = _extension(mcls, argv, i, fr, groups)
            if got is None:
                return None
            i = got[1]
            continue
        if letter == "g":
            if invert or not arg:
                return None
            seen.add("g")
            fr.target_name = rule.jump = arg
            rule.goto = True
        elif letter in ("s", "d"):
            seen.add(letter)
            fr.addr_args[letter] = (arg, invert)
        elif letter == "p":
            seen.add("p")
            rule.proto = parse_protocol(arg)
            rule.inv_proto = invert
            fr.proto_text = arg
            if rule.proto == 0 and invert:
                return None
        elif letter == "i":
            seen.add("i")
            rule.iniface, rule.inv_in = check_iface(arg), invert
        elif letter == "o":
            seen.add("o")
            rule.outiface, rule.inv_out = check_iface(arg), invert
        else:
            return None
        invert = False
    return None if invert else fr
