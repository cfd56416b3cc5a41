"""Shared test setup: offscreen Qt, few CPU threads, and small real models and image folders."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("BCU_SETTINGS_ORG", "bcu-studio-tests")  # the app's QSettings stay out of the user's

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def tiny_resnet():
    """A CIFAR ResNet-18 of width 8 (≈175k weights; width 4 hits a slow oneDNN path on AVX2 CPUs)."""
    from bcu_gui.core.nets import CifarResNet

    torch.manual_seed(0)
    return CifarResNet([2, 2, 2, 2], num_classes=10, width=8).eval()


@pytest.fixture
def tiny_checkpoint(tmp_path, tiny_resnet):
    """The tiny ResNet saved as a plain state_dict."""
    path = tmp_path / "tiny.pt"
    torch.save(tiny_resnet.state_dict(), path)
    return path
