"""setuptools script: natbox's wheel, pure Python by default, with the sans-IO core compiled by mypyc when
NATBOX_COMPILE=1 (`NATBOX_COMPILE=1 pip install .`; scripts/build_backend.py then adds mypy to the build
requirements). The project's metadata is pyproject.toml's; this file adds only what a table cannot say:
the compiled extensions and scenarios/ shipped inside the package (natbox/scenarios, for the demos).

The compiled modules are C extensions beside the .py files of the wheel; everything outside COMPILED (cli,
the gateway but gateway/newconn.py, adapters, render, sim, ...) stays plain Python and imports the compiled
modules as usual. Module-level constants of compiled modules are `Final` (mypyc then reads them from C
statics, not from the module's dict on every use). An editable
install is always pure Python (build_backend refuses NATBOX_COMPILE there: .so files beside the sources would
shadow them).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent

# The compiled core: the packages the packet path runs through (ARCHITECTURE.md's sans-IO core minus render).
COMPILED = [
    "src/natbox/netfilter.py",
    "src/natbox/skb.py",
    "src/natbox/wire",
    "src/natbox/conntrack",
    "src/natbox/nat",
    # ipset: all but the set types (store.py, bitmap.py), whose swap exchanges instances' __dict__ and
    # __class__ (ip_set_swap), which native classes do not have
    *(str(p.relative_to(ROOT)) for p in sorted((ROOT / "src/natbox/ipset").glob("*.py"))
      if p.name not in ("store.py", "bitmap.py")),
    "src/natbox/rules",
    "src/natbox/engine",
    # outside the core, the one module of the gateway that runs per packet of --offload-new (every copy the
    # BPF program writes goes through NewConnections.drain into the engine): compiled, its calls into the
    # engine are native calls
    "src/natbox/gateway/newconn.py",
]


def compile_requested() -> bool:
    """NATBOX_COMPILE=1 (or any value but empty/0/no/false) asks for the mypyc build."""
    return os.environ.get("NATBOX_COMPILE", "").strip().lower() not in ("", "0", "no", "false")


class BuildPyWithScenarios(build_py):
    """build_py, plus the repository's scenarios/ copied to natbox/scenarios in the wheel."""

    def run(self) -> None:
        super().run()
        src = ROOT / "scenarios"
        if src.is_dir() and not getattr(self, "editable_mode", False):
            shutil.copytree(src, Path(self.build_lib) / "natbox" / "scenarios", dirs_exist_ok=True)


def _ext_modules() -> list[object]:
    if not compile_requested() or os.environ.get("NATBOX_BUILD_NO_EXT"):  # (set by build_backend)
        return []
    from mypyc.build import mypycify

    os.chdir(ROOT)  # mypycify takes paths relative to the tree and writes its C files under build/
    # NATBOX_COMPILE_OPT=0 builds several times faster (the C compiler's -O0; the same code otherwise): for
    # iterating on compiled-build fixes. Releases and CI use the default -O3.
    opt = os.environ.get("NATBOX_COMPILE_OPT", "3")
    return list(mypycify(["--strict", *COMPILED], opt_level=opt, debug_level="0" if opt == "0" else "1"))


setup(ext_modules=_ext_modules(), cmdclass={"build_py": BuildPyWithScenarios})
