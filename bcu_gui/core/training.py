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
  GUI thread with queued signals, while every step's loss still reaches the plot. Its rate is also when the
  host reads the losses at all: a step only writes its loss into the device-side ``LossReader``
  (lossreader.py), so no step waits for the device.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch.nn import functional as F

from .data import random_crop_flip, to_model_input
from .devices import ComputePlan
from .eval_schedule import ScheduledEvaluator
from .evaluation import Evaluator
from .fastteacher import folded_teacher
from .lossreader import LossReader
from .numbers import pct
from .events import EpochEnd, Step
from .streaming import StreamedImages
from .summary import ReinitRecord, RunSummary, Scores
from .unlearning import AdversarialConsistency, AdversarialSettings

STEP_EVENTS_PER_SECOND = 30
FOLD_TEACHER = False  # soft labels from a batch-norm-folded copy of the teacher (see Distiller.__init__)
ACC_TOLERANCE = 0.03  # keep-best: ACC within 3 points of the teacher's
PROXY_AGREEMENT_MARGIN = 0.03  # keep-proxy: agreement with the teacher at least 1 - this (97%)
EMA_DECAY = 0.99  # per optimiser step: a horizon of ~100 steps, ~10 epochs at the automatic batch size


def temperature(temperature_start: float, temperature_rise: float, epoch: int, epochs: int) -> float:
    """The distillation temperature for 0-based ``epoch``: rising linearly, reaching start + rise at the end."""
    return temperature_start + temperature_rise * (epoch + 1) / epochs


def distillation_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, t: float) -> torch.Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)), averaged over the batch, in fp32."""
    return F.kl_div(F.log_softmax(student_logits.float() / t, dim=1), teacher_probs, reduction="batchmean")


def hard_label_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the teacher's argmax (the paper's hard-label ablation, Table 5); no temperature."""
    return F.cross_entropy(student_logits.float(), teacher_probs.argmax(dim=1))


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
    proxy: Scores | None = None  # the epoch the keep-proxy rule prefers (lowest proxy ASR, enough agreement)
    proxy_asr: float | None = None  # that epoch's proxy ASR
    ema: Scores | None = None  # the EMA weights as measured at the last epoch's end
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
        for key in ("teacher", "last", "best", "proxy", "ema"):
            values[key] = Scores.from_dict(values.get(key))
        return cls(**values)


class RunHook:
    """Moments of a run others attach to; override what you need (every default does nothing).

    ``provides`` names the numbers ``on_epoch_end`` returns (e.g. ``("proxy_asr",)`` for a trigger scan's
    hook): a run asked to keep the lowest-proxy-ASR epoch checks, before it starts, that a hook provides it.
    """

    provides: tuple[str, ...] = ()

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

    def write_files(self, folder: Path) -> list[Path]:
        """Files this hook leaves in the run folder once the model is saved (e.g. a recovered trigger's PNGs)."""
        return []

    def take_events(self) -> list[Any]:
        """Events this hook made since last asked (e.g. feature-space frames); the job yields them."""
        return []


class EvaluationHook(RunHook):
    """ACC, ASR and agreement with the teacher, every epoch."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator

    def on_epoch_end(self, run: "Distiller") -> dict[str, float | None]:
        return self.evaluator.measure(run.student)


class EmaHook(RunHook):
    """An exponential moving average of the student's weights, a label-free candidate of its own.

    Updated after every optimiser step with a warm-up (decay ``min(decay, (1 + n) / (10 + n))`` after ``n``
    updates, as timm's ModelEmaV2 and TF's ExponentialMovingAverage do), so the freshly re-initialised
    weights of the first steps fade quickly. Batch-norm buffers are averaged too (floating ones; counters are
    copied), so the average model is usable as it is, without a pass to re-estimate statistics. Measured
    every epoch as ``ema_acc`` / ``ema_asr`` / ``ema_agreement``.
    """

    provides = ("ema_acc", "ema_asr", "ema_agreement")

    def __init__(self, decay: float = EMA_DECAY) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the EMA decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.model: torch.nn.Module | None = None
        self._pending: dict[str, torch.Tensor] | None = None

    def on_start(self, run: "Distiller") -> None:
        if self.model is None:
            self.model = copy.deepcopy(run.student).eval()
            for p in self.model.parameters():
                p.requires_grad_(False)
            if self._pending is not None:
                self.model.load_state_dict(self._pending)
                self._pending = None

    @torch.no_grad()
    def on_step_end(self, run: "Distiller") -> None:
        assert self.model is not None, "on_start() first"
        d = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        self.updates += 1
        ema = list(self.model.state_dict().values())
        new = list(run.student.state_dict().values())
        floats = [(e, n) for e, n in zip(ema, new) if e.is_floating_point()]
        if floats:
            torch._foreach_lerp_([e for e, _ in floats], [n for _, n in floats], 1.0 - d)
        for e, n in zip(ema, new):
            if not e.is_floating_point():
                e.copy_(n)

    def on_epoch_end(self, run: "Distiller") -> dict[str, float | None]:
        assert self.model is not None, "on_start() first"
        m = run.evaluator.measure(self.model)
        return {"ema_acc": m["acc"], "ema_asr": m["asr"], "ema_agreement": m["agreement"]}

    # -- what a resume file saves (Distiller.tensors() names it "ema") -------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates,
                "weights": None if self.model is None else self.model.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay, self.updates = float(state["decay"]), int(state["updates"])
        if state.get("weights") is not None:
            if self.model is None:
                self._pending = state["weights"]
            else:
                self.model.load_state_dict(state["weights"])


def proxy_better(metrics: dict[str, float | None], chosen: Scores | None, chosen_proxy: float | None,
                 margin: float | None = None) -> bool:
    """Keep-proxy rule: the lowest proxy ASR among epochs whose agreement with the teacher is >= 1 - margin.

    Label-free: the proxy ASR comes from a trigger scan of the unlabelled images and the agreement from the
    teacher's own predictions on them, so neither needs labels nor the attacker's trigger.
    """
    margin = PROXY_AGREEMENT_MARGIN if margin is None else margin
    proxy, agreement = metrics.get("proxy_asr"), metrics.get("agreement")
    if proxy is None or agreement is None or agreement < 1.0 - margin:
        return False
    return chosen is None or chosen_proxy is None or proxy < chosen_proxy


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

    def reading_due(self, end_of_epoch: bool) -> bool:
        """Time to read the losses from the device (an interval passed since the last event, or the epoch ends)."""
        return end_of_epoch or self._clock() - self._last >= self.interval

    def due(self, end_of_epoch: bool) -> bool:
        return bool(self.pending) and (end_of_epoch or self._clock() - self._last >= self.interval)

    def take(self) -> tuple[float, ...]:
        losses, self.pending = tuple(self.pending), []
        self._last = self._clock()
        return losses


class Distiller:
    """The student, the teacher and the optimiser of one run, and the three parts of its loop."""

    def __init__(self, *, teacher: torch.nn.Module, student: torch.nn.Module,
                 images: torch.Tensor | StreamedImages, evaluator: Evaluator | ScheduledEvaluator, plan: ComputePlan, state: RunState, lr: float, momentum: float,
                 weight_decay: float, crop_padding: int, flip: bool, seed: int, temperature_start: float,
                 temperature_rise: float, keep: str, hooks: Sequence[RunHook] = (), hard_labels: bool = False,
                 cosine_period: int | None = None, ema_decay: float | None = EMA_DECAY,
                 adversarial: AdversarialSettings | None = None, num_classes: int | None = None) -> None:
        if not isinstance(evaluator, ScheduledEvaluator):  # a plain evaluator: full sets after every epoch
            evaluator = ScheduledEvaluator(evaluator)
        self.plan, self.state, self.evaluator = plan, state, evaluator
        self.memory = torch.channels_last if plan.channels_last else torch.contiguous_format
        self.teacher = copy.deepcopy(teacher).to(plan.device, memory_format=self.memory).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.student = student.to(plan.device, memory_format=self.memory).train()
        # over the memory budget the rows stay on the host and a prefetching thread serves the batches
        self.stream = images if isinstance(images, StreamedImages) else None
        self.data = images if self.stream is not None else images.to(plan.device)
        # the step's soft labels: from the teacher itself, unless FOLD_TEACHER asks for a copy with batch norms
        # folded into convolutions (fastteacher.py, a 1.07x step on a bf16 CPU). Off by default: in bf16 the fold
        # moved the demo's cleansed model enough that its rescan's perturbation index went from 1.2 to 1.55 (over
        # the 1.5 threshold) with two threads, a false alarm a newcomer would see first.
        self.soft_teacher = self.teacher
        if FOLD_TEACHER:
            sample = to_model_input(self.data[:8].to(plan.device), evaluator.mean,
                                    evaluator.std).contiguous(memory_format=self.memory)
            self.soft_teacher = folded_teacher(self.teacher, sample)
        self.crop_padding, self.flip, self.keep = crop_padding, flip, keep
        self.temperature_start, self.temperature_rise = temperature_start, temperature_rise
        self.hard_labels = hard_labels
        self.optimizer = torch.optim.SGD(self.student.parameters(), lr=lr, momentum=momentum,
                                         weight_decay=weight_decay)
        self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=cosine_period or state.epochs)
        self.scaler = torch.amp.GradScaler(plan.device.type, enabled=plan.amp_dtype is torch.float16)
        self.order_gen = torch.Generator().manual_seed(seed)
        self.aug_gen = torch.Generator(device=plan.device).manual_seed(seed)
        self.best_weights: dict[str, torch.Tensor] | None = None
        # the label-free unlearning term (unlearning.py); None or weight 0: the plain distillation step
        self.adversarial: AdversarialConsistency | None = None
        if adversarial is not None and adversarial.weight > 0:
            if num_classes is None:
                raise ValueError("the adversarial term needs the number of classes")
            self.adversarial = AdversarialConsistency(adversarial, num_classes, tuple(self.data.shape[1:]),
                                                      plan.device, seed)
        self.proxy_weights: dict[str, torch.Tensor] | None = None
        self.ema = EmaHook(ema_decay) if ema_decay is not None else None
        if keep == "ema" and self.ema is None:
            raise ValueError("keeping the EMA weights needs an EMA (ema_decay)")
        self.hooks: list[RunHook] = [EvaluationHook(evaluator), *([self.ema] if self.ema else []), *hooks]
        self.kept_reason = ""
        # only hooks that override on_step_end are called per step: the step stays as lean as the bare loop
        self._step_hooks = [h for h in self.hooks if type(h).on_step_end is not RunHook.on_step_end]
        self._order: torch.Tensor | None = None
        self._loss_sum: torch.Tensor | None = None
        # what the step calls and which images it takes: the student and every image, unless a hook (DDP,
        # core/distributed.py) wraps the student to sync gradients and gives the step this rank's shard
        self.train_model: torch.nn.Module = self.student
        self.shard_order: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.losses = LossReader(plan.device)  # every step's loss, read by the host only at read points

    # -- what a resume file saves besides ``state`` ---------------------------------------------------------
    def tensors(self) -> dict[str, Any]:
        """The stateful objects of the loop by name (state dicts and generator states)."""
        return {"student": self.student.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "scaler": self.scaler.state_dict(),
                "order_rng": self.order_gen.get_state(), "aug_rng": self.aug_gen.get_state(),
                "best_weights": self.best_weights, "proxy_weights": self.proxy_weights,
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "adversarial": self.adversarial.state_dict() if self.adversarial is not None else None}

    def load_extra_tensor(self, name: str, value: Any) -> None:
        """Restore what ``tensors()`` names beyond the optimiser's basics (called by ``resume.restore``)."""
        if name == "proxy_weights":
            self.proxy_weights = None if value is None else {k: v.to(self.plan.device) for k, v in value.items()}
        elif name == "ema" and value is not None and self.ema is not None:
            self.ema.load_state_dict(value)
        elif name == "adversarial" and value is not None and self.adversarial is not None:
            self.adversarial.load_state_dict(value)

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

    def add_hook(self, hook: RunHook) -> None:
        """Attach a hook after construction (one the job builds itself, knowing the run folder), before start."""
        self.hooks.append(hook)
        if type(hook).on_step_end is not RunHook.on_step_end:
            self._step_hooks.append(hook)

    def hook_events(self) -> list[Any]:
        """The events the hooks made since last asked, in hook order."""
        return [event for hook in self.hooks for event in hook.take_events()]

    def begin_epoch(self) -> None:
        """Draw this epoch's order (the generator advances once per epoch, so a resume can replay it)."""
        n = len(self.data)
        order = torch.randperm(n, generator=self.order_gen)
        if self.shard_order is not None:  # several processes: this rank's part of the shared permutation
            order = self.shard_order(order)
        if self.stream is not None:
            self.stream.start_epoch(order, min(self.state.batch_size, len(order)), self.state.steps_per_epoch)
        self._order = order.to(self.plan.device)
        self._loss_sum = torch.zeros((), device=self.plan.device)
        self.state.epoch_step = 0
        if self.adversarial is not None:
            self.adversarial.maybe_restart(self.state.epoch)
        self.losses.begin(self.state.steps_per_epoch, self.state.step)

    def step(self) -> torch.Tensor:
        """One optimiser step on the next batch of this epoch; returns its loss as a device tensor.

        Nothing here waits for the device (no ``.item()``, no ``bool(tensor)``): the loss goes into
        ``self.losses``, which the job reads every few steps (``LossReader.collect``).
        """
        s = self.state
        bs = min(s.batch_size, len(self.data))
        assert self._order is not None and self._loss_sum is not None, "begin_epoch() first"
        batch = self.stream.next_batch() if self.stream is not None else \
            self.data[self._order[s.epoch_step * bs:(s.epoch_step + 1) * bs]]
        augmented = random_crop_flip(batch, self.crop_padding, self.flip, self.aug_gen)
        x = to_model_input(augmented, self.evaluator.mean, self.evaluator.std).contiguous(memory_format=self.memory)
        t = self.temperature
        with torch.inference_mode(), self.plan.autocast():
            teacher_logits = self.soft_teacher(x).float()
            teacher_probs = F.softmax(teacher_logits / t, dim=1)
        teacher_probs = teacher_probs.clone()  # an ordinary tensor, usable by autograd

        def clean_loss(logits: torch.Tensor) -> torch.Tensor:
            return hard_label_loss(logits, teacher_probs) if self.hard_labels else \
                distillation_loss(logits, teacher_probs, t)

        after_backward = None
        if self.adversarial is None or not self.adversarial.active(s.epoch, s.epochs):
            with self.plan.autocast():
                logits = self.train_model(x)
            loss = clean_loss(logits)
        else:  # clean and perturbed images in one forward pass (unlearning.py)
            mean, std = self.evaluator.mean, self.evaluator.std
            with self.plan.autocast():
                loss, after_backward = self.adversarial.loss(
                    self.train_model, augmented.to(torch.float32).div_(255.0),
                    lambda p: ((p - mean) / std).contiguous(memory_format=self.memory),
                    teacher_logits.clone(), clean_loss)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if after_backward is not None:
            after_backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        value = loss.detach()
        self._loss_sum += value
        self.losses.put(value)
        s.step += 1
        s.epoch_step += 1
        for hook in self._step_hooks:
            hook.on_step_end(self)
        return value

    def step_event(self, losses: tuple[float, ...], step: int | None = None) -> Step:
        """The ``Step`` event for ``losses``, the last of which is the loss of global ``step`` (default: the
        last step whose loss ``self.losses`` delivered)."""
        s = self.state
        step = self.losses.delivered_step if step is None else step
        return Step(epoch=s.epoch, step=step, total_steps=s.total_steps, loss=losses[-1], lr=self.lr,
                    temperature=self.temperature, losses=losses)

    def end_epoch(self, seconds: float) -> EpochEnd:
        """Close the epoch: measure (every epoch hook), keep the best, advance the schedule and the state."""
        s = self.state
        lr, t = self.lr, self.temperature
        s.epoch_loss = float(self._loss_sum) / max(1, s.epoch_step) if self._loss_sum is not None else 0.0
        metrics: dict[str, float | None] = {}
        scope = self.evaluator.begin_epoch(s.epoch + 1, s.epochs)  # full, a fixed subset, or not this epoch
        counts = self.evaluator.counts
        try:
            for hook in self.hooks:
                metrics.update(hook.on_epoch_end(self) or {})
        finally:
            self.evaluator.end_epoch()
        self.schedule.step()
        s.epoch += 1
        s.epoch_step = 0
        s.metrics = metrics
        s.last = Scores(acc=metrics.get("acc"), asr=metrics.get("asr"), agreement=metrics.get("agreement"),
                        epoch=s.epoch, loss=s.epoch_loss, eval_scope=scope)
        if better(metrics, s.best, s.teacher.acc if s.teacher else None):
            s.best = s.last
            if self.keep == "best":
                self.best_weights = _snapshot(self.student)
        if proxy_better(metrics, s.proxy, s.proxy_asr):
            s.proxy, s.proxy_asr = s.last, metrics.get("proxy_asr")
            if self.keep == "proxy":
                self.proxy_weights = _snapshot(self.student)
        if self.ema is not None:
            s.ema = Scores(acc=metrics.get("ema_acc"), asr=metrics.get("ema_asr"),
                           agreement=metrics.get("ema_agreement"), epoch=s.epoch, eval_scope=scope)
        extra = {k: v for k, v in metrics.items() if k not in ("acc", "asr", "agreement")}
        return EpochEnd(epoch=s.epoch, epochs=s.epochs, loss=s.epoch_loss, acc=metrics.get("acc"),
                        asr=metrics.get("asr"), agreement=metrics.get("agreement"), lr=lr, temperature=t,
                        seconds=seconds, elapsed=s.seconds, extra=extra, eval_scope=scope,
                        eval_clean=counts[0], eval_triggered=counts[1])

    def finish(self) -> Scores:
        """Choose the student to save and say what it scores, as saved.

        The best epoch's weights when keeping the best; otherwise the student as it is. A run stopped in the
        middle of an epoch (or before any epoch ended) has weights no epoch record describes, so it is
        measured now: the summary never describes a model other than the one on disk.
        """
        s = self.state
        if self.stream is not None:
            self.stream.close()
        if self.keep == "best" and self.best_weights is not None and s.best is not None:
            estimated = s.best.eval_scope != "full"
            last_weights = _snapshot(self.student) if estimated else None
            self.student.load_state_dict(self.best_weights)
            chosen = s.best
            self.kept_reason = (f"the lowest ASR ({pct(s.best.asr)}) among epochs with ACC within "
                                f"{ACC_TOLERANCE * 100:g} points of the teacher's")
            if estimated:  # chosen on a subset estimate: measure it in full, and let the last epoch compete
                chosen = s.best = self._measured_in_full(s.best)
                last = s.last
                if last is not None and last.eval_scope == "full" and s.epoch_step == 0 and last_weights \
                        and better(dataclasses.asdict(last), chosen, s.teacher.acc if s.teacher else None):
                    self.student.load_state_dict(last_weights)
                    chosen = s.best = last
                self.kept_reason = (f"the lowest ASR ({pct(chosen.asr)}, on the full sets) among epochs with ACC "
                                    f"within {ACC_TOLERANCE * 100:g} points of the teacher's (epochs compared on "
                                    "a subset estimate, the candidate and the last epoch in full)")
        elif self.keep == "proxy" and self.proxy_weights is not None and s.proxy is not None:
            self.student.load_state_dict(self.proxy_weights)
            chosen = s.proxy
            self.kept_reason = (f"the lowest proxy ASR ({pct(s.proxy_asr)}) among epochs agreeing with the "
                                f"teacher on at least {(1 - PROXY_AGREEMENT_MARGIN) * 100:g}% of the images")
        elif self.keep == "ema" and self.ema is not None and self.ema.model is not None and s.epoch_step == 0 \
                and s.ema is not None:
            self.student.load_state_dict(self.ema.model.state_dict())
            chosen = s.ema
            self.kept_reason = (f"the moving average of the student's weights (decay {self.ema.decay:g} a step) "
                                f"at the end of epoch {s.ema.epoch}")
        elif s.epoch_step == 0 and s.last is not None:
            chosen = s.last
            self.kept_reason = self._fallback_reason() or "the student as the last epoch left it"
        else:
            scores = self.evaluator.measure(self.student)
            loss = float(self._loss_sum) / s.epoch_step if self._loss_sum is not None and s.epoch_step else None
            chosen = Scores(acc=scores["acc"], asr=scores["asr"], agreement=scores["agreement"], epoch=s.epoch,
                            loss=loss, partial=True)
            self.kept_reason = "the run was stopped in the middle of an epoch: the student as it was then"
        if not chosen.partial and chosen.eval_scope != "full":  # a stop after an estimated or skipped epoch
            chosen = self._measured_in_full(chosen)
        for hook in self.hooks:
            hook.on_finish(self)
        return chosen

    def _measured_in_full(self, scores: Scores) -> Scores:
        """``scores`` with ACC / ASR / agreement of the student as it is now, on the full evaluation sets."""
        full = self.evaluator.measure(self.student)  # outside an epoch end: always the full sets
        return dataclasses.replace(scores, acc=full["acc"], asr=full["asr"], agreement=full["agreement"],
                                   eval_scope="full")

    def _fallback_reason(self) -> str:
        """Why a run asked to keep another candidate saved the last epoch instead ('' when it asked for last)."""
        if self.keep == "best":
            return "no epoch kept ACC within 3 points of the teacher's with an ASR measured; kept the last epoch"
        if self.keep == "proxy":
            return (f"no epoch had a proxy ASR with agreement of at least "
                    f"{(1 - PROXY_AGREEMENT_MARGIN) * 100:g}% with the teacher; kept the last epoch")
        return ""

    @property
    def kept(self) -> str:
        """Which candidate ``finish`` saved: 'last', 'best', 'ema' or 'proxy'."""
        s = self.state
        if self.keep == "best" and self.best_weights is not None and s.best is not None:
            return "best"
        if self.keep == "proxy" and self.proxy_weights is not None and s.proxy is not None:
            return "proxy"
        if self.keep == "ema" and self.ema is not None and s.ema is not None and s.epoch_step == 0:
            return "ema"
        return "last"

    def save_ema(self, path, metadata: dict) -> list:
        """Save the EMA weights as a model file of their own beside the run's model (nothing without an EMA)."""
        from .runfolder.writer import save_model

        if self.ema is None or self.ema.model is None or self.state.ema is None:
            return []
        return save_model(self.ema.model, path, metadata)

    def summary(self, *, cleansed: Scores, cancelled: bool, preset: str, reinit: ReinitRecord,
                model_files: Sequence[str], run_dir: str) -> RunSummary:
        s = self.state
        kept = self.kept if not cleansed.partial else "last"
        summary = RunSummary(
            teacher=s.teacher or Scores(acc=None, asr=None), cleansed=cleansed, best=s.best, kept=kept,
            kept_reason=self.kept_reason, ema=s.ema, proxy=s.proxy, batch_size=s.batch_size,
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


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}

