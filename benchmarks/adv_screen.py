"""Screen cleanse settings on small digits teachers of every attack family (issue #24, step b).

Digits are easy (full re-initialisation works there), so this only sorts out settings cheaply before the
real-scale Fashion-MNIST benchmark. ``prepare`` trains one backdoored teacher per attack (cached under
``--root``) and writes its unlabelled / clean / triggered folders; ``run`` cleanses one with `bcu cleanse`
and appends a row (command, ACC / ASR of teacher and student, seconds) to a JSONL.

    OMP_NUM_THREADS=1 python benchmarks/adv_screen.py run --attack badnets --tag paper -- --preset paper
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

TARGET = 0


def prepare(root: Path, attack: str, seed: int) -> Path:
    from bcu_gui.demo.attacks import get_attack
    from bcu_gui.demo.digits import load_digits_rgb, split_digits, train_backdoored, write_image_folder

    folder = root / f"{attack}-s{seed}"
    if (folder / "teacher.pt").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = load_digits_rgb(32)
    splits = split_digits(images, labels, seed=seed)
    x_train, y_train = splits["train"]
    torch.manual_seed(seed)
    model = train_backdoored(x_train, y_train, attack=attack, target=TARGET, width=16, epochs=15, seed=seed)
    x_unl, _ = splits["unlabeled"]
    x_test, y_test = splits["test"]
    write_image_folder(folder / "unlabeled", x_unl)
    write_image_folder(folder / "clean", x_test, y_test)
    keep = y_test != TARGET
    write_image_folder(folder / "triggered", get_attack(attack, 32, seed)(x_test[keep]), y_test[keep])
    torch.save(model.state_dict(), folder / "teacher.pt.tmp")
    (folder / "teacher.pt.tmp").rename(folder / "teacher.pt")
    return folder


def run(root: Path, attack: str, seed: int, tag: str, extra: list[str], out: Path) -> dict:
    folder = prepare(root, attack, seed)
    run_dir = root / "runs" / f"{attack}-s{seed}-{tag}-{int(time.time())}"
    cmd = [sys.executable, "-m", "bcu_gui.cli", "cleanse", str(folder / "teacher.pt"), "--unlabeled",
           str(folder / "unlabeled"), "--eval-clean", str(folder / "clean"), "--eval-poisoned",
           str(folder / "triggered"), "--target-class", str(TARGET), "--normalize", "cifar10", "--device", "cpu",
           "--no-flip", "--seed", str(seed), "--out", str(run_dir), "--json", *extra]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        raise SystemExit(done.returncode)
    summary = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")][-1]["summary"]
    row = {"data": "digits", "attack": attack, "seed": seed, "tag": tag, "args": extra,
           "teacher_acc": summary["teacher"]["acc"], "teacher_asr": summary["teacher"]["asr"],
           "acc": summary["cleansed"]["acc"], "asr": summary["cleansed"]["asr"],
           "best_asr": (summary.get("best") or {}).get("asr"), "epochs": summary["epochs"],
           "train_seconds": summary["seconds"], "wall_seconds": round(wall, 1),
           "command": "bcu cleanse <digits teacher> " + " ".join(extra)}
    with out.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("prepare", "run"))
    p.add_argument("--root", type=Path, default=Path("/tmp/bcu-adv-screen"))
    p.add_argument("--attack", default="badnets")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="run")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/cleanse_candidates.jsonl"))
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    a = p.parse_args(argv[:cut])
    a.extra = argv[cut + 1:]  # everything after `--` goes to `bcu cleanse`
    torch.set_num_threads(1)
    for attack in a.attack.split(","):
        if a.what == "prepare":
            print(prepare(a.root, attack, a.seed))
        else:
            run(a.root, attack, a.seed, a.tag, a.extra, a.out)


if __name__ == "__main__":
    main()
