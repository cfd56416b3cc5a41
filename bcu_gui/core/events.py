"""The event vocabulary of a cleansing job: what the CLI prints, the app plots and the run folder records.

Every event is a frozen dataclass built with keyword arguments; a consumer handles the kinds it knows with
one ``isinstance`` chain (the console reporter, the app's run view) and ignores the rest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Union

from .summary import RunSummary

LogLevel = Literal["info", "warning"]
FailureKind = Literal["input", "memory", "disk", "diverged", "internal"]


@dataclass(frozen=True)
class Started:
    """Training is about to begin: the teacher has been measured and the student built."""

    epochs: int
    steps_per_epoch: int
    images: int
    device: str
    teacher_acc: float | None
    teacher_asr: float | None
    reinit_counts: dict[str, int]
    reinit_totals: dict[str, int]
    run_dir: str
    batch_size: int = 0  # as used: chosen automatically or as requested
    batch_reason: str = ""


@dataclass(frozen=True)
class Step:
    """Progress of the optimiser, sent at most ~30 times a second (and always at the end of an epoch).

    ``step`` is the global 1-based count of optimiser steps so far; ``losses`` holds the loss of every step
    since the previous ``Step`` event (the last one is ``loss``), so a plot still sees each step.
    """

    epoch: int  # 0-based
    step: int  # global, 1-based
    total_steps: int
    loss: float
    lr: float
    temperature: float
    losses: tuple[float, ...] = ()


@dataclass(frozen=True)
class EpochEnd:
    """An epoch finished and the student was evaluated; ``extra`` holds metrics added by epoch hooks."""

    epoch: int  # 1-based
    epochs: int
    loss: float
    acc: float | None
    asr: float | None
    agreement: float | None
    lr: float
    temperature: float
    seconds: float
    elapsed: float
    extra: dict[str, float] = field(default_factory=dict)
    eval_scope: str = "full"  # "full"; "subset": ACC / ASR estimated on a fixed subset; "none": not measured
    eval_clean: int = 0  # clean images ACC was measured on this epoch (0: none)
    eval_triggered: int = 0  # triggered images ASR was measured on this epoch (0: none)


@dataclass(frozen=True, eq=False)  # identity equality: the points are NumPy arrays
class FeatureFrame:
    """Where a fixed sample of images sits in the penultimate layer, in 2-D (feature_space.py).

    ``epoch`` 0 is the teacher; every later frame is the student after that (1-based) epoch, drawn with the
    projection fitted on the teacher, so frames are comparable. ``clean`` ``[N, 2]`` and ``triggered``
    ``[M, 2]`` are float32 arrays; ``classes`` ``[N]`` colours the clean points (labels, or the teacher's
    predictions when ``class_source`` is "teacher"). ``at_target``: share of triggered images whose nearest
    clean-class centroid is the target (None without a target or triggered images).
    """

    epoch: int
    epochs: int
    clean: Any
    classes: Any
    triggered: Any
    class_source: str  # "labels" | "teacher"
    triggered_source: str  # "folder" | "recovered trigger" | "" (no triggered images)
    target: int | None
    at_target: float | None
    class_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Paused:
    """The job has stopped between two batches and waits for ``resume`` (or ``cancel``)."""

    step: int


@dataclass(frozen=True)
class Resumed:
    """The job goes on after a pause."""

    step: int


@dataclass(frozen=True)
class Log:
    message: str
    level: LogLevel = "info"


@dataclass(frozen=True)
class CpuShare(Log):
    """A CPU job's thread count and how busy other programs keep the CPUs (core/threads.py).

    A ``Log`` (its message says it all, so every console and log pane shows it as is) with the numbers a front
    end can show beside the progress: sent at the start of training and whenever contention begins or ends.
    """

    threads: int = 0
    cpus: int = 0
    others: float | None = None  # CPUs other programs kept busy; None where it cannot be measured
    contended: bool = False


@dataclass(frozen=True)
class Finished:
    """The run ended (completed, or stopped with what it had saved)."""

    summary: RunSummary

    @property
    def run_dir(self) -> str:
        return self.summary.run_dir

    @property
    def cancelled(self) -> bool:
        return self.summary.cancelled


@dataclass(frozen=True)
class Failed:
    """The run could not go on; ``message`` is one sentence for a person, ``kind`` says whose fault."""

    message: str
    kind: FailureKind = "internal"
    detail: str = ""


Event = Union[Started, Step, EpochEnd, FeatureFrame, Paused, Resumed, Log, CpuShare, Finished, Failed]


def to_record(event: Event) -> dict:
    """A JSON-ready dict with the event's type name, for ``--json`` output and logs."""
    if isinstance(event, Finished):
        return {"event": "finished", "summary": event.summary.to_dict()}
    if isinstance(event, FeatureFrame):
        record = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in vars(event).items()}
        return {"event": "featureframe", **record}
    record = asdict(event)
    if isinstance(event, Step):
        record["losses"] = list(event.losses)
    return {"event": type(event).__name__.lower(), **record}
