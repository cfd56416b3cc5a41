"""The one typed record of a finished (or stopped) run: what the console, the app, smoke mode and
``summary.json`` all read.

Before this record existed, four consumers spelled the same string keys of a dict and each guessed what a
missing one meant. ``RunSummary`` is frozen, ``to_dict`` is exactly what ``summary.json`` holds, and
``from_dict`` reads it back (a run library or a report can list old runs without re-running them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from .outcome import Outcome, judge

Kept = Literal["last", "best", "ema", "proxy"]


@dataclass(frozen=True)
class Scores:
    """What one model scored, and at which point of the run it was measured.

    ``epoch`` counts completed epochs; ``partial`` marks a student measured in the middle of an epoch (a
    stopped run saves the student as it was, and is measured as saved).
    """

    acc: float | None
    asr: float | None
    agreement: float | None = None
    epoch: int = 0
    loss: float | None = None
    partial: bool = False
    eval_scope: str = "full"  # "full"; "subset": estimated on a fixed subset; "none": not measured that epoch

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "Scores | None":
        if data is None:
            return None
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class ReinitRecord:
    """The student's re-initialisation: exact counts of re-initialised weights, per group, as the seeded masks
    drew them (``reinit.build_student`` makes it; the run's summary records it)."""

    ratios: dict[str, float]
    counts: dict[str, int]
    totals: dict[str, int]
    seed: int

    @property
    def reinitialised(self) -> int:
        return sum(self.counts.values())

    @property
    def total(self) -> int:
        return sum(self.totals.values())

    def describe(self) -> str:
        share = self.reinitialised / max(1, self.total)
        return f"re-initialised {self.reinitialised:,} of {self.total:,} weights ({share:.1%})"


@dataclass(frozen=True)
class ScanRecord:
    """One model's trigger-inversion scan as a run records it (``bcu cleanse --scan``, the app's run).

    ``proxy_asr`` is this model's proxy attack success rate under the TEACHER's recovered trigger (stamped on
    the scan's held-out unlabelled images), so the teacher's and the cleansed model's values compare directly;
    None when the teacher's scan found no trigger to stamp.
    """

    verdict: str  # "backdoor", "clean", or "unscanned" (a stopped run's model keeps only its proxy ASR)
    suspected_class: int | None
    anomaly_index: float | None
    probe: str = ""
    threshold: float | None = None
    proxy_asr: float | None = None
    p_value: float | None = None  # the scan's calibrated p-value (None in summaries written before it existed)
    false_alarm: float | None = None  # the false-alarm rate the verdict was taken at

    def verdict_line(self) -> str:
        """'suspected class 0, anomaly 38.7, p 0.0002 (below 1%)' or 'no class stands out, anomaly 1.3,
        p 0.41 (not below 1%)'
        (p: the scan's calibrated p-value; 1%: the false-alarm rate the verdict was taken at)."""
        if self.verdict == "unscanned":
            return "not scanned (the run was stopped)"
        anomaly = "-" if self.anomaly_index is None else f"{self.anomaly_index:.1f}"
        if self.p_value is None or self.false_alarm is None:  # a summary from before the calibrated verdict
            if self.suspected_class is not None:
                return f"suspected class {self.suspected_class}, anomaly {anomaly}"
            return f"no class stands out, anomaly {anomaly}"
        p = f"{self.p_value:.2g}" if self.p_value >= 0.01 else f"{self.p_value:.1g}"
        rate = f"{self.false_alarm * 100:g}%"
        if self.suspected_class is not None:
            return f"suspected class {self.suspected_class}, anomaly {anomaly}, p {p} (below {rate})"
        return f"no class stands out, anomaly {anomaly}, p {p} (not below {rate})"

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "ScanRecord | None":
        if data is None:
            return None
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class RunSummary:
    """Teacher against the saved student, how the run went and where its files are."""

    teacher: Scores
    cleansed: Scores  # the model that was saved, measured as saved
    best: Scores | None  # the best epoch by the keep-best rule (None without ASR)
    kept: Kept
    preset: str
    epochs: int
    epochs_completed: int
    steps: int
    cancelled: bool
    seconds: float
    images_per_second: float
    device: str
    reinit: ReinitRecord
    model_files: tuple[str, ...]
    run_dir: str
    note: str = ""
    kept_reason: str = ""  # why this candidate was saved, in words
    ema: Scores | None = None  # the moving average of the weights at the last epoch's end (None: no EMA)
    proxy: Scores | None = None  # the epoch the keep-proxy rule prefers (None: no proxy ASR)
    batch_size: int | None = None  # as used (chosen automatically or as requested)
    batch_reason: str = ""
    data_path: str = ""  # where the unlabelled set lived: memory, stream-ram, stream-disk (memory_budget.py)
    data_reason: str = ""
    eval_reason: str = ""  # when and on how many images epochs were measured (eval_schedule.py)
    teacher_scan: ScanRecord | None = None  # the scan before cleansing (None: the run did not scan)
    cleansed_scan: ScanRecord | None = None  # a fresh scan of the saved model (None: not scanned or stopped)

    def kept_text(self) -> str:
        """Which student was saved, in words: 'the last epoch (40)', 'the best epoch (3)', …"""
        c = self.cleansed
        if self.kept == "best" and self.best is not None and not c.partial:
            return f"the best epoch ({c.epoch})"
        if self.kept == "ema" and not c.partial:
            return f"the moving average of the weights (epoch {c.epoch})"
        if self.kept == "proxy" and not c.partial:
            return f"the lowest-proxy-ASR epoch ({c.epoch})"
        if c.partial:
            return (f"the student as it was when stopped (after {self.steps} steps, {c.epoch} of {self.epochs} "
                    "epochs complete)")
        return f"the last epoch ({c.epoch})"

    def outcome(self) -> Outcome:
        """The verdict on the saved model: removed, remains, ruined, unverified or stopped (core/outcome.py)."""
        return judge(self.teacher, self.cleansed, cancelled=self.cancelled, cleansed_scan=self.cleansed_scan)

    def to_dict(self) -> dict[str, Any]:
        """``summary.json``: plain JSON types, with the derived re-initialisation totals and the verdict spelled
        out (``verdict``/``verdict_text`` are derived, so reading them back is not needed)."""
        data = dataclasses.asdict(self)
        outcome = self.outcome()
        data["verdict"], data["verdict_text"] = outcome.kind, outcome.headline
        data["model_files"] = list(self.model_files)
        data["reinit"].update(reinitialised=self.reinit.reinitialised, total=self.reinit.total)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunSummary":
        """Read ``summary.json`` back; keys this version does not know are ignored (newer runs stay readable)."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        reinit = dict(values["reinit"])
        values["reinit"] = ReinitRecord(ratios=reinit["ratios"], counts=reinit["counts"],
                                        totals=reinit["totals"], seed=reinit["seed"])
        values["teacher"] = Scores.from_dict(values["teacher"])
        values["cleansed"] = Scores.from_dict(values["cleansed"])
        for key in ("best", "ema", "proxy"):
            values[key] = Scores.from_dict(values.get(key))
        values["model_files"] = tuple(values.get("model_files", ()))
        for key in ("teacher_scan", "cleansed_scan"):  # absent from summaries written before scans existed
            values[key] = ScanRecord.from_dict(values.get(key))
        return cls(**values)
