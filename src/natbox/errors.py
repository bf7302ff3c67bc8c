"""natbox's error classes: one base, `NatboxError`, and the three kinds every command reports the same way.

- `ConfigError`: a configuration file or ruleset that cannot be used (a host file, a lab file, a scenario,
  a snapshot, a rules file). The message is one line that starts with the place (``file:line: key``) and
  says what is wrong. It is also a `ValueError`, so code that already catches ValueError keeps working.
- `UsageError`: a command line that cannot be run (an unknown option, a missing argument, an input file
  that cannot be read). One line; the commands exit with status 2.
- `ScenarioError`: a scenario file (natbox replay --scenario, natbox difftest) that cannot be run.

Every other error class of natbox subclasses one of these (HostError, HostFileError, SnapshotError,
LabError, RulesError, CaptureError ...), so a command can catch `NatboxError` once and print one line
instead of a traceback.
"""

from __future__ import annotations

__all__ = ["ConfigError", "NatboxError", "ScenarioError", "UsageError"]


class NatboxError(Exception):
    """The base of every error natbox raises on purpose; str() is one line, meant for a user."""


class ConfigError(NatboxError, ValueError):
    """A configuration file or ruleset that cannot be used; the message names file:line and the key."""


class UsageError(NatboxError):
    """A command line that cannot be run, or an input it names that cannot be read: one line, exit code 2."""


class ScenarioError(ConfigError):
    """A scenario file that cannot be run; the message names file:line and the key."""
