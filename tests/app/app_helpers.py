"""Helpers shared by the app tests (imported by path: the test folders are not packages)."""

from __future__ import annotations

import torch
from torch import nn

from bcu_gui.core.nets import CifarResNet


class PickledClassifier(nn.Module):
    """A user's own model class: ``torch.save(model)`` pickles it by import path, so it lives in a module."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = CifarResNet([2, 2, 2, 2], num_classes=10, width=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


def wait_ready(qtbot, w, timeout: int = 20_000) -> None:
    """Until the background folder checks are done and Start is enabled."""
    qtbot.waitUntil(lambda: not w.data_panel.is_checking() and not w.missing_inputs(), timeout=timeout)
    assert w.run_panel.start_button.isEnabled()


def open_demo_for_test(qtbot, w, epochs: int = 2, batch: int = 16) -> None:
    """The demo as a user opens it, then a short training so a run takes seconds on two cores."""
    assert w.open_demo()
    tp = w.training_panel
    tp.epochs_spin.setValue(epochs)
    tp.batch_spin.setValue(batch)
    tp.device_combo.setCurrentIndex(tp.device_combo.findData("cpu"))
    tp.precision_combo.setCurrentIndex(tp.precision_combo.findData("fp32"))
    wait_ready(qtbot, w)
