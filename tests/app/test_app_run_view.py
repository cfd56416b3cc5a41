"""The run view's wiring: actions in reach, pause from the window down to the job and back, closing safely."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from PySide6.QtCore import QPoint, Qt

from bcu_gui.app.worker import live_threads
from bcu_gui.core.events import Finished, Log, Paused, Resumed, Started, Step
from bcu_gui.core.job import CleanseJob

sys.path.insert(0, str(Path(__file__).parent))
from app_helpers import open_demo_for_test  # noqa: E402
from test_app_worker import fake_summary  # noqa: E402

RUN_TIMEOUT = 90_000


class PauseProbe(CleanseJob):
    """The real job, noting every pause / resume call it receives (the last link of the wiring)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[str] = []

    def pause(self) -> None:
        self.calls.append("pause")
        super().pause()

    def resume(self) -> None:
        self.calls.append("resume")
        super().resume()


def test_pause_goes_from_the_window_through_the_runner_to_the_job_and_back(qtbot, window):
    """Every link counts: the Pause button (window) -> JobRunner -> JobWorker -> CleanseJob.pause, and the
    job's Paused event -> worker -> runner -> RunView.handle. Break any one and this fails."""
    w = window
    open_demo_for_test(qtbot, w, epochs=200, batch=8)
    jobs: list[PauseProbe] = []
    w.run_view.job_factory = lambda cfg, model: jobs.append(PauseProbe(cfg, model=model)) or jobs[-1]
    seen = []
    w.run_view.runner.event.connect(seen.append)
    steps = lambda: [e.step for e in seen if isinstance(e, Step)]  # noqa: E731
    assert w.start_run()
    qtbot.waitUntil(lambda: len(steps()) >= 2, timeout=RUN_TIMEOUT)

    w.run_panel.pause_button.click()
    assert jobs[0].calls == ["pause"] and jobs[0].paused  # window -> runner -> worker -> job
    assert w.run_panel.pause_button.text() == "Resume"
    qtbot.waitUntil(lambda: any(isinstance(e, Paused) for e in seen), timeout=10_000)  # job -> view
    paused = next(e for e in seen if isinstance(e, Paused))
    assert w.run_panel.progress.format().endswith("· paused")
    assert any(f"paused at step {paused.step}" in line for line in w.log_pane.lines())
    qtbot.wait(400)
    assert max(steps()) <= paused.step  # no batch runs while paused

    w.run_panel.pause_button.click()
    assert jobs[0].calls == ["pause", "resume"] and not jobs[0].paused
    qtbot.waitUntil(lambda: any(isinstance(e, Resumed) for e in seen), timeout=10_000)
    qtbot.waitUntil(lambda: max(steps()) > paused.step, timeout=RUN_TIMEOUT)
    assert "paused" not in w.run_panel.progress.format()

    with qtbot.waitSignal(w.run_view.run_finished, timeout=30_000):
        w.run_panel.stop_button.click()
    qtbot.waitUntil(lambda: not w.run_view.is_running, timeout=10_000)


def test_the_run_actions_are_in_view_at_1280x800_and_have_shortcuts(qtbot, window):
    w = window
    open_demo_for_test(qtbot, w, epochs=1)
    assert w.size().width() == 1280 and w.size().height() == 800
    assert not w.left_scroll.isAncestorOf(w.run_panel)  # the run bar does not scroll away
    frame = w.rect()
    for widget in (w.run_panel.start_button, w.run_panel.pause_button, w.run_panel.stop_button,
                   w.run_panel.progress, w.run_panel.save_button):
        assert widget.isVisible()
        top_left = widget.mapTo(w, QPoint(0, 0))
        assert frame.contains(top_left) and frame.contains(top_left + QPoint(widget.width(), widget.height()))
    rv = w.run_view
    assert rv.start_action.shortcut().toString() == "F5"
    assert rv.pause_action.shortcut().toString() == "F6"
    assert rv.stop_action.shortcut().toString() == "Shift+F5"
    assert "F5" in w.run_panel.start_button.toolTip()
    menus = {a.text().replace("&", ""): a.menu() for a in w.menuBar().actions()}
    assert [a.text() for a in menus["Run"].actions()] == ["Start cleansing", "Pause", "Stop", "",
                                                           "&Scan for a backdoor"]

    w.activateWindow()
    qtbot.waitUntil(w.isActiveWindow, timeout=5_000)
    with qtbot.waitSignal(rv.run_finished, timeout=RUN_TIMEOUT):
        qtbot.keyClick(w.left_scroll, Qt.Key.Key_F5)  # the shortcut works wherever the focus is
        assert rv.is_running
    qtbot.waitUntil(lambda: not rv.is_running, timeout=10_000)


def test_every_config_field_comes_from_a_panel(qtbot, window, tmp_path):
    w = window
    open_demo_for_test(qtbot, w)
    w.reinit_panel.seed_spin.setValue(5)
    w.reinit_panel.set_ratio("layer4", 0.5)
    cfg = w.build_config()
    assert cfg.seed == 5 and cfg.preset == "custom" and cfg.ratios["layer4"] == 0.5 and len(cfg.ratios) == 6
    assert Path(cfg.out).parent == tmp_path / "runs" and Path(cfg.out).name.endswith("-demo")
    fields = {}
    for panel in (w.model_panel, w.data_panel, w.reinit_panel, w.training_panel):
        fields.update(panel.config_fields())
    automatic = {"memory_budget", "cache_dir", "eval_every", "eval_subset"}  # chosen from set sizes; CLI options
    # the unlearning term: on or off in the app (the Re-initialise panel's box); its tuning is a CLI matter
    experimental = {"adv_eps", "adv_mode", "adv_step", "adv_restart", "adv_until"}
    assert {k for k in fields} == {k for k in cfg.to_dict()} - {"momentum", "weight_decay", "crop_padding",
                                                               "channels_last", "ema_decay", "feature_sample"} - automatic - experimental


class StubbornJob:
    """Honours cancel only once ``gate`` opens: a run still saving when the window's wait runs out."""

    def __init__(self, gate: threading.Event) -> None:
        self.gate, self.cancelled = gate, False

    def events(self):
        yield Log(message="loading")
        yield Started(epochs=1, steps_per_epoch=1, images=2, device="cpu", teacher_acc=None, teacher_asr=None,
                      reinit_counts={}, reinit_totals={}, run_dir="/tmp/x")
        self.gate.wait(30)
        yield Finished(summary=fake_summary(cancelled=self.cancelled))

    def pause(self): ...
    def resume(self): ...

    def cancel(self):
        self.cancelled = True


def test_closing_when_the_stop_outlasts_the_wait_leaves_no_thread_and_closes_later(qtbot, window, messages):
    w = window
    open_demo_for_test(qtbot, w)
    gate = threading.Event()
    w.run_view.job_factory = lambda cfg, model: StubbornJob(gate)
    w.close_wait_ms = 50
    assert w.start_run()
    assert not w.close()  # asked, stopped, waited 50 ms: the run is still saving
    assert messages.kinds() == ["question"]
    assert w.isVisible() and w.run_view.is_running and len(live_threads()) == 1
    assert "still saving" in w.statusBar().currentMessage()
    gate.set()
    qtbot.waitUntil(lambda: not w.isVisible(), timeout=10_000)  # closes itself once the thread has ended
    assert live_threads() == [] and messages.kinds() == ["question"]  # and does not ask again


def test_the_run_bar_says_while_other_programs_slow_the_run(qtbot, window):
    from bcu_gui.core.events import CpuShare

    w = window
    busy = CpuShare(message="the machine is busy: ...", level="warning", threads=1, cpus=2, others=1.3,
                    contended=True)
    w.run_view.handle(busy)
    assert not w.run_panel.cpu_label.isHidden()
    assert "1.3 of 2 CPUs" in w.run_panel.cpu_label.text() and "1 thread," in w.run_panel.cpu_label.text()
    assert any("the machine is busy" in line for line in w.log_pane.lines())
    w.run_view.handle(CpuShare(message="CPU threads: 2 of 2 CPUs", threads=2, cpus=2, others=0.1))
    assert w.run_panel.cpu_label.isHidden()
