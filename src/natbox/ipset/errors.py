"""ipset's error: the message ipset 7.17 prints after `ipset v7.17: ` and its exit status."""

from __future__ import annotations

from natbox.errors import NatboxError

__all__ = ["IPSET_VERSION", "IpsetError"]

IPSET_VERSION = "v7.17"
OTHER_PROBLEM = 1
PARAMETER_PROBLEM = 2


class IpsetError(NatboxError):
    """A refused ipset command: the kernel's or the library's message (lib/errcode.c) and exit code."""

    def __init__(self, message: str, exit_code: int = OTHER_PROBLEM, *, help_hint: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.help_hint = help_hint  # followed by "Try `ipset help' for more information."
