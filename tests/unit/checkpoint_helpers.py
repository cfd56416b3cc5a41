"""Module-level classes for the checkpoint tests: pickle records a class by import path, so a model class
defined inside a test function could not be unpickled again."""

from __future__ import annotations

import warnings
from pathlib import Path

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


class FileWritingScript(nn.Module):
    """A hostile model for TorchScript: loading it (``__setstate__``) and calling it both overwrite the first
    bytes of ``victim`` through ``torch.from_file(..., shared=True)`` and an in-place copy.

    The result of the write feeds the output, so TorchScript's dead-code elimination keeps it.
    """

    def __init__(self, victim: str) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(10, 3))
        self.victim = victim

    def _overwrite(self) -> torch.Tensor:
        mapped = torch.from_file(self.victim, True, 8, dtype=torch.uint8)
        mapped.copy_(torch.full([8], 88, dtype=torch.uint8))  # "XXXXXXXX"
        return mapped.float().sum()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3)) @ self.weight.t() + self._overwrite() * 0

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, str, bool]:
        return (self.weight, self.victim, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, str, bool]) -> None:
        self.weight = state[0]
        self.victim = state[1]
        self.training = state[2]
        self._overwrite()


VICTIM_TEXT = "precious user data, must stay as it is\n"


def write_file_writing_torchscript(path: Path, victim: Path) -> None:
    """Save :class:`FileWritingScript` aimed at ``victim``, then give the victim its known content."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices
        torch.jit.save(torch.jit.script(FileWritingScript(str(victim))), str(path))
    Path(victim).write_text(VICTIM_TEXT)
