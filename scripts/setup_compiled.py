"""setuptools script for the compiled (mypyc) build; scripts/build-compiled.sh runs it on a copy of the tree.

The normal install (pyproject.toml, hatchling) is pure Python and stays the default. This script compiles the
sans-IO core with mypyc into C extensions beside the .py files of a wheel; everything else in natbox (cli,
gateway, adapters, render, sim, ...) is shipped as plain Python and imports the compiled modules as usual.
Never run it in the repository itself: the .so files it leaves beside the sources would shadow them in the
editable install.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from mypyc.build import mypycify
from setuptools import find_packages, setup

# The compiled core: the packages the packet path runs through (ARCHITECTURE.md's sans-IO core minus render).
COMPILED = [
    "src/natbox/netfilter.py",
    "src/natbox/skb.py",
    "src/natbox/wire",
    "src/natbox/conntrack",
    "src/natbox/nat",
    # ipset: all but the set types (store.py, bitmap.py), whose swap exchanges instances' __dict__ and
    # __class__ (ip_set_swap), which native classes do not have
    *(str(p) for p in sorted(Path("src/natbox/ipset").glob("*.py")) if p.name not in ("store.py", "bitmap.py")),
    "src/natbox/rules",
    "src/natbox/engine",
]

# build-compiled.sh copies pyproject.toml here as project.toml: under its own name pip would build with hatchling
project = tomllib.loads(Path("project.toml").read_text())["project"]

setup(
    name=project["name"],
    version=project["version"],
    description=project["description"],
    python_requires=project["requires-python"],
    package_dir={"": "src"},
    packages=find_packages("src"),
    package_data={"natbox": ["py.typed", "lab/examples/*"]},
    entry_points={"console_scripts": [f"{k}={v}" for k, v in project["scripts"].items()]},
    ext_modules=mypycify(["--strict", *COMPILED], opt_level="3"),
    zip_safe=False,
)
