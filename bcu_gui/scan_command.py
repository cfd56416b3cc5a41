"""``bcu scan``: look for a backdoor with unlabelled images only, and save the recovered trigger as PNGs.

Kept out of ``cli.py`` so the verb is one import and two lines there. Prints a per-class table and one
verdict line (or one JSON object with ``--json``); exits 0 whatever the verdict, 2 on bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable

import torch

from .core.errors import ConfigError
from .core.printable import printable

EXAMPLES = 4  # stamped examples written with --out


def add_parser(sub, model_args: Callable[[argparse.ArgumentParser], None]) -> argparse.ArgumentParser:
    """Register ``scan`` on the CLI's sub-parsers; ``model_args`` adds the shared checkpoint options."""
    p = sub.add_parser("scan", help="look for a backdoor without labels or triggered images (trigger inversion)")
    model_args(p)
    p.add_argument("--unlabeled", metavar="DIR", required=True, help="unlabelled images (about 400 suffice)")
    p.add_argument("--out", metavar="DIR", help="write the recovered trigger here as PNGs (never overwrites)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default auto)")
    p.add_argument("--precision", default="auto", help="auto | fp32 | bf16 | fp16 (auto: bf16 where supported)")
    p.add_argument("--limit", type=int, default=400, metavar="N", help="use at most N images (default 400)")
    p.add_argument("--steps", type=int, default=None, metavar="N",
                   help="optimiser steps per probe (default 300; fewer is faster and less sure)")
    p.add_argument("--seed", type=int, default=0, help="seed for the image split and the optimisation")
    add_verdict_args(p, "")
    return p


def add_verdict_args(p: argparse.ArgumentParser, prefix: str) -> None:
    """``--false-alarm`` and ``--probes`` (``--scan-false-alarm``, ``--scan-probes`` on cleanse/demo)."""
    from .core.scan import DEFAULT_FALSE_ALARM, PROBE_KINDS

    p.add_argument(f"--{prefix}false-alarm", type=float, default=DEFAULT_FALSE_ALARM, metavar="RATE",
                   help="call a model backdoored only when its top class's p-value is below RATE, the share of "
                        f"clean models that may be flagged (default {DEFAULT_FALSE_ALARM:g} = 1%%)")
    p.add_argument(f"--{prefix}probes", nargs="+", choices=PROBE_KINDS, default=None, metavar="PROBE",
                   help="probes to run: mask, perturbation (default, both recover a trigger) and margin "
                        "(MM-BD's maximum margin, no trigger picture; opt-in)")


def verdict_config(args: argparse.Namespace, prefix: str, settings) -> "object":
    """The ScanConfig of the verdict options (``prefix`` '' or 'scan_')."""
    from .core.scan import ScanConfig

    rate = getattr(args, f"{prefix}false_alarm")
    if not 0 < rate < 1:
        raise ConfigError(f"--{prefix.replace('_', '-')}false-alarm must lie between 0 and 1 (0.01 is 1%), "
                          f"got {rate:g}")
    probes = getattr(args, f"{prefix}probes")
    return ScanConfig(settings=settings, seed=settings.seed, false_alarm=rate,
                      **({"probes": tuple(dict.fromkeys(probes))} if probes else {}))


def _out_names(trigger_kind: str) -> list[str]:
    first = ["mask.png", "pattern.png"] if trigger_kind == "mask" else ["perturbation.png"]
    return first + [f"stamped_{i}.png" for i in range(EXAMPLES)] + ["scan.json"]


def _check_out(out: str | None) -> Path | None:
    """Refuse a --out that is a file or already holds files the scan would write, before any work."""
    if not out:
        return None
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {path} is a file, not a folder")
    clash = sorted({n for kind in ("mask", "perturbation") for n in _out_names(kind) if (path / n).exists()})
    if clash:
        raise ConfigError(f"--out {path} already holds {', '.join(clash[:3])}; choose an empty or new folder")
    return path


def run(args: argparse.Namespace, load: Callable[[argparse.Namespace], object]) -> int:
    """Run the scan verb; ``load`` is the CLI's checkpoint loader (shared options, one error path)."""
    from .core.data import load_unlabeled
    from .core.devices import plan_compute
    from .core.scan import ProbeSettings, ScanProgress, run_scan, split_images

    if args.limit < 3:
        raise ConfigError(f"--limit must be at least 3, got {args.limit}")
    if args.steps is not None and args.steps < 1:
        raise ConfigError(f"--steps must be at least 1, got {args.steps}")
    out = _check_out(args.out)
    settings = ProbeSettings(seed=args.seed, **({"steps": args.steps} if args.steps else {}))
    config = verdict_config(args, "", settings)  # every option checked before the model and images are read
    model = load(args)
    images = load_unlabeled(args.unlabeled, model.input_size, limit=args.limit)
    if images.skipped_summary():
        print(f"bcu: warning: {printable(images.skipped_summary())}", file=sys.stderr)
    if len(images) < 3:
        raise ConfigError(f"a scan needs at least 3 readable images in {args.unlabeled}, found {len(images)}")
    plan = plan_compute(args.device, args.precision)
    shown = [-1.0]

    def progress(event) -> None:
        if args.json or not isinstance(event, ScanProgress) or event.fraction - shown[0] < 0.1:
            return
        shown[0] = event.fraction
        print(f"  {event.fraction:4.0%}  {event.probe} probe, step {event.step}/{event.steps}, "
              f"{event.active} classes active", file=sys.stderr, flush=True)

    if not args.json:
        print(f"scanning {printable(model.describe())}\n  on {len(images)} unlabelled images, {plan.describe()}",
              file=sys.stderr)
    result = run_scan(model.module, images.images, model.normalization, model.num_classes, config, plan,
                      progress=progress)
    written: list[Path] = []
    if out is not None:
        _, measure = split_images(images.images, config)
        written = write_trigger_pngs(out, result, measure[:EXAMPLES])
    if args.json:
        print(json.dumps({**result.to_dict(), "checkpoint": str(model.path), "images": len(images),
                          "written": [str(p) for p in written]}, allow_nan=False))
    else:
        print(format_table(result))
        print(result.verdict_line())
        print(explain(result))
        if out is not None and result.candidate is None:
            print("no class reached the target flip rate, so there is no trigger to save; "
                  f"wrote {printable(written[0])}")
        elif written:
            print(f"recovered trigger (class {result.candidate.target}) written to {printable(out)}: "
                  f"{', '.join(p.name for p in written)}")
    return 0


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(result) -> str:
    """The per-class table: mask norm and flip rate, perturbation budget (L_inf in 0..1 pixel units, the unit of
    scan.json, the report and --adv-eps) and flip rate, and the margin
    (in typical clean margins) when the margin probe ran; then each probe's top class, anomaly index, the
    index it needed at the false-alarm rate, and its p-value."""
    from .core.scan import format_p

    margin = any(r.kind == "margin" for r in result.probes)
    lines = [f"{'class':>5s} {'mask L1':>9s} {'flip':>6s} {'perturb.':>9s} {'flip':>6s}"
             + (f" {'margin':>7s}" if margin else "")]
    for c in result.classes:
        mark = "  <- suspected" if c.cls == result.suspected_class else ""
        lines.append(f"{c.cls:5d} {_fmt(c.mask_l1, '9.1f')} {_fmt(c.mask_flip, '6.0%')} "
                     f"{_fmt(c.perturbation, '9.3f')} {_fmt(c.perturbation_flip, '6.0%')}"
                     + (f" {_fmt(c.margin, '7.2f')}" if margin else "") + mark)
    indices = ", ".join(f"{r.kind} {r.anomaly_index:.2f} (class {r.smallest_class}, needed {r.threshold:.2f}, "
                        f"p {format_p(r.p_value)})" for r in result.probes)
    lines.append(f"anomaly index (times the median class): {indices}")
    return "\n".join(lines)


def explain(result) -> str:
    """What the p-value means and why only the top class is the verdict (printed under the verdict line)."""
    return (f"p: how likely a clean model's most extreme class is this extreme (per probe; the verdict multiplies "
            f"the smallest by {len(result.probes)} probe(s) and compares it with the {result.false_alarm * 100:g}% "
            f"false-alarm rate). Only the top class is judged: another class is measured against classes that "
            f"include it. perturb.: the smallest flipping perturbation's L_inf budget in pixel units (0..1).")


def _to_png_array(chw: torch.Tensor):
    """[C, H, W] float in [0, 1] -> HxW or HxWx3 uint8 array."""
    arr = (chw.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return arr[:, :, 0] if arr.shape[2] == 1 else arr


def write_trigger_pngs(out: Path, result, examples: torch.Tensor) -> list[Path]:
    """Save the most anomalous class's trigger (mask, pattern or perturbation), stamped examples and the
    scan's JSON into ``out``. Each file appears whole (written beside, then linked in) and none replaces an
    existing file."""
    from PIL import Image

    from .core.scan import stamp

    trigger = result.candidate
    out.mkdir(parents=True, exist_ok=True)
    pictures: list[tuple[str, object]] = []
    if trigger is None:  # no class reached the target flip rate: there is no trigger to show
        pass
    elif trigger.kind == "mask":
        pictures += [("mask.png", _to_png_array(trigger.mask)), ("pattern.png", _to_png_array(trigger.pattern))]
    else:  # show the signed perturbation around mid-grey, stretched to its own budget
        scale = max(float(trigger.pattern.abs().max()), 1e-6)
        pictures.append(("perturbation.png", _to_png_array(0.5 + trigger.pattern / (2 * scale))))
    for i, img in enumerate(stamp(examples, trigger) if trigger is not None else []):
        pictures.append((f"stamped_{i}.png", _to_png_array(img.float() / 255)))
    written = []
    for name, array in pictures:
        written.append(_write_new(out / name, lambda tmp, a=array: Image.fromarray(a).save(tmp, format="PNG")))
    data = json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n"
    written.append(_write_new(out / "scan.json", lambda tmp: tmp.write_text(data, encoding="utf-8")))
    return written


def _write_new(target: Path, writer: Callable[[Path], None]) -> Path:
    """Write via a temporary file in the same folder, then hard-link it in: atomic, and it fails rather
    than replace a file that appeared meanwhile."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer(tmp)
        os.chmod(tmp, 0o644)
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise ConfigError(f"{target} appeared while the scan ran; nothing was overwritten") from None
        except OSError:  # a file system without hard links
            if target.exists():
                raise ConfigError(f"{target} already exists; nothing was overwritten") from None
            os.rename(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return target


# ------------------------------------------------------------------------------- bcu cleanse --scan

def add_cleanse_args(p: argparse.ArgumentParser) -> None:
    """``--scan`` and its size on ``bcu cleanse`` / ``bcu demo``."""
    p.add_argument("--scan", action="store_true",
                   help="scan the model before and after cleansing (no trigger needed) and follow the proxy ASR "
                        "of the recovered trigger every epoch")
    p.add_argument("--scan-steps", type=int, default=None, metavar="N",
                   help="optimiser steps per scan probe (default 300; fewer is faster and less sure)")
    p.add_argument("--scan-limit", type=int, default=400, metavar="N",
                   help="scan with at most N of the unlabelled images (default 400)")
    add_verdict_args(p, "scan-")


def cleanse_hook(args: argparse.Namespace, cfg):
    """The model (loaded once, handed to the job) and a ``ScanHook`` printing its progress every 20%."""
    from tqdm import tqdm

    from .core.data import load_unlabeled
    from .core.models import load_model
    from .core.scan import ProbeSettings, ScanFinished, ScanHook, ScanProgress

    if args.scan_limit < 3:
        raise ConfigError(f"--scan-limit must be at least 3, got {args.scan_limit}")
    if args.scan_steps is not None and args.scan_steps < 1:
        raise ConfigError(f"--scan-steps must be at least 1, got {args.scan_steps}")
    model = load_model(cfg.checkpoint, arch=cfg.arch, trust=cfg.trust_checkpoint, input_size=cfg.input_size,
                       normalize=cfg.normalize)
    images = load_unlabeled(cfg.unlabeled, model.input_size, limit=args.scan_limit)
    if len(images) < 3:
        raise ConfigError(f"a scan needs at least 3 readable images in {cfg.unlabeled}, found {len(images)}")
    settings = ProbeSettings(seed=cfg.seed, **({"steps": args.scan_steps} if args.scan_steps else {}))
    shown: dict[str, float] = {}
    names = {"teacher": "the model before cleansing", "cleansed": "the cleansed model"}

    def progress(phase: str, event) -> None:
        if isinstance(event, ScanProgress) and event.fraction - shown.get(phase, -1.0) >= 0.2:
            shown[phase] = event.fraction
            tqdm.write(f"scanning {names[phase]}: {event.fraction:4.0%} ({event.probe} probe)", file=sys.stderr)
        elif isinstance(event, ScanFinished):
            tqdm.write(f"scan of {names[phase]}: {event.result.verdict_line()} "
                       f"({event.result.seconds:.0f} s)", file=sys.stderr)

    hook = ScanHook(images.images, model.normalization, model.num_classes,
                    verdict_config(args, "scan_", settings), progress=progress)
    return model, hook


def verdict_lines(summary) -> list[str]:
    """The two scans side by side (teacher | cleansed), with each model's proxy ASR under the teacher's trigger."""
    from .common import pct

    t, c = summary.teacher_scan, summary.cleansed_scan
    if t is None:
        return []
    rows = [("scan", t.verdict_line(), c.verdict_line() if c else "not scanned"),
            ("proxy ASR", pct(t.proxy_asr), pct(c.proxy_asr) if c else "-")]
    width = max(len(r[1]) for r in rows)
    return [f"{'':10s} {'teacher':{width}s}   cleansed"] + [f"{a:10s} {b:{width}s}   {d}" for a, b, d in rows]
