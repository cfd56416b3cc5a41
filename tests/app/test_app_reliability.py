"""Nothing lost in the app: saves confirm every file they replace, a full disk offers to save elsewhere,
File › Resume run… continues an unfinished run and explains folders it cannot resume."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PySide6.QtWidgets import QFileDialog

from bcu_gui.core import atomic
from bcu_gui.core.events import EpochEnd, Finished
from bcu_gui.core.job import CleanseJob
from bcu_gui.core.training import RunHook

sys.path.insert(0, str(Path(__file__).parent))
from app_helpers import open_demo_for_test  # noqa: E402

RUN_TIMEOUT = 90_000


def _finished_run(qtbot, w, epochs=1):
    open_demo_for_test(qtbot, w, epochs=epochs)
    with qtbot.waitSignal(w.run_view.run_finished, timeout=RUN_TIMEOUT) as finished:
        assert w.start_run()
    qtbot.waitUntil(lambda: not w.run_view.is_running, timeout=10_000)  # the thread ends after its last event
    return finished.args[0]


def test_save_as_model_pt_asks_before_replacing_its_sidecars(qtbot, window, messages, tmp_path, monkeypatch):
    w = window
    _finished_run(qtbot, w)
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "model.json").write_text('{"my": "notes"}')
    (folder / "model.safetensors").write_bytes(b"my other model")
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(folder / "model.pt"), "")))

    messages.answer = False  # "No": nothing is touched
    w.run_view.save_action.trigger()
    kind, title, text = messages.shown[-1]
    assert kind == "question" and title == "Replace existing files?"
    assert "model.safetensors" in text and "model.json" in text and "model.pt\n" not in text
    assert (folder / "model.json").read_text() == '{"my": "notes"}' and not (folder / "model.pt").exists()
    assert (folder / "model.safetensors").read_bytes() == b"my other model"

    messages.answer = True
    files = w.run_view.save_cleansed_to(folder / "model.pt")
    assert [f.name for f in files] == ["model.pt", "model.safetensors", "model.json"]
    assert json.loads((folder / "model.json").read_text()).get("arch") == "resnet18_cifar"

    messages.shown.clear()  # a fresh name: no question at all
    assert w.run_view.save_cleansed_to(folder / "fresh.pt") is not None
    assert "question" not in messages.kinds()


def test_a_full_disk_offers_to_save_the_trained_model_elsewhere(qtbot, window, messages, tmp_path, monkeypatch):
    w = window
    open_demo_for_test(qtbot, w, epochs=1)
    real_free = atomic.free_bytes
    full: list[bool] = []

    class FillTheDisk(RunHook):
        def on_finish(self, run):
            full.append(True)

    monkeypatch.setattr(atomic, "free_bytes", lambda folder: 1000 if full else real_free(folder))
    w.run_view.job_factory = lambda cfg, model: CleanseJob(cfg, model=model, hooks=[FillTheDisk()])
    target = tmp_path / "other-disk" / "rescued.pt"

    def choose(*args, **kwargs):
        full.clear()  # the other disk has room
        return str(target), ""

    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(choose))
    messages.answer = True
    with qtbot.waitSignal(w.run_view.run_failed, timeout=RUN_TIMEOUT) as failed:
        assert w.start_run()
    assert failed.args[0].kind == "disk"
    qtbot.waitUntil(lambda: not w.run_view.is_running, timeout=10_000)
    assert messages.titles()[:2] == ["Disk full", "Save the model elsewhere?"], messages.texts()
    assert "kept in memory" in messages.shown[0][2]
    assert target.is_file() and target.with_suffix(".safetensors").is_file()
    run_dir = Path(w.run_view.last_config.out)
    assert not (run_dir / "cleansed.pt").exists() and (run_dir / "resume.pt").exists()


def test_resume_run_refuses_finished_and_foreign_folders_with_a_clear_dialog(qtbot, window, messages, tmp_path):
    w = window
    finished = _finished_run(qtbot, w)
    messages.shown.clear()
    assert not w.resume_run(finished.run_dir)
    assert messages.titles() == ["Cannot resume this folder"] and "holds a finished run" in messages.texts()

    mine = tmp_path / "holiday photos"
    mine.mkdir()
    (mine / "a.txt").write_text("x")
    messages.shown.clear()
    assert not w.resume_run(mine)
    assert "is not a BCU Studio run folder" in messages.texts()
    assert not w.resume_run(tmp_path / "nowhere") and "does not exist" in messages.texts()
    assert w.resume_action.isEnabled() and w.resume_action in w.menuBar().actions()[0].menu().actions()


def test_resume_run_continues_an_unfinished_run_to_its_last_epoch(qtbot, window, messages):
    w = window
    open_demo_for_test(qtbot, w, epochs=3)
    cfg = w.build_config()
    events = CleanseJob(cfg, model=w.model_panel.model).events()
    for event in events:  # a run that died after its first epoch (as kill -9 leaves it)
        if isinstance(event, EpochEnd):
            events.close()
            break
    run_dir = Path(cfg.out)
    assert (run_dir / "resume.pt").exists() and not (run_dir / "summary.json").exists()

    lines_before = len(w.log_pane.lines())
    with qtbot.waitSignal(w.run_view.run_finished, timeout=RUN_TIMEOUT) as done:
        assert w.resume_run(run_dir)
    summary = done.args[0].summary
    assert isinstance(done.args[0], Finished) and not summary.cancelled
    assert summary.epochs_completed == 3 and summary.run_dir == str(run_dir)
    assert any("resuming" in line and "after epoch 1 of 3" in line for line in w.log_pane.lines()[lines_before:])
    assert not (run_dir / "resume.pt").exists() and "error" not in messages.kinds()
