"""Where the test suite finds the repository, its examples and the shared material beside it.

No machine's absolute path is written anywhere: the repository is found from this package (natbox is
installed editable for the tests, `pip install -e '.[test]'`), and the shared folder (captures, conformance
tests, real rulesets) is `NATBOX_SHARED` when set, else the `shared/` folder beside the checkout, which is
how both a developer's machine and CI lay it out. Run from an installed build (the compiled one), the
tests find the checkout through `NATBOX_REPO`.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["EXAMPLES", "IMPORT_ROOT", "LAB_EXAMPLES", "PCAPS", "REPO", "SHARED", "SRC", "TESTS"]

# NATBOX_REPO names the checkout when natbox runs from an installed build (scripts/build-compiled.sh's venv)
SRC = Path(os.environ["NATBOX_REPO"]) / "src" if os.environ.get("NATBOX_REPO") else Path(__file__).resolve().parents[2]
REPO = SRC.parent
# the folder this process imports natbox from (SRC, or an installed build's site-packages): the PYTHONPATH
# the tests give the natbox processes they start, so those run the same build (pure or compiled) as the tests
IMPORT_ROOT = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
EXAMPLES = REPO / "examples"
LAB_EXAMPLES = SRC / "natbox" / "lab" / "examples"
SHARED = Path(os.environ["NATBOX_SHARED"]) if os.environ.get("NATBOX_SHARED") else REPO.parent / "shared"
PCAPS = SHARED / "external" / "pcaps"
