"""`natbox gateway` argument handling and the "would fight the kernel" rules (pure: no root needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from natbox.cli.gateway import cli_gateway, parse_gateway_args
from natbox.gateway.kernel import kernel_conflicts


def test_args() -> None:
    cfg = parse_gateway_args(["h.toml", "--no-ring", "--tap-netns", "tap0=nbx-x-vm/eth0", "--tap-netns",
                              "tap1=ns2", "--seed", "7", "--duration", "1.5", "--control", "/run/nb.sock"])
    assert cfg.host_file == "h.toml" and not cfg.ring and cfg.vnet_hdr
    assert cfg.tap_netns == {"tap0": ("nbx-x-vm", "eth0"), "tap1": ("ns2", "tap1")}
    assert (cfg.seed, cfg.duration, cfg.control) == (7, 1.5, "/run/nb.sock")


@pytest.mark.parametrize(("argv", "message"), [
    ([], "missing HOST_FILE"),
    (["a", "b"], "unexpected argument"),
    (["a", "--bogus"], "unknown option"),
    (["a", "--seed"], "expected one argument"),
    (["a", "--seed", "x"], "integer"),
    (["a", "--tap-netns", "tap0"], "NAME=NETNS"),
    (["--adopt", "a"], "give no HOST_FILE"),
    (["--adopt", "--user", "nobody"], "cannot be combined with --user"),
])
def test_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_gateway(argv) == 2
    assert message in capsys.readouterr().err


def test_conflicts() -> None:
    assert kernel_conflicts("lan0", ["10.0.1.1/24"], [], True) is None
    why = kernel_conflicts("lan0", ["10.0.1.1/24"], ["10.9.9.9/24"], True)
    assert why is not None and "forwarding=1" in why and "10.9.9.9/24" in why
    why = kernel_conflicts("lan0", ["10.0.1.1/24"], ["10.0.1.1/24"], False)
    assert why is not None and "answer ARP" in why
    # a different kernel address with forwarding off: tolerated (a warning at start)
    assert kernel_conflicts("lan0", ["10.0.1.1/24"], ["10.0.1.77/24"], False) is None


def test_bad_host_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "h.toml"
    p.write_text('[[interface]]\nname = "x"\nbogus = 1\n')
    assert cli_gateway([str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(p) in err[0]


def test_missing_interface(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "h.toml"
    p.write_text('[[interface]]\nname = "nbxnone0"\naddresses = ["10.0.0.1/24"]\n')
    assert cli_gateway([str(p)]) == 2
    assert "nbxnone0: no such interface" in capsys.readouterr().err


def test_bad_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "h.toml"
    p.write_text('[[interface]]\nname = "nbxnone0"\n[rules]\ntext = "*nat\\n-A NOPE -j ACCEPT\\nCOMMIT\\n"\n')
    assert cli_gateway([str(p)]) == 2
    assert "rules.text" in capsys.readouterr().err


def test_no_any_in_the_gateway() -> None:
    """natbox.gateway and its command line are typed without `Any` (issue #11)."""
    import ast

    from natbox.testing.paths import SRC

    files = [*sorted((SRC / "natbox" / "gateway").glob("*.py")), SRC / "natbox" / "cli" / "gateway.py"]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
            assert name != "Any", f"{path.name}:{getattr(node, 'lineno', '?')} uses Any"
