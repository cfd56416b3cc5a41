"""Module-level classes for the checkpoint tests: pickle records a class by import path, so a model class
defined inside a test function could not be unpickled again."""

from __future__ import annotations

import torch
from torch import nn

from bcu_gui.core.nets import CifarResNet


class WrappedClassifier(nn.Module):
    """A user's own model class around a known network, as a pickled ``torch.save(model)`` would hold."""

    def __init__(self, num_classes: int = 10, width: int = 4) -> None:
        super().__init__()
        self.backbone = CifarResNet([2, 2, 2, 2], num_classes=num_classes, width=width)
        self.temperature = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x) / self.temperature
