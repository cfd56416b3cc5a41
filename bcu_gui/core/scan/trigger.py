"""A recovered trigger, stamping it on images, and the proxy attack success rate it gives.

Triggers live in pixel space (values in [0, 1], applied BEFORE the model's normalisation) so that a stamped
image is an ordinary uint8 image: it can be saved as a PNG, shown in the app, or fed to any model of the same
input size. Two kinds exist, one per probe of the scan:

- ``mask``: ``x' = (1 - m) * x + m * p`` with a mask ``m`` [1, H, W] and a pattern ``p`` [C, H, W]
  (Neural Cleanse's form; fits patch triggers such as BadNets);
- ``perturbation``: ``x' = clamp(x + d, 0, 1)`` with a universal perturbation ``d`` [C, H, W] (fits triggers
  spread over the whole image: blends, signals, warps).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from ..data import to_model_input
from ..devices import ComputePlan
from ..normalization import Normalization

TRIGGER_KINDS = ("mask", "perturbation")


@dataclass(frozen=True, eq=False)  # identity equality: comparing tensors with == is ambiguous
class Trigger:
    """A trigger recovered for one class. Tensors are float32 on the CPU, in [0, 1] pixel units."""

    kind: str  # "mask" or "perturbation"
    target: int  # the class the trigger sends images to
    pattern: torch.Tensor  # mask kind: pattern p [C, H, W] in [0, 1]; perturbation kind: d [C, H, W] in [-1, 1]
    mask: torch.Tensor | None = None  # mask kind only: m [1, H, W] in [0, 1]

    def __post_init__(self) -> None:
        if self.kind not in TRIGGER_KINDS:
            raise ValueError(f"unknown trigger kind {self.kind!r}; known: {', '.join(TRIGGER_KINDS)}")
        if (self.mask is None) != (self.kind == "perturbation"):
            raise ValueError("a mask trigger needs a mask; a perturbation trigger has none")
        if self.pattern.dim() != 3 or (self.mask is not None and self.mask.shape != (1, *self.pattern.shape[1:])):
            raise ValueError(f"pattern must be [C, H, W] and mask [1, H, W], got {tuple(self.pattern.shape)} "
                             f"and {None if self.mask is None else tuple(self.mask.shape)}")

    @property
    def size(self) -> float:
        """The trigger's size as its probe measures it: mask L1 norm (pixels), or L-inf of the perturbation."""
        if self.mask is not None:
            return float(self.mask.abs().sum())
        return float(self.pattern.abs().max())

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Stamp float images in [0, 1] ``[N, C, H, W]`` (differentiable; used during the optimisation)."""
        pattern = self.pattern.to(x.device, x.dtype)
        if self.mask is None:
            return (x + pattern).clamp(0.0, 1.0)
        mask = self.mask.to(x.device, x.dtype)
        return (1.0 - mask) * x + mask * pattern


def stamp(images: torch.Tensor, trigger: Trigger) -> torch.Tensor:
    """The uint8 NCHW ``images`` with ``trigger`` applied, rounded back to uint8 (on the images' device).

    Rounding makes a stamped batch exactly what a PNG of it holds, so the proxy ASR measured here is the one a
    user gets from the saved stamped examples.
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"expected a uint8 NCHW batch, got {images.dtype} with shape {tuple(images.shape)}")
    if tuple(images.shape[1:]) != tuple(trigger.pattern.shape):
        raise ValueError(f"the trigger is {tuple(trigger.pattern.shape)} but the images are "
                         f"{tuple(images.shape[1:])}")
    out = trigger.apply(images.float() / 255.0)
    return (out * 255.0).round_().clamp_(0, 255).to(torch.uint8)


@torch.inference_mode()
def proxy_asr(model: nn.Module, images: torch.Tensor, trigger: Trigger, normalization: Normalization, *,
              target: int | None = None, plan: ComputePlan | None = None, batch_size: int = 256) -> float | None:
    """Share of ``images`` the model sends to ``target`` once the trigger is stamped on them.

    Only images the model does NOT already send to ``target`` count (unlabelled data has no true class to
    exclude, so the model's own clean prediction stands in for it). Returns None when there are no such
    images. Two forward passes over ``images``: cheap enough to run after every epoch on a few hundred
    held-out images. ``target`` defaults to the trigger's class; the model is used as it is (eval mode is
    the caller's business, since a job may measure a student between training steps).
    """
    target = trigger.target if target is None else target
    device = plan.device if plan is not None else next((p.device for p in model.parameters()), torch.device("cpu"))
    mean = torch.tensor(normalization.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(normalization.std, device=device).view(1, -1, 1, 1)
    counted = hits = 0
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].to(device)
        both = torch.cat([batch, stamp(batch, trigger)])
        x = to_model_input(both, mean, std)
        if plan is not None and plan.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with plan.autocast() if plan is not None else contextlib.nullcontext():
            preds = model(x).argmax(1)
        clean, stamped = preds[:len(batch)], preds[len(batch):]
        keep = clean != target
        counted += int(keep.sum())
        hits += int((stamped[keep] == target).sum())
    return hits / counted if counted else None
