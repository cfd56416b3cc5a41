"""``bcu report RUN_DIR [-o report.html] [--force]``: a run (or a sweep) folder as one self-contained HTML page.

Kept out of ``cli.py`` so the verb is one import and two lines there. Writes the page atomically (by default
``RUN_DIR/report.html``), never replacing an existing file unless ``--force`` says so; prints the page's path.
Exit 0 on success, 2 on bad input (one line on stderr: a missing or foreign folder, an existing file).
"""

from __future__ import annotations

import argparse
import sys

from .core.errors import ConfigError


def add_parser(sub) -> argparse.ArgumentParser:
    """Register ``report`` on the CLI's sub-parsers."""
    p = sub.add_parser("report", help="write a run (or sweep) folder as one self-contained HTML page")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (or a sweep folder holding sweep.csv)")
    p.add_argument("-o", "--out", metavar="FILE", help="the HTML file to write (default: RUN_DIR/report.html)")
    p.add_argument("--force", action="store_true", help="replace the file if it exists")
    return p


def run(args: argparse.Namespace) -> int:
    """Write the report; a ``ConfigError`` (bad folder, existing file) goes to the CLI's one-line handler."""
    from .core.report import ReportExistsError, write_report

    try:
        path = write_report(args.run_dir, args.out, overwrite=args.force)
    except ReportExistsError as exc:
        raise ConfigError(f"{exc} (--force replaces it)") from None
    print(path)
    if not args.out:
        print(f"open it in a browser: {path.resolve().as_uri()}", file=sys.stderr)
    return 0
