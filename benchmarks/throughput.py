"""Distillation throughput: a naive research-style loop, the bare loop and the engine with each fast path.

One run, the same images for every variant (the demo's unlabelled 32x32 images, or scikit-learn digits
upscaled to 32x32), CIFAR ResNet-18-style teachers of each width (seeded random weights: speed does not
depend on what the weights say). Every variant does the same work per optimiser step: teacher forward at
temperature T, student forward/backward on the KL loss, one SGD step (momentum, weight decay).

- ``naive``: what a research script does. A torchvision ``ImageFolder`` of PNG files, per-sample
  ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize`` in a ``DataLoader``,
  fp32, contiguous (NCHW) tensors, ``loss.item()`` every step for the log.
- ``bare``: the least the step can do. uint8 images in memory on the device, the engine's batched
  augmentation (one gather per batch), fp32, NCHW, no events, no hooks.
- ``engine-*``: the real ``CleanseJob`` (``Distiller``: augmentation, EMA of the weights, the device-side
  loss reader, events), with each fast path alone and combined: channels-last, mixed precision (bf16 on the
  CPU, fp16 on CUDA), ``torch.compile`` (of the teacher and the student, through a hook), and ``engine``
  itself: the engine's automatic choice (``--precision auto``, channels-last auto), what a user gets.

One repeat is one epoch (``--images`` images in ``--steps`` steps). The variants take turns, repeat by repeat
(the order rotating), so noise from other work on the machine hits them alike, and a ratio is the median of
the ratios within each repeat; the first ``--warmup`` epochs
of each are left out (their excess over a timed epoch is reported as ``first_epoch_extra_s``: the compile
time for the compiled variants). An engine epoch's time is the job's own ``EpochEnd.seconds``: the epoch's
steps and the end-of-epoch loss read, not the per-epoch evaluation that follows it. Everything goes to a
JSON file (machine, load average at start and end, every repeat) and a table is printed.

    python benchmarks/throughput.py                        # widths 16 and 64, 128 images in 2 steps
    python benchmarks/throughput.py --widths 16 --images 256 --steps 4 --no-compile --out results.json
    python benchmarks/throughput.py --gpu-target            # width 64, 5,000 images x 100 epochs, on CUDA

``--gpu-target`` runs the GPU goal of issue 15 (a width-64 CIFAR ResNet-18 cleansed on 5,000 images for 100
epochs in under 30 s, no per-step host-device synchronisation) with the engine's defaults and prints its time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch.nn import functional as F

from bcu_gui.core.data import random_crop_flip, to_model_input
from bcu_gui.core.devices import cpu_supports_bf16, plan_compute, resolve_device
from bcu_gui.core.events import EpochEnd, Failed, Finished, Started
from bcu_gui.core.job import CleanseConfig, CleanseJob
from bcu_gui.core.nets import CifarResNet
from bcu_gui.core.normalization import PRESETS
from bcu_gui.core.training import RunHook

SCHEMA = 1
TEMPERATURE = 2.0
NORM = PRESETS["cifar10"]
# the engine's fast paths, alone and together: name -> (precision, channels_last, compile)
ENGINE_VARIANTS = {
    "engine-fp32": ("fp32", False, False),
    "engine-cl": ("fp32", True, False),
    "engine-amp": ("amp", False, False),
    "engine-compile": ("fp32", False, True),
    "engine-cl-amp": ("amp", True, False),
    "engine-cl-amp-compile": ("amp", True, True),
    "engine": ("auto", None, False),  # what the engine picks by itself
}
ALL_VARIANTS = ("naive", "bare", *ENGINE_VARIANTS)
GPU_TARGET = {"width": 64, "images": 5000, "epochs": 100, "seconds": 30.0}


# -- the machine ---------------------------------------------------------------------------------------------
def machine_info(device: torch.device) -> dict:
    """CPU model and the flags that decide the fast paths, torch's version and threads, the GPU if used."""
    model, flags = platform.processor() or "", set()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Model name":
                model = value.strip()
            elif key.strip() == "Flags":
                flags = set(value.split())
    except (OSError, subprocess.SubprocessError):
        pass
    if not flags and Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.partition(":")[2].split())
                break
    info = {"cpu_model": model, "cpu_count": os.cpu_count(), "avx2": "avx2" in flags,
            "avx512f": "avx512f" in flags, "avx512_bf16": "avx512_bf16" in flags,
            "amx": bool({"amx_bf16", "amx_tile"} & flags), "native_bf16": cpu_supports_bf16(),
            "torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
            "device": str(device), "gpu": None}
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:
        info["torchvision"] = None
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# -- the inputs ----------------------------------------------------------------------------------------------
def source_images(count: int, data: str) -> torch.Tensor:
    """``count`` uint8 ``[N, 3, 32, 32]`` images: the demo's unlabelled set, or digits (repeated if needed)."""
    if data == "demo":
        from bcu_gui.core.data import load_unlabeled
        from bcu_gui.demo import demo_dir

        images = load_unlabeled(demo_dir() / "unlabeled", 32).images
        if len(images) < count:
            raise SystemExit(f"the demo holds {len(images)} unlabelled images; use --data digits for {count}")
        return images[:count]
    if data == "digits":
        from bcu_gui.demo.digits import load_digits_rgb

        images, _ = load_digits_rgb(32)
        return images.repeat((count + len(images) - 1) // len(images), 1, 1, 1)[:count].contiguous()
    raise SystemExit(f"unknown --data '{data}': use demo or digits")


def write_folder(root: Path, images: torch.Tensor) -> Path:
    """The images as PNGs under ``root/unlabeled/all/`` (lossless: every variant reads the same pixels).

    The one sub-folder makes it a torchvision ``ImageFolder`` for the naive loop; the engine reads folders
    recursively and ignores sub-folder names.
    """
    from bcu_gui.demo.digits import write_image_folder

    folder = root / "unlabeled"
    write_image_folder(folder / "all", images)
    return folder


def make_teacher(width: int) -> CifarResNet:
    torch.manual_seed(0)
    return CifarResNet([2, 2, 2, 2], 10, width).eval()


def save_teacher(root: Path, width: int) -> Path:
    path = root / f"teacher-w{width}.pt"
    torch.save(make_teacher(width).state_dict(), path)
    return path


# -- one distillation step, as the naive and the bare loop do it -------------------------------------------
def kd_step(teacher: torch.nn.Module, student: torch.nn.Module, opt: torch.optim.Optimizer,
            x: torch.Tensor) -> torch.Tensor:
    """Teacher forward, student forward/backward on KL(teacher || student) at temperature T, SGD step."""
    with torch.no_grad():
        p = F.softmax(teacher(x) / TEMPERATURE, dim=1)
    loss = F.kl_div(F.log_softmax(student(x) / TEMPERATURE, dim=1), p, reduction="batchmean")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def _pair(width: int, device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module, torch.optim.Optimizer]:
    teacher = make_teacher(width).to(device)
    torch.manual_seed(1)
    student = CifarResNet([2, 2, 2, 2], 10, width).to(device).train()
    opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    return teacher, student, opt


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def naive_dataset(folder: Path, augment: bool = True):
    """A torchvision ``ImageFolder`` with the usual per-sample CIFAR transforms (PIL in, normalised tensor out)."""
    from torchvision import datasets, transforms

    steps = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] if augment else []
    transform = transforms.Compose([*steps, transforms.ToTensor(), transforms.Normalize(NORM.mean, NORM.std)])
    return datasets.ImageFolder(str(folder), transform=transform)


def naive_loop(folder: Path, width: int, batch: int, device: torch.device, workers: int = 0) -> Iterator[float]:
    """A research-style loop; yields the seconds of each epoch (all of ``folder`` once)."""
    from torch.utils.data import DataLoader

    dataset = naive_dataset(folder)
    torch.manual_seed(2)
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
                        pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    teacher, student, opt = _pair(width, device)
    while True:
        start = time.perf_counter()
        running = 0.0
        for x, _ in loader:
            running += kd_step(teacher, student, opt, x.to(device, non_blocking=True)).item()  # the log line
        _sync(device)
        yield time.perf_counter() - start


def bare_loop(images: torch.Tensor, width: int, batch: int, device: torch.device) -> Iterator[float]:
    """The least a distillation step can do, in fp32 on in-memory tensors; yields each epoch's seconds."""
    data = images.to(device)
    mean = torch.tensor(NORM.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(NORM.std, device=device).view(1, 3, 1, 1)
    teacher, student, opt = _pair(width, device)
    order_gen = torch.Generator().manual_seed(3)
    aug_gen = torch.Generator(device=device).manual_seed(3)
    steps = len(data) // batch
    while True:
        start = time.perf_counter()
        order = torch.randperm(len(data), generator=order_gen).to(device)
        total = torch.zeros((), device=device)
        for i in range(steps):
            x = to_model_input(random_crop_flip(data[order[i * batch:(i + 1) * batch]], 4, True, aug_gen), mean, std)
            total += kd_step(teacher, student, opt, x)
        float(total)  # one read an epoch
        _sync(device)
        yield time.perf_counter() - start


def engine_precision(precision: str, device: torch.device) -> str:
    """A variant's precision as the engine takes it: ``amp`` is bf16 on the CPU and fp16 on CUDA."""
    if precision == "amp":
        return "fp16" if device.type == "cuda" else "bf16"
    return precision


class CompileHook(RunHook):
    """``torch.compile`` the teacher and the student in place (``Module.compile``: state dicts unchanged)."""

    def on_start(self, run) -> None:
        run.teacher.compile()
        run.student.compile()


def engine_loop(checkpoint: Path, folder: Path, batch: int, epochs: int, device: torch.device, precision: str,
                channels_last: bool | None, compiled: bool, out: Path) -> Iterator[float]:
    """The real job; yields each epoch's training seconds (``EpochEnd.seconds``) as the job reports it."""
    cfg = CleanseConfig(checkpoint=str(checkpoint), unlabeled=str(folder), preset="strong", epochs=epochs,
                        batch_size=batch, device=str(device), precision=engine_precision(precision, device),
                        channels_last=channels_last,
                        out=str(out), use_bundled_eval=False)
    for event in CleanseJob(cfg, hooks=[CompileHook()] if compiled else []).events():
        if isinstance(event, EpochEnd):
            yield event.seconds
        elif isinstance(event, Failed):
            raise RuntimeError(f"the engine failed: {event.message}")


# -- the run -------------------------------------------------------------------------------------------------
@dataclass
class Variant:
    name: str
    width: int
    epochs: Iterator[float]
    settings: dict
    seconds: list[float] = field(default_factory=list)


def make_variants(names: list[str], width: int, images: torch.Tensor, folder: Path, checkpoint: Path, batch: int,
                  epochs: int, device: torch.device, workers: int, root: Path) -> list[Variant]:
    variants = []
    for name in names:
        if name == "naive":
            gen, settings = naive_loop(folder, width, batch, device, workers), {
                "precision": "fp32", "channels_last": False, "compile": False, "workers": workers}
        elif name == "bare":
            gen, settings = bare_loop(images, width, batch, device), {
                "precision": "fp32", "channels_last": False, "compile": False}
        else:
            precision, cl, compiled = ENGINE_VARIANTS[name]
            plan = plan_compute(str(device), engine_precision(precision, device), cl)  # what the job will use
            gen = engine_loop(checkpoint, folder, batch, epochs, device, precision, cl, compiled,
                              root / f"run-{name}-w{width}")
            settings = {"precision": plan.precision, "channels_last": plan.channels_last, "compile": compiled}
        variants.append(Variant(name, width, gen, settings))
    return variants


def run_width(width: int, names: list[str], images: torch.Tensor, folder: Path, root: Path, args,
              device: torch.device, log: Callable[[str], None]) -> list[dict]:
    """Every variant of one width, repeats interleaved; one row per variant."""
    batch = len(images) // args.steps
    checkpoint = save_teacher(root, width)
    epochs = args.warmup + args.repeats
    variants = make_variants(names, width, images, folder, checkpoint, batch, epochs, device, args.naive_workers,
                             root)
    for r in range(epochs):
        shift = r % len(variants)
        for v in variants[shift:] + variants[:shift]:
            v.seconds.append(next(v.epochs))
            log(f"  width {width} repeat {r + 1}/{epochs} {v.name:<22} {len(images) / v.seconds[-1]:8.1f} images/s")
    for v in variants:
        v.epochs.close()  # ends the job's generator (its run folder lives in the temporary directory)
    rows = []
    for v in variants:
        timed = v.seconds[args.warmup:]
        median = statistics.median(timed)
        rows.append({"width": width, "variant": v.name, **v.settings, "images": len(images), "steps": args.steps,
                     "batch_size": batch, "seconds": [round(s, 4) for s in timed],
                     "warmup_seconds": [round(s, 4) for s in v.seconds[:args.warmup]],
                     "first_epoch_extra_s": round(v.seconds[0] - median, 3),
                     "images_per_second": round(len(images) / median, 1)})
    timed = {v.name: v.seconds[args.warmup:] for v in variants}
    for row in rows:
        row["vs_bare_fp32"] = paired_ratio(timed.get("bare"), timed[row["variant"]])
        row["vs_naive"] = paired_ratio(timed.get("naive"), timed[row["variant"]])
    return rows


def paired_ratio(base: list[float] | None, seconds: list[float]) -> float | None:
    """Median over repeats of (base's epoch time / this variant's) in the same repeat.

    Each repeat runs every variant one after the other, so a slow spell of the machine mostly hits both sides
    of a pair: the median of the pairs' ratios is steadier than the ratio of the two medians.
    """
    if base is None:
        return None
    return round(statistics.median(b / s for b, s in zip(base, seconds)), 3)


def target(rows: list[dict], device: torch.device, native_bf16: bool) -> dict | None:
    """Issue 15's CPU goal: the engine (its own automatic choice) >= 2x the fp32 bare loop with native bf16,
    >= 1.3x without. Per width."""
    if device.type != "cpu":
        return None
    needed = 2.0 if native_bf16 else 1.3
    result = {"needed": needed, "native_bf16": native_bf16, "widths": {}}
    for row in rows:
        if row["variant"] == "engine" and row["vs_bare_fp32"] is not None:
            result["widths"][str(row["width"])] = {"ratio": row["vs_bare_fp32"], "met": row["vs_bare_fp32"] >= needed}
    return result


def table(rows: list[dict]) -> str:
    lines = [f"{'width':>5}  {'variant':<22} {'precision':<9} {'cl':<3} {'compile':<7} {'images/s':>9} "
             f"{'vs bare':>8} {'vs naive':>8} {'1st epoch +s':>12}"]
    def ratio(x: float | None) -> str:
        return f"{x:7.2f}x" if x is not None else "       -"

    for r in rows:
        cl, compiled = "yes" if r["channels_last"] else "no", "yes" if r["compile"] else "no"
        lines.append(f"{r['width']:>5}  {r['variant']:<22} {r['precision']:<9} {cl:<3} {compiled:<7} "
                     f"{r['images_per_second']:9.1f} {ratio(r['vs_bare_fp32'])} {ratio(r['vs_naive'])} "
                     f"{r['first_epoch_extra_s']:12.2f}")
    return "\n".join(lines)


def run_benchmark(args, log: Callable[[str], None] = print) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    names = list(args.variants or ALL_VARIANTS)
    if args.no_compile:
        names = [n for n in names if not (n in ENGINE_VARIANTS and ENGINE_VARIANTS[n][2])]
    unknown = sorted(set(names) - set(ALL_VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variant(s) {', '.join(unknown)}: use {', '.join(ALL_VARIANTS)}")
    if args.images < 2 * args.steps:
        raise SystemExit("--images must be at least twice --steps (batches of at least 2)")
    images_needed = args.images - args.images % args.steps
    result = {"schema": SCHEMA, "benchmark": "throughput", "command": " ".join(map(shlex.quote, sys.argv)),
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine_info(device),
              "load_average": {"start": load_average()},
              "settings": {"widths": args.widths, "images": images_needed, "steps": args.steps,
                           "batch_size": images_needed // args.steps, "warmup": args.warmup,
                           "repeats": args.repeats, "data": args.data, "naive_workers": args.naive_workers,
                           "temperature": TEMPERATURE, "variants": names}}
    wall = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        images = source_images(images_needed, args.data)
        folder = write_folder(root, images)
        rows = []
        for width in args.widths:
            rows += run_width(width, names, images, folder, root, args, device, log)
    result["rows"] = rows
    result["target"] = target(rows, device, result["machine"]["native_bf16"])
    result["load_average"]["end"] = load_average()
    result["wall_seconds"] = round(time.perf_counter() - wall, 1)
    return result


# -- the GPU goal --------------------------------------------------------------------------------------------
def gpu_target(device_name: str, images: int, epochs: int, width: int, data: str, log: Callable[[str], None] = print
               ) -> dict:
    """Cleanse a width-``width`` CIFAR ResNet-18 on ``images`` images for ``epochs`` epochs with the engine's
    defaults; the run's wall time from ``Started`` to ``Finished`` and its training time."""
    device = resolve_device(device_name)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = write_folder(root, source_images(images, data))
        cfg = CleanseConfig(checkpoint=str(save_teacher(root, width)), unlabeled=str(folder), preset="strong",
                            epochs=epochs, device=str(device), out=str(root / "run"), use_bundled_eval=False)
        job_start = time.perf_counter()
        started = finished = None
        train_seconds, summary = 0.0, None
        for event in CleanseJob(cfg).events():
            if isinstance(event, Started):
                started = time.perf_counter()
                log(f"started: {event.images} images, batch {event.batch_size}, {event.steps_per_epoch} steps an "
                    f"epoch, {event.device}")
            elif isinstance(event, EpochEnd):
                train_seconds += event.seconds
            elif isinstance(event, Finished):
                finished, summary = time.perf_counter(), event.summary
            elif isinstance(event, Failed):
                raise RuntimeError(f"the engine failed: {event.message}")
        assert started is not None and finished is not None and summary is not None
    run_seconds = finished - started
    return {"width": width, "images": images, "epochs": epochs, "device": summary.device,
            "batch_size": summary.batch_size, "steps": summary.steps,
            "setup_seconds": round(started - job_start, 2), "run_seconds": round(run_seconds, 2),
            "training_seconds": round(train_seconds, 2), "target_seconds": GPU_TARGET["seconds"],
            "met": run_seconds < GPU_TARGET["seconds"],
            "images_per_second": round(images * epochs / run_seconds, 1)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 64], help="ResNet-18 widths (default 16 64)")
    parser.add_argument("--images", type=int, default=128, help="images an epoch (= one timed repeat)")
    parser.add_argument("--steps", type=int, default=2, help="optimiser steps an epoch (batch = images / steps)")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per variant")
    parser.add_argument("--warmup", type=int, default=1, help="untimed first epochs per variant")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", choices=("demo", "digits"), default="demo")
    parser.add_argument("--variants", nargs="+", default=None, help=f"a subset of {', '.join(ALL_VARIANTS)}")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile variants")
    parser.add_argument("--naive-workers", type=int, default=0, help="DataLoader workers of the naive loop")
    parser.add_argument("--out", default="throughput-results.json", help="the JSON file written")
    parser.add_argument("--gpu-target", action="store_true",
                        help="run only the GPU goal: width 64, 5,000 images x 100 epochs, engine defaults")
    parser.add_argument("--target-images", type=int, default=GPU_TARGET["images"], help=argparse.SUPPRESS)
    parser.add_argument("--target-epochs", type=int, default=GPU_TARGET["epochs"], help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*TF32.*")
    if args.gpu_target:
        device = "cuda" if args.device == "cpu" and torch.cuda.is_available() else args.device
        result = {"schema": SCHEMA, "benchmark": "gpu-target", "command": " ".join(map(shlex.quote, sys.argv)),
                  "machine": machine_info(resolve_device(device)), "load_average": {"start": load_average()}}
        result["gpu_target"] = gpu_target(device, args.target_images, args.target_epochs, GPU_TARGET["width"],
                                          "digits")
        result["load_average"]["end"] = load_average()
        g = result["gpu_target"]
        print(f"width-{g['width']} CIFAR ResNet-18, {g['images']} images x {g['epochs']} epochs on {g['device']}: "
              f"{g['run_seconds']:.1f} s ({g['training_seconds']:.1f} s training, setup {g['setup_seconds']:.1f} s "
              f"before); goal < {g['target_seconds']:.0f} s: {'met' if g['met'] else 'NOT met'}")
    else:
        result = run_benchmark(args, log=lambda m: print(m, file=sys.stderr, flush=True))
        m = result["machine"]
        print(f"{m['cpu_model']} ({m['cpu_count']} CPUs, avx512_bf16 {'yes' if m['avx512_bf16'] else 'no'}, "
              f"AMX {'yes' if m['amx'] else 'no'}), torch {m['torch']}, {m['threads']} threads, device {m['device']}; "
              f"load average {result['load_average']['start']} -> {result['load_average']['end']}")
        s = result["settings"]
        print(f"{s['images']} images ({s['data']}) in {s['steps']} steps of {s['batch_size']} an epoch, "
              f"{s['warmup']} warm-up + {s['repeats']} timed epochs per variant, interleaved; median shown; "
              f"{result['wall_seconds']:.0f} s in all")
        print(table(result["rows"]))
        t = result["target"]
        if t:
            for width, w in t["widths"].items():
                print(f"target (width {width}): engine {w['ratio']:.2f}x the fp32 bare loop, needed "
                      f"{t['needed']:.1f}x: {'met' if w['met'] else 'NOT met'}")
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
