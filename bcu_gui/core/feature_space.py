"""Feature space, live (the paper's Figure 3): where a fixed sample of images sits in the penultimate layer.

Every epoch, the penultimate-layer features (the input of the model's final classifier layer) of a fixed
sample of clean images and of triggered images are projected to 2-D; the teacher's frame is epoch 0. A
backdoored teacher maps triggered images onto its target class's cluster; as cleansing works, the student
maps them back among their own classes, and the user watches that cluster dissolve.

How the frames stay comparable across epochs:

- The **sample** is drawn once (seeded): up to ``sample_size`` clean images (the labelled clean set, else the
  unlabelled images, coloured by label or else by the teacher's prediction) and up to ``sample_size``
  triggered images (the triggered folder, else the scan's recovered trigger stamped on clean sample images
  the teacher does not already send to the trigger's class).
- The **projection** is fitted once, on the teacher's features: standardised with the teacher's mean and
  spread, then PCA (``torch.linalg.svd``) to two axes, signs fixed so a rerun draws the same picture.
- A **student** whose penultimate layer was re-initialised (BCU's ``strong`` preset re-initialises every
  weight) has its own, unrelated feature basis, so the teacher's projection alone would draw noise. Each
  epoch the student's features are therefore first mapped into the teacher's by a ridge least-squares map
  fitted on the CLEAN sample only (student features -> the teacher's features of the same images, through
  the student's top principal directions); the triggered images are not in that fit, so where they land is
  the student's own doing. The teacher's frame uses no map.

The hook also measures, in each model's own (unprojected) feature space, the share of triggered images whose
nearest clean-class centroid is the attack's target: high for a backdoored model, low once it is removed.
Frames are recorded in the run folder as ``features.npz`` (rewritten atomically every epoch), so a reopened
run can be scrubbed; ``load_frames`` reads it back.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch import nn

from . import atomic
from . import untrusted
from .data import to_model_input
from .devices import ComputePlan
from .errors import ConfigError
from .events import FeatureFrame, Log
from .groups import layer_groups
from .runfolder.layout import FEATURES_FILE
from .training import RunHook

if TYPE_CHECKING:
    from .scan.trigger import Trigger
    from .training import Distiller

DEFAULT_SAMPLE = 200
ALIGN_RANK = 16  # student principal directions the alignment map reads (kept small: no fitting the noise)
RIDGE = 1e-2  # relative ridge penalty of the alignment map
FORMAT_VERSION = 1


# ------------------------------------------------------------------------------------- capturing features


def head_layer_name(model: nn.Module) -> str:
    """The name of the model's final classifier layer: the module owning the last weight of its last group.

    The last layer group is the head (groups.py); its last weight belongs to the layer that turns the
    penultimate features into logits (``fc``, ``linear``, VGG's ``classifier.6``, a wrapper's
    ``backbone.fc``, a scripted model's ``script.fc``).
    """
    groups = layer_groups(model)
    last = groups[-1].params[-1]
    return last.rpartition(".")[0]


def _find(model: nn.Module, name: str) -> nn.Module:
    """``name`` in ``model``, also through a wrapper that prefixes names (DDP's ``module.``)."""
    with contextlib.suppress(AttributeError):
        return model.get_submodule(name)
    for full, module in model.named_modules():
        if full.endswith("." + name):
            return module
    raise ConfigError(f"the model has no layer named '{name}' to read features from")


def _pooled(x: torch.Tensor) -> torch.Tensor:
    """``[N, D]`` float32 rows; a convolutional head's ``[N, C, H, W]`` input is averaged over space first."""
    x = x.detach()
    if x.dim() > 2:
        x = x.mean(dim=tuple(range(2, x.dim())))
    return x.float()


def hookable(module: nn.Module) -> bool:
    """Whether a Python hook on ``module`` runs (not inside TorchScript, whose compiled forward skips them)."""
    return not isinstance(module, torch.jit.ScriptModule)


@torch.inference_mode()
def extract_features(model: nn.Module, images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                     plan: ComputePlan, layer: str, batch_size: int = 512) -> torch.Tensor:
    """Penultimate features (float32, CPU, ``[N, D]``) of uint8 ``images``: the input of layer ``layer``.

    A forward pre-hook on that layer captures its input (averaged over space when it is a feature map, as
    SqueezeNet's final convolution gets). A TorchScript model runs its compiled forward,
    which calls no Python hooks: then the logits stand in (a coarser picture, still comparable per epoch).
    The model is measured in eval mode and left in the mode it was in.
    """
    head = _find(model, layer)
    captured: list[torch.Tensor] = []
    handle = None
    if hookable(head):
        handle = head.register_forward_pre_hook(lambda _m, args: captured.append(_pooled(args[0])))
    was_training = model.training
    model.eval()
    out: list[torch.Tensor] = []
    try:
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size].to(plan.device, non_blocking=True)
            x = to_model_input(batch, mean, std)
            if plan.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            captured.clear()
            with plan.autocast():
                logits = model(x)
            out.append((captured[-1] if captured else logits.float().flatten(1)).cpu())
    finally:
        if handle is not None:
            handle.remove()
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 0)


# ----------------------------------------------------------------------------------------- the projection


@dataclass(frozen=True, eq=False)
class Projection:
    """Standardise with the teacher's statistics, then its top two principal axes: fitted once."""

    mean: torch.Tensor  # [D]
    scale: torch.Tensor  # [D]
    axes: torch.Tensor  # [D, 2]

    @classmethod
    def fit(cls, features: torch.Tensor) -> "Projection":
        if features.dim() != 2 or len(features) < 2:
            raise ValueError(f"a projection needs at least 2 feature rows, got shape {tuple(features.shape)}")
        mean = features.mean(0)
        scale = features.std(0).clamp_min(1e-6)
        z = (features - mean) / scale
        _, _, vh = torch.linalg.svd(z, full_matrices=False)
        axes = vh[:2].T.clone()
        if axes.shape[1] < 2:  # one feature: a flat second axis
            axes = torch.cat([axes, torch.zeros(len(axes), 2 - axes.shape[1])], 1)
        # the SVD's signs are arbitrary: make each axis's largest weight positive, so reruns draw the same
        signs = torch.sign(axes.gather(0, axes.abs().argmax(0, keepdim=True))).clamp_min(0) * 2 - 1
        return cls(mean, scale, axes * signs)

    def standardise(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.scale

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """``[N, D]`` teacher-space features -> ``[N, 2]``."""
        return self.standardise(features) @ self.axes


def alignment_map(student: torch.Tensor, teacher: torch.Tensor, rank: int = ALIGN_RANK,
                  ridge: float = RIDGE) -> Callable[[torch.Tensor], torch.Tensor]:
    """A linear map from the student's feature space into the teacher's, fitted on paired rows.

    Ridge least squares from the student's top ``rank`` principal coordinates (of the rows given, which are
    the CLEAN sample) to the teacher's standardised features of the same images. Reading only a few
    principal directions keeps it from fitting noise: a student whose features say little cannot be mapped
    into neat clusters. Returns a function of ``[N, D]`` student features giving ``[N, D]`` teacher-space ones.
    """
    mu = student.mean(0)
    sd = student.std(0).clamp_min(1e-6)
    zs = (student - mu) / sd
    _, _, vh = torch.linalg.svd(zs, full_matrices=False)
    basis = vh[:min(rank, len(vh))].T  # [D_s, k]
    p = zs @ basis  # [N, k]
    t_mu = teacher.mean(0)
    target = teacher - t_mu
    gram = p.T @ p
    penalty = ridge * gram.diagonal().mean().clamp_min(1e-12) * torch.eye(len(gram))
    w = torch.linalg.solve(gram + penalty, p.T @ target)  # [k, D_t]

    def apply(features: torch.Tensor) -> torch.Tensor:
        return ((features - mu) / sd) @ basis @ w + t_mu

    return apply


def share_at_target(clean: torch.Tensor, classes: torch.Tensor, triggered: torch.Tensor,
                    target: int | None) -> float | None:
    """Share of triggered rows whose nearest clean-class centroid (in this feature space) is ``target``."""
    if target is None or len(triggered) == 0:
        return None
    present = torch.unique(classes)
    if not bool((present == target).any()):
        return None
    centroids = torch.stack([clean[classes == c].mean(0) for c in present])
    nearest = present[torch.cdist(triggered, centroids).argmin(1)]
    return float((nearest == target).float().mean())


# -------------------------------------------------------------------------------------------- the sample


@dataclass(eq=False)
class FeatureSample:
    """The fixed images every frame shows, and how their colours and the triggered set were obtained."""

    clean: torch.Tensor  # uint8 [N, C, H, W]
    classes: torch.Tensor  # int64 [N]: labels, or the teacher's predictions
    class_source: str  # "labels" | "teacher"
    triggered: torch.Tensor  # uint8 [M, C, H, W] (M may be 0)
    triggered_source: str  # "folder" | "recovered trigger" | "" (none)
    target: int | None
    class_names: list[str] | None = None


def _pick(n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """``min(n, k)`` row indices drawn without replacement, in ascending order (stable colours per run)."""
    if n <= k:
        return torch.arange(n)
    return torch.randperm(n, generator=generator)[:k].sort().values


# --------------------------------------------------------------------------------------------- the frames


@dataclass
class FeatureRecord:
    """All frames of one run, as recorded in ``features.npz`` (epoch 0: the teacher)."""

    epochs: list[int] = field(default_factory=list)
    clean: list[np.ndarray] = field(default_factory=list)  # [N, 2] float32 each
    triggered: list[np.ndarray] = field(default_factory=list)  # [M, 2] float32 each
    at_target: list[float | None] = field(default_factory=list)
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    meta: dict[str, Any] = field(default_factory=dict)  # class_source, triggered_source, target, epochs_total

    def frame(self, i: int) -> FeatureFrame:
        return FeatureFrame(epoch=self.epochs[i], epochs=int(self.meta.get("epochs_total", 0)),
                            clean=self.clean[i], classes=self.classes, triggered=self.triggered[i],
                            class_source=str(self.meta.get("class_source", "")),
                            triggered_source=str(self.meta.get("triggered_source", "")),
                            target=self.meta.get("target"), at_target=self.at_target[i],
                            class_names=tuple(self.meta.get("class_names") or ()))

    def frames(self) -> list[FeatureFrame]:
        return [self.frame(i) for i in range(len(self.epochs))]

    def add(self, frame: FeatureFrame) -> None:
        keep = [i for i, e in enumerate(self.epochs) if e < frame.epoch]  # a resumed run replaces later ones
        self.epochs = [self.epochs[i] for i in keep] + [frame.epoch]
        self.clean = [self.clean[i] for i in keep] + [frame.clean]
        self.triggered = [self.triggered[i] for i in keep] + [frame.triggered]
        self.at_target = [self.at_target[i] for i in keep] + [frame.at_target]

    def to_bytes(self) -> bytes:
        n, m = len(self.classes), (len(self.triggered[0]) if self.triggered else 0)
        buf = io.BytesIO()
        np.savez_compressed(
            buf, version=np.array(FORMAT_VERSION), epochs=np.asarray(self.epochs, np.int32),
            clean=np.stack(self.clean).astype(np.float32) if self.clean else np.zeros((0, n, 2), np.float32),
            triggered=np.stack(self.triggered).astype(np.float32) if self.triggered
            else np.zeros((0, m, 2), np.float32),
            at_target=np.asarray([np.nan if v is None else v for v in self.at_target], np.float32),
            classes=self.classes.astype(np.int64), meta=np.array(json.dumps(self.meta)))
        return buf.getvalue()

    def write(self, run_dir: str | Path) -> Path:
        path = Path(run_dir) / FEATURES_FILE
        atomic.write_bytes(path, self.to_bytes())
        return path


def load_frames(run_dir: str | Path) -> FeatureRecord | None:
    """The recorded feature frames of a run folder; None when it has none (the run did not record them).

    A damaged file is an error with the file's name in it, not a traceback from NumPy.
    """
    path = Path(run_dir) / FEATURES_FILE
    if not os.path.lexists(path):
        return None
    try:  # read as a stranger's file: no link, no pickle, decompressed sizes capped (core/untrusted.py)
        data = untrusted.load_npz(run_dir, FEATURES_FILE)
        epochs = [int(e) for e in data["epochs"]]
        clean, triggered = data["clean"], data["triggered"]
        at = [None if np.isnan(v) else float(v) for v in data["at_target"]]
        classes = np.asarray(data["classes"], np.int64)
        meta = untrusted.parse_json(str(data["meta"]), path / "meta", expect=None)
    except untrusted.UntrustedFileError as exc:
        raise ConfigError(f"cannot read the feature frames in {path}: {exc.reason}") from None
    except (OSError, ValueError, KeyError, EOFError, TypeError, IndexError, OverflowError,
            zipfile.BadZipFile) as exc:
        raise ConfigError(f"cannot read the feature frames in {path}: {exc}") from None
    if not (len(clean) == len(triggered) == len(epochs) == len(at)) or clean.shape[1:] != (len(classes), 2) \
            or triggered.ndim != 3 or triggered.shape[2] != 2:
        raise ConfigError(f"the feature frames in {path} do not fit together (damaged file?)")
    return FeatureRecord(epochs=epochs, clean=list(clean), triggered=list(triggered), at_target=at,
                         classes=classes, meta=meta if isinstance(meta, dict) else {})


# ----------------------------------------------------------------------------------------------- the hook


class FeatureSpaceHook(RunHook):
    """Records the 2-D feature frames of a run (module doc); the job yields them as ``FeatureFrame`` events.

    ``run_dir`` is where ``features.npz`` goes (None: not recorded). ``trigger`` gives a recovered trigger
    when the run has no triggered folder; by default the hook asks the run's other hooks for one (the
    ``ScanHook``'s ``trigger``), so it must come after them (the job appends it last).
    """

    def __init__(self, run_dir: str | Path | None = None, sample_size: int = DEFAULT_SAMPLE, seed: int = 0,
                 trigger: Callable[[], "Trigger | None"] | None = None) -> None:
        if sample_size < 3:
            raise ConfigError(f"the feature-space sample needs at least 3 images, got {sample_size}")
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.sample_size, self.seed = sample_size, seed
        self._trigger = trigger
        self.sample: FeatureSample | None = None
        self.projection: Projection | None = None
        self.layer = ""
        self.record = FeatureRecord()
        self.seconds: list[float] = []  # time spent per epoch (the teacher's frame excluded)
        self.teacher_seconds = 0.0  # the sample, the teacher's features, the projection: once, at the start
        self._teacher_clean: torch.Tensor | None = None
        self._pending: list[FeatureFrame | Log] = []
        self._epochs_total = 0

    # -- what the job yields ------------------------------------------------------------------------------
    def take_events(self) -> list[FeatureFrame | Log]:
        events, self._pending = self._pending, []
        return events

    # -- the sample -----------------------------------------------------------------------------------------
    def _find_trigger(self, run: "Distiller") -> "Trigger | None":
        if self._trigger is not None:
            return self._trigger()
        for hook in run.hooks:
            trigger = getattr(hook, "trigger", None)
            if hook is not self and trigger is not None:
                return trigger
        return None

    def _build_sample(self, run: "Distiller") -> FeatureSample:
        gen = torch.Generator().manual_seed(self.seed)
        sets = run.evaluator.sets
        names = None
        if sets.clean is not None and len(sets.clean) >= 3:
            rows = _pick(len(sets.clean), self.sample_size, gen)
            clean = sets.clean.images[rows]
            labels = sets.clean.labels[rows] if sets.clean.labels is not None else None
            names = sets.clean.class_names
        else:
            rows = _pick(len(run.data), self.sample_size, gen)
            clean, labels = run.data[rows].cpu(), None
        teacher_preds = self._predict(run.teacher, clean, run)
        classes, class_source = (labels, "labels") if labels is not None else (teacher_preds, "teacher")
        target = sets.target
        if sets.triggered is not None and len(sets.triggered):
            triggered = sets.triggered.images[_pick(len(sets.triggered), self.sample_size, gen)]
            source = "folder"
        else:
            trigger = self._find_trigger(run)
            if trigger is not None:
                from .scan.trigger import stamp

                off_target = clean[teacher_preds != trigger.target]
                triggered, source, target = stamp(off_target, trigger), "recovered trigger", trigger.target
            else:
                triggered, source = clean[:0], ""
        return FeatureSample(clean=clean, classes=classes.long(), class_source=class_source,
                             triggered=triggered, triggered_source=source, target=target, class_names=names)

    def _predict(self, model: nn.Module, images: torch.Tensor, run: "Distiller") -> torch.Tensor:
        from .metrics import predict

        return predict(model, images, run.evaluator.mean, run.evaluator.std, run.plan).cpu()

    def _features(self, model: nn.Module, run: "Distiller") -> tuple[torch.Tensor, torch.Tensor]:
        assert self.sample is not None
        both = torch.cat([self.sample.clean, self.sample.triggered])
        feats = extract_features(model, both, run.evaluator.mean, run.evaluator.std, run.plan, self.layer)
        n = len(self.sample.clean)
        return feats[:n], feats[n:]

    def _frame(self, epoch: int, clean2: torch.Tensor, trig2: torch.Tensor, at: float | None) -> FeatureFrame:
        assert self.sample is not None
        return FeatureFrame(epoch=epoch, epochs=self._epochs_total, clean=clean2.numpy().astype(np.float32),
                            classes=self.sample.classes.numpy(), triggered=trig2.numpy().astype(np.float32),
                            class_source=self.sample.class_source, triggered_source=self.sample.triggered_source,
                            target=self.sample.target, at_target=at,
                            class_names=tuple(self.sample.class_names or ()))

    def _emit(self, frame: FeatureFrame) -> None:
        self.record.add(frame)
        if self.run_dir is not None:
            self.record.write(self.run_dir)
        self._pending.append(frame)

    def _project(self, clean: torch.Tensor, triggered: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map a model's features into the teacher's (fitted on the clean rows), then the fixed projection.

        The teacher's own frame goes through the same map (onto itself), so every frame is drawn alike.
        """
        assert self.projection is not None and self._teacher_clean is not None
        to_teacher = alignment_map(clean, self._teacher_clean)
        axes = self.projection.axes
        return to_teacher(clean) @ axes, to_teacher(triggered) @ axes

    def describe(self) -> str:
        """One line for the log: what each frame shows and where the frames go."""
        assert self.sample is not None
        s = self.sample
        colours = "labels" if s.class_source == "labels" else "the teacher's predictions"
        trig = {"folder": f"{len(s.triggered)} triggered images from the triggered folder",
                "recovered trigger": f"{len(s.triggered)} clean images stamped with the scan's recovered trigger",
                }.get(s.triggered_source, "no triggered images")
        where = f"; frames in {self.run_dir / FEATURES_FILE}" if self.run_dir is not None else ""
        return (f"feature space: {len(s.clean)} clean images (coloured by {colours}) and {trig}, features from "
                f"{self.record.meta.get('features_from', self.layer)}{where}")

    # -- the run's moments ----------------------------------------------------------------------------------
    def on_start(self, run: "Distiller") -> None:
        start = time.perf_counter()
        self._epochs_total = run.state.epochs
        self.layer = head_layer_name(run.teacher)
        self.sample = self._build_sample(run)
        t_clean, t_trig = self._features(run.teacher, run)
        self.projection = Projection.fit(torch.cat([t_clean, t_trig]))
        self._teacher_clean = self.projection.standardise(t_clean)
        s = self.sample
        self.record = FeatureRecord(classes=s.classes.numpy(), meta={
            "class_source": s.class_source, "triggered_source": s.triggered_source, "target": s.target,
            "epochs_total": run.state.epochs, "layer": self.layer, "features": int(t_clean.shape[1]),
            "features_from": f"the input of '{self.layer}'" if hookable(_find(run.teacher, self.layer))
            else "the logits (a TorchScript model's layer inputs cannot be read)",
            "class_names": list(s.class_names or [])})
        self.record.add(self._frame(0, *self._project(t_clean, t_trig),
                                    share_at_target(t_clean, s.classes, t_trig, s.target)))
        if run.state.epoch > 0 and self.run_dir is not None:  # resumed: keep the frames of completed epochs
            with contextlib.suppress(ConfigError):
                old = load_frames(self.run_dir)
                if old is not None and len(old.classes) == len(s.classes):
                    for frame in old.frames():
                        if 0 < frame.epoch <= run.state.epoch:
                            self.record.add(frame)
        if self.run_dir is not None:
            self.record.write(self.run_dir)
        self._pending.append(Log(message=self.describe()))
        self._pending.extend(self.record.frames())
        self.teacher_seconds = time.perf_counter() - start

    def on_epoch_end(self, run: "Distiller") -> None:
        assert self.projection is not None and self.sample is not None and self._teacher_clean is not None
        start = time.perf_counter()
        s_clean, s_trig = self._features(run.student, run)
        at = share_at_target(s_clean, self.sample.classes, s_trig, self.sample.target)
        clean2, trig2 = self._project(s_clean, s_trig)
        self._emit(self._frame(run.state.epoch + 1, clean2, trig2, at))
        self.seconds.append(time.perf_counter() - start)
        return None
