"""A big unlabelled folder under a memory budget: decode-to-cache speed, training-step speed and peak memory.

Makes (once, then reuses) a synthetic folder of JPEGs (random smooth colour fields with a little noise,
generated in parallel), picks the data path the engine would pick under ``--budget`` (20,000 images of 224x224
are 3.0 GB as uint8, over a 2 GB budget: the disk cache), decodes the folder into the memory-mapped cache, and
runs a few distillation steps of a torchvision ResNet-50 (re-initialised with the paper's ratios) streaming
from it through the engine's own parts (``Distiller`` + ``StreamedImages``). Prints images/s for the decode
and for the training steps, and the process's peak resident memory: ``ru_maxrss`` (everything, file pages
included) and the peak anonymous RSS sampled every 50 ms (the memory the process itself holds; file pages
are cache the OS can take back).

    python benchmarks/big_folder.py [--images 20000] [--size 224] [--budget 2GB] [--steps 5] [--batch-size 32]
        [--data DIR] [--cache DIR] [--fresh-cache] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import threading
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bcu_gui.core.batching import steps_per_epoch
from bcu_gui.core.data import load_unlabeled
from bcu_gui.core.devices import plan_compute
from bcu_gui.core.evaluation import EvalSets, Evaluator
from bcu_gui.core.groups import layer_groups, resolve_ratios
from bcu_gui.core.image_cache import load_unlabeled_cached
from bcu_gui.core.memory_budget import choose_data_path, format_bytes, parse_budget
from bcu_gui.core.models import load_model
from bcu_gui.core.reinit import build_student
from bcu_gui.core.streaming import StreamedImages
from bcu_gui.core.training import Distiller, RunState

BENCH_HOME = Path.home() / ".cache" / "bcu-bench"


# ------------------------------------------------------------------------------------------- the folder
def _one_image(job: tuple[Path, int, int]) -> None:
    path, index, size = job
    rng = np.random.default_rng(index)
    low = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(low).resize((size, size), Image.Resampling.BICUBIC), dtype=np.int16)
    img = np.clip(img + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(img).save(tmp, format="JPEG", quality=90)
    os.replace(tmp, path)  # a killed generation never leaves a half image under the real name


def make_folder(folder: Path, count: int, size: int) -> float:
    """Make the images of ``folder`` that are missing; returns the seconds spent (0 when all were there)."""
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(folder / f"img_{i:05d}.jpg", i, size) for i in range(count)]
    missing = [j for j in jobs if not j[0].exists()]
    if not missing:
        return 0.0
    start = time.perf_counter()
    with Pool(os.cpu_count() or 1) as pool:
        for _ in pool.imap_unordered(_one_image, missing, chunksize=64):
            pass
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------- memory
class PeakMemory:
    """Samples VmRSS and RssAnon from /proc/self/status (Linux) every 50 ms; keeps the maxima per phase."""

    def __init__(self) -> None:
        self.peaks: dict[str, tuple[int, int]] = {}
        self.phase = "start"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def sample() -> tuple[int, int]:
        values = {"VmRSS": 0, "RssAnon": 0}
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    key = line.split(":", 1)[0]
                    if key in values:
                        values[key] = int(line.split()[1]) * 1024
        except OSError:
            pass
        return values["VmRSS"], values["RssAnon"]

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, anon = self.sample()
            old = self.peaks.get(self.phase, (0, 0))
            self.peaks[self.phase] = (max(old[0], rss), max(old[1], anon))
            self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# ----------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--budget", default="2GB", help="memory budget, e.g. 2GB (default) or auto")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps (after one warm-up step)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--data", type=Path, help="the synthetic folder (default ~/.cache/bcu-bench/big-N-SIZE)")
    parser.add_argument("--cache", type=Path, default=BENCH_HOME / "image-cache", help="decoded-image cache folder")
    parser.add_argument("--fresh-cache", action="store_true", help="delete the decoded cache first (time the decode)")
    args = parser.parse_args()

    folder = args.data or BENCH_HOME / f"big-{args.images}-{args.size}"
    memory = PeakMemory()
    memory.phase = "folder"
    made = make_folder(folder, args.images, args.size)
    print(f"folder       {folder}: {args.images:,} JPEGs of {args.size}x{args.size} "
          + (f"(made in {made:.1f} s, {args.images / made:,.0f} images/s)" if made else "(reused)"))

    plan = plan_compute(args.device, args.precision)
    choice = choose_data_path(args.images, args.size, plan.device, parse_budget(args.budget))
    print(f"data path    {choice.path}: {choice.reason}")

    memory.phase = "decode"
    start = time.perf_counter()
    if choice.streamed:
        if args.fresh_cache and args.cache.exists():
            shutil.rmtree(args.cache)
        cached = load_unlabeled_cached(folder, args.size, cache_dir=args.cache)
        host, source = cached.images.images, cached.path
        what = (f"cache        {'reused' if cached.reused else 'decoded'} {len(host):,} images "
                f"({format_bytes(cached.path.stat().st_size)})")
    else:  # under the budget: the engine's in-memory path, for comparison
        host, source = load_unlabeled(folder, args.size).images, None
        what = f"memory       decoded {len(host):,} images into RAM"
    seconds = time.perf_counter() - start
    n = len(host)
    print(f"{what} in {seconds:.1f} s: {n / seconds:,.0f} images/s" + (f" -> {source}" if source else ""))

    memory.phase = "model"
    ckpt = BENCH_HOME / "resnet50-random.pt"
    if not ckpt.exists():
        from torchvision.models import resnet50

        torch.manual_seed(0)
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        torch.save(resnet50().state_dict(), ckpt)
    model = load_model(ckpt, arch="resnet50")
    groups = layer_groups(model.module)
    ratios = resolve_ratios(groups, "paper", {})
    student, _ = build_student(model.module, model.fresh(0), groups, ratios, 0)
    stream = StreamedImages(host, plan.device, source=source) if choice.streamed else None
    bs = args.batch_size
    state = RunState(epochs=1, steps_per_epoch=steps_per_epoch(n, bs), batch_size=bs)
    evaluator = Evaluator(EvalSets(None, None, None), model.normalization, plan)
    d = Distiller(teacher=model.module, student=student, images=stream if stream is not None else host, evaluator=evaluator, plan=plan, state=state,
                  lr=0.01, momentum=0.9, weight_decay=5e-4, crop_padding=4, flip=True, seed=0,
                  temperature_start=1.0, temperature_rise=3.0, keep="last", ema_decay=None)
    memory.phase = "train"
    d.start()
    d.begin_epoch()
    d.step()  # warm-up: first-call allocations and oneDNN kernel choice
    if stream is not None:
        stream.waits = 0
    start = time.perf_counter()
    for _ in range(args.steps):
        d.step()
    seconds = time.perf_counter() - start
    waits = ""
    if stream is not None:
        stream.close()
        waits = f"; the loop waited for a batch {stream.waits} time(s)"
    print(f"training     {args.steps} steps of batch {bs} (ResNet-50 teacher + student, {plan.describe()}): "
          f"{args.steps * bs / seconds:,.1f} images/s{waits}")
    memory.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    print(f"peak RSS     {format_bytes(peak)} (ru_maxrss, whole run)")
    for phase in ("decode", "model", "train"):
        rss, anon = memory.peaks.get(phase, (0, 0))
        print(f"  {phase:7s}    RSS {format_bytes(rss)}, anonymous {format_bytes(anon)} (sampled every 50 ms)")
    print(f"budget       {format_bytes(choice.host_budget)}; the decoded set is {format_bytes(choice.needed)}")


if __name__ == "__main__":
    main()
