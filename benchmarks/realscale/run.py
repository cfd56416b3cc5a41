"""Real-scale BCU benchmark runner: cleanse cached Fashion-MNIST teachers with a named setting, log raw rows,
print a Table-1-style table.

    python benchmarks/realscale/run.py --quick                      # BadNets, seed 0, default setting, 20 epochs
    python benchmarks/realscale/run.py --attacks badnets,blended,sig,wanet --seeds 0,1,2 --setting default
    python benchmarks/realscale/run.py --setting paper               # = --preset paper
    python benchmarks/realscale/run.py --setting my-term --extra-args "--my-flag 0.5" --epochs 40
    python benchmarks/realscale/run.py --table                       # only print the table from the JSONL

The CLI is run as ``sys.executable -m bcu_gui.cli cleanse ...`` with this environment, so PYTHONPATH picks the
``bcu_gui`` under test (another worktree's flags work). Missing teachers are trained first (see teachers.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fmnist  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEFAULT_JSONL = REPO / "benchmarks" / "results" / "realscale.jsonl"
SETTINGS = {"default": [], "paper": ["--preset", "paper"]}
PAPER = {"badnets": (92.15, 3.00), "blended": (93.16, 4.90), "sig": (92.58, 0.91), "wanet": (92.05, 9.86)}
FAMILIES = ("badnets", "blended", "sig", "wanet")


def _git_commit(path: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else None
    except Exception:  # noqa: BLE001
        return None


def _engine_source(env: dict) -> tuple[str, str | None]:
    """Where the child process will import bcu_gui from, and that checkout's commit."""
    code = "import bcu_gui, os; print(os.path.dirname(os.path.dirname(os.path.abspath(bcu_gui.__file__))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    root = out.stdout.strip() or "?"
    return root, _git_commit(Path(root)) if root != "?" else None


def _min_asr(run_dir: Path) -> tuple[float | None, int | None]:
    best = (None, None)
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return best
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        asr = rec.get("asr")
        if isinstance(asr, (int, float)) and (best[0] is None or asr < best[0]):
            best = (float(asr), rec.get("epoch"))
    return best


def ensure_teacher(attack: str, seed: int, width: int, device: str) -> Path:
    if width != fmnist.RECIPE["width"]:
        root = fmnist.CACHE / f"teachers-w{width}"
    else:
        root = None
    path = fmnist.teacher_path(attack, seed, root)
    if path.exists():
        return path
    recipe = {"width": width}
    print(f"no cached teacher {path.name}: training it (the full recipe, also in --quick)", flush=True)
    fmnist.train_teacher(attack, seed, recipe=recipe, out_dir=root, device=device)
    return path


QUICK_EPOCHS = 20  # --quick: the default setting's first 20 epochs (the unlearning term acts in the first few)


def run_one(attack: str, seed: int, setting: str, flags: list[str], args, env: dict, engine: tuple) -> dict:
    teacher = ensure_teacher(attack, seed, args.width, args.device)
    meta = json.loads(teacher.with_suffix(".json").read_text(encoding="utf-8"))
    unlabeled = fmnist.ensure_defense_set()
    clean = fmnist.ensure_clean_eval()
    triggered = fmnist.ensure_triggered_eval(attack, seed)
    target = fmnist.target_for(seed)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = fmnist.CACHE / "runs" / setting / f"{teacher.stem}-{stamp}"
    cmd = [sys.executable, "-m", "bcu_gui.cli", "cleanse", str(teacher), "--unlabeled", str(unlabeled),
           "--eval-clean", str(clean), "--target-class", str(target), "--out", str(run_dir), "--json"]
    if triggered is not None:
        cmd += ["--eval-poisoned", str(triggered)]
    if args.device != "cpu":
        cmd += ["--device", args.device]
    cmd += flags
    if args.epochs:
        cmd += ["--epochs", str(args.epochs)]
    print(f"[{time.strftime('%H:%M:%S')}] {teacher.stem} / {setting}: {shlex.join(cmd)}", flush=True)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    with open(str(run_dir) + ".stdout", "w", encoding="utf-8") as out, \
            open(str(run_dir) + ".stderr", "w", encoding="utf-8") as err:
        proc = subprocess.run(cmd, stdout=out, stderr=err, env=env)
    wall = time.perf_counter() - t0
    load1 = os.getloadavg()[0]
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
    if proc.returncode != 0 or not summary:
        tail = Path(str(run_dir) + ".stderr").read_text(encoding="utf-8", errors="replace")[-2000:]
        print(f"cleanse failed (exit {proc.returncode}):\n{tail}", file=sys.stderr, flush=True)
    cleansed = summary.get("cleansed") or {}
    best = summary.get("best") or {}
    min_asr, min_epoch = _min_asr(run_dir)
    import torch

    row = {
        "attack": attack, "seed": seed, "target": target, "setting": setting,
        "label": args.label or "", "flags": flags, "epochs_override": args.epochs,
        "command": shlex.join(cmd), "exit_code": proc.returncode,
        "teacher": teacher.name, "teacher_acc": meta.get("teacher_acc"), "teacher_asr": meta.get("teacher_asr"),
        "teacher_recipe": meta.get("recipe"), "teacher_train_images": meta.get("train_images"),
        "teacher_acc_in_run": (summary.get("teacher") or {}).get("acc"),
        "teacher_asr_in_run": (summary.get("teacher") or {}).get("asr"),
        "acc": cleansed.get("acc"), "asr": cleansed.get("asr"), "kept": summary.get("kept"),
        "kept_epoch": cleansed.get("epoch"), "best_acc": best.get("acc"), "best_asr": best.get("asr"),
        "best_epoch": best.get("epoch"), "min_asr_logged": min_asr, "min_asr_epoch": min_epoch,
        "preset": summary.get("preset"), "epochs": summary.get("epochs"),
        "epochs_completed": summary.get("epochs_completed"), "batch_size": summary.get("batch_size"),
        "steps": summary.get("steps"), "run_seconds": summary.get("seconds"), "wall_seconds": round(wall, 1),
        "images_per_second": summary.get("images_per_second"), "device": summary.get("device"),
        "defense_images": fmnist.DEFENSE_SIZE, "test_images": 10000 - fmnist.DEFENSE_SIZE,
        "omp_num_threads": env.get("OMP_NUM_THREADS"), "loadavg_start": round(load0, 2),
        "loadavg_end": round(load1, 2), "machine": fmnist.machine(), "cpus": os.cpu_count(),
        "torch": torch.__version__, "engine_path": engine[0], "engine_commit": engine[1],
        "quick": bool(args.quick), "run_dir": str(run_dir),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return row


def _fmt(acc, asr) -> str:
    if acc is None and asr is None:
        return "–"
    a = "–" if acc is None else f"{acc:.3f}"
    b = "–" if asr is None else f"{asr:.3f}"
    return f"{a} / {b}"


def column_of(row: dict) -> str:
    name = row["setting"]
    if row.get("epochs_override"):
        name += f", {row['epochs_override']} ep"
    if row.get("label"):
        name += f" ({row['label']})"
    return name


def table(rows: list[dict]) -> str:
    """Markdown: one line per teacher (attack, seed), one column per setting (latest row wins).

    A cell is the saved student's ACC / ASR on the full test sets and the whole command's wall time."""
    rows = [r for r in rows if r.get("exit_code") == 0 and r.get("acc") is not None]
    if not rows:
        return "(no finished rows)"
    columns: list[str] = []
    cells: dict[tuple, dict] = {}
    teachers: dict[tuple, dict] = {}
    for r in rows:
        col = column_of(r)
        if col not in columns:
            columns.append(col)
        key = (r["attack"], r["seed"])
        teachers[key] = r
        cells[key + (col,)] = r
    order = {a: i for i, a in enumerate(fmnist.ATTACKS)}
    head = "| attack | seed (target) | teacher ACC / ASR | " + " | ".join(columns) + " | paper, CIFAR-10 (Table 1) |"
    lines = [head, "|" + "---|" * (4 + len(columns))]
    for key in sorted(teachers, key=lambda k: (order.get(k[0], 99), k[1])):
        t = teachers[key]
        paper = PAPER.get(key[0])
        paper_s = f"{paper[0]:.2f} / {paper[1]:.2f}" if paper else "–"
        vals = []
        for col in columns:
            r = cells.get(key + (col,))
            secs = f" ({r['wall_seconds']:.0f} s)" if r and r.get("wall_seconds") else ""
            vals.append(_fmt(r["acc"], r["asr"]) + secs if r else "")
        lines.append(f"| {key[0]} | {key[1]} ({t['target']}) | {_fmt(t['teacher_acc'], t['teacher_asr'])} | "
                     + " | ".join(vals) + f" | {paper_s} |")
    return "\n".join(lines)


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--attacks", default=",".join(FAMILIES), help="comma list of badnets,blended,sig,wanet,clean")
    ap.add_argument("--seeds", default="0", help="comma list (targets: seed 0 -> 3, 1 -> 7, 2 -> 5)")
    ap.add_argument("--setting", default="default",
                    help=f"a name for the column; {', '.join(SETTINGS)} are built in, any other name needs "
                         "--extra-args")
    ap.add_argument("--extra-args", default="", help='extra `bcu cleanse` flags, e.g. "--preset strong"')
    ap.add_argument("--epochs", type=int, default=None, help="cleanse epochs (default: the CLI's)")
    ap.add_argument("--label", default="", help="free text kept in the row and the column name")
    ap.add_argument("--quick", action="store_true",
                    help="BadNets, seed 0 only, 20 epochs unless --epochs says otherwise (the teacher is trained "
                         "first when not cached)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (teacher training and cleanse)")
    ap.add_argument("--width", type=int, default=None, help="teacher width (default 16; 64 with cuda)")
    ap.add_argument("--jsonl", type=Path, default=DEFAULT_JSONL)
    ap.add_argument("--table", action="store_true", help="print the table of the JSONL and exit")
    args = ap.parse_args(argv)

    if args.table:
        print(table(read_rows(args.jsonl)))
        return 0
    if args.width is None:
        args.width = 64 if args.device.startswith("cuda") else fmnist.RECIPE["width"]
    if args.setting not in SETTINGS and not args.extra_args:
        ap.error(f"setting '{args.setting}' is not built in ({', '.join(SETTINGS)}): give its --extra-args")
    flags = SETTINGS.get(args.setting, []) + shlex.split(args.extra_args)
    if args.quick and args.epochs is None:
        args.epochs = QUICK_EPOCHS
    attacks = ["badnets"] if args.quick else [a for a in args.attacks.split(",") if a]
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",") if s]
    for a in attacks:
        if a not in fmnist.ATTACKS:
            ap.error(f"unknown attack {a!r}")
    env = dict(os.environ)
    fmnist.load_split("t10k")  # exit 2 with the install hint when the data is missing
    fmnist.write_readme()
    engine = _engine_source(env)
    print(f"engine: {engine[0]} ({engine[1]}), OMP_NUM_THREADS={env.get('OMP_NUM_THREADS', 'unset')}", flush=True)
    args.jsonl.parent.mkdir(parents=True, exist_ok=True)
    new = []
    for seed in seeds:
        for attack in attacks:
            row = run_one(attack, seed, args.setting, flags, args, env, engine)
            with open(args.jsonl, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
            new.append(row)
            print(f"[{time.strftime('%H:%M:%S')}] {row['teacher']}: teacher {_fmt(row['teacher_acc'], row['teacher_asr'])}"
                  f" -> {_fmt(row['acc'], row['asr'])} (min logged ASR {row['min_asr_logged']}), "
                  f"{row['wall_seconds']:.0f}s", flush=True)
    print()
    print(table(new))
    return 0 if all(r["exit_code"] == 0 for r in new) else 1


if __name__ == "__main__":
    sys.exit(main())
