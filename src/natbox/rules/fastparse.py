"""The usual shape of an iptables-save rule line, parsed without the general option loop (issue #12).

iptables-save prints every rule the same way (nft-shared.c `save_matches_and_target`): `-A CHAIN`, the
standard selectors (`[!] -s/-d/-i/-o/-p ARG`, `[!] -f`), then each match as `-m NAME` followed by its own
options, then `-j TARGET [its options]` or `-g CHAIN`. `parse_fast_line` (the text of a line) and
`parse_fast` (its words) read exactly that shape and nothing else: anything they do not expect (long base
options, `-c`, `-t`, an option that belongs to an earlier extension, the implicit `-p tcp --dport` match,
`--opt=value`, a cut inside quotes, a refusal of any kind) makes them answer None, and the caller parses
the line with the general loop (natbox.rules.parser), which gives the same rule or iptables' error. What
they produce is what that loop would hold before its final checks (`_finish`).

Real rulesets spell the same option group thousands of times (`-m comment --comment "ns/svc:http"` on
every rule of a service, `-m tcp --dport 80`, `-m conntrack --ctstate RELATED,ESTABLISHED`, `-j MARK
--set-xmark 0x4000/0x4000`). For an extension whose instances never change once parsed (`shareable`,
natbox.rules.model) one instance is parsed per distinct group and shared by every rule that spells it:
the cache key is the group's text (or words) and the rule's protocol and its inversion (the only part of
the rule such a `parse` may read). The cache lives for one iptables-restore input, so the ipsets in scope
(which `-m set` looks names up in) cannot change under it. tests/rules/test_fastparse.py holds both paths
to the general loop's results.

ip6tables-save lines (`family` NFPROTO_IPV6) take the same paths with ip6tables' rule, name tables and
address syntax: an IPv6 rule (`Rule(family=...)`), `-s`/`-d` read as IPv6 prefixes, `-f` left to the
general loop (which refuses it), and the cache keys hold the family (an extension's `parse` may read it).
tests/rules6/test_fastparse6.py holds them to the general loop.
"""

from __future__ import annotations

import re
from typing import Final

from natbox.netfilter import NFPROTO_IPV4, NFPROTO_IPV6
from natbox.rules.addr6 import parse_ipv6_mask
from natbox.rules.ext6 import IP6TABLES_TARGET_NAMES
from natbox.rules.extensions import MATCHES, MATCHES6, TARGETS, TARGETS6
from natbox.rules.matches._common import parse_protocol
from natbox.rules.model import (
    BUILTIN_TARGETS,
    IPTABLES_TARGET_NAMES,
    Match,
    Opt,
    Rule,
    RulesError,
    Target,
    parse_ipv4_mask,
)
from natbox.rules.words import LONG_BASE, LONG_COMMANDS, check_iface, tokenize_restore_line

__all__ = ["IP6_EXTHDR_PROTOS", "FastRule", "GroupCache", "parse_fast", "parse_fast_line"]

Extension = Match | Target
_Group = list[tuple[str, str | None, bool]]  # (option, argument, inverted) as `parse` takes them
# a piece of line after ` -m ` / ` -j `: (extension class or None for a verdict or chain, the name after the
# letter, its options, the instance every rule with this piece shares, or None when it may not be shared)
_Piece = tuple[type[Match] | type[Target] | None, str, _Group, Match | Target | None]


class GroupCache:
    """The option groups of one iptables-restore input, parsed once.

    `by_text`: (rule.family, rule.proto, rule.inv_proto) -> the pieces of line after ` -m ` and after ` -j `
    by their text -> what each is (None: not this shape); `by_words`: (extension class, rule.family,
    rule.proto, rule.inv_proto, the group's words...) -> the shared instance (the path for lines whose pieces
    cannot be cut at the text).
    """

    __slots__ = ("addrs", "by_text", "by_words")

    def __init__(self) -> None:
        self.addrs: dict[str, tuple[tuple[int, int], ...]] = {}  # `-s`/`-d` text -> (address, mask)...
        self.by_text: dict[tuple[int, int, bool], tuple[dict[str, _Piece | None], dict[str, _Piece | None]]] = {}
        self.by_words: dict[tuple[object, ...], Extension] = {}

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

    __slots__ = ("addr_args", "addrs", "chain", "loaded", "proto_text", "rule", "seen", "target_name")

    def __init__(self, chain: str, rule: Rule) -> None:
        self.chain = chain
        self.rule = rule
        self.seen: set[str] = set()
        self.addr_args: dict[str, tuple[str, bool]] = {}
        self.addrs: dict[str, tuple[tuple[int, int], ...]] = {}  # -s / -d parsed (a valid text only)
        self.loaded: list[Extension] = []
        self.target_name: str | None = None
        self.proto_text = ""


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
        elif o.nargs == -1 and k < n and not argv[k].startswith(("-", "!")):  # an optional argument
            arg = argv[k]
            k += 1
        group.append((o.name, arg, inv))
        i = k
    return i, group


def _shareable(cls: type[Extension]) -> bool:
    return cls.__dict__.get("shareable") is True  # declared by the class itself, never inherited


def _add(ext: Extension, fr: FastRule) -> None:
    """Where the general loop puts a loaded extension: the rule's matches or target, and `loaded`."""
    if isinstance(ext, Match):
        fr.rule.matches.append(ext)
    else:
        fr.rule.target = ext
    fr.loaded.append(ext)


def _parsed(cls: type[Extension], group: _Group, rule: Rule) -> Extension:
    """A new instance given its options (for the cache: `parse` of a shareable class reads only the rule's
    protocol, which the cache key holds)."""
    ext = cls()
    for name, arg, inv in group:
        ext.parse(name, arg, inv, rule)
    return ext


def _made(cls: type[Extension], group: _Group, fr: FastRule) -> None:
    """A new instance added to the rule first, then given its options, in the general loop's order."""
    ext = cls()
    _add(ext, fr)
    for name, arg, inv in group:
        ext.parse(name, arg, inv, fr.rule)


def _selector(letter: str, arg: str, invert: bool, fr: FastRule, groups: GroupCache) -> bool:
    """One of `-s -d -i -o -p ARG` as the general loop's `_option` reads it; False: not this shape.

    Addresses are parsed here already (the general loop parses them after the extensions' final checks,
    which matters only for which error a line with a bad address reports: such a line is not taken here).
    """
    seen, rule = fr.seen, fr.rule
    if letter in seen:
        return False
    if letter in ("s", "d"):
        fr.addr_args[letter] = (arg, invert)
        v6 = rule.family == NFPROTO_IPV6
        key = "6 " + arg if v6 else arg
        addrs = groups.addrs.get(key)
        if addrs is None:
            parse = parse_ipv6_mask if v6 else parse_ipv4_mask
            addrs = groups.addrs[key] = tuple(parse(a) for a in arg.split(","))
        fr.addrs[letter] = addrs
    elif letter == "p":
        rule.proto = parse_protocol(arg)
        rule.inv_proto = invert
        fr.proto_text = arg
        if rule.proto == 0 and invert:
            return False
        if rule.family == NFPROTO_IPV6 and rule.proto in IP6_EXTHDR_PROTOS and not invert:
            return False  # ip6tables warns "never matched protocol": the general loop says it
    elif letter == "i":
        rule.iniface, rule.inv_in = check_iface(arg), invert
    elif letter == "o":
        rule.outiface, rule.inv_out = check_iface(arg), invert
    else:
        return False
    seen.add(letter)
    return True


def _selectors(words: list[str], fr: FastRule, groups: GroupCache) -> bool:
    """The standard selectors between `-A CHAIN` and the first ` -m `/` -j `/` -g ` of a line."""
    n = len(words)
    i = 2
    invert = False
    while i < n:
        tok = words[i]
        if tok == "!":
            if invert:
                return False
            invert = True
        elif tok == "-f":
            if "f" in fr.seen or fr.rule.family != NFPROTO_IPV4:
                return False
            fr.seen.add("f")
            fr.rule.frag, fr.rule.inv_frag = True, invert
            invert = False
        else:
            if (len(tok) != 2 or tok[0] != "-" or i + 1 >= n
                    or not _selector(tok[1], words[i + 1], invert, fr, groups)):
                return False
            invert = False
            i += 1
        i += 1
    return not invert


_PIECES: Final = re.compile(" -([mjg]) ")
# the `-p` values ip6tables warns about ("never matched protocol": extension headers); the parser's too
IP6_EXTHDR_PROTOS: Final = frozenset({43, 44, 51, 60})


def parse_fast_line(line: str, groups: GroupCache, family: int = NFPROTO_IPV4) -> FastRule | None:
    """A `-A CHAIN ...` restore line in iptables-save's shape, or None (see the module's text).

    The line is cut at ` -m `, ` -j ` and ` -g ` outside quotes, and each piece after the first is looked
    up by its text: a piece seen before costs one dictionary look-up, without splitting it into words.
    """
    try:
        return _parse_line(line, groups, family)
    except RulesError:
        return None  # the general loop reports it, with everything it checks before


def _parse_line(line: str, groups: GroupCache, family: int) -> FastRule | None:
    if line[:3] != "-A " or "\\" in line or "\t" in line or "\r" in line or "\n" in line:
        return None
    parts = _PIECES.split(line)
    if '"' in line:
        if '"' in parts[0]:
            return None
        for k in range(2, len(parts), 2):
            if parts[k].count('"') & 1:
                return None  # a cut inside quotes
    words = parts[0].split(" ")
    if len(words) < 2 or "" in words:
        return None
    rule = Rule() if family == NFPROTO_IPV4 else Rule(family=family)
    fr = FastRule(words[1], rule)
    targets, target_names = (TARGETS, IPTABLES_TARGET_NAMES) if family == NFPROTO_IPV4 else (
        TARGETS6, IP6TABLES_TARGET_NAMES)
    if len(words) > 2 and not _selectors(words, fr, groups):
        return None
    seen = fr.seen
    # the pieces seen before under this protocol: matches and targets apart
    by_text = groups.by_text.get((family, rule.proto, rule.inv_proto))
    if by_text is None:
        by_text = groups.by_text[(family, rule.proto, rule.inv_proto)] = ({}, {})
    pairs = iter(parts)
    next(pairs)
    for letter, text in zip(pairs, pairs, strict=True):
        if letter == "m":
            piece = by_text[0].get(text)
            if piece is None:
                piece = by_text[0][text] = _read_piece(letter, text, rule)
                if piece is None:
                    return None
            seen.add("m")
            shared = piece[3]
            if shared is not None:
                rule.matches.append(shared)  # type: ignore[arg-type]  # a match piece holds a match
                fr.loaded.append(shared)
            elif piece[0] is not None:
                _made(piece[0], piece[2], fr)
            continue
        if "j" in seen or "g" in seen:
            return None
        if letter == "g":
            if not text or " " in text:
                return None
            seen.add("g")
            fr.target_name = rule.jump = text
            rule.goto = True
            continue
        if text not in targets and " " not in text and '"' not in text:
            # a verdict or a chain (their names repeat little: not worth a cache entry)
            if not text or (text in target_names and text not in BUILTIN_TARGETS):
                return None
            seen.add("j")
            fr.target_name = rule.jump = text
            continue
        piece = by_text[1].get(text)
        if piece is None:
            piece = by_text[1][text] = _read_piece(letter, text, rule)
            if piece is None:
                return None
        cls, name, group, shared = piece
        seen.add("j")
        fr.target_name = rule.jump = name
        if shared is not None:
            _add(shared, fr)
        elif cls is not None:
            _made(cls, group, fr)
    return fr


def _piece_words(text: str) -> list[str]:
    """`tokenize_restore_line(text)` (a piece has no backslash), quicker for the usual shapes: words between
    single spaces, the last one possibly quoted (`comment --comment "ns/svc:http cluster IP"`)."""
    if "  " not in text:
        if '"' not in text:
            return text.split(" ")
        q = text.find('"')
        if q > 0 and text[q - 1] == " " and text[-1] == '"' and text.count('"') == 2 and q < len(text) - 1:
            words = text[:q - 1].split(" ")
            words.append(text[q + 1:-1])
            return words
    return tokenize_restore_line(text)


def _tables(family: int) -> tuple[dict[str, type[Match]], dict[str, type[Target]], frozenset[str]]:
    """The match and target classes by name, and the target names, of iptables or ip6tables."""
    if family == NFPROTO_IPV4:
        return MATCHES, TARGETS, IPTABLES_TARGET_NAMES
    return MATCHES6, TARGETS6, IP6TABLES_TARGET_NAMES


def _read_piece(letter: str, text: str, rule: Rule) -> _Piece | None:
    """What the text after ` -m ` / ` -j ` is: an extension and its options, or a verdict or chain."""
    words = _piece_words(text)
    if not words or not words[0]:
        return None
    name = words[0]
    matches, targets, target_names = _tables(rule.family)
    cls: type[Match] | type[Target] | None
    if letter == "m":
        cls = matches.get(name)
    elif name in BUILTIN_TARGETS:
        cls = None
    else:
        cls = targets.get(name)
        if cls is None and name in target_names:
            return None
    if cls is None:
        return (None, name, [], None) if len(words) == 1 and letter == "j" else None
    opts = _opt_table(cls)
    if opts is None:
        return None
    o = opts.get(words[1][2:]) if len(words) == 3 and words[1][:2] == "--" else None
    if o is not None and o.nargs == 1:
        group: _Group = [(o.name, words[2], False)]  # `NAME --opt VALUE`, as _scan would read it
    else:
        scanned = _scan(opts, words, 1)
        if scanned is None or scanned[0] != len(words):
            return None
        group = scanned[1]
    return cls, name, group, _parsed(cls, group, rule) if _shareable(cls) else None


def _extension(cls: type[Extension], argv: list[str], i: int, fr: FastRule, groups: GroupCache) -> int:
    """The options of a just-loaded extension from argv[i] on (shared when it may be); the index after
    them, or -1: not this shape."""
    opts = _opt_table(cls)
    scanned = _scan(opts, argv, i) if opts is not None else None
    if scanned is None:
        return -1
    end, group = scanned
    rule = fr.rule
    if _shareable(cls):
        key = (cls, rule.family, rule.proto, rule.inv_proto, *argv[i:end])
        ext = groups.by_words.get(key)
        if ext is None:
            ext = groups.by_words[key] = _parsed(cls, group, rule)
        _add(ext, fr)
    else:
        _made(cls, group, fr)
    return end


def parse_fast(argv: list[str], groups: GroupCache, family: int = NFPROTO_IPV4) -> FastRule | None:
    """A `-A CHAIN ...` restore line's words in iptables-save's shape, or None (see the module's text)."""
    try:
        return _parse(argv, groups, family)
    except RulesError:
        return None  # the general loop reports it, with everything it checks before


def _parse(argv: list[str], groups: GroupCache, family: int) -> FastRule | None:
    n = len(argv)
    if n < 2 or argv[0] != "-A":
        return None
    rule = Rule() if family == NFPROTO_IPV4 else Rule(family=family)
    fr = FastRule(argv[1], rule)
    matches, targets, target_names = _tables(family)
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
            if "f" in seen or family != NFPROTO_IPV4:
                return None
            seen.add("f")
            rule.frag, rule.inv_frag = True, invert
            invert = False
            i += 1
            continue
        if i + 1 >= n:
            return None
        arg = argv[i + 1]
        i += 2
        if letter in ("m", "j", "g"):
            if invert or (letter != "m" and ("j" in seen or "g" in seen)):
                return None
            seen.add(letter)
            cls: type[Match] | type[Target] | None = None
            if letter == "m":
                cls = matches.get(arg)
                if cls is None:
                    return None
            else:
                if not arg:
                    return None
                fr.target_name = rule.jump = arg
                if letter == "g":
                    rule.goto = True
                elif arg not in BUILTIN_TARGETS:
                    cls = targets.get(arg)
                    if cls is None and arg in target_names:
                        return None
            if cls is not None:
                i = _extension(cls, argv, i, fr, groups)
                if i < 0:
                    return None
            continue
        if not _selector(letter, arg, invert, fr, groups):
            return None
        invert = False
    return None if invert else fr
