"""``bcu sweep``: cleanse with several ratio settings one after another and compare them (ACC against ASR).

    bcu sweep CHECKPOINT --unlabeled DIR --presets paper,strong --out DIR
    bcu sweep CHECKPOINT --unlabeled DIR --grid layer4=0.27,0.5,1 head=0.1,1 [--seeds 0,1,2] --out DIR

Kept out of ``cli.py`` so the verb is one import and a few lines there; it takes the training options from the
CLI's own builders (``_cleanse_args(sweep=True)``) and its config builder, so a sweep's runs are configured
exactly as ``bcu cleanse`` would configure them. Progress goes to stderr, one block per run; the table and the
Pareto front go to stdout at the end (or one JSON object with ``--json``). Exit codes: 0 every run finished,
1 a run failed (the others still ran), 2 bad input, 128 + signal when stopped (running the same command again
continues the sweep).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Callable

from .common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, pct
from .core.atomic import dumps
from .core.errors import ConfigError
from .core.printable import printable
from .stop_signals import SaveThenAbort, handling


def add_parser(sub, model_args: Callable, cleanse_args: Callable) -> argparse.ArgumentParser:
    """Register ``sweep`` on the CLI's sub-parsers with the shared model and training options."""
    p = sub.add_parser("sweep", help="cleanse with several ratio settings (presets or a grid, x seeds) and "
                                     "compare ACC against ASR")
    model_args(p)
    p.add_argument("--unlabeled", metavar="DIR", required=True, help="unlabelled images to distil on")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--presets", metavar="LIST", help="presets to run, e.g. paper,strong,uniform")
    what.add_argument("--grid", nargs="+", metavar="GROUP=R,R",
                      help="ratios per group, every combination run, e.g. layer4=0.27,0.5,1 head=0.1,1 (other "
                           "groups take --base-preset's ratios)")
    p.add_argument("--base-preset", default="paper", metavar="PRESET",
                   help="ratios of the groups the grid leaves out (default paper)")
    p.add_argument("--seeds", default="0", metavar="LIST", help="seeds to run each setting with (default 0)")
    p.add_argument("--out", metavar="DIR", required=True,
                   help="sweep folder: one run folder per setting, sweep.json and sweep.csv; the same command "
                        "again continues it")
    cleanse_args(p, sweep=True)
    return p


def spec_of(args: argparse.Namespace):
    """The sweep's spec from the command line; bad values raise ``ConfigError`` (one line, exit 2)."""
    from .core.sweep import SweepSpec, parse_grid, parse_presets, parse_seeds

    if not args.presets and not args.grid:
        raise ConfigError("give --presets LIST or --grid GROUP=R,R ... (one of them)")
    if args.scan_limit < 3:
        raise ConfigError(f"--scan-limit must be at least 3, got {args.scan_limit}")
    if args.scan_steps is not None and args.scan_steps < 1:
        raise ConfigError(f"--scan-steps must be at least 1, got {args.scan_steps}")
    from .core.scan import DEFAULT_FALSE_ALARM

    if getattr(args, "scan_probes", None) or getattr(args, "scan_false_alarm", DEFAULT_FALSE_ALARM) != DEFAULT_FALSE_ALARM:
        raise ConfigError("a sweep scans with the default probes and false-alarm rate; --scan-probes and "
                          "--scan-false-alarm apply to cleanse and demo only")
    spec = SweepSpec(presets=parse_presets(args.presets) if args.presets else (),
                     grid=parse_grid(args.grid) if args.grid else (), base_preset=args.base_preset,
                     seeds=parse_seeds(args.seeds), scan=args.scan, scan_steps=args.scan_steps,
                     scan_limit=args.scan_limit)
    spec.validate()
    return spec


def run(args: argparse.Namespace, config: Callable[[argparse.Namespace], object]) -> int:
    """Run the sweep verb; ``config`` is the CLI's builder of a ``CleanseConfig`` from the shared options."""
    from .core.sweep import SweepJob

    spec = spec_of(args)
    folder = args.out
    for name, value in (("preset", None), ("ratios", None), ("seed", spec.seeds[0]), ("out", None)):
        setattr(args, name, value)  # what each run sets; the rest is the base config every run shares
    base = dataclasses.replace(config(args), out=None)
    job = SweepJob(spec, base, folder, scan_progress=_scan_progress())
    reporter = SweepReporter()
    rule = SaveThenAbort(lambda: job.cancelled, job.cancel,  # the first: stop the run in progress and save it
                         lambda name: f"\nbcu: {name}: stopping the sweep after this batch and saving ({name} again "
                                      "to abort)...")
    with handling(rule):
        for event in job.events():
            code = reporter.handle(event, args.json)
            if code is not None:
                if code == EXIT_OK and job.cancelled:
                    print(f"bcu: stopped; continue the sweep by running the same command again (--out {folder})",
                          file=sys.stderr)
                    return 128 + rule.stopped_by[0] if rule.stopped_by else EXIT_INTERRUPTED
                return code
    return EXIT_FAILED


def _scan_progress():
    shown: dict[str, float] = {}

    def progress(phase: str, event) -> None:
        from .core.scan import ScanFinished, ScanProgress

        if isinstance(event, ScanProgress) and event.fraction - shown.get(phase, -1.0) >= 0.25:
            shown[phase] = event.fraction
            print(f"  scanning the teacher once for the whole sweep: {event.fraction:4.0%}", file=sys.stderr)
        elif isinstance(event, ScanFinished):
            print(f"  scan of the teacher: {event.result.verdict_line()} ({event.result.seconds:.0f} s)",
                  file=sys.stderr)
    return progress


class SweepReporter:
    """Per run: a header line, one short line per epoch and a result line (stderr); the table at the end (stdout).

    Log lines before the sweep starts are held back, so bad input prints exactly one line (the error).
    """

    def __init__(self) -> None:
        self._held: list[str] | None = []

    def _say(self, line: str) -> None:
        if self._held is not None:
            self._held.append(line)
        else:
            print(printable(line), file=sys.stderr, flush=True)

    def handle(self, event, as_json: bool = False) -> int | None:
        """Show ``event``; returns the exit code once the sweep has ended."""
        from .core.events import EpochEnd, Failed, Log
        from .core.sweep import RunBegins, RunEnds, SweepFinished, SweepStarted

        if isinstance(event, SweepStarted):
            held, self._held = self._held or [], None
            for line in held:
                self._say(line)
            done = sum(r.status in ("finished", "failed") for r in event.rows)
            self._say(f"sweep of {len(event.rows)} runs into {event.folder}"
                      + (f" (continuing: {done} already done)" if event.continuing else ""))
        elif isinstance(event, Log):
            if event.level == "warning":
                self._say(f"warning: {event.message}")
            elif event.message.startswith("model:"):
                self._say(event.message)
        elif isinstance(event, RunBegins):
            self._say(f"[{event.index + 1}/{event.total}] {event.name}: {event.label}"
                      + (" (resuming)" if event.resumed else ""))
        elif isinstance(event, EpochEnd):
            proxy = event.extra.get("proxy_asr")
            self._say(f"  epoch {event.epoch:3d}/{event.epochs}  ACC {pct(event.acc, 6)}  ASR {pct(event.asr, 6)}"
                      + (f"  proxy ASR {pct(proxy, 6)}" if "proxy_asr" in event.extra else ""))
        elif isinstance(event, RunEnds):
            r = event.row
            when = "" if r.seconds is None else f", {r.seconds:.1f} s"
            if event.skipped:
                self._say(f"[{event.index + 1}] {r.name}: already {r.status} (ACC {pct(r.acc)}, ASR {pct(r.asr)}); "
                          "skipped")
            else:
                self._say(f"  -> {r.status}: ACC {pct(r.acc)}  ASR {pct(r.asr)}  proxy ASR {pct(r.proxy_asr)}"
                          f"{when}")
        elif isinstance(event, Failed):
            print(f"bcu: error: {printable(event.message)}", file=sys.stderr)
            return EXIT_BAD_INPUT if event.kind == "input" else EXIT_FAILED
        elif isinstance(event, SweepFinished):
            if as_json:
                print(dumps({"folder": event.folder, "metric": event.metric, "front": list(event.front),
                             "cancelled": event.cancelled, "table": event.table,
                             "runs": [dataclasses.asdict(r) for r in event.rows]}))
            else:
                print(format_table(event))
            return EXIT_FAILED if any(r.status == "failed" for r in event.rows) else EXIT_OK
        return None


def format_table(event) -> str:
    """The runs as a table (the Pareto front marked *) and the front in words."""
    from .core.sweep import METRIC_LABEL

    front = set(event.front)
    width = max([len(r.name) for r in event.rows] + [7])
    lines = [f"  {'setting':{width}s} {'seed':>4s} {'ACC':>7s} {'ASR':>7s} {'proxy':>7s} {'status':>9s} {'time':>7s}"]
    for r in event.rows:
        mark = "*" if r.name in front else " "
        when = "-" if r.seconds is None else f"{r.seconds:.0f} s"
        lines.append(f"{mark} {r.name:{width}s} {r.seed:4d} {pct(r.acc, 7)} {pct(r.asr, 7)} {pct(r.proxy_asr, 7)} "
                     f"{r.status:>9s} {when:>7s}")
    if event.metric is None:
        lines.append("no Pareto front: no finished run measured ACC with ASR or proxy ASR")
    else:
        lines.append(f"Pareto front (* ACC high, {METRIC_LABEL[event.metric]} low): {', '.join(event.front)}")
    lines.append(f"table: {event.table}")
    return "\n".join(lines)
