"""Two PyTorch jobs on a small machine: how much each thread policy slows a training step (issue #22, point 8).

    python benchmarks/contention.py                 # every scenario, ~3 minutes on 2 cores
    python benchmarks/contention.py --steps 20      # shorter

Each scenario starts one or two worker processes that train the real-scale teacher's network (CIFAR ResNet-18,
width 16) on random 28x28 batches of 128 and print their median seconds per step. Workers import torch *before*
bcu_gui, so the wait policy each scenario names is the one OpenMP gets:

* ``alone`` rows: one worker, the machine otherwise idle: the speed to compare with;
* ``pair`` rows: two identical workers at once, as when a user trains while another PyTorch program runs;
* ``governed``: what ``bcu cleanse`` does on the CPU (``core/threads.py``): OpenMP's default wait policy and
  the thread count re-chosen every 10 steps from the CPUs other programs leave free.

It prints each row's seconds per step and its slowdown against ``alone, all CPUs, default policy``. Run it on an
otherwise idle machine: anything else running is a third job and changes every row.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(steps: int, governed: bool) -> None:
    import torch  # first: OpenMP reads OMP_WAIT_POLICY when torch loads it

    sys.path.insert(0, str(ROOT))
    from bcu_gui.core.threads import ThreadGovernor
    from bcu_gui.demo.digits import build_model

    torch.manual_seed(0)
    model = build_model(16, 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(128, 3, 28, 28), torch.randint(0, 10, (128,))
    governor = ThreadGovernor() if governed else None
    if governor is not None:
        governor.start()
    times, threads = [], []
    for i in range(steps + 3):
        if governor is not None and i % 10 == 5:
            governor.decide()
        start = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if i >= 3:  # warm-up steps are not counted
            times.append(time.perf_counter() - start)
            threads.append(torch.get_num_threads())
    print(json.dumps({"median": statistics.median(times), "threads": statistics.mode(threads)}))


SCENARIOS = [  # (name, workers, env, governed)
    ("alone, all CPUs, default policy", 1, {}, False),
    ("alone, all CPUs, passive", 1, {"OMP_WAIT_POLICY": "PASSIVE"}, False),
    ("alone, governed (bcu cleanse)", 1, {}, True),
    ("pair, all CPUs each, default policy", 2, {}, False),
    ("pair, all CPUs each, passive", 2, {"OMP_WAIT_POLICY": "PASSIVE"}, False),
    ("pair, 1 thread each", 2, {"OMP_NUM_THREADS": "1"}, False),
    ("pair, both governed (bcu cleanse)", 2, {}, True),
]


def run_scenario(workers: int, extra: dict[str, str], governed: bool, steps: int) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                            "OMP_WAIT_POLICY", "GOMP_SPINCOUNT",
                                                            "BCU_FIXED_THREADS")}
    env.update(extra)
    cmd = [sys.executable, __file__, "--worker", "--steps", str(steps)] + (["--governed"] if governed else [])
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(workers)]
    return [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40, help="timed steps per worker (default 40)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--governed", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.steps, args.governed)
        return 0
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = "unknown CPU"
    print(f"{cpu}, {os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.2f}")
    base = None
    print(f"{'scenario':40s} {'s/step (each worker)':>24s} {'threads':>8s} {'slowdown':>9s}")
    for name, workers, extra, governed in SCENARIOS:
        rows = run_scenario(workers, extra, governed, args.steps)
        worst = max(r["median"] for r in rows)
        base = base or worst
        each = " / ".join(f"{r['median']:.3f}" for r in rows)
        threads = "/".join(str(r["threads"]) for r in rows)
        print(f"{name:40s} {each:>24s} {threads:>8s} {worst / base:8.1f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
