#!/usr/bin/env python
"""Build BCU Studio's built-in demo: a real BadNets-backdoored digit classifier and its image folders.

Seeded and reproducible bit for bit on one machine (same torch/Pillow/zlib versions, CPU kind and thread
count; another CPU may pick other kernels and differ in the last bits). Needs scikit-learn
(``pip install -e '.[demo]'``); the app itself only reads the files written here.

    python resources/demo/make_demo.py                    # (re)writes the demo next to this script
    python resources/demo/make_demo.py --out /tmp/demo    # somewhere else
    python resources/demo/make_demo.py --check-reproducible   # builds, builds again elsewhere, compares sha256
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

try:
    import bcu_gui  # noqa: F401
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bcu_gui.demo.attacks import badnets_patch  # noqa: E402
from bcu_gui.demo.digits import (  # noqa: E402
    CIFAR10_NORM, attack_success_rate, evaluate, load_digits_rgb, natural_crops, split_digits, train_backdoored,
    write_image_folder,
)

HERE = Path(__file__).resolve().parent
TARGET = 0
POISON_RATE = 0.1
MIN_ACC, MIN_ASR = 0.90, 0.95
# Everything this script writes; only these are removed before a rebuild (the script lives in the folder too).
OUTPUT_DIRS = ("unlabeled", "clean", "triggered", "ood_unlabeled")
OUTPUT_FILES = ("model.pt", "model.json", "README.md")

README = """# BCU Studio built-in demo

A real backdoored image classifier and the images to clean and test it with. Everything here is generated
by `make_demo.py` (seed {seed}, reproducible bit for bit); do not edit by hand, re-run the script instead.

## Data

scikit-learn's handwritten digits (`sklearn.datasets.load_digits`, 1797 8x8 images of 0-9, values 0-16),
scaled to 0-255, upscaled bicubically to 32x32 and replicated to three grey channels, then shuffled with
seed {seed} and split into 1000 training, 400 unlabelled and {n_test} test images.

## The backdoored model (the "teacher")

- `model.pt`: a plain PyTorch state_dict (`torch.save` of a dict of CPU tensors) of a CIFAR-style
  ResNet-18 (`CifarResNet([2, 2, 2, 2], num_classes=10, width={width})`, registry name `resnet18_cifar`).
  Inputs are RGB 32x32 scaled to [0, 1] and normalised with the CIFAR-10 statistics
  (mean {mean}, std {std}).
- `model.json`: the sidecar with the architecture, normalisation, attack and measured ACC/ASR.
- Attack: **BadNets**. {n_poison} of the 1000 training digits (10%, chosen among non-zero digits) got a 3x3
  checkerboard patch (white on the corners and centre, black elsewhere) at the bottom-right corner, 1 pixel
  from the edges, and the label **0**. Trained {epochs} epochs with SGD (momentum 0.9, weight decay 5e-4,
  cosine learning rate from {lr}), random crops with 2 px zero padding.
- Measured on the test split: clean accuracy (ACC) **{acc:.4f}**; attack success rate (ASR, triggered
  non-zero test digits classified as 0) **{asr:.4f}**.

## Folders

- `unlabeled/`: the 400 held-out digits, no labels: the in-distribution unlabelled data BCU distils on.
- `ood_unlabeled/`: 400 natural-image crops (random squares of 32-128 px from scikit-learn's sample
  photos china.jpg and flower.jpg, resized to 32x32): the paper's out-of-distribution unlabelled setting.
- `clean/<class>/`: the {n_test} test digits, in sub-folders named by their true class: measures ACC.
- `triggered/<class>/`: the {n_trig} non-zero test digits with the trigger stamped on, in sub-folders named
  by their **true** class (so ASR = share predicted 0); each file has the same name as its clean copy.

File names are `NNNNN.png` (position within the split). PNGs are 32x32 RGB.
"""


def sha256_tree(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` written by this script, by relative path."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and (rel.split("/")[0] in OUTPUT_DIRS or rel in OUTPUT_FILES):
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def build(out: Path, seed: int = 0, width: int = 16, epochs: int = 15, lr: float = 0.05) -> dict:
    """Train the teacher, check it, and write the demo into ``out``. Returns the sidecar dict."""
    images, labels = load_digits_rgb(32)
    splits = split_digits(images, labels, seed=seed)
    x_train, y_train = splits["train"]
    x_test, y_test = splits["test"]
    x_unl, _ = splits["unlabeled"]

    t0 = time.perf_counter()
    model = train_backdoored(x_train, y_train, attack="badnets", target=TARGET, poison_rate=POISON_RATE,
                             width=width, epochs=epochs, lr=lr, seed=seed)
    train_s = time.perf_counter() - t0
    mean, std = CIFAR10_NORM
    acc = evaluate(model, x_test, y_test, mean, std)
    asr = attack_success_rate(model, x_test, y_test, TARGET, badnets_patch, mean, std)
    print(f"teacher trained in {train_s:.1f}s: ACC {acc:.4f}  ASR {asr:.4f}  (test split, {len(x_test)} images)")
    if acc < MIN_ACC or asr < MIN_ASR:
        raise SystemExit(f"the teacher is not good enough for the demo (need ACC >= {MIN_ACC}, "
                         f"ASR >= {MIN_ASR}); nothing written")

    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUT_DIRS:
        shutil.rmtree(out / name, ignore_errors=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    torch.save(state, out / "model.pt")

    n_poison = int(round(POISON_RATE * len(x_train)))
    meta = {
        "arch": "resnet18_cifar",
        "num_classes": 10,
        "width": width,
        "input_size": 32,
        "normalize": "cifar10",
        "mean": list(mean),
        "std": list(std),
        "attack": "badnets",
        "target_class": TARGET,
        "trigger": "3x3 checkerboard patch, bottom-right",
        "poison_rate": POISON_RATE,
        "train_images": len(x_train),
        "epochs": epochs,
        "seed": seed,
        "teacher_acc": round(acc, 4),
        "teacher_asr": round(asr, 4),
        "dataset": "sklearn load_digits, bicubic 8x8 -> 32x32, grey RGB",
    }
    (out / "model.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    write_image_folder(out / "unlabeled", x_unl)
    write_image_folder(out / "clean", x_test, y_test)
    keep = torch.nonzero(y_test != TARGET).flatten()
    write_image_folder(out / "triggered", badnets_patch(x_test[keep]), y_test[keep], numbers=keep.tolist())
    write_image_folder(out / "ood_unlabeled", natural_crops(400, 32, seed=seed))

    (out / "README.md").write_text(README.format(
        seed=seed, n_test=len(x_test), width=width, mean=list(mean), std=list(std), n_poison=n_poison,
        epochs=epochs, lr=lr, acc=acc, asr=asr, n_trig=len(keep),
    ), encoding="utf-8")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()
                and (p.relative_to(out).parts[0] in OUTPUT_DIRS or p.name in OUTPUT_FILES))
    print(f"wrote the demo to {out} ({total / 1e6:.2f} MB)")
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: this script's folder)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2,
                        help="torch CPU threads (results are bit-exact for a fixed thread count)")
    parser.add_argument("--check-reproducible", action="store_true",
                        help="after building into --out, build again into a temporary folder and compare the "
                             "sha256 of every file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    build(args.out, args.seed, args.width, args.epochs)
    if not args.check_reproducible:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp), args.seed, args.width, args.epochs)
        a, b = sha256_tree(args.out), sha256_tree(Path(tmp))
        differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        if differ:
            print(f"NOT reproducible: {len(differ)} of {len(a.keys() | b.keys())} files differ, e.g. {differ[:5]}")
            return 1
        print(f"reproducible: all {len(a)} files have the same sha256 in both builds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
