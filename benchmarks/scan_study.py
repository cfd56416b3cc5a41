#!/usr/bin/env python
"""Measure the trigger-inversion scan on digits models: clean ones and four backdoor families.

Every model is trained the way the built-in demo is (``bcu_gui.demo.digits.train_backdoored``: width-16 CIFAR
ResNet-18, 1,000 real digits, 15 epochs, 10% poisoned to class 0; a clean model is the same with 0%), on the
split seeded like the model, and cached so a rerun only scans. The scan sees the 400 unlabelled digits of
that split, nothing else. Rows are printed as they come and appended to a JSON-lines file.

    python benchmarks/scan_study.py train --models clean:0 clean:1 badnets:1 blend:0 ...
    python benchmarks/scan_study.py scan  --models clean:0 blend:0 ... [--rows rows.jsonl]
    python benchmarks/scan_study.py cleanse --models badnets:0 blend:0 ...   # proxy ASR before/after BCU
    python benchmarks/scan_study.py table --rows ROWS.jsonl ... [--probes mask perturbation] [--false-alarm 0.01]

``family:seed:target`` trains a model poisoned to another class than 0 (the cache names it ``-t<target>``).

The cache defaults to ``~/.cache/bcu-scan-study`` (``--cache`` to change). ``badnets:0`` is the shipped demo
model's exact recipe.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

try:
    import bcu_gui  # noqa: F401
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bcu_gui.demo.attacks import get_attack  # noqa: E402
from bcu_gui.demo.digits import (  # noqa: E402
    attack_success_rate, evaluate, load_digits_rgb, split_digits, train_backdoored,
)

TARGET = 0
EPOCHS = 15
DEFAULT_CACHE = Path.home() / ".cache" / "bcu-scan-study"


def parse_model(spec: str) -> tuple[str, int, int]:
    """``family:seed[:target]`` -> (family, seed, target); the target defaults to class 0 (the demo's)."""
    family, _, rest = spec.partition(":")
    seed, _, target = rest.partition(":")
    return family, int(seed or 0), int(target or TARGET)


def splits_for(seed: int) -> dict:
    images, labels = load_digits_rgb(32)
    return split_digits(images, labels, seed=seed)


def model_path(cache: Path, family: str, seed: int, target: int = TARGET) -> Path:
    suffix = "" if target == TARGET or family == "clean" else f"-t{target}"
    return cache / f"{family}-{seed}{suffix}.pt"


def train_one(cache: Path, family: str, seed: int, target: int = TARGET) -> dict:
    """Train (or reuse) one model; returns its sidecar (ACC/ASR on the test split, seconds)."""
    path = model_path(cache, family, seed, target)
    meta_path = path.with_suffix(".json")
    if path.is_file() and meta_path.is_file():
        return json.loads(meta_path.read_text())
    split = splits_for(seed)
    x_train, y_train = split["train"]
    x_test, y_test = split["test"]
    attack = "badnets" if family == "clean" else family
    t0 = time.perf_counter()
    model = train_backdoored(x_train, y_train, attack=attack, target=target,
                             poison_rate=0.0 if family == "clean" else 0.1, epochs=EPOCHS, seed=seed)
    seconds = time.perf_counter() - t0
    meta = {"family": family, "seed": seed, "target": None if family == "clean" else target, "epochs": EPOCHS, "train_seconds": round(seconds, 1),
            "acc": round(evaluate(model, x_test, y_test), 4)}
    if family != "clean":
        meta["asr"] = round(attack_success_rate(model, x_test, y_test, target, get_attack(family, 32, seed)), 4)
    cache.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, path)
    meta_path.write_text(json.dumps({**meta, "arch": "resnet18_cifar", "num_classes": 10, "width": 16,
                                     "input_size": 32, "normalize": "cifar10"}) + "\n")
    return meta


def load(cache: Path, family: str, seed: int, path: Path | None = None):
    from bcu_gui.core.models import load_model

    return load_model(path or model_path(cache, family, seed), arch="resnet18_cifar", normalize="cifar10")


def scan_row(model, images: torch.Tensor, plan, config=None) -> tuple[dict, object]:
    """Scan one model; the row holds every probe's per-class scores and p-value, so the rule can be revisited."""
    from bcu_gui.core.scan import STATISTICS, run_scan

    t0 = time.perf_counter()
    result = run_scan(model.module, images, model.normalization, model.num_classes, config, plan)
    seconds = time.perf_counter() - t0
    row = {"verdict": result.verdict, "suspected_class": result.suspected_class, "top_class": result.top_class,
           "p_value": result.p_value, "false_alarm": result.false_alarm,
           "anomaly_index": round(result.anomaly_index, 3), "probe": result.probe, "seconds": round(seconds, 1),
           "threads": torch.get_num_threads(), "load": round(os.getloadavg()[0], 2)}
    for report in result.probes:
        ceiling = 1024.0 if report.kind == "mask" else 1.0
        row[report.kind] = {
            "sizes": [None if v is None else round(v, 4) for v in report.sizes],
            "flips": [None if v is None else round(v, 3) for v in report.flips],
            "scores": [round(v, 4) for v in report.scores],
            "smallest_class": report.smallest_class, "p_value": report.p_value,
            "anomaly_index": round(report.anomaly_index, 3), "threshold": round(report.threshold, 3),
            "steps": report.steps, "forwarded": report.forwarded,
        }
        if report.kind != "margin":
            row[report.kind]["stats"] = {name: round(fn(report.sizes, ceiling), 3) for name, fn in STATISTICS.items()}
    return row, result


def scan_one(cache: Path, family: str, seed: int, plan, target: int = TARGET, config=None) -> dict:
    model = load(cache, family, seed, model_path(cache, family, seed, target))
    row, _ = scan_row(model, splits_for(seed)["unlabeled"][0], plan, config)
    return {"family": family, "seed": seed, "target": None if family == "clean" else target, "model": "teacher",
            **row}


def cleanse_one(cache: Path, family: str, seed: int, plan) -> dict:
    """Scan the teacher, cleanse it the demo's way, scan the student; proxy ASR of the teacher's trigger."""
    import tempfile

    from bcu_gui.core.job import CleanseConfig, CleanseJob
    from bcu_gui.core.runfolder.writer import RunFolder
    from bcu_gui.core.events import Finished, Failed
    from bcu_gui.core.scan import proxy_asr, split_images, ScanConfig
    from bcu_gui.demo.digits import write_image_folder

    split = splits_for(seed)
    unlabeled = split["unlabeled"][0]
    teacher = load(cache, family, seed)
    before, result = scan_row(teacher, unlabeled, plan)
    trigger = result.trigger or result.candidate
    _, measure = split_images(unlabeled, ScanConfig())
    with tempfile.TemporaryDirectory() as tmp:
        write_image_folder(Path(tmp) / "unlabeled", unlabeled)
        config = CleanseConfig(checkpoint=str(model_path(cache, family, seed)), unlabeled=str(Path(tmp) / "unlabeled"),
                               arch="resnet18_cifar", normalize="cifar10", preset="strong", epochs=40,
                               batch_size=64, device=plan.device.type, out=str(Path(tmp) / "run"), seed=seed)
        t0 = time.perf_counter()
        for event in CleanseJob(config).events():
            if isinstance(event, Failed):
                raise SystemExit(f"cleansing failed: {event.message}")
        cleanse_seconds = time.perf_counter() - t0
        student = load(cache, family, seed, RunFolder(Path(tmp) / "run").model_path)
    after, _ = scan_row(student, unlabeled, plan)
    x_test, y_test = split["test"]
    row = {"family": family, "seed": seed, "model": "cleansed", "cleanse_seconds": round(cleanse_seconds, 1),
           "trigger_class": trigger.target, "trigger_kind": trigger.kind,
           "proxy_asr_before": round(proxy_asr(teacher.module, measure, trigger, teacher.normalization), 4),
           "proxy_asr_after": round(proxy_asr(student.module, measure, trigger, student.normalization), 4),
           "acc_after": round(evaluate(student.module, x_test, y_test), 4), "before": before, "after": after}
    if family != "clean":
        row["asr_after"] = round(attack_success_rate(student.module, x_test, y_test, TARGET,
                                                     get_attack(family, 32, seed)), 4)
    return row


def _ratio(row: dict, probe: str) -> float:
    return row[probe]["stats"]["median_ratio"]


def judge(row: dict, probes: tuple[str, ...] = ("margin", "mask", "perturbation"),
          alpha: float = 0.01) -> tuple[str, int | None, float, str]:
    """(verdict, suspected class, anomaly index, probe) from a row's per-probe p-values: the Bonferroni rule of
    the scan (smallest p-value times the number of probes, against ``alpha``) over the probes named.

    Rows keep every probe's p-value, so another subset of probes or false-alarm rate is judged without
    rescanning (each probe's p-value does not depend on the others).
    """
    present = [p for p in probes if p in row]
    probe = min(present, key=lambda p: row[p]["p_value"])
    p_value = min(1.0, row[probe]["p_value"] * len(present))
    flagged = p_value < alpha
    index = row[probe].get("anomaly_index", 0.0)
    return ("backdoor" if flagged else "clean", row[probe]["smallest_class"] if flagged else None, index, probe)


def _verdict(row: dict) -> str:
    verdict, cls, _, _ = judge(row)
    return verdict if cls is None else f"{verdict} {cls}"


def report(paths: list[Path]) -> None:
    """Print the README's tables from the JSON rows of the scan and cleanse stages (teacher rows deduplicated),
    judged with the scan's current statistic and thresholds."""
    teachers: dict[tuple[str, int], dict] = {}
    cleansed: list[dict] = []
    for path in paths:
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row.get("model") == "cleansed":
                cleansed.append(row)
                teachers.setdefault((row["family"], row["seed"]), {**row["before"], "family": row["family"],
                                                                    "seed": row["seed"]})
            else:
                teachers.setdefault((row["family"], row["seed"]), row)
    print("| model | seed | mask: smallest class, ratio | perturbation: smallest class, ratio | verdict | seconds |")
    print("|---|---|---|---|---|---|")
    for (family, seed), row in sorted(teachers.items(), key=lambda kv: (kv[0][0] != "clean", kv[0])):
        print(f"| {family} | {seed} | {row['mask']['smallest_class']}, {_ratio(row, 'mask'):.2f} | "
              f"{row['perturbation']['smallest_class']}, {_ratio(row, 'perturbation'):.2f} | "
              f"{_verdict(row)} | "
              f"{row['seconds']:.0f} |")
    for row in cleansed:
        after = row["after"]
        print(f"| {row['family']} {row['seed']}, cleansed | | {after['mask']['smallest_class']}, "
              f"{_ratio(after, 'mask'):.2f} | {after['perturbation']['smallest_class']}, "
              f"{_ratio(after, 'perturbation'):.2f} | {_verdict(after)} | {after['seconds']:.0f} |")
    # a student whose real ASR stayed above 10% still has its backdoor: it belongs to neither side here
    clean_like = [r for (f, _), r in teachers.items() if f == "clean"] + [
        r["after"] for r in cleansed if r.get("asr_after", 0.0) < 0.10]
    backdoored = [r for (f, _), r in teachers.items() if f != "clean"]
    for probe in ("mask", "perturbation"):
        hi = max(_ratio(r, probe) for r in clean_like)
        lo = min(_ratio(r, probe) for r in backdoored)
        print(f"{probe}: clean models and cleansed ones with real ASR < 10% up to {hi:.2f}; backdoored models from {lo:.2f}; "
              f"geometric midpoint {(hi * lo) ** 0.5:.2f}")
    print("\n| family | flags class 0? | anomaly index (probe) | rescan after cleansing | proxy ASR before -> after |"
          " real ASR after | ACC after | scan s |")
    print("|---|---|---|---|---|---|---|---|")
    for row in cleansed:
        before = row["before"]
        _, cls, index, probe = judge(before)
        after_verdict = _verdict(row["after"])
        print(f"| {row['family']} | {'yes' if cls == 0 else 'NO'} | {index:.1f} ({probe}) | {after_verdict} | "
              f"{row['proxy_asr_before']:.2f} -> "
              f"{row['proxy_asr_after']:.2f} | {row.get('asr_after', float('nan')):.3f} | {row['acc_after']:.3f} | "
              f"{before['seconds']:.0f} |")


def with_p_values(row: dict, ceiling: float = 1024.0) -> dict:
    """A row from before the calibrated verdict (sizes only) gets each trigger probe's p-value and scores, computed
    from its sizes exactly as the scan does now (``ceiling``: the mask probe's, H * W)."""
    import statistics as st

    from bcu_gui.core.scan.anomaly import filled
    from bcu_gui.core.scan.calibration import top_class_test

    for probe, ceil in (("mask", ceiling), ("perturbation", 1.0)):
        entry = row.get(probe)
        if entry is None or "p_value" in entry:
            continue
        values = [1.0 / v for v in filled(entry["sizes"], ceil)]
        med = st.median(values)
        scores = [v / med for v in values]
        test = top_class_test(scores, 0.005)
        entry.update(p_value=test.p_value, scores=scores, smallest_class=test.cls,
                     anomaly_index=scores[test.cls], threshold=test.threshold())
    return row


def table(paths: list[Path], probes: tuple[str, ...], alpha: float = 0.01) -> None:
    """Per family: models, detected, right class, false alarms, the combined p-values and deciding scores, the
    seconds; then the ROC-style view: every model's combined p-value, and the rates at several false-alarm
    rates. Reads scan rows of scan_study.py (digits; old rows are re-judged from their sizes) and
    scan_realscale.py alike; a teacher scanned twice counts once (its last row)."""
    rows: dict[tuple, dict] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            if row.get("model") == "cleansed":
                row = {**row["before"], "family": row["family"], "seed": row["seed"], "target": TARGET}
            target = row.get("target", None if row["family"] == "clean" else TARGET)
            row["target"] = None if row["family"] == "clean" else target
            rows[(row["family"], row["seed"], row["target"])] = with_p_values(row)
    judged = []
    for key, row in sorted(rows.items(), key=lambda kv: (kv[0][0] != "clean", kv[0][0], kv[0][1])):
        present = [p for p in probes if p in row]
        if not present:
            continue
        probe = min(present, key=lambda p: row[p]["p_value"])
        p_value = min(1.0, row[probe]["p_value"] * len(present))
        judged.append((key, row, probe, p_value, row[probe]["smallest_class"]))
    print(f"probes {', '.join(probes)}; false-alarm rate {alpha:g}\n")
    print("| family | models | detected | right class | p-values (combined) | deciding index | seconds |")
    print("|---|---|---|---|---|---|---|")
    for family in dict.fromkeys(k[0] for k, *_ in judged):
        group = [j for j in judged if j[0][0] == family]
        hits = [j for j in group if j[3] < alpha]
        right = [j for j in hits if family != "clean" and j[4] == j[0][2]]
        ps = sorted(j[3] for j in group)
        idx = [j[1][j[2]]["anomaly_index"] for j in group]
        secs = [j[1]["seconds"] for j in group if "seconds" in j[1]]
        label = f"{len(hits)}/{len(group)} (false alarms)" if family == "clean" else f"{len(hits)}/{len(group)}"
        print(f"| {family} | {len(group)} | {label} | {'-' if family == 'clean' else f'{len(right)}/{len(group)}'}"
              f" | {ps[0]:.2g} - {ps[-1]:.2g} | {min(idx):.2f} - {max(idx):.2f} | "
              f"{(f'{min(secs):.0f} - {max(secs):.0f}') if secs else '-'} |")
    print("\n| model | target | deciding probe | top class | combined p | " + " | ".join(
        f"{p} p (class)" for p in probes) + " |")
    print("|---|---|---|---|---|" + "---|" * len(probes))
    for (family, seed, target), row, probe, p_value, cls in judged:
        cells = " | ".join(f"{row[p]['p_value']:.2g} ({row[p]['smallest_class']})" if p in row else "-"
                           for p in probes)
        print(f"| {family}-{seed} | {'-' if target is None else target} | {probe} | {cls} | {p_value:.2g} | {cells} |")
    clean = [j[3] for j in judged if j[0][0] == "clean"]
    bad = [j for j in judged if j[0][0] != "clean"]
    print("\n| false-alarm rate | detected (right class) | false alarms |\n|---|---|---|")
    for rate in (0.001, 0.005, 0.01, 0.05, 0.1):
        det = sum(j[3] < rate and j[4] == j[0][2] for j in bad)
        print(f"| {rate:g} | {det}/{len(bad)} | {sum(p < rate for p in clean)}/{len(clean)} |")


def scan_config(args: argparse.Namespace):
    """The scan's defaults with the command line's overrides."""
    import dataclasses

    from bcu_gui.core.scan import ScanConfig

    config = ScanConfig()
    changes: dict = {}
    if args.probes:
        changes["probes"] = tuple(args.probes)
    if args.steps:
        changes["settings"] = dataclasses.replace(config.settings, steps=args.steps)
    margin = {k: v for k, v in (("steps", args.margin_steps), ("starts", args.margin_starts)) if v}
    if margin:
        changes["margin"] = dataclasses.replace(config.margin, **margin)
    return dataclasses.replace(config, **changes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=("train", "scan", "cleanse", "report", "table"))
    parser.add_argument("--models", nargs="+", default=[], help="family:seed, family in clean/badnets/blend/sig/wanet")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--rows", type=Path, nargs="+", help="append one JSON row per result to this file "
                        "(report: the row files to read)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--probes", nargs="+", help="scan probes (default: the scan's own; table: the probes "
                        "whose p-values the verdict combines)")
    parser.add_argument("--false-alarm", type=float, default=0.01, help="table: the false-alarm rate")
    parser.add_argument("--steps", type=int, help="trigger-probe steps (default: the scan's own)")
    parser.add_argument("--margin-steps", type=int, help="margin-probe steps (default: the scan's own)")
    parser.add_argument("--margin-starts", type=int, help="margin-probe starts per class (default: the scan's own)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.stage == "report":
        report(args.rows or [])
        return 0
    if args.stage == "table":
        table(args.rows or [], tuple(args.probes or ("mask", "perturbation")), args.false_alarm)
        return 0
    from bcu_gui.core.devices import plan_compute

    plan = plan_compute(args.device)
    for spec in args.models:
        family, seed, target = parse_model(spec)
        if args.stage == "train":
            row = train_one(args.cache, family, seed, target)
        elif args.stage == "scan":
            row = scan_one(args.cache, family, seed, plan, target, scan_config(args))
        else:
            row = cleanse_one(args.cache, family, seed, plan)
        print(json.dumps(row), flush=True)
        if args.rows:
            with args.rows[0].open("a") as fh:
                fh.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
