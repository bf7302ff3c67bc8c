"""The rules of the house (ARCHITECTURE.md), checked: the core is sans-IO and imports go downwards."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "natbox"
CORE = ["netfilter.py", "skb.py", "rand.py", "wire", "conntrack", "nat", "rules", "engine", "ipset", "render"]
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


# --- the shape of the code (issue #11) ------------------------------------------------------------------

MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 600
MAX_FUNCTION_LINES = 150
# A longer function is allowed when it mirrors a kernel function of that size and says so in a comment
# or docstring within its first lines: it says it mirrors and names the kernel function, `tcp_packet()`.
_MIRRORS = re.compile(r"\bmirror", re.IGNORECASE)
_KERNEL_FUNCTION = re.compile(r"`?[a-z_][a-z0-9_]*\(\)`?")


def _all_files() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_modules_are_small() -> None:
    sizes = {str(p.relative_to(SRC)): len(p.read_text().splitlines()) for p in _all_files()}
    big = {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES}
    assert not big, f"modules over {MAX_MODULE_LINES} lines: {big}"


def test_classes_and_functions_are_small() -> None:
    problems: list[str] = []
    for path in _all_files():
        text = path.read_text()
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, ast.ClassDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_CLASS_LINES:
                    problems.append(f"class {path.relative_to(SRC)}:{node.lineno} {node.name}: {size} lines")
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                head = "\n".join(lines[max(0, node.lineno - 4) : node.lineno + 8])
                if size > MAX_FUNCTION_LINES and not (_MIRRORS.search(head) and _KERNEL_FUNCTION.search(head)):
                    problems.append(f"def {path.relative_to(SRC)}:{node.lineno} {node.name}: {size} lines")
    assert not problems, "\n".join(problems)


# Header bytes are read through the names in wire/layout.py (`data[thoff + TCPH_FLAGS]`), never by a bare
# number added to a header start (`data[thoff + 13]`) or an absolute slice of a packet (`frame[38:42]`).
_PACKET = r"\b(?:data|frame|d|datagram|pkt|packet|payload|segment|seg|th|uh|ih|buf|inner|hdr|raw|msg|l4|view|mv)"
# a lower-case start plus a number of 2 or more is a bare offset; `+ 1` (the low byte of a 16-bit field
# whose offset is named) and a named offset plus a number (`TCPH_CHECK + 2`, the end of that field) are not
_BARE_OFFSET = re.compile(_PACKET + r"\[\s*[a-z_][a-z0-9_.]*\s*\+\s*(?:[2-9]|\d\d+)\s*[\]:]")
_ABSOLUTE_SLICE = re.compile(_PACKET + r"\[\s*\d+\s*:\s*\d+\s*\]")
# wire/ owns the offsets; natbox.testing builds test packets byte by byte on purpose.
_OFFSETS_ALLOWED = ("wire", "testing")


def test_headers_are_read_by_field_name() -> None:
    problems: list[str] = []
    for path in _all_files():
        rel = path.relative_to(SRC)
        if rel.parts[0] in _OFFSETS_ALLOWED:
            continue
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if _BARE_OFFSET.search(code) or _ABSOLUTE_SLICE.search(code):
                problems.append(f"{rel}:{lineno}: {line.strip()}")
    assert not problems, "header fields by bare offset (use natbox.wire.layout):\n" + "\n".join(problems)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph(files: list[Path]) -> dict[str, set[str]]:
    """Module → the natbox modules it imports anywhere in its body (TYPE_CHECKING and function-level too)."""
    modules = {_module_name(p): p for p in files}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            found: list[str] = []
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    mod = ".".join([*base, node.module] if node.module else base)
                else:
                    mod = node.module or ""
                found = [mod, *(f"{mod}.{a.name}" for a in node.names)]
            for mod in found:
                while mod and mod not in modules:
                    mod = mod.rpartition(".")[0]
                if mod and mod != name:
                    targets.add(mod)
        graph[name] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []
    counter = 0
    for root, imported in graph.items():
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(imported))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, todo = work[-1]
            if todo:
                nxt = todo.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph[nxt])))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    comp.append(member)
                    if member == node:
                        break
                if len(comp) > 1:
                    result.append(sorted(comp))
    return result


def test_no_import_cycles_in_the_core() -> None:
    cycles = _cycles(_import_graph(_core_files()))
    assert not cycles, f"import cycles: {cycles}"


def test_cycle_finder_finds_cycles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_gateway_has_no_any() -> None:
    """The live gateway is typed all the way down: no `Any` in natbox.gateway (mypy --strict checks the rest)."""
    gateway = SRC / "gateway"
    assert gateway.is_dir(), "natbox.gateway is a package"
    for path in sorted(gateway.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Name) and node.id == "Any") or (
                isinstance(node, ast.Attribute) and node.attr == "Any"
            ):
                pytest.fail(f"{path.relative_to(SRC)}:{node.lineno} uses Any")
