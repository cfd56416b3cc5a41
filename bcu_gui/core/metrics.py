"""Batched predictions and the three numbers BCU is judged by: ACC, ASR and teacher agreement."""

from __future__ import annotations

import torch
from torch import nn

from .data import to_model_input
from .devices import ComputePlan


@torch.inference_mode()
def predict(model: nn.Module, images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
            plan: ComputePlan, batch_size: int = 512) -> torch.Tensor:
    """Class predictions (int64, on the plan's device) for a uint8 image tensor."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].to(plan.device, non_blocking=True)
        x = to_model_input(batch, mean, std)
        if plan.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with plan.autocast():
            out.append(model(x).argmax(1))
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long, device=plan.device)


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of images classified as their label."""
    return float((predictions == labels.to(predictions.device)).float().mean()) if len(labels) else float("nan")


def attack_success_rate(predictions: torch.Tensor, target: int) -> float:
    """Share of triggered non-target images classified as the attacker's target."""
    return float((predictions == target).float().mean()) if len(predictions) else float("nan")


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Share of images on which two models predict the same class."""
    return float((a == b).float().mean()) if len(a) else float("nan")
