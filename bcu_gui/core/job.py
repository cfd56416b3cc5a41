"""The cleansing job: a config in, a stream of events out, pause / resume / cancel within one batch.

``CleanseJob.events()`` is a generator that yields after every optimiser step, so whoever drives it (the CLI's
loop, the app's QThread worker) sees progress as it happens, and the pause and cancel flags, set from any
thread, are honoured at the next batch. Every failure ends the stream with one ``Failed`` event carrying a
sentence for a person; nothing is raised to the driver.
"""

from __future__ import annotations

import copy
import dataclasses
import errno
import math
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch.nn import functional as F

from .bundled import resolve_eval_sets
from .data import load_unlabeled, random_crop_flip, to_model_input
from .devices import PRECISIONS, ComputePlan, plan_compute
from .errors import BcuError, ConfigError
from .evaluation import EvalSets, Evaluator
from .events import EpochEnd, Event, Failed, Finished, Log, Started, Step
from .groups import PRESET_NAMES, layer_groups, resolve_ratios
from .models import LoadedModel, load_model
from .reinit import build_student
from .runs import RunFolder, new_run_dir
from .saveback import save_original_form

KEEP_CHOICES = ("last", "best")


@dataclass
class CleanseConfig:
    """Everything a run needs; saved as the run's ``config.json`` so it can be run again."""

    checkpoint: str
    unlabeled: str
    eval_clean: str | None = None
    eval_poisoned: str | None = None
    target_class: int | None = None
    arch: str | None = None
    input_size: int | None = None
    normalize: str | None = None
    trust_checkpoint: bool = False
    preset: str = "paper"
    ratios: dict[str, float] = field(default_factory=dict)  # per-group overrides on top of the preset
    epochs: int = 100
    batch_size: int = 256
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    temperature_start: float = 1.0
    temperature_rise: float = 3.0  # T = start + rise * (e + 1) / E
    crop_padding: int = 4
    flip: bool = True
    device: str = "auto"
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    channels_last: bool | None = None  # None: on for CPU and CUDA
    seed: int = 0
    unlabeled_limit: int | None = None
    out: str | None = None  # run folder; None: a new one under the user's data directory
    keep: str = "last"  # last | best (lowest ASR with ACC within 3 points of the teacher's)
    use_bundled_eval: bool = True  # fill missing eval sets from the checkpoint's own (BackdoorBench bd_test)

    def validate(self) -> None:
        """Reject settings that cannot work, before any file is read."""
        checks = [
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 2, f"batch size must be at least 2, got {self.batch_size}"),
            (self.lr > 0 and math.isfinite(self.lr), f"learning rate must be a positive number, got {self.lr}"),
            (0 <= self.momentum < 1, f"momentum must lie in [0, 1), got {self.momentum}"),
            (self.weight_decay >= 0, f"weight decay must not be negative, got {self.weight_decay}"),
            (self.crop_padding >= 0, f"crop padding must not be negative, got {self.crop_padding}"),
            (self.preset in PRESET_NAMES, f"unknown preset '{self.preset}': use one of {', '.join(PRESET_NAMES)}"),
            (self.precision in PRECISIONS, f"unknown precision '{self.precision}': use {', '.join(PRECISIONS)}"),
            (self.keep in KEEP_CHOICES, f"keep must be 'last' or 'best', got '{self.keep}'"),
            (self.unlabeled_limit is None or self.unlabeled_limit >= 2, "the unlabelled limit must be at least 2"),
            (self.temperature_start > 0, "the starting temperature must be positive"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        if self.keep == "best" and not self.eval_poisoned:
            raise ConfigError("keeping the best epoch needs a triggered folder to measure ASR")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "CleanseConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown setting(s) in the config: {', '.join(unknown)}")
        return cls(**data)


def temperature(config: CleanseConfig, epoch: int) -> float:
    """The distillation temperature for 0-based ``epoch``: rising linearly, reaching start + rise at the end."""
    return config.temperature_start + config.temperature_rise * (epoch + 1) / config.epochs


def distillation_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, t: float) -> torch.Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)), averaged over the batch, in fp32."""
    return F.kl_div(F.log_softmax(student_logits.float() / t, dim=1), teacher_probs, reduction="batchmean")


class CleanseJob:
    """One cleansing run. Drive it by iterating ``events()``; control it from any thread."""

    def __init__(self, config: CleanseConfig, model: LoadedModel | None = None) -> None:
        self.config = config
        self._model = model
        self._cancel = threading.Event()
        self._go = threading.Event()
        self._go.set()

    # -- control, safe from any thread -------------------------------------------------------------------
    def pause(self) -> None:
        self._go.clear()

    def resume(self) -> None:
        self._go.set()

    def cancel(self) -> None:
        self._cancel.set()
        self._go.set()

    @property
    def paused(self) -> bool:
        return not self._go.is_set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    # -- the run -----------------------------------------------------------------------------------------
    def events(self) -> Iterator[Event]:
        """Run the job, yielding events; always ends with ``Finished`` or ``Failed``."""
        try:
            yield from self._run()
        except BcuError as exc:
            yield Failed(str(exc), "input")
        except torch.OutOfMemoryError:
            yield Failed(f"the device ran out of memory at batch size {self.config.batch_size}; "
                         "lower the batch size or run on the CPU", "memory", traceback.format_exc())
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                yield Failed(f"the disk is full: could not write {exc.filename or 'the run folder'}; "
                             "free some space or choose another output folder", "disk", traceback.format_exc())
            else:
                yield Failed(f"could not read or write {exc.filename or 'a file'}: {exc.strerror or exc}",
                             "input", traceback.format_exc())
        except Exception as exc:  # a bug: report it, never kill the driver
            yield Failed(f"unexpected error: {type(exc).__name__}: {exc}", "internal", traceback.format_exc())

    def _run(self) -> Iterator[Event]:
        cfg = self.config
        cfg.validate()
        plan = plan_compute(cfg.device, cfg.precision, cfg.channels_last)
        if self._model is None:
            yield Log(f"loading {cfg.checkpoint}")
            self._model = load_model(cfg.checkpoint, arch=cfg.arch, trust=cfg.trust_checkpoint,
                                     input_size=cfg.input_size, normalize=cfg.normalize)
        model = self._model
        yield Log(f"model: {model.describe()}")
        for note in model.notes:
            yield Log(note)

        yield Log(f"reading unlabelled images from {cfg.unlabeled}")
        unlabeled = load_unlabeled(cfg.unlabeled, model.input_size, limit=cfg.unlabeled_limit)
        yield from _skipped_warning(unlabeled)
        if len(unlabeled) < 2:
            raise ConfigError(f"{cfg.unlabeled} holds only {len(unlabeled)} usable image; at least 2 are needed")
        sets, bundled_note = resolve_eval_sets(cfg.eval_clean, cfg.eval_poisoned, cfg.target_class, model,
                                               cfg.use_bundled_eval)
        if bundled_note:
            yield Log(bundled_note)
        for s in (sets.clean, sets.triggered):
            if s is not None:
                yield from _skipped_warning(s)
        yield Log(f"{len(unlabeled)} unlabelled images; curves available: "
                  f"{', '.join(['loss', 'agreement'] + sets.curves)}")

        groups = layer_groups(model.module)
        ratios = resolve_ratios(groups, cfg.preset, cfg.ratios)
        student, report = build_student(model.module, model.fresh(cfg.seed), groups, ratios, cfg.seed)
        yield Log(report.describe())

        run = RunFolder(cfg.out or new_run_dir())
        run.write_config({**cfg.to_dict(), "resolved": {"ratios": ratios, "model": model.metadata(),
                                                        "device": plan.describe()}})
        yield Log(f"run folder: {run.path}; compute: {plan.describe()}")
        yield from self._train(model, student, unlabeled.images, sets, report, plan, run)

    def _train(self, model: LoadedModel, student: torch.nn.Module, images: torch.Tensor, sets: EvalSets,
               report, plan: ComputePlan, run: RunFolder) -> Iterator[Event]:
        cfg = self.config
        memory = torch.channels_last if plan.channels_last else torch.contiguous_format
        teacher = copy.deepcopy(model.module).to(plan.device, memory_format=memory).eval()
        student = student.to(plan.device, memory_format=memory).train()
        for p in teacher.parameters():
            p.requires_grad_(False)
        data = images.to(plan.device)
        evaluator = Evaluator(sets, model.normalization, plan, agreement_images=images[:2048])
        evaluator.set_reference(teacher)
        teacher_metrics = evaluator.measure(teacher)
        mean, std = evaluator.mean, evaluator.std

        n, bs = len(data), min(cfg.batch_size, len(data))
        steps_per_epoch = n // bs + (1 if n % bs >= 2 else 0)  # a last batch of 1 would break batch norm
        total_steps = steps_per_epoch * cfg.epochs
        optimizer = torch.optim.SGD(student.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                    weight_decay=cfg.weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
        scaler = torch.amp.GradScaler(plan.device.type, enabled=plan.amp_dtype is torch.float16)
        order_gen = torch.Generator().manual_seed(cfg.seed)
        aug_gen = torch.Generator(device=plan.device).manual_seed(cfg.seed)

        yield Started(cfg.epochs, steps_per_epoch, n, plan.describe(), teacher_metrics["acc"],
                      teacher_metrics["asr"], report.counts, report.totals, str(run.path))
        best: dict | None = None
        best_state: dict | None = None
        last: dict | None = None
        step = 0
        start = time.perf_counter()
        completed = 0
        for epoch in range(cfg.epochs):
            t = temperature(cfg, epoch)
            lr = optimizer.param_groups[0]["lr"]
            epoch_start = time.perf_counter()
            order = torch.randperm(n, generator=order_gen).to(plan.device)
            loss_sum = torch.zeros((), device=plan.device)
            for b in range(steps_per_epoch):
                if not self._go.is_set():
                    yield Log("paused")
                    self._go.wait()
                    if not self._cancel.is_set():
                        yield Log("resumed")
                if self._cancel.is_set():
                    break
                batch = data[order[b * bs:(b + 1) * bs]]
                x = to_model_input(random_crop_flip(batch, cfg.crop_padding, cfg.flip, aug_gen), mean, std)
                x = x.contiguous(memory_format=memory)
                with torch.inference_mode(), plan.autocast():
                    teacher_probs = F.softmax(teacher(x).float() / t, dim=1)
                teacher_probs = teacher_probs.clone()  # an ordinary tensor, usable by autograd
                with plan.autocast():
                    logits = student(x)
                loss = distillation_loss(logits, teacher_probs, t)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                value = loss.detach()
                loss_sum += value
                step += 1
                yield Step(epoch, step, total_steps, value.item(), lr, t)  # the one host read per step
            else:
                schedule.step()
                completed = epoch + 1
                metrics = evaluator.measure(student)
                seconds = time.perf_counter() - epoch_start
                last = {"epoch": completed, "loss": float(loss_sum) / steps_per_epoch, **metrics}
                record = EpochEnd(completed, cfg.epochs, last["loss"], metrics["acc"], metrics["asr"],
                                  metrics["agreement"], lr, t, seconds, time.perf_counter() - start)
                run.append_metrics(dataclasses.asdict(record))
                if _better(metrics, best, teacher_metrics["acc"]):
                    best = dict(last)
                    if cfg.keep == "best":
                        best_state = {k: v.detach().clone() for k, v in student.state_dict().items()}
                yield record
                continue
            break  # cancelled inside the epoch

        cancelled = self._cancel.is_set()
        chosen = "last"
        if cfg.keep == "best" and best_state is not None:
            student.load_state_dict(best_state)
            chosen = f"best (epoch {best['epoch']})"
        files = run.save_model(student, model.metadata())
        original_form, save_warning = save_original_form(model, student, run.path)
        files += original_form
        elapsed = time.perf_counter() - start
        final = best if cfg.keep == "best" and best is not None else last
        summary = {
            "teacher": {"acc": teacher_metrics["acc"], "asr": teacher_metrics["asr"]},
            "cleansed": final,
            "best_epoch": best,
            "kept": chosen,
            "epochs": cfg.epochs,
            "epochs_completed": completed,
            "cancelled": cancelled,
            "seconds": round(elapsed, 2),
            "images_per_second": round(step * bs / elapsed, 1) if elapsed > 0 else None,
            "device": plan.describe(),
            "reinit": {"ratios": report.ratios, "counts": report.counts, "totals": report.totals,
                       "reinitialised": report.reinitialised, "total": report.total, "seed": report.seed},
            "model_files": [str(p) for p in files],
            "run_dir": str(run.path),
        }
        if cancelled:
            summary["note"] = (f"cancelled after {completed} of {cfg.epochs} epochs; the model saved is the "
                               "student as it was when the run stopped")
        run.write_summary(summary)
        if save_warning:
            yield Log(save_warning, "warning")
        if cancelled:
            yield Log(summary["note"], "warning")
        yield Finished(summary, str(run.path), cancelled)


def _better(metrics: dict, best: dict | None, teacher_acc: float | None) -> bool:
    """Lowest ASR wins among epochs whose ACC stays within 3 points of the teacher's."""
    asr = metrics.get("asr")
    if asr is None:
        return False
    acc = metrics.get("acc")
    if teacher_acc is not None and acc is not None and acc < teacher_acc - 0.03:
        return False
    return best is None or asr < best["asr"]


def _skipped_warning(images) -> Iterator[Event]:
    summary = images.skipped_summary()
    if summary:
        yield Log(summary, "warning")
