"""Helpers both faces share (the CLI and the app): number formatting and a one-line-error argument parser.

Qt-free and light to import (the CLI imports it before torch); it depends on nothing but the standard
library (and core/numbers.py, which is standard library only), so both ``bcu`` and ``bcu-gui`` can parse their command lines before anything heavy loads.
"""

from __future__ import annotations

import argparse

from .core.numbers import pct  # noqa: F401 (the faces' one percentage format)

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130





class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2, not a wall of usage text."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
