"""What every natbox subcommand does the same way: argument parsing, colour, exit codes.

- `parser(prog, description, epilog)` is an `argparse.ArgumentParser` whose description and epilog keep
  their line breaks (the `--help` pages are written to be read as manual pages).
- `parse(parser, argv)` returns the parsed namespace, or the exit code when argparse exited (0 after
  `--help`, 2 after a usage error, with argparse's message on stderr).
- `use_color(mode, stream)`: `--color always|never|auto`; auto means colour only on a terminal, and never
  when `NO_COLOR` is set (https://no-color.org) or `TERM=dumb`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import TextIO

__all__ = ["add_color_option", "parse", "parser", "use_color"]


def parser(prog: str, description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    """An ArgumentParser for a natbox subcommand (raw description and epilog: they are laid out by hand)."""
    return argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def parse(p: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace | int:
    """Parse `argv`; an int is the exit code when argparse has already printed help or an error."""
    try:
        return p.parse_args(list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2


def add_color_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="colour the output: auto (default) colours on a terminal unless NO_COLOR is set or "
                        "TERM=dumb")


def use_color(mode: str, stream: TextIO) -> bool:
    """Whether to colour `stream` under `--color mode` (see the module doc)."""
    if mode == "always":
        return True
    if mode == "never" or os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
