"""Evaluation sets (clean for ACC, triggered for ASR) and measuring a model on them."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .data import ImageSet, load_labeled, load_triggered
from .devices import ComputePlan
from .errors import ConfigError
from .metrics import accuracy, agreement, attack_success_rate, predict
from .normalization import Normalization


@dataclass
class EvalSets:
    """What the user gave to measure a model with; either part may be missing."""

    clean: ImageSet | None
    triggered: ImageSet | None
    target: int | None

    @property
    def curves(self) -> list[str]:
        """Which per-epoch numbers these sets make available."""
        return [name for name, s in (("ACC", self.clean), ("ASR", self.triggered)) if s is not None]


def load_eval_sets(clean_dir: str | None, triggered_dir: str | None, target: int | None, size: int,
                   num_classes: int) -> EvalSets:
    """Read the optional clean and triggered folders, checking labels and the target against the model."""
    if triggered_dir and target is None:
        raise ConfigError("a triggered folder needs the attack's target class (--target-class)")
    if target is not None and not 0 <= target < num_classes:
        raise ConfigError(f"target class {target} is outside the model's classes 0..{num_classes - 1}")
    clean = load_labeled(clean_dir, size, num_classes=num_classes) if clean_dir else None
    triggered = load_triggered(triggered_dir, size, target, num_classes=num_classes) if triggered_dir else None
    return EvalSets(clean, triggered, target)


class Evaluator:
    """Measures models on fixed sets held on the compute device, comparing each to the teacher."""

    def __init__(self, sets: EvalSets, norm: Normalization, plan: ComputePlan,
                 agreement_images: torch.Tensor | None = None) -> None:
        self.sets, self.plan = sets, plan
        self.mean = torch.tensor(norm.mean, device=plan.device).view(1, 3, 1, 1)
        self.std = torch.tensor(norm.std, device=plan.device).view(1, 3, 1, 1)
        self._clean = sets.clean.images.to(plan.device) if sets.clean else None
        self._labels = sets.clean.labels.to(plan.device) if sets.clean and sets.clean.labels is not None else None
        self._triggered = sets.triggered.images.to(plan.device) if sets.triggered else None
        self._agree = self._clean if self._clean is not None else (
            agreement_images.to(plan.device) if agreement_images is not None else None)
        self._reference: torch.Tensor | None = None

    def set_reference(self, teacher: nn.Module) -> None:
        """Remember the teacher's predictions once: agreement compares every epoch to them."""
        if self._agree is not None:
            self._reference = predict(teacher, self._agree, self.mean, self.std, self.plan)

    def measure(self, model: nn.Module) -> dict[str, float | None]:
        """ACC, ASR and agreement with the teacher (None where the set to measure it is missing)."""
        acc = asr = agree = None
        if self._clean is not None and self._labels is not None:
            preds = predict(model, self._clean, self.mean, self.std, self.plan)
            acc = accuracy(preds, self._labels)
            if self._reference is not None:
                agree = agreement(preds, self._reference)
        elif self._agree is not None and self._reference is not None:
            agree = agreement(predict(model, self._agree, self.mean, self.std, self.plan), self._reference)
        if self._triggered is not None and self.sets.target is not None:
            asr = attack_success_rate(predict(model, self._triggered, self.mean, self.std, self.plan),
                                      self.sets.target)
        return {"acc": acc, "asr": asr, "agreement": agree}
