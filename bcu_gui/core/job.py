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
import math
import os
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generator, Iterator, Sequence

import torch

from . import atomic
from . import distributed
from . import resume as resume_points
from . import training
from . import unlearning
from . import untrusted
from .batching import BatchChoice, choose_batch_size, steps_per_epoch
from .bundled import resolve_eval_sets
from .devices import PRECISIONS, plan_compute
from .environment import environment_record
from .errors import BcuError, ConfigError
from .eval_schedule import EvalPlan, ScheduledEvaluator, choose_eval_plan, parse_eval_subset
from .evaluation import EvalSets, Evaluator
from .events import CpuShare, Event, Failed, Finished, Log, Paused, Resumed, Started
from .groups import CONFIG_PRESETS, DEFAULT_PRESET, PRESET_TERM_WEIGHT, layer_groups, resolve_ratios
from .memory_budget import MemoryChoice
from .heartbeat import Heartbeat
from .keep import KEEP_CHOICES
from .lossreader import first_non_finite
from .models import LoadedModel, load_model
from .reinit import build_student
from .runfolder.layout import CONFIG_FILE, ENVIRONMENT_FILE
from .runfolder.writer import RunFolder, new_run_dir, save_model
from .saveback import save_original_form
from .streaming import StreamedImages, load_within_budget, training_images
from .threads import ThreadGovernor
from .summary import ReinitRecord, Scores
from .training import Distiller, RunHook, RunState, StepThrottle, distillation_loss  # noqa: F401 (re-export)

EMA_STEM = "ema"  # the moving-average weights, saved beside the cleansed model as ema.pt / .safetensors
RESOLVED_KEY = "resolved"  # what config.json records beside the settings: ratios, model, device as used
PATH_SETTINGS = ("checkpoint", "unlabeled", "eval_clean", "eval_poisoned", "cache_dir")  # stored absolute


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
    preset: str = DEFAULT_PRESET
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
    memory_budget: int | None = None  # bytes for the unlabelled set; None: a quarter of RAM / GPU memory
    cache_dir: str | None = None  # where a set over the budget is cached decoded; None: the user cache dir
    eval_every: int | None = None  # measure every k epochs; None: chosen from the set sizes
    eval_subset: int | str = "auto"  # images per set measured between epochs: a number, 'auto' or 'all'
    feature_space: bool = False  # record 2-D penultimate-feature frames every epoch (feature_space.py)
    feature_sample: int = 200  # clean (and triggered) images per frame
    # adversarial consistency (core/unlearning.py): the student must give the teacher's clean-image answer on
    # images moved by universal perturbations it is itself most sensitive to; weight 0 turns it off
    adversarial: float | None = None  # the term's weight (lambda); None: the preset's (unlearn 1, others 0)
    adv_eps: float = unlearning.DEFAULT_EPS  # L_inf budget of the perturbations, in pixel units (0..1)
    adv_mode: str = "focused"  # focused / targeted: one perturbation per class, towards it; untargeted: one
    adv_step: float = unlearning.DEFAULT_STEP  # ascent step, a fraction of the budget
    adv_restart: int | None = unlearning.DEFAULT_RESTART  # epochs between random restarts; None: never
    adv_until: float = 1.0  # the share of the epochs that carry the term; plain distillation after it

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
            (self.memory_budget is None or (isinstance(self.memory_budget, int) and self.memory_budget > 0),
             f"the memory budget must be a positive number of bytes, got {self.memory_budget!r}"),
            (self.eval_every is None or self.eval_every >= 1, f"--eval-every must be at least 1, got {self.eval_every}"),
            (self.feature_sample >= 3, f"the feature-space sample needs at least 3 images, got {self.feature_sample}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        if self.keep == "best" and not self.eval_poisoned:
            raise ConfigError("keeping the best epoch needs a triggered folder to measure ASR")
        if self.keep == "ema" and self.ema_decay is None:
            raise ConfigError("keeping the moving average needs one: set an EMA decay")
        parse_eval_subset(self.eval_subset)
        try:
            self.adversarial_settings().validate()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def adversarial_weight(self) -> float:
        """The term's weight: the one set, else the preset's (``unlearn`` brings it, the others do not)."""
        return self.adversarial if self.adversarial is not None else PRESET_TERM_WEIGHT.get(self.preset, 0.0)

    def adversarial_settings(self) -> unlearning.AdversarialSettings:
        """The unlearning term's settings as the training step takes them."""
        return unlearning.AdversarialSettings(weight=self.adversarial_weight(), eps=self.adv_eps, mode=self.adv_mode,
                                              step=self.adv_step, restart_every=self.adv_restart,
                                              until=self.adv_until)

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
        path = Path(run_dir) / CONFIG_FILE
        if not os.path.lexists(path):
            raise ConfigError(f"{run_dir} is not a run folder: it has no {CONFIG_FILE}")
        return cls.from_file(path, out)

    @classmethod
    def from_file(cls, path: str | Path, out: str | None = None) -> "CleanseConfig":
        """Settings saved as JSON (a run's ``config.json``, or a copy under another name), into folder ``out``.

        The file is read as a stranger's (core/untrusted.py), and two things in it are never taken on its word:
        ``trust_checkpoint`` is always False (trust is the person's decision now: ``--trust-checkpoint`` or
        the app's question), and every path must be absolute (this version writes them so): a relative one
        would be read against wherever the command runs now, i.e. other images or another checkpoint.
        """
        path = Path(path)
        try:
            data = untrusted.read_json(path.parent, path.name)
        except FileNotFoundError:
            raise ConfigError(f"{path} does not exist") from None
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
        data.pop("trust_checkpoint", None)
        relative = [k for k in PATH_SETTINGS if isinstance(data.get(k), str) and data[k]
                    and not Path(data[k]).expanduser().is_absolute()]
        if relative:
            key = relative[0]
            raise ConfigError(f"{path} names its {key.replace('_', ' ')} by a relative path ({data[key]}), which "
                              "would be read from wherever bcu runs now; write its absolute path into the file "
                              "(this version records absolute paths), or start a new run")
        try:
            cfg = cls.from_dict(data)
        except TypeError as exc:
            raise ConfigError(f"{path} does not hold a config this version reads ({exc})") from None
        return dataclasses.replace(cfg, out=out)

    def with_absolute_paths(self) -> "CleanseConfig":
        """A copy whose file and folder settings are absolute (resolved against the current folder), so the
        run's ``config.json`` names the same files whatever folder it is resumed or repeated from."""
        changes = {k: str(Path(v).expanduser().absolute()) for k in PATH_SETTINGS
                   if isinstance(v := getattr(self, k), str) and v}
        return dataclasses.replace(self, **changes)

    def check_inputs_exist(self) -> None:
        """The checkpoint and image folders exist (before anything is loaded from any of them)."""
        if not Path(self.checkpoint).expanduser().is_file():
            raise ConfigError(f"the checkpoint {self.checkpoint} does not exist (or is not a file)")
        if not Path(self.unlabeled).expanduser().is_dir():
            raise ConfigError(f"the unlabelled image folder {self.unlabeled} does not exist (or is not a folder)")


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
                 resume: bool = False, dist: distributed.Context | None = None) -> None:
        self.config = config
        self._dist = dist  # one of several torchrun processes (core/distributed.py); None: the only one
        self._agreed_stop = False  # with several processes: every rank agreed to stop (see _sync_step)
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
        self.memory: MemoryChoice | None = None  # where the unlabelled set lives, chosen before it is read
        self.eval_plan: EvalPlan | None = None  # when and on how many images epochs are measured
        self._stream: StreamedImages | None = None
        self._heartbeat: Heartbeat | None = None  # running.json while the run folder is written
        self._threads: ThreadGovernor | None = None  # CPU jobs: threads from the CPUs other programs leave free

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
        """Run the job, yielding events; always ends with ``Finished`` or ``Failed``.

        While the run folder is written, ``running.json`` in it says so (core/heartbeat.py); it is removed
        however the stream ends, and a failure leaves ``failed.json`` with its message.
        """
        threads_before = torch.get_num_threads()  # this thread's count, given back however the run ends
        try:
            for event in self._guarded_events():
                if isinstance(event, Failed) and self._heartbeat is not None:
                    self._heartbeat.fail(event.message, event.kind)
                yield event
        finally:
            if self._heartbeat is not None:
                self._heartbeat.stop()
            if torch.get_num_threads() != threads_before:
                torch.set_num_threads(threads_before)

    def _guarded_events(self) -> Iterator[Event]:
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
            if self._dist is not None and distributed.is_peer_failure(exc):
                yield Failed(message=distributed.peer_failure_message(exc), kind="internal",
                             detail=traceback.format_exc())
                return
            yield Failed(message=f"unexpected error: {type(exc).__name__}: {exc}", kind="internal",
                         detail=traceback.format_exc())
        finally:
            if self._stream is not None:  # a failed or abandoned run leaves no prefetching thread behind
                self._stream.close()

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
        cfg = self.config = self.config.with_absolute_paths()
        cfg.validate()
        if cfg.keep == "proxy" and self._writes and not any("proxy_asr" in h.provides for h in self._hooks):
            raise ConfigError("keeping the lowest-proxy-ASR epoch needs a trigger scan's proxy ASR every epoch, "
                              "and this run has none: add the scan (bcu cleanse --scan) or keep last, best or ema")
        if self._resume and not cfg.out:
            raise ConfigError("resuming needs the run folder of the unfinished run")
        # before anything slow: a folder holding earlier work is never overwritten
        continuing = self._decide(lambda: self._check_out(cfg)) if cfg.out else False
        plan = plan_compute(str(self._dist.device) if self._dist else cfg.device, cfg.precision, cfg.channels_last)
        if plan.device.type == "cpu" and self._dist is None:  # torchrun's ranks keep the launcher's split
            self._threads = ThreadGovernor()
            self._threads.start()  # measured over the loading below; decided once the data is in
        if self._model is None:  # nothing is loaded before every input is known to be there
            cfg.check_inputs_exist()
        if self._model is None:  # a model handed in was already described by whoever loaded it
            yield Log(message=f"loading {cfg.checkpoint}")
            self._model = load_model(cfg.checkpoint, arch=cfg.arch, trust=cfg.trust_checkpoint,
                                     input_size=cfg.input_size, normalize=cfg.normalize)
            yield Log(message=f"model: {self._model.describe()}")
            for note in self._model.notes:
                yield Log(message=note)
        model = self._model

        loaded = None
        for item in load_within_budget(cfg.unlabeled, model.input_size, plan.device, cfg.memory_budget,
                                       cfg.unlabeled_limit, cfg.cache_dir):
            if isinstance(item, Log):
                yield item
            else:
                loaded = item
        assert loaded is not None
        unlabeled, self.memory, cache_file = loaded
        yield from _skipped_warning(unlabeled)
        if len(unlabeled) < 2:
            raise ConfigError(f"{cfg.unlabeled} holds only {len(unlabeled)} usable image; at least 2 are needed")
        sets, bundled_note = resolve_eval_sets(cfg.eval_clean, cfg.eval_poisoned, cfg.target_class, model,
                                               cfg.use_bundled_eval) \
            if self._writes else (EvalSets(None, None, None), None)  # rank 0 alone evaluates
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
        yield Log(message=unlearning.describe(cfg.adversarial_settings(), cfg.preset, cfg.adversarial is None))

        batch = choose_batch_size(len(unlabeled), cfg.batch_size)
        yield Log(message=batch.reason)
        if self._dist is not None:
            yield Log(message=self._dist.describe())
            yield Log(message=self._dist.batch_note(batch.size, len(unlabeled)))
        path = self._decide(lambda: str(cfg.out or new_run_dir()))  # one folder, named by rank 0
        run = RunFolder(path) if self._writes else distributed.PeerFolder(path)
        self.run_dir = run.path
        if not continuing:  # an unfinished run keeps the config it started with (same settings, checked)
            run.write_config({**cfg.to_dict(), RESOLVED_KEY: {"ratios": ratios, "model": model.metadata(),
                                                              "device": plan.describe(), "batch_size": batch.size,
                                                              "batch_automatic": batch.automatic,
                                                              "batch_reason": batch.reason,
                                                              "memory": {**self.memory.to_dict(),
                                                                         "cache": cache_file},
                                                              "world_size": self._world_size}})
            if self._writes:
                atomic.write_json(run.path / ENVIRONMENT_FILE, environment_record(plan))  # for the report
        if self._writes:  # rank 0 alone writes the folder, and its heartbeat
            self._heartbeat = Heartbeat(run.path, epochs=cfg.epochs)  # after the config: the folder is a run's
            self._heartbeat.start()
        yield Log(message=f"run folder: {run.path}; compute: {plan.describe()}")
        yield from self._govern_threads()
        self.batch = batch
        images = training_images(unlabeled, self.memory, plan.device, cache_file)
        self._stream = images if isinstance(images, StreamedImages) else None
        yield from self._train(model, student, images, sets, report, plan, run, continuing)

    def _distiller(self, model: LoadedModel, student: torch.nn.Module, images: torch.Tensor | StreamedImages,
                   sets: EvalSets, plan) -> Distiller:
        cfg = self.config
        bs = choose_batch_size(len(images), cfg.batch_size).size
        steps = steps_per_epoch(len(images), bs)
        hooks = self._hooks
        if self._dist is not None:  # the batch is global: each rank takes its share of it from its shard
            bs = self._dist.rank_batch(bs)
            steps = steps_per_epoch(self._dist.shard_size(len(images)), bs)
            hooks = (distributed.DistributedHook(self._dist, cfg.seed), *hooks)
        self.eval_plan = choose_eval_plan(len(sets.clean) if sets.clean else 0,
                                          len(sets.triggered) if sets.triggered else 0, len(images), cfg.epochs,
                                          measures=1 if cfg.ema_decay is None else 2,
                                          every=cfg.eval_every if cfg.eval_every is not None or cfg.keep != "proxy"
                                          else 1, subset=cfg.eval_subset)
        evaluator = ScheduledEvaluator(Evaluator(sets, model.normalization, plan, agreement_images=images[:2048]),
                                       self.eval_plan, model.normalization, plan, cfg.seed)
        state = RunState(epochs=cfg.epochs, steps_per_epoch=steps, batch_size=bs)
        distiller = Distiller(teacher=model.module, student=student, images=images, evaluator=evaluator,
                              plan=plan, state=state, lr=cfg.lr, momentum=cfg.momentum,
                              weight_decay=cfg.weight_decay, crop_padding=cfg.crop_padding, flip=cfg.flip,
                              seed=cfg.seed, temperature_start=cfg.temperature_start,
                              temperature_rise=cfg.temperature_rise, keep=cfg.keep, hooks=hooks,
                              hard_labels=cfg.hard_labels, cosine_period=cfg.cosine_period,
                              ema_decay=cfg.ema_decay, adversarial=cfg.adversarial_settings(),
                              num_classes=model.num_classes)
        evaluator.set_reference(distiller.teacher)
        teacher = evaluator.measure(distiller.teacher)
        state.teacher = Scores(acc=teacher["acc"], asr=teacher["asr"], agreement=teacher["agreement"])
        return distiller

    def _train(self, model: LoadedModel, student: torch.nn.Module, images: torch.Tensor, sets: EvalSets,
               report: ReinitRecord, plan, run: RunFolder, continuing: bool = False) -> Iterator[Event]:
        cfg = self.config
        d = self._distiller(model, student, images, sets, plan)
        if cfg.feature_space and self._writes:  # last: it may stamp the trigger a scan hook before it recovers
            from .feature_space import FeatureSpaceHook

            d.add_hook(FeatureSpaceHook(run.path, cfg.feature_sample, cfg.seed))
        assert self.eval_plan is not None
        yield Log(message=self.eval_plan.reason)
        point = self._decide(lambda: resume_points.read_point(run.path) if continuing and (
            run.path / resume_points.RESUME_FILE).exists() else None)  # read by rank 0, handed to every rank
        if point is not None:
            teacher = d.state.teacher
            resume_points.restore(d, point)
            d.state.teacher = d.state.teacher or teacher
            run.keep_metrics(d.state.epoch)
            yield Log(message=f"resuming {run.path} after epoch {d.state.epoch} of {d.state.epochs}")
        elif self._writes:
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
                    bad = yield from _flush(d, throttle)
                    if bad:
                        yield from self._diverged(d, model, run, report, *bad)
                        return
                    yield from self._wait_while_paused(state, clock)
                if self._agreed_stop if self._dist is not None else self._cancel.is_set():
                    break
                loss = d.step()  # no host read here: the losses are read every few steps, below
                if self._dist is not None:  # several processes: the step's all_reduce syncs anyway, so every
                    mean = self._sync_step(float(loss))  # rank agrees on the mean loss (NaN anywhere: NaN on
                    if not math.isfinite(mean):  # all, so all stop together) and on stopping
                        yield from self._diverged(d, model, run, report, f"the loss became {mean}")
                        return
                clock.tick()
                end = state.epoch_step == state.steps_per_epoch
                if throttle.reading_due(end):
                    bad = _collect(d, throttle, wait=end)  # at the epoch's end: every loss, checked
                    if bad:
                        yield from _report(d, throttle, bad)
                        yield from self._diverged(d, model, run, report, *bad)
                        return
                    if throttle.due(end_of_epoch=end):
                        yield d.step_event(throttle.take())
            else:
                # a step can blow the weights up while its own loss was still finite: never keep such an epoch
                if not _all_finite(d.student):
                    yield from self._diverged(d, model, run, report, "the weights became non-finite")
                    return
                record = d.end_epoch(seconds=clock.seconds() - epoch_start)
                clock.tick()
                run.append_metrics(dataclasses.asdict(record))
                if self._writes:
                    resume_points.save_point(run.path, d)
                if self._heartbeat is not None:
                    self._heartbeat.epoch_done(record.epoch, record.seconds)
                yield record
                yield from self._govern_threads()
                yield from d.hook_events()
                continue
            break  # cancelled inside the epoch
        bad = yield from _flush(d, throttle)
        if bad:
            yield from self._diverged(d, model, run, report, *bad)
            return

        cancelled = self._agreed_stop if self._dist is not None else self._cancel.is_set()
        cleansed = d.finish()
        self.trained = (d.student, model.metadata())
        files, save_warning = self._save_models(d, model, run) if self._writes else ([], None)
        clock.tick()
        summary = d.summary(cleansed=cleansed, cancelled=cancelled, preset=cfg.preset,
                            reinit=report,
                            model_files=[str(p) for p in files], run_dir=str(run.path))
        if self.batch is not None:
            summary = dataclasses.replace(summary, batch_reason=self.batch.reason)
        if self.memory is not None and self.eval_plan is not None:
            summary = dataclasses.replace(summary, data_path=self.memory.path, data_reason=self.memory.reason,
                                          eval_reason=self.eval_plan.reason)
        if self._dist is not None:  # every rank's images: the global batch and throughput
            summary = dataclasses.replace(summary, batch_size=summary.batch_size * self._world_size,
                                          images_per_second=round(summary.images_per_second * self._world_size, 1))
        if cancelled and self.stop_reason:
            summary = dataclasses.replace(summary, note=f"stopped ({self.stop_reason}): {summary.note}")
        run.write_summary(summary.to_dict())
        if not cancelled and self._writes:  # finished: the folder is no longer an unfinished run
            resume_points.discard(run.path)
        if save_warning:
            yield Log(message=save_warning, level="warning")
        if cancelled:
            yield Log(message=summary.note, level="warning")
        if self._dist is not None:  # no rank ends before rank 0 has saved (torchrun stops the rest when one ends)
            self._dist.barrier()
        yield Finished(summary=summary)

    def _diverged(self, d: Distiller, model: LoadedModel, run: RunFolder, report: ReinitRecord,
                  what: str, step: int | None = None) -> Iterator[Event]:
        """A non-finite loss: go back to the last resume point (the last finite state), save it, and fail.

        Training on would only spread NaN through every weight, and a NaN model "measures" ASR 100% (the
        argmax of NaN is class 0); what is saved is the student at the end of the last completed epoch.
        """
        cfg = self.config
        step = d.state.step if step is None else step
        if not self._writes:  # rank 0 restores, saves and says what happened
            yield Failed(message=f"training diverged ({what}) at step {step}; process 0 saves the run",
                         kind="diverged")
            return
        resume_points.restore(d, resume_points.read_point(run.path))
        cleansed = d.finish()
        self.trained = (d.student, model.metadata())
        files = run.save_model(d.student, model.metadata())
        where = (f"the student at the end of epoch {d.state.epoch}" if d.state.epoch
                 else "the re-initialised student before training")
        message = (f"training diverged: {what} at step {step}; the saved model is {where} "
                   f"(in {run.path}); lower the learning rate (it was {cfg.lr:g}) and run again")
        summary = d.summary(cleansed=cleansed, cancelled=True, preset=cfg.preset,
                            reinit=report,
                            model_files=[str(p) for p in files], run_dir=str(run.path))
        run.write_summary(dataclasses.replace(summary, note=message).to_dict())
        resume_points.discard(run.path)  # resuming would diverge again: the run is over
        yield Failed(message=message, kind="diverged")

    def _govern_threads(self) -> Iterator[Event]:
        """CPU jobs: re-measure other programs' CPU use, set the thread count, say so when contention changes."""
        if self._threads is None:
            return
        choice, changed = self._threads.decide()
        if changed:
            yield CpuShare(message=self._threads.describe(), level="warning" if choice.contended else "info",
                           threads=choice.threads, cpus=self._threads.cpus, others=choice.others,
                           contended=choice.contended)

    # -- several processes (core/distributed.py); each is the plain path when there is one ---------------
    @property
    def _writes(self) -> bool:
        """This process writes the run folder, evaluates and reports: the only one, or rank 0 of several."""
        return self._dist is None or self._dist.is_main

    @property
    def _world_size(self) -> int:
        return self._dist.world_size if self._dist is not None else 1

    def _decide(self, fn):
        """``fn()`` here, or on rank 0 with its result handed to every rank."""
        return fn() if self._dist is None else self._dist.decide(fn)

    def _check_out(self, cfg: CleanseConfig) -> bool:
        """May the run use ``cfg.out``? True: it continues the unfinished run there, with as many processes."""
        continuing = resume_points.check_out_folder(
            cfg.out, cfg.to_dict(), self._resume,
            normalise=lambda saved: CleanseConfig.from_dict(saved).to_dict())
        if continuing:
            distributed.check_world_size(resume_points.folder_state(cfg.out).config, self._world_size)
        return continuing

    def _sync_step(self, loss: float) -> float:
        """With several processes: the mean loss over ranks, and a stop on any rank becomes a stop on all."""
        if self._dist is None:
            return loss
        loss, stop = self._dist.agree_step(loss, self._cancel.is_set())
        if stop:
            self._agreed_stop = True
            self._cancel.set()
        return loss

    def _save_models(self, d: Distiller, model: LoadedModel, run: RunFolder) -> tuple[list[Path], str | None]:
        """The cleansed model (plain and in the checkpoint's own form) and the EMA weights, into the run folder."""
        files = run.save_model(d.student, model.metadata())
        original_form, save_warning = save_original_form(model, d.student, run.path)
        files += original_form
        files += d.save_ema(run.path / EMA_STEM, model.metadata())
        for hook in self._hooks:  # e.g. a scan's recovered trigger, for the run's record and its report
            hook.write_files(run.path)
        return files, save_warning

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


def _collect(d: Distiller, throttle: StepThrottle, wait: bool) -> tuple[str, int] | None:
    """Hand the losses that reached the host to the throttle; (what, step) of the first non-finite one.

    Only the finite losses before it are handed on: a diverged step's loss never reaches the plot.
    """
    losses = d.losses.collect(wait=wait)
    bad = first_non_finite(losses)
    for loss in losses[:bad]:
        throttle.add(loss)
    if bad is None:
        return None
    return f"the loss became {losses[bad]}", d.losses.delivered_step - len(losses) + bad + 1


def _report(d: Distiller, throttle: StepThrottle, bad: tuple[str, int] | None = None) -> Iterator[Event]:
    """A ``Step`` event for the losses the throttle holds (those before the diverged step ``bad``, if any)."""
    if throttle.pending:
        yield d.step_event(throttle.take(), step=bad[1] - 1 if bad else None)


def _flush(d: Distiller, throttle: StepThrottle) -> Generator[Event, None, tuple[str, int] | None]:
    """Every loss not yet reported (before a pause, a stop, or the end); returns ``_collect``'s verdict."""
    bad = _collect(d, throttle, wait=True)
    yield from _report(d, throttle, bad)
    return bad


def _skipped_warning(images) -> Iterator[Event]:
    summary = images.skipped_summary()
    if summary:
        yield Log(message=summary, level="warning")
