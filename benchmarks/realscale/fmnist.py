"""Real-scale benchmark data and teachers: Fashion-MNIST from the Debian package, the paper's split.

Shared by ``teachers.py`` (trains and caches backdoored teachers) and ``run.py`` (cleanses them and tabulates).
Everything lands in one cache folder (``CACHE``, default ``~/.cache/bcu-bench/realscale``, or
``$BCU_REALSCALE_CACHE``) that other benchmarks only read:

    teachers/<attack>-s<seed>-t<target>.pt   state_dict of CifarResNet([2,2,2,2], width 16), CPU tensors
    teachers/<attack>-s<seed>-t<target>.json its sidecar (arch, input size 28, CIFAR-10 normalisation, which
                                             `bcu cleanse` reads) plus teacher ACC/ASR, recipe and training time
    defense-2500/                            2,500 unlabelled test images, flat PNGs (the paper's defense set)
    defense-2500.labels.json                 their labels, for analysis only (BCU never sees them)
    eval/clean-7500/<class>/NNNNN.png        the other 7,500 test images, labelled (--eval-clean)
    eval/<attack>-s<seed>-t<target>/triggered/<true class>/NNNNN.png
                                             the non-target ones of those, with the teacher's exact trigger
                                             (--eval-poisoned, with --target-class <target>)
    split.json                               which t10k indices went where

Images are uint8 NCHW, 28x28, three identical grey channels, like ``bcu_gui.demo.digits``. File numbers
NNNNN are indices into the t10k file.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA_DIR = Path(os.environ.get("BCU_FMNIST_DIR", "/usr/share/datasets/fashion-mnist"))
CACHE = Path(os.environ.get("BCU_REALSCALE_CACHE", Path.home() / ".cache" / "bcu-bench" / "realscale"))
INSTALL_HINT = ("Fashion-MNIST is not installed: on Debian/Ubuntu run 'sudo apt-get install dataset-fashion-mnist' "
                "(files in /usr/share/datasets/fashion-mnist/), or point $BCU_FMNIST_DIR at a folder holding "
                "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
                "t10k-labels-idx1-ubyte.gz")
CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")
SIZE = 28
ATTACKS = ("badnets", "blended", "sig", "wanet", "clean")
TARGETS = {0: 3, 1: 7, 2: 5}  # seed -> target class (never 0)
DEFENSE_SIZE = 2500
SPLIT_SEED = 2023  # fixes the defense/test split of t10k, the same for every teacher

# The teacher recipe (measured: see README.md). SIG is clean-label: the signal goes on `sig_rate` of the
# target class's training images, labels unchanged.
RECIPE = dict(train_images=15000, poison_rate=0.1, width=16, epochs=6, batch_size=128, lr=0.05,
              weight_decay=5e-4, crop_pad=2, sig_rate=1.0, sig_delta=60.0, sig_frequency=6.0,
              blend_alpha=0.2, wanet_strength=3.0, badnets_size=3, normalize="cifar10")
TRIGGERS = {
    "badnets": "3x3 checkerboard patch (255/0), bottom-right, 1 px margin",
    "blended": "seeded uniform-noise pattern blended at alpha 0.2 (pattern seed = teacher seed)",
    "sig": "horizontal sinusoid delta 60, frequency 6, clean-label on all of the target class",
    "wanet": "fixed seeded warp field, 4x4 control grid, strength 3 (grid seed = teacher seed)",
    "clean": "none (no poisoning; same recipe)",
}


class DataMissing(SystemExit):
    def __init__(self, message: str = INSTALL_HINT):
        print(message, file=sys.stderr)
        super().__init__(2)


# ---------------------------------------------------------------- the idx files

def read_idx(path: str | Path) -> np.ndarray:
    """An idx file (optionally gzipped) as a numpy array of its declared dtype and shape (big-endian header)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path.name}: not an idx file (bad magic)")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise ValueError(f"{path.name}: unknown idx element type 0x{data[2]:02x}")
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    dtype = np.dtype(dtypes[data[2]])
    need = int(np.prod(dims)) * dtype.itemsize
    body = data[4 + 4 * ndim:]
    if len(body) != need:
        raise ValueError(f"{path.name}: expected {need} bytes of data for shape {dims}, found {len(body)}")
    return np.frombuffer(body, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def load_split(split: str):
    """``(uint8 [N, 3, 28, 28], int64 [N])`` torch tensors for ``split`` in {"train", "t10k"}."""
    import torch

    img = DATA_DIR / f"{split}-images-idx3-ubyte.gz"
    lab = DATA_DIR / f"{split}-labels-idx1-ubyte.gz"
    if not img.is_file() or not lab.is_file():
        raise DataMissing()
    x = read_idx(img)
    y = read_idx(lab)
    if x.ndim != 3 or len(x) != len(y):
        raise ValueError(f"unexpected idx shapes {x.shape} / {y.shape} in {DATA_DIR}")
    xt = torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    return xt, torch.from_numpy(y.astype(np.int64))


# ---------------------------------------------------------------- splits, triggers, names

def target_for(seed: int) -> int:
    return TARGETS.get(seed, 1 + (2 + 4 * seed) % 9)


def name_of(attack: str, seed: int) -> str:
    return f"{attack}-s{seed}-t{target_for(seed)}"


def teacher_path(attack: str, seed: int, root: Path | None = None) -> Path:
    return (root or CACHE / "teachers") / f"{name_of(attack, seed)}.pt"


def test_split():
    """``(defense_idx, test_idx)``: a seeded permutation of t10k, the first 2,500 as the defense set."""
    import torch

    order = torch.randperm(10000, generator=torch.Generator().manual_seed(SPLIT_SEED))
    return order[:DEFENSE_SIZE].sort().values, order[DEFENSE_SIZE:].sort().values


def train_subset(seed: int, count: int):
    import torch

    order = torch.randperm(60000, generator=torch.Generator().manual_seed(1000 + seed))
    return order[:count].sort().values


def trigger(attack: str, seed: int):
    """The exact uint8-batch trigger of a teacher (None for clean)."""
    from bcu_gui.demo import attacks

    r = RECIPE
    if attack == "badnets":
        return lambda x: attacks.badnets_patch(x, size=r["badnets_size"])
    if attack == "blended":
        pattern = attacks.noise_pattern(SIZE, seed)
        return lambda x: attacks.blend(x, pattern, alpha=r["blend_alpha"])
    if attack == "sig":
        return lambda x: attacks.sig_signal(x, delta=r["sig_delta"], frequency=r["sig_frequency"])
    if attack == "wanet":
        grid = attacks.wanet_grid(SIZE, seed, strength=r["wanet_strength"])
        return lambda x: attacks.warp(x, grid)
    if attack == "clean":
        return None
    raise ValueError(f"unknown attack {attack!r}; known: {', '.join(ATTACKS)}")


# ---------------------------------------------------------------- atomic writes

def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; the cache is shared
    os.replace(tmp, path)


def atomic_torch_save(obj, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name, suffix=".tmp")
    os.close(fd)
    torch.save(obj, tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _write_folder_atomically(dest: Path, write) -> None:
    """Build a folder beside ``dest`` then rename it in, so readers never see half a folder."""
    import shutil

    if dest.exists():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix="." + dest.name + "."))
    try:
        write(tmp)
        os.chmod(tmp, 0o755)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---------------------------------------------------------------- teachers

def machine() -> str:
    try:
        import subprocess

        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except Exception:  # noqa: BLE001 - best effort
        pass
    return "unknown"


def train_teacher(attack: str, seed: int, *, recipe: dict | None = None, out_dir: Path | None = None,
                  device: str = "cpu", verbose: bool = True) -> dict:
    """Train one teacher, measure it on the 7,500 test images, cache ``.pt`` + ``.json``; returns the JSON."""
    import torch

    from bcu_gui.demo.digits import CIFAR10_NORM, attack_success_rate, evaluate, train_backdoored

    r = dict(RECIPE, **(recipe or {}))
    target = target_for(seed)
    x_all, y_all = load_split("train")
    idx = train_subset(seed, r["train_images"])
    x_train, y_train = x_all[idx], y_all[idx]
    fn = trigger(attack, seed)
    kwargs = dict(width=r["width"], epochs=r["epochs"], batch_size=r["batch_size"], lr=r["lr"],
                  weight_decay=r["weight_decay"], crop_pad=r["crop_pad"], seed=seed, verbose=verbose,
                  device=device)
    if attack == "clean":
        kwargs.update(attack=lambda x: x, target=target, poison_rate=0.0)
    elif attack == "sig":
        kwargs.update(attack=fn, target=target, poison_rate=r["sig_rate"], clean_label=True)
    else:
        kwargs.update(attack=fn, target=target, poison_rate=r["poison_rate"])
    if verbose:
        print(f"[{time.strftime('%H:%M:%S')}] training {name_of(attack, seed)}: {len(x_train)} images, "
              f"{r['epochs']} epochs, batch {r['batch_size']}, torch threads {torch.get_num_threads()}", flush=True)
    t0 = time.perf_counter()
    model = train_backdoored(x_train, y_train, **kwargs)
    train_s = time.perf_counter() - t0
    x_test, y_test = load_split("t10k")
    _, test_idx = test_split()
    xt, yt = x_test[test_idx], y_test[test_idx]
    mean, std = CIFAR10_NORM
    acc = evaluate(model, xt, yt, mean, std)
    asr = attack_success_rate(model, xt, yt, target, fn, mean, std) if fn else None
    meta = {
        "arch": "resnet18_cifar", "num_classes": 10, "width": r["width"], "input_size": SIZE,
        "normalize": r["normalize"], "mean": list(mean), "std": list(std),
        "attack": attack, "seed": seed, "target_class": target, "trigger": TRIGGERS[attack],
        "clean_label": attack == "sig",
        "poison_rate": 0.0 if attack == "clean" else (r["sig_rate"] if attack == "sig" else r["poison_rate"]),
        "poison_rate_of": "target class" if attack == "sig" else "training set",
        "train_images": len(x_train), "train_subset_seed": 1000 + seed,
        "recipe": {k: r[k] for k in ("epochs", "batch_size", "lr", "weight_decay", "crop_pad")},
        "teacher_acc": round(acc, 4), "teacher_asr": None if asr is None else round(asr, 4),
        "measured_on": "the 7,500 test images outside the defense set (ASR: their non-target ones, triggered)",
        "train_seconds": round(train_s, 1), "train_device": str(device), "torch_threads": torch.get_num_threads(), "machine": machine(),
        "torch": torch.__version__,
        "dataset": "Fashion-MNIST (Debian dataset-fashion-mnist), 28x28 grey as 3 identical channels",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path = teacher_path(attack, seed, out_dir)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")  # sidecar before weights
    atomic_torch_save(state, path)
    if verbose:
        asr_s = "-" if asr is None else f"{asr:.4f}"
        print(f"[{time.strftime('%H:%M:%S')}] {path.name}: ACC {acc:.4f} ASR {asr_s} in {train_s:.0f}s",
              flush=True)
    return meta


# ---------------------------------------------------------------- image folders for bcu cleanse

def ensure_defense_set() -> Path:
    """``defense-2500/`` (flat, unlabelled PNGs) and the split files; written once."""
    from bcu_gui.demo.digits import write_image_folder

    dest = CACHE / "defense-2500"
    if dest.exists():
        return dest
    x, y = load_split("t10k")
    d_idx, t_idx = test_split()
    _write_folder_atomically(dest, lambda tmp: write_image_folder(tmp, x[d_idx], numbers=d_idx.tolist()))
    atomic_write_text(CACHE / "defense-2500.labels.json",
                      json.dumps({f"{int(i):05d}.png": int(y[i]) for i in d_idx}) + "\n")
    atomic_write_text(CACHE / "split.json", json.dumps(
        {"seed": SPLIT_SEED, "source": "t10k", "defense": d_idx.tolist(), "test": t_idx.tolist()}) + "\n")
    return dest


def ensure_clean_eval() -> Path:
    from bcu_gui.demo.digits import write_image_folder

    dest = CACHE / "eval" / "clean-7500"
    if not dest.exists():
        x, y = load_split("t10k")
        _, t_idx = test_split()
        _write_folder_atomically(dest, lambda tmp: write_image_folder(tmp, x[t_idx], y[t_idx],
                                                                      numbers=t_idx.tolist()))
    return dest


def ensure_triggered_eval(attack: str, seed: int) -> Path | None:
    """``eval/<name>/triggered/<true class>/NNNNN.png``: the non-target test images with the exact trigger."""
    from bcu_gui.demo.digits import write_image_folder

    fn = trigger(attack, seed)
    if fn is None:
        return None
    dest = CACHE / "eval" / name_of(attack, seed) / "triggered"
    if not dest.exists():
        x, y = load_split("t10k")
        _, t_idx = test_split()
        keep = t_idx[y[t_idx] != target_for(seed)]
        _write_folder_atomically(dest, lambda tmp: write_image_folder(tmp, fn(x[keep]), y[keep],
                                                                      numbers=keep.tolist()))
    return dest


README_TXT = """Real-scale BCU benchmark cache (Fashion-MNIST), written by benchmarks/realscale/ on branch realscale.
Other benchmarks read it; only benchmarks/realscale/teachers.py and run.py write it (atomically).

teachers/<attack>-s<seed>-t<target>.pt    state_dict, CifarResNet([2,2,2,2], width 16), 10 classes, 28x28 input
teachers/<attack>-s<seed>-t<target>.json  sidecar read by `bcu cleanse`/`bcu scan` (arch, input_size 28,
                                          cifar10 normalisation) + teacher_acc, teacher_asr, recipe,
                                          train_seconds, machine. attack in badnets|blended|sig|wanet|clean;
                                          target = 3, 7, 5 for seeds 0, 1, 2 (clean models carry the same name
                                          pattern; their target is meaningless). A .json whose .pt is missing
                                          means the .pt is still being written: glob *.pt.
defense-2500/NNNNN.png                    the unlabelled defense set: 2,500 of the 10,000 test images (flat)
defense-2500.labels.json                  their labels ({"NNNNN.png": class}), for analysis only
eval/clean-7500/<class>/NNNNN.png         the other 7,500 test images, labelled: --eval-clean
eval/<attack>-s<seed>-t<target>/triggered/<true class>/NNNNN.png
                                          the non-target ones of those 7,500 with that teacher's exact trigger:
                                          --eval-poisoned ... --target-class <target>
split.json                                t10k indices of the defense and test parts (seed 2023)
failed/                                   teachers that did not implant (kept for the record; not for use):
                                          the first SIG (delta 40, 80% of the target class): ASR 0.54.
                                          sig-s0-t3 was retrained (delta 60, all of the target class) and
                                          eval/sig-s0-t3 rewritten with that trigger (2026-12-07 ~21:10 UTC).
runs/<setting>/<teacher>-<time>/          cleanse run folders written by run.py
NNNNN = index into t10k-images-idx3-ubyte.gz. Images: 28x28 grey saved as RGB PNG.

Example:
  python -m bcu_gui.cli cleanse ~/.cache/bcu-bench/realscale/teachers/badnets-s0-t3.pt \\
     --unlabeled ~/.cache/bcu-bench/realscale/defense-2500 \\
     --eval-clean ~/.cache/bcu-bench/realscale/eval/clean-7500 \\
     --eval-poisoned ~/.cache/bcu-bench/realscale/eval/badnets-s0-t3/triggered --target-class 3 --json
Runner (from a checkout of branch realscale, PYTHONPATH may point at another worktree's bcu_gui):
  python benchmarks/realscale/run.py --attacks badnets,blended,sig,wanet --seeds 0 --setting default
  python benchmarks/realscale/run.py --setting mine --extra-args "--preset strong" --epochs 40
"""


def write_readme() -> None:
    atomic_write_text(CACHE / "README.txt", README_TXT)
