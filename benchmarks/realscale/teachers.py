"""Train and cache the real-scale teachers, in order, skipping those already cached.

    OMP_NUM_THREADS=1 python benchmarks/realscale/teachers.py --attacks badnets,blended,wanet,sig,clean --seeds 0,1,2

Writes the cache layout described in fmnist.py / the cache's README.txt (defense set and eval folders too).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fmnist  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--attacks", default="badnets,blended,wanet,sig,clean")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=None, help=f"teacher epochs (default {fmnist.RECIPE['epochs']})")
    ap.add_argument("--train-images", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--retrain", action="store_true", help="train even when cached (overwrites)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    fmnist.load_split("t10k")  # fails early (exit 2) when the data is missing
    fmnist.write_readme()
    fmnist.ensure_defense_set()
    fmnist.ensure_clean_eval()
    recipe = {}
    if args.epochs:
        recipe["epochs"] = args.epochs
    if args.train_images:
        recipe["train_images"] = args.train_images
    attacks = [a for a in args.attacks.split(",") if a]
    for seed in [int(s) for s in args.seeds.split(",") if s]:  # seed-major: every family at seed 0 first
        for attack in attacks:
            path = fmnist.teacher_path(attack, seed)
            if path.exists() and not args.retrain:
                print(f"cached: {path}", flush=True)
            else:
                fmnist.train_teacher(attack, seed, recipe=recipe)
            fmnist.ensure_triggered_eval(attack, seed)
    print(f"[{time.strftime('%H:%M:%S')}] done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
