"""The maximum-margin probe: how far can an input push each class's logit above all the others?

MM-BD (Wang et al., IEEE S&P 2024) observes that a backdoor, whatever its trigger's shape (a patch, a blended
picture, a sinusoid, a warp), teaches the network one shortcut that drives its target class's logit far past
what any natural image of that class reaches. So, for every class k, maximise the margin

    z_k(x) - max_{j != k} z_j(x)        over inputs x in the pixel box [0, 1]

by projected gradient ascent from several starts, and keep the largest margin reached. The target class of a
backdoor reaches an abnormally large one; the p-value against the other classes (calibration.py) says how
abnormal. Nothing here assumes the trigger's form, which is why it sees the whole-image triggers that the
mask and perturbation probes (probes.py) miss at scale.

All classes and starts share one batch ([K * R] inputs), so the model runs once per step. Half of the starts
are unlabelled images and half uniform noise: images start where the model is calibrated, noise where a
trigger's pattern has room. The statistic is divided by the model's typical margin on the clean images (the
median top-1 margin), so that models with larger logits are not read as more suspicious; the p-value itself
does not depend on that scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from ..devices import ComputePlan


@dataclass(frozen=True)
class MarginSettings:
    """How hard the margin probe searches. Defaults measured on digits and Fashion-MNIST models (README)."""

    starts: int = 6  # inputs per class (half unlabelled images, half noise)
    steps: int = 120  # projected Adam steps
    lr: float = 0.02  # Adam, in [0, 1] pixel units
    window: int = 10  # steps between progress reports
    seed: int = 0


@dataclass(frozen=True)
class MarginStep:
    step: int
    steps: int


@dataclass(frozen=True)
class MarginOutcome:
    """Per class the largest margin reached (in units of the typical clean margin) and the input reaching it."""

    margins: tuple[float, ...]  # normalised statistic per class (larger = more suspicious)
    raw: tuple[float, ...]  # the same in logits
    typical: float  # median top-1 margin of the model on the fit images (logits)
    inputs: torch.Tensor  # [K, C, H, W] in [0, 1], CPU: each class's best input
    steps: int
    forwarded: int


def _margins(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """z_target - max over the other classes, per row."""
    own = logits.gather(1, target.view(-1, 1)).squeeze(1)
    others = logits.scatter(1, target.view(-1, 1), float("-inf")).max(1).values
    return own - others


def run_margin_probe(model: nn.Module, images: torch.Tensor, classes: int,
                     normalize: Callable[[torch.Tensor], torch.Tensor], plan: ComputePlan,
                     settings: MarginSettings) -> Iterator[MarginStep | MarginOutcome]:
    """Maximise every class's margin; yields a :class:`MarginStep` per window, then the :class:`MarginOutcome`.

    ``images``: float [N, C, H, W] in [0, 1] on the device (the scan's fit split); the model in eval mode with
    its parameters' gradients off (the caller arranges it). Stopping the iteration early cancels.
    """
    device = plan.device
    gen = torch.Generator().manual_seed(settings.seed)
    n, shape = len(images), tuple(images.shape[1:])
    r = max(1, settings.starts)
    from_images = r // 2
    starts = torch.rand((classes, r, *shape), generator=gen)
    if from_images and n:
        pick = torch.randint(0, n, (classes, from_images), generator=gen)
        starts[:, :from_images] = images.detach().cpu()[pick]
    x = starts.view(classes * r, *shape).to(device).requires_grad_()
    target = torch.arange(classes, device=device).repeat_interleave(r)

    def forward(batch: torch.Tensor) -> torch.Tensor:
        inputs = normalize(batch)
        if plan.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with plan.autocast():
            return model(inputs).float()

    with torch.no_grad():
        logits = torch.cat([forward(images[i:i + 256]) for i in range(0, n, 256)]) if n else None
    typical = 1.0
    if logits is not None and logits.shape[1] > 1:
        top2 = logits.topk(2, dim=1).values
        typical = max(float((top2[:, 0] - top2[:, 1]).median()), 1e-3)
    opt = torch.optim.Adam([x], lr=settings.lr)
    best = torch.full((classes * r,), float("-inf"), device=device)
    best_x = x.detach().clone()
    forwarded = 0
    step = 0
    for step in range(1, settings.steps + 1):
        margin = _margins(forward(x), target)
        forwarded += len(x)
        with torch.no_grad():
            better = margin.detach() > best
            best = torch.where(better, margin.detach(), best)
            best_x[better] = x.detach()[better]
        opt.zero_grad(set_to_none=True)
        (-margin.sum()).backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(0.0, 1.0)
        if step % settings.window == 0 or step == settings.steps:
            yield MarginStep(step, settings.steps)
    with torch.no_grad():  # the last step's update is measured too
        margin = _margins(forward(x), target)
        better = margin > best
        best = torch.where(better, margin, best)
        best_x[better] = x.detach()[better]
    per_class, arg = best.view(classes, r).max(1)
    chosen = best_x.view(classes, r, *shape)[torch.arange(classes, device=device), arg]
    raw = [float(v) for v in per_class.cpu()]
    yield MarginOutcome(tuple(v / typical for v in raw), tuple(raw), typical, chosen.float().cpu(), step,
                        forwarded)


__all__ = ["MarginOutcome", "MarginSettings", "MarginStep", "run_margin_probe"]
