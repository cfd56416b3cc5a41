#!/usr/bin/env python
"""How fast the run library lists runs: N run folders (copies of one real run's small files, plus its
metrics.jsonl; no models) scanned with ``core.run_library.scan_runs``, cold-ish and warm.

Prints the CPU, the number of runs, seconds per pass and runs per second. Target: 2,000 runs in under 2 s
on 2 CPU cores with a warm file cache (a library that opens without a wait). The load average before and after
is printed so a contended figure can be recognised.

    python benchmarks/library_scan.py RUN_DIR [--runs 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    import bcu_gui  # noqa: F401
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bcu_gui.core.run_library import scan_runs  # noqa: E402


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "?")
    except OSError:
        return "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a finished run folder to copy (its JSON files only)")
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    src = Path(args.run_dir)
    names = [n for n in ("config.json", "summary.json", "metrics.jsonl") if (src / n).is_file()]
    root = Path(tempfile.mkdtemp(prefix="bcu-library-bench-"))
    try:
        for i in range(args.runs):
            folder = root / f"20250101-{i:06d}-run"
            folder.mkdir()
            for n in names:
                shutil.copyfile(src / n, folder / n)
        print(f"CPU: {_cpu()}; load average before: {os.getloadavg()[0]:.2f}")
        for i in range(args.repeat):
            start = time.perf_counter()
            count = sum(len(batch) for batch in scan_runs([root]))
            seconds = time.perf_counter() - start
            print(f"pass {i + 1}: {count} runs in {seconds:.2f} s ({count / seconds:,.0f} runs/s)")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
