"""The run library: every run folder under some roots, each read into one small typed record, cheaply.

Finding the folders is here; reading one is ``runfolder.reader.read_record`` (the record, its statuses and
why listing thousands of runs stays cheap and safe are described there). Folders that are not runs (a user's
own files, a config that is not a run's) are skipped; a run folder whose files are damaged is still listed,
with status ``damaged`` and what is wrong in ``note``: a library never hides a run the user made, and never
crashes on one. The per-epoch curves of runs, and their comparison as CSV, are read here too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from .runfolder.layout import RUN_MARKERS
from .runfolder.reader import RunRecord, num, one_line, read_metrics, read_record

MAX_DEPTH = 3  # how deep under a root runs are looked for (a sweep's runs sit one level down)


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
    if names & set(RUN_MARKERS):
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
                               note=f"cannot be read ({type(exc).__name__}: {one_line(exc)})")
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


def curves_from_rows(rows: list[dict]) -> RunCurves:
    """Curves from metrics rows (what ``read_metrics`` returns, or a follower's new rows)."""
    values: dict[str, list[float | None]] = {k: [] for k in CURVE_KEYS}
    for row in rows:
        extra = row.get("extra") if isinstance(row.get("extra"), dict) else {}
        for key in CURVE_KEYS:
            values[key].append(num(row.get(key, extra.get(key))))
    return RunCurves(epochs=tuple(int(r["epoch"]) for r in rows), values={k: tuple(v) for k, v in values.items()},
                     seconds=tuple(num(r.get("seconds")) for r in rows))


def read_curves(run_dir: str | Path) -> RunCurves:
    """The per-epoch curves of the run in ``run_dir`` (loss, ACC, ASR, agreement, proxy ASR)."""
    return curves_from_rows(read_metrics(run_dir))


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
