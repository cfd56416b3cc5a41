"""Distillation throughput: the engine (`CleanseJob`) against a bare loop on the same tensors.

Prints distilled images per second for both and their ratio. The bare loop is the least a distillation step
can do: teacher forward + student forward/backward + SGD step, on pre-made normalised tensors, no
augmentation, no events. The engine's figure counts its training steps only (per-epoch evaluation excluded,
reported separately), so the ratio measures the engine's per-step overhead.

    python benchmarks/throughput.py [--width 16] [--images 400] [--batch-size 256] [--epochs 6] [--precision fp32]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from bcu_gui.core.devices import plan_compute
from bcu_gui.core.events import EpochEnd, Failed, Step
from bcu_gui.core.job import CleanseConfig, CleanseJob
from bcu_gui.core.nets import CifarResNet
from bcu_gui.core.normalization import PRESETS


def make_inputs(root: Path, count: int, width: int) -> tuple[Path, Path, torch.Tensor]:
    """A random teacher and `count` random 32x32 images, saved as PNGs (lossless: the engine reads the same)."""
    torch.manual_seed(0)
    teacher = CifarResNet([2, 2, 2, 2], 10, width)
    ckpt = root / "teacher.pt"
    torch.save(teacher.state_dict(), ckpt)
    images = np.random.default_rng(0).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    folder = root / "unlabeled"
    folder.mkdir()
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i:05d}.png")
    return ckpt, folder, torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def engine(ckpt: Path, folder: Path, args: argparse.Namespace, out: Path) -> tuple[float, float]:
    """(training images/s, whole-run images/s) of the engine, after a warm-up epoch.

    Training time of an epoch runs from the previous epoch's end event to the epoch's last step event: it
    holds everything the engine does per batch and nothing of the per-epoch evaluation that follows.
    """
    cfg = CleanseConfig(checkpoint=str(ckpt), unlabeled=str(folder), preset="strong", epochs=args.epochs,
                        batch_size=args.batch_size, device=args.device, precision=args.precision,
                        channels_last=args.channels_last, out=str(out))
    train_seconds, epochs_timed = 0.0, 0
    epoch_start = whole_start = last_step = None
    for event in CleanseJob(cfg).events():
        now = time.perf_counter()
        if isinstance(event, Step):
            last_step = now
        elif isinstance(event, EpochEnd):
            if event.epoch >= 2 and epoch_start is not None and last_step is not None:
                train_seconds += last_step - epoch_start
                epochs_timed += 1
            if event.epoch == 1:
                whole_start = now
            epoch_start = now
        elif isinstance(event, Failed):
            raise SystemExit(f"engine failed: {event.message}")
    whole = epochs_timed * args.images / (time.perf_counter() - whole_start)
    return epochs_timed * args.images / train_seconds, whole


def bare_loop(images: torch.Tensor, args: argparse.Namespace) -> float:
    """Images/s of the minimal distillation step on the same tensors, after a warm-up epoch."""
    plan = plan_compute(args.device, args.precision, args.channels_last)
    memory = torch.channels_last if plan.channels_last else torch.contiguous_format
    norm = PRESETS["cifar10"]
    mean = torch.tensor(norm.mean).view(1, 3, 1, 1)
    std = torch.tensor(norm.std).view(1, 3, 1, 1)
    x_all = ((images.float() / 255 - mean) / std).to(plan.device).contiguous(memory_format=memory)
    torch.manual_seed(0)
    teacher = CifarResNet([2, 2, 2, 2], 10, args.width).to(plan.device, memory_format=memory).eval()
    student = copy.deepcopy(teacher).train()
    opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    seconds, count = 0.0, 0
    for epoch in range(args.epochs):
        start = time.perf_counter()
        for b in range(0, len(x_all), args.batch_size):
            x = x_all[b:b + args.batch_size]
            with torch.inference_mode(), plan.autocast():
                p = F.softmax(teacher(x).float() / 2.0, 1)
            p = p.clone()
            with plan.autocast():
                s = student(x)
            loss = F.kl_div(F.log_softmax(s.float() / 2.0, 1), p, reduction="batchmean")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()
        if epoch >= 1:
            seconds += time.perf_counter() - start
            count += len(x_all)
    return count / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--channels-last", type=lambda s: s.lower() in ("1", "true", "yes"), default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ckpt, folder, images = make_inputs(root, args.images, args.width)
        plan = plan_compute(args.device, args.precision, args.channels_last)
        print(f"CIFAR ResNet-18 width {args.width}, {args.images} images 32x32, batch {args.batch_size}, "
              f"{args.epochs} epochs (first is warm-up), {plan.describe()}, {torch.get_num_threads()} threads")
        bare = bare_loop(images, args)
        train, whole = engine(ckpt, folder, args, root / "run")
        print(f"bare loop         {bare:8.1f} images/s")
        print(f"engine (training) {train:8.1f} images/s  = {train / bare:.0%} of the bare loop")
        print(f"engine (with per-epoch evaluation) {whole:8.1f} images/s")


if __name__ == "__main__":
    main()
