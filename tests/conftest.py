"""Shared test setup: offscreen Qt, few CPU threads, and small real models and image folders."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("BCU_SETTINGS_ORG", "bcu-studio-tests")  # the app's QSettings stay out of the user's

import pytest
import torch

from bcu_gui.core.outcome import EXIT_RUINED

torch.set_num_threads(min(2, os.cpu_count() or 1))
# Jobs keep that count (core/threads.py): they must not change threads with the machine's load during the suite,
# since several tests compare runs bit for bit (resume, memory against streamed), and a different thread count
# changes the float sums. Not OMP_NUM_THREADS: the torchrun launcher splits the CPUs between ranks when it is
# unset. The thread policy's own tests unset this.
os.environ.setdefault("BCU_FIXED_THREADS", "1")


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


@pytest.fixture(scope="session")
def demo_run_dir(tmp_path_factory):
    """A real finished run of the shipped demo with the trigger scan (2 epochs, short scans; ~10 s on 2 cores),
    made once per session through ``bcu demo``: the run folder the report tests read."""
    from bcu_gui.cli import main

    out = tmp_path_factory.mktemp("demo_run") / "run"
    assert main(["demo", "--epochs", "2", "--scan", "--scan-steps", "20", "--scan-limit", "120",
                 "--out", str(out)]) in (0, EXIT_RUINED)  # a short run (or a random tiny teacher) may be judged ruined: exit 3
    return out


@pytest.fixture(autouse=True)
def no_leaked_qthreads():
    """Fail a test that leaves one of the app's QThreads running (the worker module keeps the registry).

    A thread that is just winding down (its last signal was delivered a moment ago) gets a few seconds to
    end; one still running after that was leaked. Tests that never import the app pay nothing.
    """
    yield
    import sys

    worker = sys.modules.get("bcu_gui.app.worker")
    if worker is None:
        return
    leaked = [t for t in worker.live_threads() if not t.wait(5000)]
    if leaked:
        pytest.fail(f"{len(leaked)} QThread(s) left running: {[t.objectName() for t in leaked]}")
