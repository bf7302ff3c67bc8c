"""natbox.errors: one base class, and every error class natbox raises on purpose under it."""

from __future__ import annotations

import pytest

from natbox.adapters.pcap import CaptureError
from natbox.cli import gateway, replay
from natbox.difftest import scenario as difftest_scenario
from natbox.engine.host import HostError
from natbox.engine.hostfile import HostFileError, parse_host_toml
from natbox.engine.snapshot import SnapshotError
from natbox.errors import ConfigError, NatboxError, ScenarioError, UsageError
from natbox.lab.model import LabError
from natbox.rules.model import RulesError
from natbox.sim import scenario as sim_scenario


def test_one_scenario_error_and_one_usage_error() -> None:
    assert sim_scenario.ScenarioError is ScenarioError
    assert difftest_scenario.ScenarioError is ScenarioError
    assert replay.UsageError is UsageError
    assert getattr(gateway, "UsageError", UsageError) is UsageError


@pytest.mark.parametrize("cls", [HostError, HostFileError, SnapshotError, LabError, ScenarioError])
def test_configuration_errors_are_config_errors(cls: type[Exception]) -> None:
    assert issubclass(cls, ConfigError)
    assert issubclass(cls, ValueError)  # callers that caught ValueError before keep working


@pytest.mark.parametrize("cls", [RulesError, CaptureError, UsageError, ConfigError])
def test_every_error_is_a_natbox_error(cls: type[Exception]) -> None:
    assert issubclass(cls, NatboxError)


def test_a_bad_host_file_is_caught_as_natbox_error() -> None:
    with pytest.raises(NatboxError, match=r"^h\.toml:2: interface\[0\]\.name"):
        parse_host_toml("[[interface]]\nname = 1\n", "h.toml")


@pytest.mark.parametrize(("exc", "line"), [
    (ConfigError("h.toml:3: route[0].dev: dev must be str"), "natbox x: h.toml:3: route[0].dev: dev must be str\n"),
    (FileNotFoundError(2, "No such file or directory", "r.v4"), "natbox x: r.v4: No such file or directory\n"),
    (IsADirectoryError(21, "Is a directory", "adir"), "natbox x: adir: Is a directory\n"),
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
     "natbox x: an input is not UTF-8 text (byte 0: invalid start byte; is it a binary file?)\n"),
])
def test_the_dispatcher_turns_what_a_command_lets_escape_into_one_line(
        exc: Exception, line: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A command that lets a user's mistake escape still ends in one line and exit 2, never a traceback."""
    from natbox.cli.main import _run

    def command(argv: object) -> int:
        raise exc

    assert _run("x", command, []) == 2
    assert capsys.readouterr().err == line
