"""Several GPUs in the app: the "GPUs" control appears only with two or more, and a run on more than one is
started through the launcher (``bcu cleanse --nproc N``) and followed to its end.

No GPU is needed: the device count is monkeypatched and the launched run uses the CPU (gloo), as the test
machine's settings ask.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from bcu_gui.app.panels.training_panel import TrainingPanel
from bcu_gui.app.settings import AppSettings

sys.path.insert(0, str(Path(__file__).parent))
from app_helpers import open_demo_for_test  # noqa: E402


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


@pytest.mark.parametrize("count", [0, 1])
def test_the_gpus_control_is_hidden_below_two_gpus(qtbot, monkeypatch, count):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    panel = TrainingPanel(AppSettings())
    qtbot.addWidget(panel)
    assert not panel.layout().isRowVisible(panel.gpus_spin)
    assert panel.processes() == 1


def test_the_gpus_control_offers_every_gpu(qtbot, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    panel = TrainingPanel(AppSettings())
    qtbot.addWidget(panel)
    assert panel.layout().isRowVisible(panel.gpus_spin) and panel.gpus_spin.maximum() == 4
    assert panel.processes() == 1  # one GPU until the user asks for more
    panel.gpus_spin.setValue(3)
    assert panel.processes() == 3


@pytest.mark.slow
def test_a_two_process_run_is_launched_and_followed_to_its_end(qtbot, two_gpus, window):
    w = window
    open_demo_for_test(qtbot, w, epochs=2, batch=16)
    w.training_panel.gpus_spin.setValue(2)
    seen = []
    w.run_view.runner.event.connect(seen.append)
    assert w.start_run()
    assert not w.run_view.pause_action.isEnabled()  # the other processes cannot wait in a pause
    with qtbot.waitSignal(w.run_view.run_finished, timeout=240_000) as finished:
        pass
    summary = finished.args[0].summary
    assert not summary.cancelled and summary.epochs_completed == 2
    assert [type(e).__name__ for e in seen if type(e).__name__ in ("Started", "EpochEnd", "Step")] == \
        ["Started", "Step", "EpochEnd", "Step", "EpochEnd"]  # a loss point an epoch: the stream has no steps
    run = Path(summary.run_dir)
    assert json.loads((run / "config.json").read_text())["resolved"]["world_size"] == 2
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    qtbot.waitUntil(lambda: not w.run_view.is_running, timeout=10_000)
    assert w.run_view.result_dir == run and w.run_view.save_action.isEnabled()
    assert summary.batch_size == 16  # the batch is global: 8 a process


@pytest.mark.slow
def test_stop_ends_every_process_of_a_launched_run_and_keeps_it_resumable(qtbot, two_gpus, window):
    from bcu_gui.core.events import EpochEnd
    from bcu_gui.core.resume import folder_state

    w = window
    open_demo_for_test(qtbot, w, epochs=30, batch=16)
    w.training_panel.gpus_spin.setValue(2)
    seen = []
    w.run_view.runner.event.connect(seen.append)
    assert w.start_run()
    qtbot.waitUntil(lambda: any(isinstance(e, EpochEnd) for e in seen), timeout=240_000)
    with qtbot.waitSignal(w.run_view.run_finished, timeout=120_000) as finished:
        w.run_panel.stop_button.click()
    summary = finished.args[0].summary
    assert summary.cancelled and summary.epochs_completed < 30
    assert folder_state(summary.run_dir).status == "unfinished"
    qtbot.waitUntil(lambda: not w.run_view.is_running, timeout=10_000)
