"""The event vocabulary of a cleansing job: what the CLI prints, the app plots and the run folder records."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Union


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


@dataclass(frozen=True)
class Step:
    """One optimiser step (the only per-batch host read is ``loss``)."""

    epoch: int  # 0-based
    step: int  # global, 1-based
    total_steps: int
    loss: float
    lr: float
    temperature: float


@dataclass(frozen=True)
class EpochEnd:
    """An epoch finished and the student was evaluated."""

    epoch: int  # 1-based
    epochs: int
    loss: float
    acc: float | None
    asr: float | None
    agreement: float
    lr: float
    temperature: float
    seconds: float
    elapsed: float


@dataclass(frozen=True)
class Log:
    message: str
    level: str = "info"  # info | warning


@dataclass(frozen=True)
class Finished:
    """The run ended (completed, or cancelled with what it had saved)."""

    summary: dict = field(default_factory=dict)
    run_dir: str = ""
    cancelled: bool = False


@dataclass(frozen=True)
class Failed:
    """The run could not go on; ``message`` is one sentence for a person, ``kind`` says whose fault."""

    message: str
    kind: str = "internal"  # input | memory | disk | internal
    detail: str = ""


Event = Union[Started, Step, EpochEnd, Log, Finished, Failed]


def to_record(event: Event) -> dict:
    """A JSON-ready dict with the event's type name, for ``--json`` output and logs."""
    return {"event": type(event).__name__.lower(), **asdict(event)}
