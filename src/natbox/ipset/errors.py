"""ipset's error: the message ipset 7.17 prints after `ipset v7.17: ` and its exit status."""

from __future__ import annotations

from typing import Final

from natbox.errors import NatboxError

__all__ = ["E_BUG_MANDATORY", "IPSET_VERSION", "IpsetError", "ProtoFamilyError"]

IPSET_VERSION: Final = "v7.17"
OTHER_PROBLEM: Final = 1
PARAMETER_PROBLEM: Final = 2
E_BUG_MANDATORY = "There are missing mandatory flags but can't check them. It's a bug, please report the problem."


class IpsetError(NatboxError):
    """A refused ipset command: the kernel's or the library's message (lib/errcode.c) and exit code."""

    def __init__(self, message: str, exit_code: int = OTHER_PROBLEM, *, help_hint: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.help_hint = help_hint  # followed by "Try `ipset help' for more information."


class ProtoFamilyError(IpsetError):
    """`ipset_parse_proto_port` refusing ICMP in an inet6 set or ICMPv6 in an inet one. ipset then loses the
    message in its own bookkeeping: `add` adds "Invalid add command: missing setname" (the only line a
    restore keeps), `del` and `test` report a library bug instead (recorded, ipset6_7.17.json)."""

    def for_command(self, cmd: str, restore: bool) -> IpsetError:
        if cmd != "add":
            return IpsetError(E_BUG_MANDATORY)
        tail = "Invalid add command: missing setname"
        return IpsetError(tail if restore else f"{self.message}\n{tail}")
