"""The distillation loop's parts: one step, the end of an epoch, the finish, around one run-state object.

``CleanseJob`` (job.py) drives these in its generator and owns control (pause / cancel) and events; this
module owns the arithmetic. The split is shaped for the features that will hook in later without touching the
loop body:

- ``RunState`` is the one place the loop reads and writes its position and results (PyTorch Ignite's
  ``engine.state``): completed epochs, steps, the latest and best scores, training time. It is plain data
  with ``to_dict``/``from_dict``: together with the tensors ``Distiller.tensors()`` names, it is what a resume
  file saves, and a run restored from it starts its loop at ``state.epoch``.
- ``RunHook`` gives the moments others attach to (Lightning's ``Callback``): ``on_start`` (wrap the student
  for distributed training), ``on_step_end`` (update EMA weights), ``on_epoch_end`` (measure something per
  epoch, e.g. a proxy ASR from a trigger scan, or write a resume point; returned numbers join the epoch's
  record) and ``on_finish``. The ACC / ASR / agreement evaluation is itself the first epoch hook.
- ``StepThrottle`` limits ``Step`` events to a time-based rate, so a fast GPU run does not flood the app's
  GUI thread with queued signals, while every step's loss still reaches the plot.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch.nn import functional as F

from .data import random_crop_flip, to_model_input
from .devices import ComputePlan
from .evaluation import Evaluator
from .events import EpochEnd, Step
from .summary import ReinitRecord, RunSummary, Scores

STEP_EVENTS_PER_SECOND = 30
ACC_TOLERANCE = 0.03  # keep-best: ACC within 3 points of the teacher's


def temperature(temperature_start: float, temperature_rise: float, epoch: int, epochs: int) -> float:
    """The distillation temperature for 0-based ``epoch``: rising linearly, reaching start + rise at the end."""
    return temperature_start + temperature_rise * (epoch + 1) / epochs


def distillation_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, t: float) -> torch.Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)), averaged over the batch, in fp32."""
    return F.kl_div(F.log_softmax(student_logits.float() / t, dim=1), teacher_probs, reduction="batchmean")


@dataclass
class RunState:
    """Where a run stands. Plain data: what a resume file saves next to the tensors."""

    epochs: int
    steps_per_epoch: int
    batch_size: int
    epoch: int = 0  # completed epochs; the loop's next epoch (0-based) is this
    step: int = 0  # optimiser steps taken in all
    epoch_step: int = 0  # steps taken in the epoch under way
    epoch_loss: float = 0.0  # sum of this epoch's step losses (read once, at the epoch's end)
    seconds: float = 0.0  # training time so far, pauses excluded
    teacher: Scores | None = None
    last: Scores | None = None  # the last completed epoch
    best: Scores | None = None  # the best epoch by the keep-best rule
    metrics: dict[str, float | None] = field(default_factory=dict)  # the last epoch's, hooks' included

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def images(self) -> int:
        return self.step * self.batch_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunState":
        values = dict(data)
        for key in ("teacher", "last", "best"):
            values[key] = Scores.from_dict(values.get(key))
        return cls(**values)


class RunHook:
    """Moments of a run others attach to; override what you need (every default does nothing)."""

    def on_start(self, run: "Distiller") -> None:
        """Before the first step (after a resume: before the first step taken again)."""

    def on_step_end(self, run: "Distiller") -> None:
        """After every optimiser step (``run.state.step`` counts it)."""

    def on_epoch_end(self, run: "Distiller") -> dict[str, float | None] | None:
        """After an epoch's last step; numbers returned join the epoch's record (``EpochEnd``, metrics.jsonl)."""
        return None

    def on_finish(self, run: "Distiller") -> None:
        """After the run's model was chosen, before it is saved."""

    def summary_fields(self) -> dict[str, Any]:
        """Fields of ``RunSummary`` this hook fills (e.g. the scans' verdicts); read once, at the end."""
        return {}


class EvaluationHook(RunHook):
    """ACC, ASR and agreement with the teacher, every epoch."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator

    def on_epoch_end(self, run: "Distiller") -> dict[str, float | None]:
        return self.evaluator.measure(run.student)


def better(scores: dict[str, float | None], best: Scores | None, teacher_acc: float | None) -> bool:
    """Keep-best rule: the lowest ASR among epochs whose ACC stays within 3 points of the teacher's."""
    asr = scores.get("asr")
    if asr is None:
        return False
    acc = scores.get("acc")
    if teacher_acc is not None and acc is not None and acc < teacher_acc - ACC_TOLERANCE:
        return False
    return best is None or best.asr is None or asr < best.asr


class StepThrottle:
    """Collects step losses; says when a ``Step`` event is due (at most ``rate`` a second, and at epoch ends)."""

    def __init__(self, rate: float = STEP_EVENTS_PER_SECOND, clock=time.monotonic) -> None:
        self.interval = 1.0 / rate if rate and rate > 0 else 0.0
        self._clock = clock
        self._last = float("-inf")
        self.pending: list[float] = []

    def add(self, loss: float) -> None:
        self.pending.append(loss)

    def due(self, end_of_epoch: bool) -> bool:
        return bool(self.pending) and (end_of_epoch or self._clock() - self._last >= self.interval)

    def take(self) -> tuple[float, ...]:
        losses, self.pending = tuple(self.pending), []
        self._last = self._clock()
        return losses


class Distiller:
    """The student, the teacher and the optimiser of one run, and the three parts of its loop."""

    def __init__(self, *, teacher: torch.nn.Module, student: torch.nn.Module, images: torch.Tensor,
                 evaluator: Evaluator, plan: ComputePlan, state: RunState, lr: float, momentum: float,
                 weight_decay: float, crop_padding: int, flip: bool, seed: int, temperature_start: float,
                 temperature_rise: float, keep: str, hooks: Sequence[RunHook] = ()) -> None:
        self.plan, self.state, self.evaluator = plan, state, evaluator
        self.memory = torch.channels_last if plan.channels_last else torch.contiguous_format
        self.teacher = copy.deepcopy(teacher).to(plan.device, memory_format=self.memory).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.student = student.to(plan.device, memory_format=self.memory).train()
        self.data = images.to(plan.device)
        self.crop_padding, self.flip, self.keep = crop_padding, flip, keep
        self.temperature_start, self.temperature_rise = temperature_start, temperature_rise
        self.optimizer = torch.optim.SGD(self.student.parameters(), lr=lr, momentum=momentum,
                                         weight_decay=weight_decay)
        self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=state.epochs)
        self.scaler = torch.amp.GradScaler(plan.device.type, enabled=plan.amp_dtype is torch.float16)
        self.order_gen = torch.Generator().manual_seed(seed)
        self.aug_gen = torch.Generator(device=plan.device).manual_seed(seed)
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.hooks: list[RunHook] = [EvaluationHook(evaluator), *hooks]
        # only hooks that override on_step_end are called per step: the step stays as lean as the bare loop
        self._step_hooks = [h for h in self.hooks if type(h).on_step_end is not RunHook.on_step_end]
        self._order: torch.Tensor | None = None
        self._loss_sum: torch.Tensor | None = None

    # -- what a resume file saves besides ``state`` ---------------------------------------------------------
    def tensors(self) -> dict[str, Any]:
        """The stateful objects of the loop by name (state dicts and generator states)."""
        return {"student": self.student.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "scaler": self.scaler.state_dict(),
                "order_rng": self.order_gen.get_state(), "aug_rng": self.aug_gen.get_state(),
                "best_weights": self.best_weights}

    # -- the loop's parts -----------------------------------------------------------------------------------
    @property
    def temperature(self) -> float:
        return temperature(self.temperature_start, self.temperature_rise, self.state.epoch, self.state.epochs)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def start(self) -> None:
        for hook in self.hooks:
            hook.on_start(self)

    def begin_epoch(self) -> None:
        """Draw this epoch's order (the generator advances once per epoch, so a resume can replay it)."""
        n = len(self.data)
        self._order = torch.randperm(n, generator=self.order_gen).to(self.plan.device)
        self._loss_sum = torch.zeros((), device=self.plan.device)
        self.state.epoch_step = 0

    def step(self) -> float:
        """One optimiser step on the next batch of this epoch; returns its loss (the one host read)."""
        s = self.state
        bs = min(s.batch_size, len(self.data))
        assert self._order is not None and self._loss_sum is not None, "begin_epoch() first"
        batch = self.data[self._order[s.epoch_step * bs:(s.epoch_step + 1) * bs]]
        x = to_model_input(random_crop_flip(batch, self.crop_padding, self.flip, self.aug_gen),
                           self.evaluator.mean, self.evaluator.std).contiguous(memory_format=self.memory)
        t = self.temperature
        with torch.inference_mode(), self.plan.autocast():
            teacher_probs = F.softmax(self.teacher(x).float() / t, dim=1)
        teacher_probs = teacher_probs.clone()  # an ordinary tensor, usable by autograd
        with self.plan.autocast():
            logits = self.student(x)
        loss = distillation_loss(logits, teacher_probs, t)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        value = loss.detach()
        self._loss_sum += value
        s.step += 1
        s.epoch_step += 1
        for hook in self._step_hooks:
            hook.on_step_end(self)
        return value.item()

    def step_event(self, losses: tuple[float, ...]) -> Step:
        s = self.state
        return Step(epoch=s.epoch, step=s.step, total_steps=s.total_steps, loss=losses[-1], lr=self.lr,
                    temperature=self.temperature, losses=losses)

    def end_epoch(self, seconds: float) -> EpochEnd:
        """Close the epoch: measure (every epoch hook), keep the best, advance the schedule and the state."""
        s = self.state
        lr, t = self.lr, self.temperature
        s.epoch_loss = float(self._loss_sum) / max(1, s.epoch_step) if self._loss_sum is not None else 0.0
        metrics: dict[str, float | None] = {}
        for hook in self.hooks:
            metrics.update(hook.on_epoch_end(self) or {})
        self.schedule.step()
        s.epoch += 1
        s.epoch_step = 0
        s.metrics = metrics
        s.last = Scores(acc=metrics.get("acc"), asr=metrics.get("asr"), agreement=metrics.get("agreement"),
                        epoch=s.epoch, loss=s.epoch_loss)
        if better(metrics, s.best, s.teacher.acc if s.teacher else None):
            s.best = s.last
            if self.keep == "best":
                self.best_weights = {k: v.detach().clone() for k, v in self.student.state_dict().items()}
        extra = {k: v for k, v in metrics.items() if k not in ("acc", "asr", "agreement")}
        return EpochEnd(epoch=s.epoch, epochs=s.epochs, loss=s.epoch_loss, acc=metrics.get("acc"),
                        asr=metrics.get("asr"), agreement=metrics.get("agreement"), lr=lr, temperature=t,
                        seconds=seconds, elapsed=s.seconds, extra=extra)

    def finish(self) -> Scores:
        """Choose the student to save and say what it scores, as saved.

        The best epoch's weights when keeping the best; otherwise the student as it is. A run stopped in the
        middle of an epoch (or before any epoch ended) has weights no epoch record describes, so it is
        measured now: the summary never describes a model other than the one on disk.
        """
        s = self.state
        if self.keep == "best" and self.best_weights is not None and s.best is not None:
            self.student.load_state_dict(self.best_weights)
            chosen = s.best
        elif s.epoch_step == 0 and s.last is not None:
            chosen = s.last
        else:
            scores = self.evaluator.measure(self.student)
            loss = float(self._loss_sum) / s.epoch_step if self._loss_sum is not None and s.epoch_step else None
            chosen = Scores(acc=scores["acc"], asr=scores["asr"], agreement=scores["agreement"], epoch=s.epoch,
                            loss=loss, partial=True)
        for hook in self.hooks:
            hook.on_finish(self)
        return chosen

    def summary(self, *, cleansed: Scores, cancelled: bool, preset: str, reinit: ReinitRecord,
                model_files: Sequence[str], run_dir: str) -> RunSummary:
        s = self.state
        kept = "best" if self.keep == "best" and self.best_weights is not None and not cleansed.partial \
            else "last"
        summary = RunSummary(
            teacher=s.teacher or Scores(acc=None, asr=None), cleansed=cleansed, best=s.best, kept=kept,
            preset=preset, epochs=s.epochs, epochs_completed=s.epoch, steps=s.step, cancelled=cancelled,
            seconds=round(s.seconds, 2),
            images_per_second=round(s.images / s.seconds, 1) if s.seconds > 0 else 0.0,
            device=self.plan.describe(), reinit=reinit, model_files=tuple(model_files), run_dir=run_dir)
        fields: dict[str, Any] = {}
        for hook in self.hooks:
            fields.update(hook.summary_fields())
        if fields:
            summary = dataclasses.replace(summary, **fields)
        if cancelled:
            note = (f"cancelled after {s.epoch} of {s.epochs} epochs ({s.step} steps); the model saved is "
                    f"{summary.kept_text()}")
            summary = dataclasses.replace(summary, note=note)
        return summary
