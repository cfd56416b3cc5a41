"""The two trigger-inversion probes: a shared optimisation loop over all classes at once.

For every class k a probe holds a candidate trigger and shrinks it while the model keeps sending images it
does not already call k to k (Neural Cleanse, Wang et al. 2019, with the teacher's own predictions standing
in for labels). All still-active classes share one forward pass: a batch of B images becomes A*B stamped
images for the A active classes, so the model runs once per step whatever the number of classes.

- :class:`MaskProbe`: mask ``m`` and pattern ``p`` per class, minimising ``CE + lambda_k * |m|_1``; the
  weight ``lambda_k`` follows Neural Cleanse's schedule (raise it while the flip rate reaches the target,
  lower it otherwise), so each class ends near the smallest mask that still flips most images.
- :class:`PerturbationProbe`: a universal perturbation ``d = eps_k * tanh(w)`` per class under an L-inf
  budget ``eps_k`` that shrinks while the flip rate reaches the target and grows otherwise. Triggers spread
  over the whole image (blends, signals, warps) need a large mask but only a small perturbation.

A class stops early once its size control has both tightened and loosened (it has found the edge where the
flip rate just holds, as Neural Cleanse requires before stopping) and its smallest successful trigger has
not shrunk for ``patience`` windows since.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn
from torch.nn import functional as F

from ..devices import ComputePlan
from .trigger import Trigger


@dataclass(frozen=True)
class ProbeSettings:
    """How hard a probe searches. The defaults were measured on digits models (README)."""

    steps: int = 300  # most optimiser steps
    batch_size: int = 16  # images per class per step
    lr: float = 0.1  # Adam
    target_flip: float = 0.9  # flip rate a trigger must reach to count
    window: int = 10  # steps between adjustments of the size weight / budget
    patience: int = 6  # windows without a smaller successful trigger before a class stops
    seed: int = 0


@dataclass(frozen=True)
class ProbeStep:
    """Progress of one probe: reported once per window."""

    step: int
    steps: int
    active: int  # classes still optimised
    best: tuple[float | None, ...]  # smallest successful size per class so far


class _Probe:
    """A candidate trigger per class; subclasses define the trigger form and how its size is controlled."""

    kind = ""
    ceiling = 1.0  # the size reported for a class that never reached the target flip rate

    def __init__(self, classes: int, shape: tuple[int, int, int], device: torch.device) -> None:
        self.classes, self.shape, self.device = classes, shape, device

    def parameters(self) -> list[torch.Tensor]:
        raise NotImplementedError

    def stamp(self, x: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """``x`` [B, C, H, W] in [0, 1] -> [A, B, C, H, W] stamped with each active class's trigger."""
        raise NotImplementedError

    def penalty(self, active: torch.Tensor) -> torch.Tensor:
        """Per active class, the term added to its loss to keep the trigger small ([A])."""
        raise NotImplementedError

    def sizes(self) -> torch.Tensor:
        """Current size of every class's trigger ([K], CPU)."""
        raise NotImplementedError

    def adapt(self, k: int, success: bool) -> None:
        """End of a window: tighten class ``k``'s size control after success, loosen it otherwise."""
        raise NotImplementedError

    def trigger(self, k: int) -> Trigger:
        """Class ``k``'s current trigger, detached on the CPU."""
        raise NotImplementedError


class MaskProbe(_Probe):
    kind = "mask"
    init_cost = 1e-2  # Neural Cleanse starts at 1e-3 but runs thousands of steps; we have hundreds
    cost_up, cost_down = 1.5, 1.5 ** 1.5  # Neural Cleanse's multipliers

    def __init__(self, classes: int, shape: tuple[int, int, int], device: torch.device, gen: torch.Generator):
        super().__init__(classes, shape, device)
        c, h, w = shape
        self.ceiling = float(h * w)
        # tanh parametrisation keeps m and p in [0, 1] without clipping; start from a faint mask (0.12) and a
        # random pattern: the optimisation grows the mask where the class needs it
        self.raw_mask = torch.full((classes, 1, h, w), -1.0, device=device).requires_grad_()
        self.raw_pattern = (torch.rand((classes, c, h, w), generator=gen) * 2 - 1).mul_(2).to(device).requires_grad_()
        self.cost = torch.full((classes,), self.init_cost, device=device)

    def parameters(self) -> list[torch.Tensor]:
        return [self.raw_mask, self.raw_pattern]

    def _mask(self, idx: torch.Tensor | slice) -> torch.Tensor:
        return (torch.tanh(self.raw_mask[idx]) + 1) / 2

    def stamp(self, x: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        m = self._mask(active).unsqueeze(1)  # [A, 1, 1, H, W]
        p = ((torch.tanh(self.raw_pattern[active]) + 1) / 2).unsqueeze(1)  # [A, 1, C, H, W]
        return (1 - m) * x.unsqueeze(0) + m * p

    def penalty(self, active: torch.Tensor) -> torch.Tensor:
        return self.cost[active] * self._mask(active).flatten(1).sum(1)

    def sizes(self) -> torch.Tensor:
        with torch.no_grad():
            return self._mask(slice(None)).flatten(1).sum(1).float().cpu()

    def adapt(self, k: int, success: bool) -> None:
        self.cost[k] *= self.cost_up if success else 1 / self.cost_down

    def trigger(self, k: int) -> Trigger:
        with torch.no_grad():
            mask = self._mask(slice(k, k + 1))[0].float().cpu().clone()
            pattern = ((torch.tanh(self.raw_pattern[k]) + 1) / 2).float().cpu().clone()
        return Trigger("mask", k, pattern, mask)


class PerturbationProbe(_Probe):
    kind = "perturbation"
    init_budget = 0.1  # L-inf, in [0, 1] pixel units (about 26 of 255)
    shrink, grow = 0.85, 1.15

    def __init__(self, classes: int, shape: tuple[int, int, int], device: torch.device, gen: torch.Generator):
        super().__init__(classes, shape, device)
        self.ceiling = 1.0
        self.raw = (torch.rand((classes, *shape), generator=gen) * 2 - 1).mul_(0.5).to(device).requires_grad_()
        self.budget = torch.full((classes,), self.init_budget, device=device)

    def parameters(self) -> list[torch.Tensor]:
        return [self.raw]

    def _delta(self, idx: torch.Tensor | slice) -> torch.Tensor:
        budget = self.budget[idx].view(-1, 1, 1, 1)
        return budget * torch.tanh(self.raw[idx])

    def stamp(self, x: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        return (x.unsqueeze(0) + self._delta(active).unsqueeze(1)).clamp(0, 1)

    def penalty(self, active: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(active), device=self.device)  # the budget, not a penalty, keeps d small

    def sizes(self) -> torch.Tensor:
        return self.budget.float().cpu().clone()

    def adapt(self, k: int, success: bool) -> None:
        self.budget[k] = min(1.0, float(self.budget[k]) * (self.shrink if success else self.grow))

    def trigger(self, k: int) -> Trigger:
        with torch.no_grad():
            delta = self._delta(slice(k, k + 1))[0].float().cpu().clone()
        return Trigger("perturbation", k, delta)


PROBES: dict[str, type[_Probe]] = {"mask": MaskProbe, "perturbation": PerturbationProbe}


@dataclass(frozen=True)
class ProbeOutcome:
    """What a probe found: per class the smallest successful trigger (None where the target was never met)."""

    kind: str
    ceiling: float
    sizes: tuple[float | None, ...]
    triggers: tuple[Trigger | None, ...]
    steps: int
    forwarded: int  # stamped images sent through the model (forward and backward): the probe's work


def run_probe(kind: str, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, classes: int,
              normalize: Callable[[torch.Tensor], torch.Tensor], plan: ComputePlan,
              settings: ProbeSettings) -> Iterator[ProbeStep | ProbeOutcome]:
    """Optimise one probe; yields a :class:`ProbeStep` per window, then the :class:`ProbeOutcome`.

    ``images`` are float [N, C, H, W] in [0, 1] on the device, ``labels`` the teacher's predictions on them;
    ``normalize`` maps [0, 1] pixels to the model's input. The model must be in eval mode with gradients off
    for its parameters (the caller arranges it). Stopping the iteration early is how a caller cancels.
    """
    device = plan.device
    gen = torch.Generator().manual_seed(settings.seed)
    probe = PROBES[kind](classes, tuple(images.shape[1:]), device, gen)
    opt = torch.optim.Adam(probe.parameters(), lr=settings.lr, betas=(0.5, 0.9))
    class_ids = torch.arange(classes, device=device)
    active = torch.ones(classes, dtype=torch.bool)
    best: list[float | None] = [None] * classes
    best_trigger: list[Trigger | None] = [None] * classes
    stale = [0] * classes
    tightened = [False] * classes
    loosened = [False] * classes
    hit_sum = torch.zeros(classes, device=device)
    count_sum = torch.zeros(classes, device=device)
    n = len(images)
    step = forwarded = 0
    for step in range(1, settings.steps + 1):
        idx = torch.randint(0, n, (min(settings.batch_size, n),), generator=gen).to(device)
        x, y = images[idx], labels[idx]
        act = class_ids[active.to(device)]
        stamped = probe.stamp(x, act)  # [A, B, C, H, W]
        a, b = stamped.shape[:2]
        forwarded += a * b
        inputs = normalize(stamped.reshape(a * b, *stamped.shape[2:]))
        if plan.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with plan.autocast():
            logits = model(inputs)
        logits = logits.float().view(a, b, -1)
        wanted = act.view(a, 1).expand(a, b)
        counts = (y.view(1, b) != wanted).float()  # images the model does not already send to k
        ce = F.cross_entropy(logits.reshape(a * b, -1), wanted.reshape(-1), reduction="none").view(a, b)
        loss_k = (ce * counts).sum(1) / counts.sum(1).clamp(min=1) + probe.penalty(act)
        opt.zero_grad(set_to_none=True)
        loss_k.sum().backward()
        opt.step()
        with torch.no_grad():
            hits = ((logits.argmax(2) == wanted).float() * counts).sum(1)
            hit_sum.index_add_(0, act, hits)
            count_sum.index_add_(0, act, counts.sum(1))
        if step % settings.window and step != settings.steps:
            continue
        rates = (hit_sum / count_sum.clamp(min=1)).cpu().tolist()
        sizes = probe.sizes().tolist()
        for k in act.cpu().tolist():
            success = rates[k] >= settings.target_flip
            if success and (best[k] is None or sizes[k] < best[k] * 0.99):
                best[k], best_trigger[k], stale[k] = sizes[k], probe.trigger(k), 0
            elif best[k] is not None and tightened[k] and loosened[k]:
                stale[k] += 1
            probe.adapt(k, success)
            tightened[k] = tightened[k] or success
            loosened[k] = loosened[k] or (tightened[k] and not success)
            if stale[k] >= settings.patience:
                active[k] = False
        hit_sum.zero_()
        count_sum.zero_()
        yield ProbeStep(step, settings.steps, int(active.sum()), tuple(best))
        if not bool(active.any()):
            break
    yield ProbeOutcome(kind, probe.ceiling, tuple(best), tuple(best_trigger), step, forwarded)


__all__ = ["ProbeSettings", "ProbeStep", "ProbeOutcome", "run_probe", "PROBES"]
