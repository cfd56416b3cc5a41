"""The cleansing job: a config in, a stream of events out, pause / resume / cancel within one batch.

``CleanseJob.events()`` is a generator: whoever drives it (the CLI's loop, the app's QThread worker) sees
progress as it happens (``Step`` at most ~30 times a second, every ``EpochEnd``), and the pause and cancel
flags, set from any thread, are checked before every batch: a pause yields ``Paused`` and blocks until
``resume``; a cancel ends the loop, saves the student and still ends with ``Finished``. Every failure ends the
stream with one ``Failed`` event carrying a sentence for a person; nothing is raised to the driver.

The loop's arithmetic lives in ``training.py`` (one step, the end of an epoch, the finish, around one
``RunState``); this module owns the config, the control flags, the events and the run folder.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch

from . import resume as resume_points
from . import training
from .batching import BatchChoice, choose_batch_size, steps_per_epoch
from .bundled import resolve_eval_sets
from .data import load_unlabeled
from .devices import PRECISIONS, plan_compute
from .errors import BcuError, ConfigError
from .evaluation import EvalSets, Evaluator
from .events import Event, Failed, Finished, Log, Paused, Resumed, Started
from .groups import CONFIG_PRESETS, layer_groups, resolve_ratios
from .keep import KEEP_CHOICES
from .models import LoadedModel, load_model
from .reinit import ReinitReport, build_student
from .runs import RunFolder, new_run_dir, save_model
from .saveback import save_original_form
from .summary import ReinitRecord, Scores
from .training import Distiller, RunHook, RunState, StepThrottle, distillation_loss  # noqa: F401 (re-export)

EMA_STEM = "ema"  # the moving-average weights, saved beside the cleansed model as ema.pt / .safetensors
RESOLVED_KEY = "resolved"  # what config.json records beside the settings: ratios, model, device as used


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
    batch_size: int | None = None  # None: chosen from the unlabelled set's size (core/batching.py)
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    temperature_start: float = 1.0
    temperature_rise: float = 3.0  # T = start + rise * (e + 1) / E
    hard_labels: bool = False  # cross-entropy on the teacher's argmax instead of soft KL (paper Table 5)
    cosine_period: int | None = None  # cosine T_max in epochs; None: the run's epochs (the BCU code: 100)
    crop_padding: int = 4
    flip: bool = True  # horizontal flips: right for natural photos, wrong for digits and traffic signs
    device: str = "auto"
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    channels_last: bool | None = None  # None: on for CPU and CUDA
    seed: int = 0
    unlabeled_limit: int | None = None
    out: str | None = None  # run folder; None: a new one under the user's data directory
    keep: str = "last"  # last | best | ema | proxy (keep.KEEP_HELP)
    ema_decay: float | None = training.EMA_DECAY  # per step; None: no moving average
    use_bundled_eval: bool = True  # fill missing eval sets from the checkpoint's own (BackdoorBench bd_test)
    feature_space: bool = False  # record 2-D penultimate-feature frames every epoch (feature_space.py)
    feature_sample: int = 200  # clean (and triggered) images per frame

    def validate(self) -> None:
        """Reject settings that cannot work, before any file is read."""
        checks = [
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.batch_size is None or self.batch_size >= 2,
             f"batch size must be at least 2, got {self.batch_size}"),
            (self.cosine_period is None or self.cosine_period >= 1,
             f"the cosine period must be at least 1 epoch, got {self.cosine_period}"),
            (self.ema_decay is None or 0 < self.ema_decay < 1,
             f"the EMA decay must lie between 0 and 1, got {self.ema_decay}"),
            (self.temperature_rise >= 0, f"the temperature rise must not be negative, got {self.temperature_rise}"),
            (self.lr > 0 and math.isfinite(self.lr), f"learning rate must be a positive number, got {self.lr}"),
            (0 <= self.momentum < 1, f"momentum must lie in [0, 1), got {self.momentum}"),
            (self.weight_decay >= 0, f"weight decay must not be negative, got {self.weight_decay}"),
            (self.crop_padding >= 0, f"crop padding must not be negative, got {self.crop_padding}"),
            (self.preset in CONFIG_PRESETS,
             f"unknown preset '{self.preset}': use one of {', '.join(CONFIG_PRESETS)}"),
            (self.precision in PRECISIONS, f"unknown precision '{self.precision}': use {', '.join(PRECISIONS)}"),
            (self.keep in KEEP_CHOICES, f"keep must be one of {', '.join(KEEP_CHOICES)}, got '{self.keep}'"),
            (self.unlabeled_limit is None or self.unlabeled_limit >= 2, "the unlabelled limit must be at least 2"),
            (self.temperature_start > 0, "the starting temperature must be positive"),
            (self.feature_sample >= 3, f"the feature-space sample needs at least 3 images, got {self.feature_sample}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        if self.keep == "best" and not self.eval_poisoned:
            raise ConfigError("keeping the best epoch needs a triggered folder to measure ASR")
        if self.keep == "ema" and self.ema_decay is None:
            raise ConfigError("keeping the moving average needs one: set an EMA decay")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "CleanseConfig":
        """Settings from a dict, such as a run's own ``config.json``.

        The ``resolved`` key a run folder adds (the ratios, model and device the run actually used) is a
        record, not a setting, and is skipped; any other unknown key is an error.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        settings = {k: v for k, v in data.items() if k != RESOLVED_KEY}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ConfigError(f"unknown setting(s) in the config: {', '.join(unknown)}")
        return cls(**settings)

    @classmethod
    def from_run(cls, run_dir: str | Path, out: str | None = None) -> "CleanseConfig":
        """The config of an earlier run, to repeat it; ``out`` names the new run's folder (default: a new one)."""
        path = Path(run_dir) / "config.json"
        if not path.exists():
            raise ConfigError(f"{run_dir} is not a run folder: it has no config.json")
        return cls.from_file(path, out)

    @classmethod
    def from_file(cls, path: str | Path, out: str | None = None) -> "CleanseConfig":
        """Settings saved as JSON (a run's ``config.json``, or a copy under another name), into folder ``out``."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path} does not exist") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path} does not hold a config")
        return dataclasses.replace(cls.from_dict(data), out=out)


def temperature(config: CleanseConfig, epoch: int) -> float:
    """The distillation temperature for 0-based ``epoch``: rising linearly, reaching start + rise at the end."""
    return training.temperature(config.temperature_start, config.temperature_rise, epoch, config.epochs)


class CleanseJob:
    """One cleansing run. Drive it by iterating ``events()``; control it from any thread.

    ``hooks`` attach to the run's moments (``training.RunHook``: start, end of each epoch, finish);
    ``step_rate`` caps ``Step`` events per second (0: one per optimiser step).
    """

    def __init__(self, config: CleanseConfig, model: LoadedModel | None = None, *,
                 hooks: Sequence[RunHook] = (), step_rate: float = training.STEP_EVENTS_PER_SECOND,
                 resume: bool = False) -> None:
        self.config = config
        self._resume = resume  # continue the unfinished run in ``config.out`` (an error if there is none)
        self.stop_reason: str | None = None
        self.trained: tuple[torch.nn.Module, dict] | None = None  # (student, metadata) once training ended
        self.run_dir: Path | None = None
        self._model = model
        self._hooks = tuple(hooks)
        self._step_rate = step_rate
        self._cancel = threading.Event()
        self._go = threading.Event()
        self._go.set()
        self.batch: BatchChoice | None = None  # chosen once the unlabelled set is read

    # -- control, safe from any thread -------------------------------------------------------------------
    def pause(self) -> None:
        self._go.clear()

    def resume(self) -> None:
        self._go.set()

    def cancel(self, reason: str | None = None) -> None:
        """Stop at the next batch and save; ``reason`` (e.g. 'SIGTERM') is recorded in the summary's note."""
        if reason and self.stop_reason is None:
            self.stop_reason = reason
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
            yield Failed(message=str(exc), kind="input")
        except torch.OutOfMemoryError:
            size = self.batch.size if self.batch is not None else self.config.batch_size
            yield Failed(message=f"the device ran out of memory at batch size {size}; "
                                 "lower the batch size or run on the CPU", kind="memory",
                         detail=traceback.format_exc())
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                yield Failed(message=self._disk_full_message(exc), kind="disk", detail=traceback.format_exc())
            else:
                yield Failed(message=f"could not read or write {exc.filename or 'a file'}: {exc.strerror or exc}",
                             kind="input", detail=traceback.format_exc())
        except Exception as exc:  # a bug: report it, never kill the driver
            yield Failed(message=f"unexpected error: {type(exc).__name__}: {exc}", kind="internal",
                         detail=traceback.format_exc())

    def _disk_full_message(self, exc: OSError) -> str:
        kept = "; the trained model is kept in memory" if self.trained is not None else ""
        again = (f"; free some space and continue from the last completed epoch with "
                 f"`bcu cleanse --resume {self.run_dir}`" if self.run_dir is not None
                 and (self.run_dir / resume_points.RESUME_FILE).exists() else "; free some space")
        return (f"the disk is full: could not write {exc.filename or 'the run folder'}{kept}{again}, "
                "or choose another output folder")

    def save_trained(self, path: str | Path) -> list[Path]:
        """Save the trained student (kept in memory when the run folder's disk was full) to ``path``."""
        if self.trained is None:
            raise ConfigError("there is no trained model to save")
        student, metadata = self.trained
        return save_model(student, path, metadata)

    def _run(self) -> Iterator[Event]:
        cfg = self.config
        cfg.validate()
        if cfg.keep == "proxy" and not any("proxy_asr" in h.provides for h in self._hooks):
            raise ConfigError("keeping the lowest-proxy-ASR epoch needs a trigger scan's proxy ASR every epoch, "
                              "and this run has none: add the scan (bcu cleanse --scan) or keep last, best or ema")
        if self._resume and not cfg.out:
            raise ConfigError("resuming needs the run folder of the unfinished run")
        # before anything slow: a folder holding earlier work is never overwritten
        continuing = resume_points.check_out_folder(cfg.out, cfg.to_dict(), self._resume) if cfg.out else False
        plan = plan_compute(cfg.device, cfg.precision, cfg.channels_last)
        if self._model is None:  # a model handed in was already described by whoever loaded it
            yield Log(message=f"loading {cfg.checkpoint}")
            self._model = load_model(cfg.checkpoint, arch=cfg.arch, trust=cfg.trust_checkpoint,
                                     input_size=cfg.input_size, normalize=cfg.normalize)
            yield Log(message=f"model: {self._model.describe()}")
            for note in self._model.notes:
                yield Log(message=note)
        model = self._model

        yield Log(message=f"reading unlabelled images from {cfg.unlabeled}")
        unlabeled = load_unlabeled(cfg.unlabeled, model.input_size, limit=cfg.unlabeled_limit)
        yield from _skipped_warning(unlabeled)
        if len(unlabeled) < 2:
            raise ConfigError(f"{cfg.unlabeled} holds only {len(unlabeled)} usable image; at least 2 are needed")
        sets, bundled_note = resolve_eval_sets(cfg.eval_clean, cfg.eval_poisoned, cfg.target_class, model,
                                               cfg.use_bundled_eval)
        if bundled_note:
            yield Log(message=bundled_note)
        for s in (sets.clean, sets.triggered):
            if s is not None:
                yield from _skipped_warning(s)
                for note in s.notes:  # how class folders were mapped to classes
                    yield Log(message=note)
        yield Log(message=f"{len(unlabeled)} unlabelled images; curves available: "
                          f"{', '.join(['loss', 'agreement'] + sets.curves)}")

        groups = layer_groups(model.module)
        ratios = resolve_ratios(groups, cfg.preset, cfg.ratios)
        student, report = build_student(model.module, model.fresh(cfg.seed), groups, ratios, cfg.seed)
        yield Log(message=report.describe())

        batch = choose_batch_size(len(unlabeled), cfg.batch_size)
        yield Log(message=batch.reason)
        run = RunFolder(cfg.out or new_run_dir())
        self.run_dir = run.path
        if not continuing:  # an unfinished run keeps the config it started with (same settings, checked)
            run.write_config({**cfg.to_dict(), RESOLVED_KEY: {"ratios": ratios, "model": model.metadata(),
                                                              "device": plan.describe(), "batch_size": batch.size,
                                                              "batch_automatic": batch.automatic,
                                                              "batch_reason": batch.reason}})
        yield Log(message=f"run folder: {run.path}; compute: {plan.describe()}")
        self.batch = batch
        yield from self._train(model, student, unlabeled.images, sets, report, plan, run, continuing)

    def _distiller(self, model: LoadedModel, student: torch.nn.Module, images: torch.Tensor, sets: EvalSets,
                   plan) -> Distiller:
        cfg = self.config
        bs = choose_batch_size(len(images), cfg.batch_size).size
        steps = steps_per_epoch(len(images), bs)
        evaluator = Evaluator(sets, model.normalization, plan, agreement_images=images[:2048])
        state = RunState(epochs=cfg.epochs, steps_per_epoch=steps, batch_size=bs)
        distiller = Distiller(teacher=model.module, student=student, images=images, evaluator=evaluator,
                              plan=plan, state=state, lr=cfg.lr, momentum=cfg.momentum,
                              weight_decay=cfg.weight_decay, crop_padding=cfg.crop_padding, flip=cfg.flip,
                              seed=cfg.seed, temperature_start=cfg.temperature_start,
                              temperature_rise=cfg.temperature_rise, keep=cfg.keep, hooks=self._hooks,
                              hard_labels=cfg.hard_labels, cosine_period=cfg.cosine_period,
                              ema_decay=cfg.ema_decay)
        evaluator.set_reference(distiller.teacher)
        teacher = evaluator.measure(distiller.teacher)
        state.teacher = Scores(acc=teacher["acc"], asr=teacher["asr"], agreement=teacher["agreement"])
        return distiller

    def _train(self, model: LoadedModel, student: torch.nn.Module, images: torch.Tensor, sets: EvalSets,
               report: ReinitReport, plan, run: RunFolder, continuing: bool = False) -> Iterator[Event]:
        cfg = self.config
        d = self._distiller(model, student, images, sets, plan)
        if cfg.feature_space:  # last: it may stamp the trigger a scan hook before it recovers
            from .feature_space import FeatureSpaceHook

            d.add_hook(FeatureSpaceHook(run.path, cfg.feature_sample, cfg.seed))
        if continuing and (run.path / resume_points.RESUME_FILE).exists():
            teacher = d.state.teacher
            resume_points.restore(d, resume_points.read_point(run.path))
            d.state.teacher = d.state.teacher or teacher
            run.keep_metrics(d.state.epoch)
            yield Log(message=f"resuming {run.path} after epoch {d.state.epoch} of {d.state.epochs}")
        else:
            resume_points.save_point(run.path, d)  # a kill during the first epoch resumes from the start
        state = d.state
        assert state.teacher is not None
        yield Started(epochs=state.epochs, steps_per_epoch=state.steps_per_epoch, images=len(images),
                      device=plan.describe(), teacher_acc=state.teacher.acc, teacher_asr=state.teacher.asr,
                      reinit_counts=report.counts, reinit_totals=report.totals, run_dir=str(run.path),
                      batch_size=state.batch_size, batch_reason=self.batch.reason if self.batch else "")
        throttle = StepThrottle(self._step_rate)
        clock = _TrainingClock(state)
        d.start()
        yield from d.hook_events()
        while state.epoch < state.epochs:  # a restored state starts at its own epoch
            d.begin_epoch()
            epoch_start = clock.seconds()
            while state.epoch_step < state.steps_per_epoch:
                if not self._go.is_set():
                    yield from _flush(d, throttle)
                    yield from self._wait_while_paused(state, clock)
                if self._cancel.is_set():
                    break
                loss = d.step()
                if not math.isfinite(loss):
                    yield from self._diverged(d, model, run, report, f"the loss became {loss}")
                    return
                throttle.add(loss)
                clock.tick()
                if throttle.due(end_of_epoch=state.epoch_step == state.steps_per_epoch):
                    yield d.step_event(throttle.take())
            else:
                # a step can blow the weights up while its own loss was still finite: never keep such an epoch
                if not _all_finite(d.student):
                    yield from self._diverged(d, model, run, report, "the weights became non-finite")
                    return
                record = d.end_epoch(seconds=clock.seconds() - epoch_start)
                clock.tick()
                run.append_metrics(dataclasses.asdict(record))
                resume_points.save_point(run.path, d)
                yield record
                yield from d.hook_events()
                continue
            break  # cancelled inside the epoch
        yield from _flush(d, throttle)

        cancelled = self._cancel.is_set()
        cleansed = d.finish()
        self.trained = (d.student, model.metadata())
        files = run.save_model(d.student, model.metadata())
        original_form, save_warning = save_original_form(model, d.student, run.path)
        files += original_form
        files += d.save_ema(run.path / EMA_STEM, model.metadata())
        clock.tick()
        summary = d.summary(cleansed=cleansed, cancelled=cancelled, preset=cfg.preset,
                            reinit=ReinitRecord(ratios=report.ratios, counts=report.counts, totals=report.totals,
                                                seed=report.seed),
                            model_files=[str(p) for p in files], run_dir=str(run.path))
        if self.batch is not None:
            summary = dataclasses.replace(summary, batch_reason=self.batch.reason)
        if cancelled and self.stop_reason:
            summary = dataclasses.replace(summary, note=f"stopped ({self.stop_reason}): {summary.note}")
        run.write_summary(summary.to_dict())
        if not cancelled:  # finished: the folder is no longer an unfinished run
            resume_points.discard(run.path)
        if save_warning:
            yield Log(message=save_warning, level="warning")
        if cancelled:
            yield Log(message=summary.note, level="warning")
        yield Finished(summary=summary)

    def _diverged(self, d: Distiller, model: LoadedModel, run: RunFolder, report: ReinitReport,
                  what: str) -> Iterator[Event]:
        """A non-finite loss: go back to the last resume point (the last finite state), save it, and fail.

        Training on would only spread NaN through every weight, and a NaN model "measures" ASR 100% (the
        argmax of NaN is class 0); what is saved is the student at the end of the last completed epoch.
        """
        cfg = self.config
        step = d.state.step
        resume_points.restore(d, resume_points.read_point(run.path))
        cleansed = d.finish()
        self.trained = (d.student, model.metadata())
        files = run.save_model(d.student, model.metadata())
        where = (f"the student at the end of epoch {d.state.epoch}" if d.state.epoch
                 else "the re-initialised student before training")
        message = (f"training diverged: {what} at step {step}; the saved model is {where} "
                   f"(in {run.path}); lower the learning rate (it was {cfg.lr:g}) and run again")
        summary = d.summary(cleansed=cleansed, cancelled=True, preset=cfg.preset,
                            reinit=ReinitRecord(ratios=report.ratios, counts=report.counts, totals=report.totals,
                                                seed=report.seed),
                            model_files=[str(p) for p in files], run_dir=str(run.path))
        run.write_summary(dataclasses.replace(summary, note=message).to_dict())
        resume_points.discard(run.path)  # resuming would diverge again: the run is over
        yield Failed(message=message, kind="diverged")

    def _wait_while_paused(self, state: RunState, clock: "_TrainingClock") -> Iterator[Event]:
        yield Paused(step=state.step)
        clock.pause()
        self._go.wait()
        clock.resume()
        if not self._cancel.is_set():
            yield Resumed(step=state.step)


class _TrainingClock:
    """Training time in ``state.seconds``, pauses left out (so time and images/s describe the work)."""

    def __init__(self, state: RunState) -> None:
        self._state = state
        self._mark = time.perf_counter()

    def seconds(self) -> float:
        return self._state.seconds + (time.perf_counter() - self._mark)

    def tick(self) -> None:
        now = time.perf_counter()
        self._state.seconds += now - self._mark
        self._mark = now

    def pause(self) -> None:
        self.tick()

    def resume(self) -> None:
        self._mark = time.perf_counter()


def _all_finite(module: torch.nn.Module) -> bool:
    """Every floating-point parameter and buffer finite (one reduction per tensor, once an epoch)."""
    return all(bool(torch.isfinite(t).all()) for t in module.state_dict().values() if t.is_floating_point())


def _flush(d: Distiller, throttle: StepThrottle) -> Iterator[Event]:
    """The steps not yet reported (before a pause, a stop, or the end)."""
    if throttle.pending:
        yield d.step_event(throttle.take())


def _skipped_warning(images) -> Iterator[Event]:
    summary = images.skipped_summary()
    if summary:
        yield Log(message=summary, level="warning")
