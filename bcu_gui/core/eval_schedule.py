"""When and on how many images a run measures ACC / ASR between epochs, so evaluation never dominates.

The BCU authors' code measures ~19,000 clean and triggered images after every epoch of distilling ~2,500:
more forward passes than the training itself. The per-epoch curves only need to show the trend, so when the
sets are large we measure a fixed random subset (the same images every epoch, drawn from the run's seed, so
points are comparable) and/or every k-th epoch. The last epoch is always measured on the full sets, and so
is every model the run saves (``training.Distiller.finish``): numbers in the summary are never estimates.

Automatic choice: a training image costs about ``TRAIN_COST`` forward passes (teacher forward, student
forward and backward), so evaluation stays within ``EVAL_SHARE`` of an epoch when it measures at most
``EVAL_SHARE * TRAIN_COST * unlabelled`` images (divided among the models measured: the student and its
moving average). Up to ``MIN_EVAL_IMAGES`` images are always affordable (the demo's sets are measured in
full). Over that, each set is sampled in proportion, never below ``MIN_SUBSET`` images (an ASR estimated on
250 images has a standard error under 3.2 points).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .data import ImageSet
from .devices import ComputePlan
from .errors import ConfigError
from .evaluation import EvalSets, Evaluator
from .normalization import Normalization

EVAL_SHARE = 0.2  # evaluation may cost about this share of an epoch's training
TRAIN_COST = 4.0  # forward-pass equivalents per distilled image
MIN_EVAL_IMAGES = 2000  # per model measured: always affordable
MIN_SUBSET = 250  # per set, when sampling


@dataclass(frozen=True)
class EvalPlan:
    """Measure every ``every`` epochs (and always at the last), on ``clean`` / ``triggered`` images (None: all)."""

    every: int = 1
    clean: int | None = None
    triggered: int | None = None
    reason: str = "the full evaluation sets after every epoch"

    @property
    def subset(self) -> bool:
        return self.clean is not None or self.triggered is not None

    def due(self, epoch: int, epochs: int) -> bool:
        """Whether 1-based ``epoch`` is measured at all."""
        return epoch >= epochs or epoch % self.every == 0

    def full_at(self, epoch: int, epochs: int) -> bool:
        """Whether 1-based ``epoch`` is measured on the full sets (the last always is)."""
        return epoch >= epochs or not self.subset

    def to_dict(self) -> dict:
        return {"every": self.every, "clean": self.clean, "triggered": self.triggered, "reason": self.reason}


def parse_eval_subset(text: str | int | None) -> int | str:
    """``--eval-subset``: a whole number of images per set, 'auto' or 'all' (ConfigError otherwise)."""
    if text is None:
        return "auto"
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        word = str(text).strip().lower()
        if word in ("auto", "all"):
            return word
        try:
            value = int(word)
        except ValueError:
            raise ConfigError(f"--eval-subset takes a number of images, 'auto' or 'all', got '{text}'") from None
    if value < 1:
        raise ConfigError(f"the evaluation subset must hold at least 1 image, got {value}")
    return value


def choose_eval_plan(clean: int, triggered: int, unlabeled: int, epochs: int, *, measures: int = 1,
                     every: int | None = None, subset: int | str = "auto") -> EvalPlan:
    """The plan for sets of ``clean`` and ``triggered`` images (0: none) and ``unlabeled`` training images.

    ``every`` None and ``subset`` 'auto' choose from the sizes; a number or 'all' is the user's and wins.
    """
    subset = parse_eval_subset(subset)
    if every is not None and every < 1:
        raise ConfigError(f"--eval-every must be at least 1, got {every}")
    total = clean + triggered
    allowed = max(MIN_EVAL_IMAGES, int(EVAL_SHARE * TRAIN_COST * unlabeled / max(1, measures)))
    if total == 0:
        return EvalPlan(every or 1, None, None, "no evaluation sets: agreement with the teacher only")
    sizes: tuple[int | None, int | None]
    if subset == "all":
        sizes, why = (None, None), "the full sets, as asked"
    elif isinstance(subset, int):
        sizes = (_cap(clean, subset), _cap(triggered, subset))
        why = f"a fixed random subset of at most {subset:,} images per set, as asked"
    elif total <= allowed:
        sizes, why = (None, None), f"the full sets ({total:,} images fit the per-epoch evaluation budget)"
    else:
        share = allowed / total
        sizes = (_sample(clean, share), _sample(triggered, share))
        why = (f"a fixed random subset ({_n(sizes[0], clean):,} of {clean:,} clean, {_n(sizes[1], triggered):,} of "
               f"{triggered:,} triggered images), keeping evaluation near {EVAL_SHARE:.0%} of an epoch's training")
    measured = _n(sizes[0], clean) + _n(sizes[1], triggered)
    if every is None:
        every = max(1, math.ceil(measured / allowed))
        when = "after every epoch" if every == 1 else f"every {every} epochs (automatic)"
    else:
        when = "after every epoch" if every == 1 else f"every {every} epochs, as asked"
    end = "; the last epoch and the saved model on the full sets" if every > 1 or sizes != (None, None) else ""
    return EvalPlan(every, sizes[0], sizes[1], f"evaluating {why}, {when}{end}")


def describe_scope(scope: str, clean: int, triggered: int) -> str:
    """'' for a full-set measurement; 'estimate on 1,000 clean + 950 triggered images'; 'not evaluated ...'."""
    if scope == "subset":
        sizes = [f"{n:,} {what}" for n, what in ((clean, "clean"), (triggered, "triggered")) if n]
        return f"estimate on {' + '.join(sizes)} images" if sizes else "estimate on a subset"
    if scope == "none":
        return "not evaluated this epoch"
    return ""


def _cap(n: int, k: int) -> int | None:
    return None if n == 0 or k >= n else k


def _sample(n: int, share: float) -> int | None:
    if n == 0:
        return None
    k = max(min(n, MIN_SUBSET), round(share * n))
    return None if k >= n else k


def _n(size: int | None, full: int) -> int:
    return full if size is None else size


def _take(s: ImageSet | None, k: int | None, gen: torch.Generator) -> ImageSet | None:
    """A fixed random ``k``-image subset of ``s`` (rows in their original order), or ``s`` itself."""
    if s is None or k is None or k >= len(s):
        return s
    rows = torch.randperm(len(s), generator=gen)[:k].sort().values
    labels = s.labels[rows] if s.labels is not None else None
    return ImageSet(s.images[rows], labels, s.class_names, [s.files[i] for i in rows.tolist()], [], s.root)


class ScheduledEvaluator:
    """The run's evaluator: full sets, a fixed subset, or nothing, according to the plan and the epoch.

    The distiller opens each epoch's measurement with ``begin_epoch``; every epoch hook then calls
    ``measure`` as before (ACC / ASR, the moving average's too) and gets that epoch's scope. Outside an epoch
    end (the finish, a stopped run) ``measure`` always uses the full sets.
    """

    def __init__(self, full: Evaluator, plan: EvalPlan | None = None, norm: Normalization | None = None,
                 compute: ComputePlan | None = None, seed: int = 0) -> None:
        self.full = full
        self.plan = plan or EvalPlan()
        self.mean, self.std = full.mean, full.std  # the training step normalises with these
        self.sub: Evaluator | None = None
        if self.plan.subset:
            if norm is None or compute is None:
                raise ValueError("a subset evaluation needs the normalisation and the compute plan")
            gen = torch.Generator().manual_seed(seed + 7919)  # its own stream: the run's draws stay as they were
            sets = full.sets
            self.subsets = EvalSets(_take(sets.clean, self.plan.clean, gen),
                                    _take(sets.triggered, self.plan.triggered, gen), sets.target)
            self.sub = Evaluator(self.subsets, norm, compute, agreement_images=None)
        self.scope = "full"
        self.counts = self._counts("full")

    @property
    def sets(self) -> EvalSets:
        """The full evaluation sets (hooks that sample them, e.g. the feature space, read these)."""
        return self.full.sets

    def _counts(self, scope: str) -> tuple[int, int]:
        if scope == "none":
            return 0, 0
        sets = self.subsets if scope == "subset" else self.full.sets
        return (len(sets.clean) if sets.clean else 0, len(sets.triggered) if sets.triggered else 0)

    def set_reference(self, teacher: nn.Module) -> None:
        self.full.set_reference(teacher)
        if self.sub is not None:
            self.sub.set_reference(teacher)

    def begin_epoch(self, epoch: int, epochs: int) -> str:
        """Set the scope of 1-based ``epoch``'s measurement: 'full', 'subset' or 'none'."""
        if not self.plan.due(epoch, epochs):
            self.scope = "none"
        elif self.plan.full_at(epoch, epochs) or self.sub is None:
            self.scope = "full"
        else:
            self.scope = "subset"
        self.counts = self._counts(self.scope)
        return self.scope

    def end_epoch(self) -> None:
        self.scope = "full"

    def measure(self, model: nn.Module) -> dict[str, float | None]:
        if self.scope == "none":
            return {"acc": None, "asr": None, "agreement": None}
        if self.scope == "subset" and self.sub is not None:
            return self.sub.measure(model)
        return self.full.measure(model)
