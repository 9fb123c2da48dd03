"""The ``prox`` command line.

Each subcommand lives beside the code it drives, in a module exposing
``add_parser(subparsers)`` that registers it with ``func=<callable(args) -> int>``.
Those modules import heavy libraries inside their functions, so ``prox --help`` is instant.
Usage errors (bad options, unusable settings) print one line naming the option and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from prox.settings import SettingsError

#: Modules contributing subcommands, in the order ``prox --help`` lists them.
COMMAND_MODULES = (
    "prox.cli.simulate",
    "prox.cli.sandbox",
    "prox.cli.demo",
    "prox.cli.features",
    "prox.cli.expectations",
    "prox.cli.forecast",
    "prox.cli.models",
    "prox.cli.serve",
)


class UsageError(ValueError):
    """A command-line value ProX cannot use; printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="prox", description="ProX lead qualification")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UsageError, SettingsError) as exc:
        print(f"prox {args.command}: error: {exc}", file=sys.stderr)
        return 2


def positive_int(text: str) -> int:
    """argparse type: an integer > 0 (the error names the value)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value
