"""The run library: every run folder under some roots, each read into one small typed record, cheaply.

A record is read from the run's small JSON files only (``config.json``, ``summary.json``, ``running.json``,
``failed.json``, and ``metrics.jsonl`` for a run with no summary yet); never from ``resume.pt`` or a model,
which may be large and are never unpickled here. So listing thousands of runs costs a few small reads each.
Each is read as a stranger's file (core/untrusted.py): a linked, piped, oversized, deeply nested or
non-finite ``config.json`` is one damaged row saying so, never a hung or empty library.

Folders that are not runs (a user's own files, a config that is not a run's) are skipped; a run folder whose
files are damaged is still listed, with status ``damaged`` and what is wrong in ``note``: a library never
hides a run the user made, and never crashes on one.

Status, in the order it is decided:
    running     ``running.json`` and its writer is alive (core/heartbeat.py)
    failed      ``failed.json``, or a summary that records divergence
    finished    a summary, not cancelled
    stopped     a summary of a cancelled run (it can be resumed while ``resume.pt`` is there)
    unfinished  no summary: killed, crashed, or its writer's heartbeat stopped (resumable from ``resume.pt``)
    damaged     a run's files that cannot be read
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

from . import untrusted
from .heartbeat import FAILED_FILE, HEARTBEAT_FILE, read_failure, read_heartbeat, writer_alive
from .resume import RESUME_FILE

Status = Literal["running", "failed", "finished", "stopped", "unfinished", "damaged"]
STATUSES: tuple[Status, ...] = ("running", "finished", "stopped", "unfinished", "failed", "damaged")
MAX_DEPTH = 3  # how deep under a root runs are looked for (a sweep's runs sit one level down)
_RUN_MARKERS = ("config.json", "summary.json", "metrics.jsonl", RESUME_FILE)


@dataclass(frozen=True)
class RunRecord:
    """One run as the library lists it; every number may be None when the run does not have it (yet)."""

    path: Path
    status: Status
    started: float  # seconds since the epoch: the folder's timestamp, else config.json's modification time
    checkpoint: str = ""  # the checkpoint's file name
    arch: str = ""
    preset: str = ""
    ratios: tuple[tuple[str, float], ...] = ()  # per-group overrides on top of the preset, as configured
    epochs_done: int = 0
    epochs_planned: int = 0
    acc: float | None = None  # the saved model's (or, without a summary, the last epoch's)
    asr: float | None = None
    proxy_asr: float | None = None
    teacher_acc: float | None = None
    teacher_asr: float | None = None
    seconds: float | None = None
    note: str = ""  # why it failed, who is writing it, what is damaged
    resumable: bool = False  # holds a resume point
    config: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def ratios_text(self) -> str:
        """'strong', 'paper, layer4=0.5', …"""
        extra = ", ".join(f"{k}={v:g}" for k, v in self.ratios)
        return ", ".join(p for p in (self.preset, extra) if p)

    @property
    def epochs_text(self) -> str:
        return f"{self.epochs_done}/{self.epochs_planned}" if self.epochs_planned else str(self.epochs_done)


def is_run_folder(path: str | Path) -> bool:
    """Holds any of a run's files (a cheap test: names only)."""
    p = Path(path)
    return any((p / name).exists() for name in _RUN_MARKERS)


def read_record(path: str | Path, now: float | None = None) -> RunRecord | None:
    """The record of the run in ``path``; None when it is not a run folder. Never raises on a damaged one."""
    folder = Path(path)
    try:
        names = set(os.listdir(folder))
    except OSError:
        return None
    if not names & set(_RUN_MARKERS):
        return None
    started = _started(folder, names)
    problems: list[str] = []
    config = untrusted.read_json_or_none(folder, "config.json", dict, problems) if "config.json" in names else None
    if not isinstance(config, dict) or not {"checkpoint", "unlabeled"} <= set(config):
        if "config.json" in names and config is None or "summary.json" in names or RESUME_FILE in names:
            return RunRecord(path=folder, status="damaged", started=started,
                             note=problems[0] if problems else "config.json is missing or cannot be read")
        return None  # a user's own config.json, or a lone metrics file: not ours
    try:
        return _record(folder, names, config, started, now)
    except Exception as exc:  # values of the wrong type, or anything else a stranger's folder holds
        return RunRecord(path=folder, status="damaged", started=started, config=config,
                         note=f"the run's files cannot be read ({type(exc).__name__}: {_one_line(exc)})")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


def _record(folder: Path, names: set[str], config: dict, started: float, now: float | None) -> RunRecord:
    resolved = config.get("resolved") if isinstance(config.get("resolved"), dict) else {}
    model = resolved.get("model") if isinstance(resolved.get("model"), dict) else {}
    ratios = config.get("ratios") if isinstance(config.get("ratios"), dict) else {}
    base = dict(path=folder, started=started, config=config, checkpoint=Path(str(config["checkpoint"])).name,
                arch=str(model.get("arch", config.get("arch") or "")), preset=str(config.get("preset", "")),
                ratios=tuple(sorted((str(k), float(v)) for k, v in ratios.items())),
                epochs_planned=int(config.get("epochs") or 0), resumable=RESUME_FILE in names)
    notes: list[str] = []
    summary = untrusted.read_json_or_none(folder, "summary.json", dict, notes) if "summary.json" in names else None
    if "summary.json" in names and summary is None and not notes:
        notes.append("summary.json cannot be read")
    values: dict[str, Any] = {}
    if summary is not None:
        values = _from_summary(summary)
    else:
        last, count = _last_epoch(folder / "metrics.jsonl") if "metrics.jsonl" in names else (None, 0)
        if last is not None:
            extra = last.get("extra") if isinstance(last.get("extra"), dict) else {}
            values = dict(epochs_done=count, acc=_num(last.get("acc")), asr=_num(last.get("asr")),
                          proxy_asr=_num(extra.get("proxy_asr")), seconds=_num(last.get("elapsed")))
    status: Status
    beat = read_heartbeat(folder) if HEARTBEAT_FILE in names else None
    failure = read_failure(folder) if FAILED_FILE in names else None
    if beat is not None and writer_alive(beat, now):
        status = "running"
        notes.append(f"being written by {beat.describe()}")
    elif failure is not None or (summary is not None and str(summary.get("note", "")).startswith("training diverged")):
        status = "failed"
        notes.append(failure.message if failure is not None else str(summary.get("note")) if summary else "")
    elif summary is not None:
        status = "stopped" if summary.get("cancelled") else "finished"
        if summary.get("note"):
            notes.append(str(summary["note"]))
    else:
        status = "unfinished"
        if beat is not None:
            notes.append(f"{beat.describe()} stopped writing it (killed or crashed)")
        elif notes:
            status = "damaged"
    return RunRecord(status=status, note="; ".join(n for n in notes if n), **base, **values)


def _from_summary(summary: dict) -> dict[str, Any]:
    def scores(key: str) -> dict:
        value = summary.get(key)
        return value if isinstance(value, dict) else {}

    cleansed, teacher = scores("cleansed"), scores("teacher")
    proxy = None
    scan = summary.get("cleansed_scan")
    if isinstance(scan, dict):
        proxy = _num(scan.get("proxy_asr"))
    return dict(epochs_done=int(summary.get("epochs_completed") or 0), acc=_num(cleansed.get("acc")),
                asr=_num(cleansed.get("asr")), proxy_asr=proxy, teacher_acc=_num(teacher.get("acc")),
                teacher_asr=_num(teacher.get("asr")), seconds=_num(summary.get("seconds")))


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _read_json(path: Path) -> Any:
    """The JSON object in ``path`` (read as a stranger's file: core/untrusted.py), None when unusable."""
    return untrusted.read_json_or_none(path.parent, path.name, dict)


def _last_epoch(path: Path) -> tuple[dict | None, int]:
    """The last readable line of ``metrics.jsonl`` and the number of readable lines."""
    rows = read_metrics(path.parent)
    return (rows[-1] if rows else None), len(rows)


def _started(folder: Path, names: set[str]) -> float:
    """When the run started: the ``YYYYMMDD-HHMMSS`` its folder is named with, else config.json's time."""
    stamp = folder.name[:15]
    try:
        return time.mktime(time.strptime(stamp, "%Y%m%d-%H%M%S"))
    except ValueError:
        pass
    for name in ("config.json", *names):
        try:
            return (folder / name).stat().st_mtime
        except OSError:
            continue
    return 0.0


# ---------------------------------------------------------------------------------------------- finding runs


def find_run_folders(roots: Iterable[str | Path], max_depth: int = MAX_DEPTH) -> Iterator[Path]:
    """Every folder under ``roots`` that looks like a run (names only), each once, roots in order.

    A run folder is not descended into (a run's ``original_form/`` is part of it); unreadable folders and
    symlink loops are skipped.
    """
    seen: set[tuple[int, int]] = set()
    for root in roots:
        yield from _walk(Path(root), max_depth, seen)


def _walk(folder: Path, depth: int, seen: set[tuple[int, int]]) -> Iterator[Path]:
    try:
        st = folder.stat()
        if (st.st_dev, st.st_ino) in seen:
            return
        seen.add((st.st_dev, st.st_ino))
        with os.scandir(folder) as it:
            entries = list(it)
    except OSError:
        return
    names = {e.name for e in entries}
    if names & set(_RUN_MARKERS):
        yield folder
        return
    if depth <= 0:
        return
    subdirs = []
    for entry in entries:
        try:
            if entry.is_dir() and not entry.name.startswith("."):
                subdirs.append(entry.path)
        except OSError:
            continue
    for sub in sorted(subdirs, reverse=True):  # newest first for timestamped names
        yield from _walk(Path(sub), depth - 1, seen)


def scan_runs(roots: Iterable[str | Path], batch: int = 200, now: float | None = None) -> Iterator[list[RunRecord]]:
    """The runs under ``roots`` in batches of ``batch`` records (a view fills itself as they come)."""
    chunk: list[RunRecord] = []
    for folder in find_run_folders(roots):
        try:
            record = read_record(folder, now)
        except Exception as exc:  # one bad folder is one damaged row, never an empty library
            record = RunRecord(path=folder, status="damaged", started=0.0,
                               note=f"cannot be read ({type(exc).__name__}: {_one_line(exc)})")
        if record is None:
            continue
        chunk.append(record)
        if len(chunk) >= batch:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# ------------------------------------------------------------------------------------------------ the curves


CURVE_KEYS = ("loss", "acc", "asr", "agreement", "proxy_asr")


@dataclass(frozen=True)
class RunCurves:
    """Per-epoch values of one run (metrics.jsonl), None where an epoch has no value for a curve."""

    epochs: tuple[int, ...]
    values: dict[str, tuple[float | None, ...]]
    seconds: tuple[float | None, ...] = ()

    def curve(self, key: str) -> tuple[float | None, ...]:
        return self.values.get(key, (None,) * len(self.epochs))

    def has(self, key: str) -> bool:
        return any(v is not None for v in self.curve(key))

    def __len__(self) -> int:
        return len(self.epochs)


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The readable lines of ``metrics.jsonl`` as dicts (a damaged line is skipped, a missing file is [])."""
    try:
        lines, _ = untrusted.read_jsonl(run_dir, "metrics.jsonl")
    except (OSError, untrusted.UntrustedFileError):
        return []
    return [row for row in lines if isinstance(row, dict) and isinstance(row.get("epoch"), int)]


def curves_from_rows(rows: list[dict]) -> RunCurves:
    """Curves from metrics rows (what ``read_metrics`` returns, or a follower's new rows)."""
    values: dict[str, list[float | None]] = {k: [] for k in CURVE_KEYS}
    for row in rows:
        extra = row.get("extra") if isinstance(row.get("extra"), dict) else {}
        for key in CURVE_KEYS:
            values[key].append(_num(row.get(key, extra.get(key))))
    return RunCurves(epochs=tuple(int(r["epoch"]) for r in rows), values={k: tuple(v) for k, v in values.items()},
                     seconds=tuple(_num(r.get("seconds")) for r in rows))


def read_curves(run_dir: str | Path) -> RunCurves:
    """The per-epoch curves of the run in ``run_dir`` (loss, ACC, ASR, agreement, proxy ASR)."""
    return curves_from_rows(read_metrics(run_dir))


def read_summary(run_dir: str | Path):
    """The run's ``RunSummary``, or None when it has none or it cannot be read."""
    from .summary import RunSummary

    data = _read_json(Path(run_dir) / "summary.json")
    if not isinstance(data, dict):
        return None
    try:
        return RunSummary.from_dict(data)
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError):
        return None


def comparison_csv(runs: Iterable[tuple[str, RunCurves]]) -> str:
    """Several runs' curves as one CSV, a row per run and epoch (long form: any spreadsheet pivots it).

    Values are fractions as ``metrics.jsonl`` holds them; an empty cell is a value the run does not have.
    """
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["run", "epoch", *CURVE_KEYS])
    for label, curves in runs:
        for i, epoch in enumerate(curves.epochs):
            writer.writerow([label, epoch, *("" if (v := curves.curve(k)[i]) is None else repr(float(v))
                                            for k in CURVE_KEYS)])
    return out.getvalue()
