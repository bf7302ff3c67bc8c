"""The rules of the house (ARCHITECTURE.md), checked: the core is sans-IO and imports go downwards."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "natbox"
CORE = ["netfilter.py", "skb.py", "rand.py", "wire", "conntrack", "nat", "rules", "engine", "ipset"]
FORBIDDEN = {"socket", "select", "selectors", "time", "os", "random", "subprocess", "asyncio", "fcntl"}
# what each layer may import from natbox (besides itself)
ALLOWED = {
    "wire": {"natbox.wire", "natbox.netfilter"},
    "conntrack": {"natbox.conntrack", "natbox.wire", "natbox.netfilter", "natbox.skb", "natbox.rules.api"},
    "nat": {"natbox.nat", "natbox.conntrack", "natbox.wire", "natbox.netfilter", "natbox.skb", "natbox.rand",
            "natbox.rules.api"},
}


def _core_files() -> list[Path]:
    files: list[Path] = []
    for name in CORE:
        p = SRC / name
        files.extend(sorted(p.rglob("*.py")) if p.is_dir() else [p])
    return files


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


@pytest.mark.parametrize("path", _core_files(), ids=lambda p: str(p.relative_to(SRC)))
def test_core_is_sans_io(path: Path) -> None:
    bad = {m for m in _imports(path) if m.split(".")[0] in FORBIDDEN}
    assert not bad, f"{path.name} imports {sorted(bad)}: the core must not touch clocks, sockets or files"


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layers_import_downwards(layer: str) -> None:
    for path in sorted((SRC / layer).rglob("*.py")):
        for mod in _imports(path):
            if mod.startswith("natbox") and not any(mod == a or mod.startswith(a + ".") for a in ALLOWED[layer]):
                pytest.fail(f"{path.relative_to(SRC)} imports {mod}, above the {layer} layer")


def test_core_opens_no_files() -> None:
    for path in _core_files():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open":
                pytest.fail(f"{path.relative_to(SRC)} calls open()")
