#!/usr/bin/env python
"""Measure the scan on the real-scale Fashion-MNIST teachers (benchmarks/realscale on branch realscale).

Reads the teachers cache (``~/.cache/bcu-bench/realscale``: ``teachers/<attack>-s<seed>-t<target>.pt`` with
their sidecars, and the 2,500-image unlabelled ``defense-2500`` folder), scans every teacher the way ``bcu scan``
does (its default 400 images of the folder; ``--limit`` to change) with the probes named, and appends one JSON
row per teacher: the verdict, the p-value, every probe's per-class scores and p-value, the seconds, the thread
count and the load average (so a figure taken under load can be recognised). The rows re-judge with
``scan_study.judge`` (any subset of probes, any false-alarm rate) without rescanning.

    python benchmarks/scan_realscale.py --probes margin mask perturbation --rows benchmarks/results/scan-realscale.jsonl
    python benchmarks/scan_realscale.py --only blended-s0-t3 --threads 2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

try:
    import bcu_gui  # noqa: F401
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from scan_study import scan_row  # noqa: E402

DEFAULT_ROOT = Path.home() / ".cache" / "bcu-bench" / "realscale"


def teachers(root: Path, only: list[str] | None) -> list[Path]:
    found = sorted((root / "teachers").glob("*.pt"))
    return [p for p in found if not only or p.stem in only]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--only", nargs="+", help="teacher names (file stems) to scan; default all")
    parser.add_argument("--skip-done", type=Path, help="skip teachers already in this rows file")
    parser.add_argument("--probes", nargs="+", default=None)
    parser.add_argument("--limit", type=int, default=400)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rows", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from bcu_gui.core.data import load_unlabeled
    from bcu_gui.core.devices import plan_compute
    from bcu_gui.core.models import load_model
    from bcu_gui.core.scan import ScanConfig

    done = set()
    if args.skip_done and args.skip_done.is_file():
        done = {json.loads(line)["teacher"] for line in args.skip_done.read_text().splitlines() if line.strip()}
    plan = plan_compute(args.device)
    config = ScanConfig(**({"probes": tuple(args.probes)} if args.probes else {}))
    for path in teachers(args.root, args.only):
        if path.stem in done:
            continue
        meta = json.loads(path.with_suffix(".json").read_text())
        model = load_model(path)
        images = load_unlabeled(args.root / "defense-2500", model.input_size, limit=args.limit)
        attack, seed, target = path.stem.split("-")
        row, _ = scan_row(model, images.images, plan, config)
        row = {"teacher": path.stem, "family": "clean" if attack == "clean" else attack, "seed": int(seed[1:]),
               "target": None if attack == "clean" else int(target[1:]), "images": len(images),
               "teacher_acc": meta.get("teacher_acc"), "teacher_asr": meta.get("teacher_asr"), **row}
        print(json.dumps(row), flush=True)
        if args.rows:
            with args.rows.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
