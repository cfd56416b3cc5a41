"""The scan view and the run's scan, driven through the real window: Scan -> bars + verdict + trigger images,
cancel, "use as triggered set" filling the data panel, and a run that scans before and after (proxy-ASR curve,
both verdicts in the result box)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from bcu_gui.app.worker import live_threads
from bcu_gui.core.scan import ProbeSettings, ScanConfig

sys.path.insert(0, str(Path(__file__).parent))
from app_helpers import open_demo_for_test  # noqa: E402

# Small enough for seconds on two cores, large enough to find the demo's patch (class 0)
QUICK = ScanConfig(fit_images=100, measure_images=100, settings=ProbeSettings(steps=40))


def test_scan_shows_bars_verdict_and_trigger_then_feeds_the_data_panel_and_a_scanning_run(qtbot, window):
    w = window
    open_demo_for_test(qtbot, w, epochs=1)
    sv = w.scan_view
    sv.config = QUICK
    assert sv.scan_action.isEnabled() and w.scan_run_button.isEnabled()
    assert not w.training_panel.scan_check.isChecked()  # the demo has a triggered folder: real ASR is there
    with qtbot.waitSignal(sv.scan_finished, timeout=120_000) as done:
        sv.scan_action.trigger()
        assert w.view_tabs.currentWidget() is sv.widget and sv.cancel_button.isVisible()
        assert not w.run_panel.start_button.isEnabled()  # no run while the scan holds the inputs
    result = done.args[0]
    qtbot.waitUntil(lambda: not sv.is_running, timeout=10_000)
    assert len(sv.chart.scores) == 10 and sv.chart.threshold_line.isVisible()
    assert result.suspected_class == 0, result.to_dict()
    assert sv.chart.highlighted == 0 and max(sv.chart.scores) == sv.chart.scores[0]
    assert "Backdoor suspected: class 0" in sv.verdict_label.text()
    shown = [label for label in sv.image_labels if label.isVisible()]
    # mask + pattern + 4 stamped, or perturbation + 4 stamped: the deciding probe is the one with the smaller
    # p-value since the calibrated verdict, and on this quick scan that can be either
    assert len(shown) in (5, 6) and all(not label.pixmap().isNull() for label in shown)

    # one click: the recovered trigger becomes the triggered evaluation set
    w.data_panel.set_folders(w.data_panel.unlabeled_path(), w.data_panel.clean_path(), None, None)
    folder = sv.make_triggered_set()
    assert folder is not None and len(list(folder.glob("*.png"))) > 10
    assert w.data_panel.triggered_path() == str(folder) and w.data_panel.target_class() == 0

    # a run that scans: the teacher's result is reused, the proxy ASR plots, both verdicts are shown
    w.run_view.scan_config = QUICK
    w.training_panel.scan_check.click()
    assert w.training_panel.scan_enabled()
    qtbot.waitUntil(lambda: not w.data_panel.is_checking() and not w.missing_inputs(), timeout=20_000)
    with qtbot.waitSignal(w.run_view.run_finished, timeout=180_000) as finished:
        assert w.start_run()
    summary = finished.args[0].summary
    proxy = w.run_view.epochs_plot.proxy_values()
    assert len(proxy) == 1 and not math.isnan(proxy[0])
    assert len(w.run_view.epochs_plot.curves["proxy"].getData()[1]) == 1
    assert w.run_view.epochs_plot.teacher_lines["proxy"].isVisible()
    assert summary.teacher_scan.suspected_class == 0 and summary.cleansed_scan is not None
    text = w.run_view.summary.text()
    assert "Scan: teacher" in text and "Scan: cleansed" in text and "suspected class 0" in text
    assert not any("scan of the model before cleansing" in line for line in w.log_pane.lines())  # reused
    assert any("scan of the cleansed model" in line for line in w.log_pane.lines())


def test_a_scan_can_be_cancelled_and_leaves_no_thread(qtbot, window):
    w = window
    open_demo_for_test(qtbot, w)
    sv = w.scan_view
    sv.config = ScanConfig(settings=ProbeSettings(steps=3000))
    with qtbot.waitSignal(sv.running_changed, timeout=10_000):
        assert sv.start_from_inputs()
    qtbot.waitUntil(lambda: sv.progress.value() > 0, timeout=60_000)
    with qtbot.waitSignal(sv.running_changed, timeout=30_000) as ended:
        sv.cancel_button.click()
    assert ended.args == [False]
    assert sv.result is None and "cancelled" in sv.verdict_label.text()
    assert sv.scan_action.isEnabled() and not live_threads()


def test_scan_time_left_is_said_once_there_is_enough_to_go_on():
    from bcu_gui.app.scan_view import scan_time_left

    assert scan_time_left(1.0, 0.5) == ""  # too early to say
    assert scan_time_left(30.0, 0.01) == ""
    assert scan_time_left(30.0, 0.25) == " · 1:30 left"
