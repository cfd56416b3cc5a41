#!/usr/bin/env python
"""What the live feature space (``--feature-space``) costs per epoch on the built-in demo.

Runs the demo's cleansing twice, without and with the feature-space hook, and prints: the hook's own time
per epoch (penultimate features of the fixed sample through the student, the alignment map, the projection
and the atomic rewrite of ``features.npz``), the wall time per epoch of each run (time between consecutive
``EpochEnd`` events: training, evaluation and every hook), and the hook's share of an epoch. The teacher's
frame (once, at the start) is printed separately. Also prints the CPU, threads and the load average, so a
contended figure can be recognised.

    python benchmarks/feature_space_cost.py [--epochs 10] [--sample 200] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

try:
    import bcu_gui  # noqa: F401
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bcu_gui.core.events import EpochEnd, Failed
from bcu_gui.core.feature_space import DEFAULT_SAMPLE, FeatureSpaceHook
from bcu_gui.core.job import CleanseJob
from bcu_gui.demo.config import demo_config


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")),
                    "unknown CPU")
    except OSError:
        return "unknown CPU"


def _run(epochs: int, hook: FeatureSpaceHook | None, out: Path) -> list[float]:
    """Wall seconds per epoch (between EpochEnd events; the first epoch is left out as warm-up)."""
    job = CleanseJob(demo_config(epochs=epochs, out=str(out)), hooks=[hook] if hook else [])
    marks: list[float] = []
    for event in job.events():
        if isinstance(event, EpochEnd):
            marks.append(time.perf_counter())
        elif isinstance(event, Failed):
            raise SystemExit(f"the run failed: {event.message}")
    return [b - a for a, b in zip(marks, marks[1:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--sample", type=int, default=DEFAULT_SAMPLE)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU: {_cpu()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"load before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        plain = _run(args.epochs, None, Path(tmp) / "plain")
        hook = FeatureSpaceHook(Path(tmp) / "with", sample_size=args.sample)
        start = time.perf_counter()
        with_hook = _run(args.epochs, hook, Path(tmp) / "with")
        assert hook.sample is not None
    per_epoch = statistics.median(hook.seconds[1:] or hook.seconds)
    epoch_plain, epoch_with = statistics.median(plain), statistics.median(with_hook)
    print(f"sample: {len(hook.sample.clean)} clean + {len(hook.sample.triggered)} triggered images, "
          f"layer '{hook.layer}'")
    print(f"teacher frame (once): {hook.teacher_seconds * 1000:.0f} ms")
    print(f"hook per epoch (median): {per_epoch * 1000:.0f} ms")
    print(f"epoch wall time (median): {epoch_plain * 1000:.0f} ms without, {epoch_with * 1000:.0f} ms with")
    print(f"hook share of an epoch: {per_epoch / epoch_with * 100:.1f}%")
    print(f"load after: {os.getloadavg()[0]:.2f}; total {time.perf_counter() - start:.1f} s for the run with the hook")


if __name__ == "__main__":
    main()
