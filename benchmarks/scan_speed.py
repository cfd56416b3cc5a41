#!/usr/bin/env python
"""How long the backdoor scan takes on the built-in demo model (10 classes, 400 unlabelled digits).

Prints the CPU (``lscpu``'s model name), the torch thread count, the compute plan, the scan's seconds, the
unlabelled images per second and the stamped images per second (forward + backward through the model, the
scan's real work). Target: under 60 s on 2 CPU cores. Run it on a quiet machine; the load average before and
after is printed so a contended figure can be recognised.

    python benchmarks/scan_speed.py [--threads 2] [--device cpu] [--precision auto] [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

try:
    import bcu_gui  # noqa: F401
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bcu_gui.core.data import load_unlabeled  # noqa: E402
from bcu_gui.core.devices import plan_compute  # noqa: E402
from bcu_gui.core.models import load_model  # noqa: E402
from bcu_gui.core.scan import ScanConfig, run_scan  # noqa: E402
from bcu_gui.demo import demo_dir  # noqa: E402


def cpu_name() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown CPU (lscpu not available)"
    for line in text.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = demo_dir()
    model = load_model(root / "model.pt")
    images = load_unlabeled(root / "unlabeled", model.input_size)
    plan = plan_compute(args.device, args.precision)
    print(f"CPU            {cpu_name()} ({os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()})")
    print(f"plan           {plan.describe()}, torch {torch.__version__}")
    print(f"model          {model.describe()}")
    print(f"load before    {os.getloadavg()[0]:.2f}")
    for run in range(args.repeat):
        t0 = time.perf_counter()
        result = run_scan(model.module, images.images, model.normalization, model.num_classes, ScanConfig(), plan)
        seconds = time.perf_counter() - t0
        forwarded = sum(r.forwarded for r in result.probes)
        steps = ", ".join(f"{r.kind} {r.steps} steps" for r in result.probes)
        print(f"run {run + 1}          {seconds:.1f} s  {len(images) / seconds:.1f} unlabelled images/s  "
              f"{forwarded / seconds:.0f} stamped images/s ({forwarded:,} through the model; {steps})")
        print(f"               {result.verdict_line()}")
    print(f"load after     {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
