"""natbox's PEP 517 build backend: setuptools' own, plus mypy as a build requirement when NATBOX_COMPILE asks
for the compiled (mypyc) build (see setup.py). pyproject.toml names it with `backend-path = ["scripts"]`."""

from __future__ import annotations

import os

from setuptools import build_meta as _setuptools
from setuptools.build_meta import (  # noqa: F401  (the hooks this backend passes through unchanged)
    build_sdist,
    build_wheel,
    get_requires_for_build_sdist,
    prepare_metadata_for_build_editable,
)

MYPY = "mypy>=1.10"


def _compile() -> bool:
    return os.environ.get("NATBOX_COMPILE", "").strip().lower() not in ("", "0", "no", "false")


def get_requires_for_build_wheel(config_settings: dict[str, object] | None = None) -> list[str]:
    # setuptools runs setup.py to collect its requirements, before mypy is there: setup.py then adds no
    # extensions (NATBOX_BUILD_NO_EXT)
    os.environ["NATBOX_BUILD_NO_EXT"] = "1"
    try:
        reqs: list[str] = _setuptools.get_requires_for_build_wheel(config_settings)
    finally:
        del os.environ["NATBOX_BUILD_NO_EXT"]
    return [*reqs, MYPY] if _compile() else reqs


def prepare_metadata_for_build_wheel(metadata_directory: str, config_settings: dict[str, object] | None = None
                                     ) -> str:
    # the metadata does not depend on the extensions: without NATBOX_BUILD_NO_EXT, setup.py would run the whole
    # mypyc code generation (minutes) once more just for it
    os.environ["NATBOX_BUILD_NO_EXT"] = "1"
    try:
        name: str = _setuptools.prepare_metadata_for_build_wheel(metadata_directory, config_settings)
    finally:
        del os.environ["NATBOX_BUILD_NO_EXT"]
    return name


def _no_compiled_editable() -> None:
    if _compile():
        raise SystemExit("natbox: NATBOX_COMPILE builds a wheel (`NATBOX_COMPILE=1 pip install .`); an editable "
                         "install is pure Python (compiled .so files beside src/ would shadow the sources)")


def get_requires_for_build_editable(config_settings: dict[str, object] | None = None) -> list[str]:
    _no_compiled_editable()
    reqs: list[str] = _setuptools.get_requires_for_build_editable(config_settings)
    return reqs


def build_editable(wheel_directory: str, config_settings: dict[str, object] | None = None,
                   metadata_directory: str | None = None) -> str:
    _no_compiled_editable()
    name: str = _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
    return name
