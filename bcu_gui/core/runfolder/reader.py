"""Reads a run folder back, leniently: ONE record type and ONE test of "is this a run folder" for every reader.

It exists because a run folder is read by the run library (a cheap row per run, thousands at a time), by the
report (everything the folder holds), by the follower of a running run and by a sweep; before, each kept its
own idea of the record and of what a run folder is. Two depths of reading fill the same :class:`RunRecord`:

``read_record``
    Cheap: the run's small JSON files only (``config.json``, ``summary.json``, ``running.json``,
    ``failed.json``, and ``metrics.jsonl`` for a run with no summary yet); never ``resume.pt`` or a model,
    which may be large and are never unpickled here. Listing thousands of runs costs a few small reads each.
``read_run``
    Whole: the config, every epoch, the summary as a :class:`RunSummary`, ``environment.json``, the model's
    sidecar and the scan's pictures under ``scan/`` (for the report).

A run folder may be someone else's (a colleague's, a downloaded one): every file is read as a stranger's
(core/untrusted.py: no links, regular files, size caps, strict JSON). A linked, piped, oversized, deeply
nested or non-finite file is a damaged record saying so, never a hang or a crash.

Status, in the order ``read_record`` decides it:
    running     ``running.json`` and its writer is alive (core/heartbeat.py)
    failed      ``failed.json``, or a summary that records divergence
    finished    a summary, not cancelled
    stopped     a summary of a cancelled run (it can be resumed while ``resume.pt`` is there)
    unfinished  no summary: killed, crashed, or its writer's heartbeat stopped (resumable from ``resume.pt``)
    damaged     a run's files that cannot be read
``read_run`` decides it from the summary alone (the report shows a folder as it lies, not who writes it).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .. import untrusted
from ..errors import ConfigError
from ..heartbeat import read_failure, read_heartbeat, writer_alive
from ..summary import RunSummary
from .layout import (CONFIG_FILE, ENVIRONMENT_FILE, FAILED_FILE, HEARTBEAT_FILE, METRICS_FILE, RESUME_FILE,
                     RUN_MARKERS, SCAN_FILE, SCAN_FOLDER, SCAN_PHASES, SIDECAR_FILE, SUMMARY_FILE)

Status = Literal["running", "failed", "finished", "stopped", "unfinished", "damaged"]
STATUSES: tuple[Status, ...] = ("running", "finished", "stopped", "unfinished", "failed", "damaged")
MAX_JSON_BYTES = untrusted.MAX_JSON_BYTES  # a record larger than this is not a run's
MAX_PICTURE_BYTES = 2 << 20
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PICTURE_ORDER = ("mask.png", "pattern.png", "perturbation.png") + tuple(f"stamped_{i}.png" for i in range(4))


@dataclass(frozen=True)
class RunRecord:
    """One run folder as read; every value may be None (or empty) when the run does not have it (yet).

    ``read_record`` fills the library's fields (``status`` to ``resumable``, and ``config``); ``read_run``
    fills ``config``, ``metrics``, ``summary``, ``environment``, ``sidecar``, ``scans``, ``problems``,
    ``status`` and ``resumable``.
    """

    path: Path
    status: Status
    started: float = 0.0  # seconds since the epoch: the folder's timestamp, else config.json's modification time
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
    # the library's record has {} for a run without a usable config; the report's has None
    config: dict[str, Any] | None = field(default_factory=dict, compare=False, repr=False)
    metrics: list[dict[str, Any]] = field(default_factory=list, compare=False, repr=False)  # "extra" flattened
    summary: RunSummary | None = field(default=None, compare=False, repr=False)
    environment: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    sidecar: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    # phase -> {"json": dict | None, "pictures": [(name, png bytes), ...]}
    scans: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False, repr=False)
    problems: list[str] = field(default_factory=list, compare=False, repr=False)  # what could not be read

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

    @property
    def report_status(self) -> str:
        """The status as the report words it, from the summary (a record of ``read_run``)."""
        s = self.summary
        if s is None:
            return "unfinished (resumable)" if self.resumable else f"incomplete (no {SUMMARY_FILE})"
        if "diverged" in (s.note or ""):
            return "failed (training diverged)"
        return "stopped" if s.cancelled else "finished"


def is_run_folder(path: str | Path) -> bool:
    """A BCU run folder: ``config.json`` holding a config (a ``checkpoint`` key) or a ``summary.json``."""
    path = Path(path)
    if os.path.lexists(path / SUMMARY_FILE):  # even a damaged or linked one: the reader says what is wrong
        return True
    if not os.path.lexists(path / CONFIG_FILE):
        return False
    problems: list[str] = []
    data = untrusted.read_json_or_none(path, CONFIG_FILE, dict, problems)
    return bool(problems) or (isinstance(data, dict) and "checkpoint" in data)


# ------------------------------------------------------------------------------------- the library's record


def read_record(path: str | Path, now: float | None = None) -> RunRecord | None:
    """The record of the run in ``path``; None when it is not a run folder. Never raises on a damaged one."""
    folder = Path(path)
    try:
        names = set(os.listdir(folder))
    except OSError:
        return None
    if not names & set(RUN_MARKERS):
        return None
    started = _started(folder, names)
    problems: list[str] = []
    config = untrusted.read_json_or_none(folder, CONFIG_FILE, dict, problems) if CONFIG_FILE in names else None
    if not isinstance(config, dict) or not {"checkpoint", "unlabeled"} <= set(config):
        if CONFIG_FILE in names and config is None or SUMMARY_FILE in names or RESUME_FILE in names:
            return RunRecord(path=folder, status="damaged", started=started,
                             note=problems[0] if problems else f"{CONFIG_FILE} is missing or cannot be read")
        return None  # a user's own config.json, or a lone metrics file: not ours
    try:
        return _record(folder, names, config, started, now)
    except Exception as exc:  # values of the wrong type, or anything else a stranger's folder holds
        return RunRecord(path=folder, status="damaged", started=started, config=config,
                         note=f"the run's files cannot be read ({type(exc).__name__}: {one_line(exc)})")


def one_line(exc: BaseException) -> str:
    """An exception's message on one short line (for a record's note)."""
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
    summary = untrusted.read_json_or_none(folder, SUMMARY_FILE, dict, notes) if SUMMARY_FILE in names else None
    if SUMMARY_FILE in names and summary is None and not notes:
        notes.append(f"{SUMMARY_FILE} cannot be read")
    values: dict[str, Any] = {}
    if summary is not None:
        values = _from_summary(summary)
    else:
        last, count = _last_epoch(folder) if METRICS_FILE in names else (None, 0)
        if last is not None:
            extra = last.get("extra") if isinstance(last.get("extra"), dict) else {}
            values = dict(epochs_done=count, acc=num(last.get("acc")), asr=num(last.get("asr")),
                          proxy_asr=num(extra.get("proxy_asr")), seconds=num(last.get("elapsed")))
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
        proxy = num(scan.get("proxy_asr"))
    return dict(epochs_done=int(summary.get("epochs_completed") or 0), acc=num(cleansed.get("acc")),
                asr=num(cleansed.get("asr")), proxy_asr=proxy, teacher_acc=num(teacher.get("acc")),
                teacher_asr=num(teacher.get("asr")), seconds=num(summary.get("seconds")))


def num(value: Any) -> float | None:
    """A JSON number as a float; None for anything else (booleans included)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _last_epoch(folder: Path) -> tuple[dict | None, int]:
    """The last readable line of ``metrics.jsonl`` and the number of readable lines."""
    rows = read_metrics(folder)
    return (rows[-1] if rows else None), len(rows)


def _started(folder: Path, names: set[str]) -> float:
    """When the run started: the ``YYYYMMDD-HHMMSS`` its folder is named with, else config.json's time."""
    stamp = folder.name[:15]
    try:
        return time.mktime(time.strptime(stamp, "%Y%m%d-%H%M%S"))
    except ValueError:
        pass
    for name in (CONFIG_FILE, *names):
        try:
            return (folder / name).stat().st_mtime
        except OSError:
            continue
    return 0.0


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The readable lines of ``metrics.jsonl`` as dicts (a damaged line is skipped, a missing file is [])."""
    try:
        lines, _ = untrusted.read_jsonl(run_dir, METRICS_FILE)
    except (OSError, untrusted.UntrustedFileError):
        return []
    return [row for row in lines if isinstance(row, dict) and isinstance(row.get("epoch"), int)]


def read_summary(run_dir: str | Path) -> RunSummary | None:
    """The run's ``RunSummary``, or None when it has none or it cannot be read."""
    data = untrusted.read_json_or_none(run_dir, SUMMARY_FILE, dict)
    if not isinstance(data, dict):
        return None
    try:
        return RunSummary.from_dict(data)
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError):
        return None


# -------------------------------------------------------------------------------------- the report's record


def read_run(path: str | Path) -> RunRecord:
    """Everything a run folder holds (see the module doc); raises ``ConfigError`` only when it is not one.

    Absent or damaged parts are None (or empty) and what is wrong with each is a line of ``problems``.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ConfigError(f"{folder} does not exist" if not folder.exists() else f"{folder} is not a folder")
    if not is_run_folder(folder):
        raise ConfigError(f"{folder} is not a BCU run folder: it has no {CONFIG_FILE} of a run "
                          f"and no {SUMMARY_FILE}")
    p: list[str] = []
    config = _dict_or_none(read_json_lenient(folder, CONFIG_FILE, p), CONFIG_FILE, p)
    environment = _dict_or_none(read_json_lenient(folder, ENVIRONMENT_FILE, p), ENVIRONMENT_FILE, p)
    sidecar = _dict_or_none(read_json_lenient(folder, SIDECAR_FILE, p), SIDECAR_FILE, p)
    raw = _dict_or_none(read_json_lenient(folder, SUMMARY_FILE, p), SUMMARY_FILE, p)
    summary = None
    if raw is not None:
        try:
            summary = RunSummary.from_dict(raw)
        except Exception as exc:  # a damaged or foreign summary: the rest of the record still stands
            p.append(f"{SUMMARY_FILE} is not a run summary this version reads ({type(exc).__name__}: {exc})")
    metrics = _read_epochs(folder, p)
    resumable = (folder / RESUME_FILE).is_file()
    scans: dict[str, dict[str, Any]] = {}
    for phase in SCAN_PHASES:
        scan_dir = folder / SCAN_FOLDER / phase
        if scan_dir.is_dir():  # read below ``folder``: a linked scan/ or scan/<phase> is refused, not followed
            rel = f"{SCAN_FOLDER}/{phase}/{SCAN_FILE}"
            found = untrusted.read_json_or_none(folder, rel, None, p, MAX_JSON_BYTES)
            scans[phase] = {"json": _dict_or_none(found, rel, p), "pictures": _read_pictures(folder, phase, p)}
    return RunRecord(path=folder, status=_status_of(summary), resumable=resumable,
                     config=config, metrics=metrics, summary=summary, environment=environment, sidecar=sidecar,
                     scans=scans, problems=p)


def _status_of(summary: RunSummary | None) -> Status:
    """A whole read's status: from the summary alone (``RunRecord.report_status`` words it)."""
    if summary is None:
        return "unfinished"
    if "diverged" in (summary.note or ""):
        return "failed"
    return "stopped" if summary.cancelled else "finished"


def read_json_lenient(folder: Path, name: str, problems: list[str]) -> Any:
    """A JSON value of the run folder, read as a stranger's file (core/untrusted.py: no links, regular files,
    capped, strict); what is wrong with it becomes a line of ``problems``, never a failed read."""
    if not os.path.lexists(folder / name):
        return None
    return untrusted.read_json_or_none(folder, name, None, problems, MAX_JSON_BYTES)


def _dict_or_none(value: Any, name: str, problems: list[str]) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    problems.append(f"{name} does not hold a JSON object")
    return None


def _read_epochs(folder: Path, problems: list[str]) -> list[dict[str, Any]]:
    """Every epoch record of ``metrics.jsonl``, its ``extra`` flattened in; skipped lines named in ``problems``."""
    if not os.path.lexists(folder / METRICS_FILE):
        return []
    try:
        items, bad = untrusted.read_jsonl(folder, METRICS_FILE, MAX_JSON_BYTES)
    except untrusted.UntrustedFileError as exc:
        problems.append(f"{METRICS_FILE} {exc.reason}")
        return []
    except OSError as exc:
        problems.append(f"{METRICS_FILE} could not be read: {exc.strerror or exc}")
        return []
    records = []
    for item in items:
        if not isinstance(item, dict):
            bad += 1
            continue
        extra = item.get("extra")
        flat = {k: v for k, v in item.items() if k != "extra"}
        if isinstance(extra, dict):
            flat.update({k: v for k, v in extra.items() if k not in flat})
        records.append(flat)
    if bad:
        problems.append(f"{METRICS_FILE}: {bad} line(s) were not epoch records and were skipped")
    return records


def _read_pictures(run: Path, phase: str, problems: list[str]) -> list[tuple[str, bytes]]:
    pictures = []
    for name in PICTURE_ORDER:
        rel = f"{SCAN_FOLDER}/{phase}/{name}"
        if not os.path.lexists(run / rel):
            continue
        try:
            data = untrusted.read_bytes(run, rel, MAX_PICTURE_BYTES)
        except untrusted.UntrustedFileError as exc:
            problems.append(f"{rel} {exc.reason}; not shown")
            continue
        except OSError as exc:
            problems.append(f"{rel} could not be read: {exc.strerror or exc}")
            continue
        if not data.startswith(PNG_SIGNATURE):
            problems.append(f"{rel} is not a PNG; not shown")
            continue
        pictures.append((name, data))
    return pictures
