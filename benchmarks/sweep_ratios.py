"""Which re-initialisation ratios remove the demo's backdoor? A small sweep over ratios and seeds.

Runs the engine on the built-in demo (width-16 CIFAR ResNet-18, BadNets on real digits, 400 unlabelled
held-out digits) for each setting and seed and prints final ACC / ASR (and the run's lowest ASR) as a
Markdown table; the README's "Choosing the ratios" table comes from this script.

    python benchmarks/sweep_ratios.py [--epochs 40] [--batch-size 64] [--seeds 0 1 2] [--settings strong taper ...]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from bcu_gui.core.events import EpochEnd, Failed, Finished
from bcu_gui.demo.config import demo_config

SETTINGS = {
    "paper": {"preset": "paper"},
    "taper": {"preset": "strong", "ratios": {"stem": 0.1, "layer1": 0.1, "layer2": 0.3, "layer3": 0.9}},
    "half-taper": {"preset": "strong", "ratios": {"stem": 0.25, "layer1": 0.25, "layer2": 0.5, "layer3": 0.75}},
    "deep-only": {"preset": "strong", "ratios": {"stem": 0.0, "layer1": 0.0, "layer2": 0.0, "layer3": 0.5}},
    "strong": {"preset": "strong"},
}


def run(setting: str, seed: int, epochs: int, batch_size: int, out: str) -> dict:
    from bcu_gui.core.job import CleanseJob

    cfg = demo_config(seed=seed, epochs=epochs, batch_size=batch_size, out=out, device="cpu", **SETTINGS[setting])
    lowest = 1.0
    start = time.perf_counter()
    for event in CleanseJob(cfg).events():
        if isinstance(event, EpochEnd) and event.asr is not None:
            lowest = min(lowest, event.asr)
        if isinstance(event, Failed):
            raise SystemExit(event.message)
        if isinstance(event, Finished):
            s = event.summary
            return {"setting": setting, "seed": seed, "epochs": epochs, "batch_size": batch_size,
                    "ratios": s.reinit.ratios, "teacher_acc": s.teacher.acc,
                    "teacher_asr": s.teacher.asr, "acc": s.cleansed.acc, "asr": s.cleansed.asr,
                    "lowest_asr": lowest, "seconds": round(time.perf_counter() - start, 1)}
    raise SystemExit("the run ended without a summary")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--jsonl", help="also append each result as a JSON line to this file")
    args = parser.parse_args()
    print("| setting | ratios (stem, layer1..4, head) | seed | epochs | ACC | ASR | lowest ASR | s |")
    print("|---|---|---|---|---|---|---|---|")
    for setting in args.settings:
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as tmp:
                r = run(setting, seed, args.epochs, args.batch_size, tmp)
            ratios = " ".join(f"{v:g}" for v in r["ratios"].values())
            print(f"| {setting} | {ratios} | {seed} | {r['epochs']} | {r['acc']:.3f} | {r['asr']:.3f} | "
                  f"{r['lowest_asr']:.3f} | {r['seconds']} |", flush=True)
            if args.jsonl:
                with open(args.jsonl, "a") as fh:
                    fh.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
