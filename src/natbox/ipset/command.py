"""The `ipset` command language (ipset 7.17 src/ipset.c, lib/ipset.c, lib/session.c), sans-IO.

`IpsetSession(registry, now, rng).run(argv, stdin)` runs one command line and returns
`(exit status, stdout, stderr)` as ipset prints them: `Warning: X is in set S.` for a test that matches,
`ipset v7.17: MESSAGE` for a refusal (with `Error in line N:` inside `restore`), exit 1 for a refused
operation and 2 for a bad command line. `-file FILE` is read through the `read_file` callable the caller
passes in, so this module touches no files.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import Final

from natbox.ipset.bitmap import BitmapSet, ListSet
from natbox.ipset.core import E_NOSET, E_RANGE_LIMIT, IpsetRegistry, check_name, find_type, parse_elems, shown_elem6
from natbox.ipset.elem import PORT_PROTOS, parse_ip_range, parse_proto_port, parse_uint
from natbox.ipset.errors import IPSET_VERSION, PARAMETER_PROBLEM, IpsetError, ProtoFamilyError
from natbox.ipset.settype import SetType
from natbox.ipset.store import IPSET_MAX_TIMEOUT, NFPROTO_UNSPEC, ExtArgs, HashSet, IpSet, SetOpts
from natbox.netfilter import NFPROTO_IPV4, NFPROTO_IPV6

__all__ = ["IpsetSession"]

_COMMANDS: Final = {
    "create": "create", "n": "create", "-N": "create", "add": "add", "-A": "add", "del": "del", "-D": "del",
    "test": "test", "-T": "test", "list": "list", "-L": "list", "save": "save", "-S": "save",
    "restore": "restore", "-R": "restore", "flush": "flush", "-F": "flush", "destroy": "destroy",
    "x": "destroy", "-X": "destroy", "swap": "swap", "-W": "swap", "rename": "rename", "-E": "rename",
    "e": "rename", "w": "swap", "version": "version", "-v": "version", "-V": "version", "--version": "version",
}
HELP: Final = "Try `ipset help' for more information."
E_REF: Final = "The set to which you referred with 'before' or 'after' does not exist."
U32: Final = 0xFFFFFFFF


class _Opts:
    def __init__(self) -> None:
        self.exist = False
        self.names = False
        self.terse = False
        self.output = "plain"
        self.file: str | None = None
        self.quiet = False


def _syntax(msg: str) -> IpsetError:
    return IpsetError(f"Syntax error: {msg}")


class IpsetSession:
    """One ipset invocation against a registry at time `now` (seconds on the injected clock)."""

    def __init__(self, registry: IpsetRegistry, now: float, rng: Callable[[], int],
                 read_file: Callable[[str], str] | None = None) -> None:
        self.reg = registry
        self.now = now
        self.rng = rng
        self.read_file = read_file
        self._restoring = False

    def run(self, argv: list[str], stdin: str = "") -> tuple[int, str, str]:
        self.out: list[str] = []
        self.err: list[str] = []
        try:
            rc = self._run(argv, stdin)
        except IpsetError as e:
            self.err.append(f"ipset {IPSET_VERSION}: {e.message}\n" + (HELP + "\n" if e.help_hint else ""))
            rc = e.exit_code
        return rc, "".join(self.out), "".join(self.err)

    # --- the command line ---------------------------------------------------------------------------

    def _split_opts(self, argv: list[str], opts: _Opts) -> list[str]:
        rest: list[str] = []
        i = 0
        while i < len(argv):
            a = argv[i]
            if a in ("-exist", "-!", "--exist"):
                opts.exist = True
            elif a in ("-name", "-n", "--name"):
                opts.names = True
            elif a in ("-terse", "-t", "--terse"):
                opts.terse = True
            elif a in ("-quiet", "-q", "--quiet"):
                opts.quiet = True
            elif a in ("-resolve", "-r", "-sorted", "-s", "--resolve", "--sorted"):
                pass
            elif a in ("-output", "-o", "--output", "-file", "-f", "--file"):
                if i + 1 >= len(argv):
                    raise IpsetError(f"Syntax error: missing mandatory argument to option {a}", PARAMETER_PROBLEM,
                                     help_hint=True)
                i += 1
                if a.lstrip("-").startswith("o"):
                    if argv[i] not in ("plain", "save", "xml"):
                        raise IpsetError(f"Syntax error: unknown output mode '{argv[i]}'")
                    opts.output = argv[i]
                else:
                    opts.file = argv[i]
            else:
                rest.append(a)
            i += 1
        return rest

    def _run(self, argv: list[str], stdin: str) -> int:
        opts = _Opts()
        rest = self._split_opts(argv, opts)
        if not rest:
            raise IpsetError("No command specified.", PARAMETER_PROBLEM, help_hint=True)
        cmd = _COMMANDS.get(rest[0])
        if cmd is None:
            raise IpsetError(f"No command specified: unknown argument {rest[0]}", PARAMETER_PROBLEM,
                             help_hint=True)
        if cmd == "version":
            self.out.append(f"ipset {IPSET_VERSION}, protocol version: 7\n")
            return 0
        if cmd == "restore":
            text = stdin
            if opts.file is not None:
                if self.read_file is None:
                    raise IpsetError(f"Cannot open {opts.file} for reading")
                text = self.read_file(opts.file)
            return self._restore(text, opts)
        return self._command(cmd, rest[1:], opts)

    def _restore(self, text: str, opts: _Opts) -> int:
        """`ipset restore`: one command per line; the first refusal stops it, naming the line."""
        self._restoring = True
        try:
            return self._restore_lines(text, opts)
        finally:
            self._restoring = False

    def _restore_lines(self, text: str, opts: _Opts) -> int:
        for lineno, line in enumerate(text.splitlines(), 1):
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            if s == "COMMIT":
                continue
            if '"' in s or "'" in s or "\\" in s:
                try:
                    words = shlex.split(s)
                except ValueError:
                    words = s.split()
            else:
                words = s.split()  # the common case, without shlex's cost (100,000-line restores)
            cmd = _COMMANDS.get(words[0])
            if cmd is None:
                raise IpsetError(f"No command specified: unknown argument {words[0]}", PARAMETER_PROBLEM,
                                 help_hint=True)
            try:
                if cmd in ("restore", "version", "list", "save"):
                    raise IpsetError(f"Syntax error: Command '{cmd}' is invalid in restore mode.",
                                     PARAMETER_PROBLEM)
                line_opts = _Opts()
                line_opts.exist = opts.exist
                rest = self._split_opts(words[1:], line_opts)
                self._command(cmd, rest, line_opts)
            except IpsetError as e:
                raise IpsetError(f"Error in line {lineno}: {e.message}", e.exit_code) from None
        return 0

    def _command(self, cmd: str, args: list[str], opts: _Opts) -> int:
        reg = self.reg
        if cmd in ("list", "save"):
            return self._list(cmd, args, opts)
        if cmd in ("flush", "destroy"):
            self._max_args(args, 1)
            name = args[0] if args else None
            reg.flush(name) if cmd == "flush" else reg.destroy(name)
            return 0
        if cmd in ("swap", "rename"):
            if len(args) < 2:
                raise IpsetError(f"Missing {'second ' if args else ''}mandatory argument to command {cmd}",
                                 PARAMETER_PROBLEM, help_hint=True)
            self._max_args(args, 2)
            reg.swap(args[0], args[1]) if cmd == "swap" else reg.rename(args[0], check_name(args[1]))
            return 0
        if not args:
            raise IpsetError(f"Missing mandatory argument to command {cmd}", PARAMETER_PROBLEM, help_hint=True)
        if cmd == "create":
            if len(args) < 2:
                raise IpsetError("Missing second mandatory argument to command create", PARAMETER_PROBLEM,
                                 help_hint=True)
            reg.create(self._create(check_name(args[0]), find_type(args[1]), args[2:]), opts.exist)
            return 0
        s = reg.find(args[0])
        if len(args) < 2:
            raise IpsetError(f"Missing second mandatory argument to command {cmd}", PARAMETER_PROBLEM,
                             help_hint=True)
        s.gc(self.now)
        if cmd == "test":
            return self._test(s, args[1], args[2:])
        ext, before, ref = self._adt_opts(s, args[2:], cmd)
        if isinstance(s, ListSet):
            m = reg.get(args[1])
            if m is None:
                raise IpsetError("Set to be added/deleted/tested as element does not exist.")
            if m.type.kind == "list":
                raise IpsetError("Sets with list:set type cannot be added to the set.")
            if cmd == "add":
                s.add_set(m, ext, self.now, opts.exist, before, ref)
            else:
                s.del_set(m, self.now, opts.exist)
            return 0
        try:
            elems, _ = parse_elems(s, args[1])
        except ProtoFamilyError as pfe:
            raise pfe.for_command(cmd, self._restoring) from None
        for e in elems:
            if cmd == "add":
                s.add(e, ext, self.now, opts.exist)
            else:
                s.delete(e, self.now, opts.exist)
        return 0

    @staticmethod
    def _max_args(args: list[str], n: int) -> None:
        if len(args) > n:
            raise IpsetError(f"Unknown argument: `{args[n]}'", PARAMETER_PROBLEM, help_hint=True)

    def _test(self, s: IpSet, text: str, rest: list[str]) -> int:
        if isinstance(s, ListSet):
            m = self.reg.get(text)
            before, ref = 0, None
            shown = text
            if len(rest) >= 2 and rest[0] in ("before", "after"):
                ref = self.reg.get(rest[1])
                if ref is None:
                    raise IpsetError(E_REF)
                before = 1 if rest[0] == "before" else -1
                # ipset 7.17 prints "after" whichever of the two was tested (recorded: "test l a before b"
                # answers "a after b is NOT in set l.")
                shown = f"{text} after {rest[1]}"
            found = m is not None and s.test_set(m, self.now, before, ref)
        else:
            _, nomatch_flag, _ = self._adt_opts(s, rest, "test")
            try:
                elems, all_cidrs = parse_elems(s, text, for_test=True)
            except ProtoFamilyError as pfe:
                raise pfe.for_command("test", self._restoring) from None
            e = s.lookup(elems[0], self.now, all_cidrs)
            found = e is not None and (not e.nomatch) != bool(nomatch_flag)
            shown = shown_elem6(s, text) if s.family == NFPROTO_IPV6 else text
        if found:
            self.err.append(f"Warning: {shown} is in set {s.name}.\n")
            return 0
        self.err.append(f"{shown} is NOT in set {s.name}.\n")
        return 1

    def _adt_opts(self, s: IpSet, args: list[str], cmd: str) -> tuple[ExtArgs, int, IpSet | None]:
        """The options after an element: `timeout packets bytes comment nomatch skb* before after`."""
        ext = ExtArgs()
        before, ref = 0, None
        i = 0
        while i < len(args):
            a = args[i]
            if a == "nomatch" and s.type.nomatch:
                ext.nomatch = True
                i += 1
                continue
            known = ("timeout", "packets", "bytes", "comment", "skbmark", "skbprio", "skbqueue")
            if a not in known + (("before", "after") if isinstance(s, ListSet) else ()):
                raise IpsetError(f"Unknown argument: `{a}'", PARAMETER_PROBLEM, help_hint=True)
            if i + 1 >= len(args):
                raise IpsetError(f"Missing mandatory argument of option `{a}'", PARAMETER_PROBLEM, help_hint=True)
            v = args[i + 1]
            if a == "timeout":
                ext.timeout = parse_uint(v, 0, IPSET_MAX_TIMEOUT)
            elif a == "packets":
                ext.packets = parse_uint(v, 0, (1 << 64) - 1)
            elif a == "bytes":
                ext.bytes = parse_uint(v, 0, (1 << 64) - 1)
            elif a == "comment":
                if '"' in v:
                    raise _syntax('" character is not permitted in comments')
                ext.comment = v
            elif a == "skbmark":
                mark, _, mask = v.partition("/")
                ext.skbmark = parse_uint(mark, 0, U32)
                ext.skbmarkmask = parse_uint(mask, 0, U32) if mask else U32
            elif a == "skbprio":
                major, colon, minor = v.partition(":")
                if not colon:
                    raise _syntax(f"cannot parse {v} as skbprio")
                try:
                    ext.skbprio = (int(major, 16) << 16 | int(minor, 16)) & U32
                except ValueError:
                    raise _syntax(f"cannot parse {v} as skbprio") from None
            elif a == "skbqueue":
                ext.skbqueue = parse_uint(v, 0, 0xFFFF)
            elif isinstance(s, ListSet):
                ref = self.reg.get(v)
                if ref is None:
                    raise IpsetError(E_REF)
                before = 1 if a == "before" else -1
            else:
                raise IpsetError(f"Unknown argument: `{a}'", PARAMETER_PROBLEM, help_hint=True)
            i += 2
        if cmd != "test":
            s.check_ext(ext)
        return ext, (1 if ext.nomatch else 0) if cmd == "test" else before, ref

    def _create(self, name: str, t: SetType, args: list[str]) -> IpSet:
        """`ipset create NAME TYPE [options]`: the options each type's create command accepts."""
        flag_on: dict[str, bool] = {}
        timeout: int | None = None
        hopts: dict[str, int] = {}
        rng_lo = rng_hi = None
        netmask = 32
        netmask_text: str | None = None
        size = 8
        i = 0
        flags = ("counters", "comment", "skbinfo", "forceadd")
        valued = {"timeout", "family", "hashsize", "maxelem", "netmask", "bucketsize", "initval", "range", "size",
                  "probes", "resize", "gc"}
        allowed = {"timeout", "counters", "comment", "skbinfo", "forceadd"}
        if t.kind == "hash":
            allowed |= {"family", "hashsize", "maxelem", "bucketsize", "initval", "probes", "resize", "gc"}
            allowed |= {"netmask"} if t.netmask else set()
        elif t.kind == "bitmap":
            allowed |= {"range"} | ({"netmask"} if t.netmask else set())
            allowed.discard("forceadd")
        else:
            allowed |= {"size"}
            allowed.discard("forceadd")
        family: int | None = None
        self._unknown_create_args(args, allowed, flags)
        while i < len(args):
            a = args[i]
            if a in ("-4", "-6") and "family" in allowed:  # ipset's create options `-4` and `-6`
                family = self._family(family, "inet" if a == "-4" else "inet6")
                i += 1
                continue
            if a not in allowed:
                raise IpsetError(f"Unknown argument: `{a}'", PARAMETER_PROBLEM, help_hint=True)
            if a in flags:
                flag_on[a] = True
                i += 1
                continue
            if i + 1 >= len(args):
                raise IpsetError(f"Missing mandatory argument of option `{a}'", PARAMETER_PROBLEM, help_hint=True)
            assert a in valued
            v = args[i + 1]
            i += 2
            if a == "family":
                family = self._family(family, v)
            elif a == "timeout":
                timeout = parse_uint(v, 0, IPSET_MAX_TIMEOUT)
            elif a in ("hashsize", "maxelem", "initval", "bucketsize"):
                hopts[a] = parse_uint(v, 0, 255 if a == "bucketsize" else U32)
            elif a == "netmask":
                netmask_text = v
            elif a == "size":
                size = parse_uint(v, 1, U32)
            elif a == "range":
                rng_lo, rng_hi = self._range(t, v)
        v6 = family == NFPROTO_IPV6
        if netmask_text is not None:  # checked once the family is known (its range is 1-32 or 1-128)
            top = 128 if v6 else 32
            try:
                netmask = parse_uint(netmask_text, 1, top)
            except IpsetError as e:
                raise IpsetError(e.message + f"\nSyntax error: netmask is out of the inclusive range of 1-{top}"
                                 ) from None
        elif v6:
            netmask = 128
        opts = SetOpts(timeout, flag_on.get("counters", False), flag_on.get("comment", False),
                       flag_on.get("skbinfo", False), flag_on.get("forceadd", False))
        if t.kind == "hash":
            initval = hopts["initval"] if "initval" in hopts else self.rng() & U32
            if family == NFPROTO_UNSPEC or (v6 and t.hkey6 is None):
                raise IpsetError("Protocol family not supported by the set type")
            return HashSet(name, t, hashsize=hopts.get("hashsize", 1024), maxelem=hopts.get("maxelem", 65536),
                           netmask=netmask, initval=initval, bucketsize=hopts.get("bucketsize", 12), opts=opts,
                           family=NFPROTO_IPV6 if v6 else NFPROTO_IPV4)
        if t.kind == "bitmap":
            if rng_lo is None or rng_hi is None:
                raise IpsetError("Mandatory option `range' is missing", PARAMETER_PROBLEM, help_hint=True)
            if t.name == "bitmap:ip":
                m = (U32 << (32 - netmask)) & U32
                rng_lo, rng_hi = rng_lo & m, rng_hi | (~m & U32)
                if (rng_hi - rng_lo) >> (32 - netmask) >= 65536:
                    raise IpsetError(E_RANGE_LIMIT)
            return BitmapSet(name, t, rng_lo, rng_hi, netmask, opts)
        return ListSet(name, t, size, opts)

    @staticmethod
    def _unknown_create_args(args: list[str], allowed: set[str], flags: tuple[str, ...]) -> None:
        """ipset names an option the type does not take before it parses any value (recorded: `create bi
        bitmap:ip range fd00::/120 family inet6` is refused for `family`, not for the range)."""
        i = 0
        while i < len(args):
            a = args[i]
            if a in ("-4", "-6") and "family" in allowed:
                i += 1
                continue
            if a not in allowed:
                raise IpsetError(f"Unknown argument: `{a}'", PARAMETER_PROBLEM, help_hint=True)
            i += 1 if a in flags else 2

    @staticmethod
    def _family(given: int | None, v: str) -> int:
        """`ipset_parse_family`: inet/ipv4/-4, inet6/ipv6/-6, any/unspec (refused by every type natbox has
        that takes the option)."""
        if given is not None:
            raise _syntax("family already specified")
        fam = {"inet": NFPROTO_IPV4, "ipv4": NFPROTO_IPV4, "-4": NFPROTO_IPV4, "inet6": NFPROTO_IPV6,
               "ipv6": NFPROTO_IPV6, "-6": NFPROTO_IPV6, "any": NFPROTO_UNSPEC, "unspec": NFPROTO_UNSPEC}.get(v)
        if fam is None:
            raise _syntax(f"unknown inet family {v}")
        return fam

    @staticmethod
    def _range(t: SetType, v: str) -> tuple[int, int]:
        if t.name == "bitmap:ip":
            lo, hi, _ = parse_ip_range(v)
            return lo, hi
        proto, lo, hi = parse_proto_port(v)
        if proto not in PORT_PROTOS:
            raise _syntax(f"invalid port range {v}")
        return lo, hi

    def _list(self, cmd: str, args: list[str], opts: _Opts) -> int:
        self._max_args(args, 1)
        sets = [self.reg.find(args[0])] if args else self.reg.ordered()
        if opts.output == "xml":
            if opts.names:
                body = "".join(f'<ipset name="{s.name}"/>\n' for s in sets)
            else:
                body = "".join(self.reg.xml_text(s, self.now, terse=opts.terse) for s in sets)
            self.out.append(f"<ipsets>\n{body}</ipsets>\n")
            return 0
        if opts.names:
            self.out.extend(s.name + "\n" for s in sets)
            return 0
        if cmd == "save" or opts.output == "save":
            self.out.extend(self.reg.save_text(s, self.now) for s in sets)
            return 0
        self.out.append("\n".join(self.reg.list_text(s, self.now, terse=opts.terse) for s in sets))
        return 0


__all__ += ["E_NOSET"]
