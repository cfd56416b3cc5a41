"""The Feature space tab: frames arrive live during a real demo run, the slider scrubs back through them, and
a run folder's recorded frames open again."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from bcu_gui.app.feature_view import FeatureView
from bcu_gui.core.events import FeatureFrame

sys.path.insert(0, str(Path(__file__).parent))
from app_helpers import open_demo_for_test  # noqa: E402

RUN_TIMEOUT = 90_000


def test_a_demo_run_draws_a_frame_per_epoch_and_the_slider_scrubs_back(qtbot, window):
    w = window
    open_demo_for_test(qtbot, w, epochs=2)
    assert w.training_panel.features_check.isChecked()  # on by default
    view = w.run_view.feature_view
    assert w.view_tabs.indexOf(view) >= 0 and w.view_tabs.tabText(w.view_tabs.indexOf(view)) == "Feature space"
    with qtbot.waitSignal(w.run_view.run_finished, timeout=RUN_TIMEOUT) as finished:
        assert w.start_run()
    run_dir = finished.args[0].run_dir
    qtbot.waitUntil(lambda: not w.run_view.runner.is_running, timeout=10_000)
    w.view_tabs.setCurrentWidget(view)

    assert [f.epoch for f in view.frames] == [0, 1, 2]
    assert view.slider.isEnabled() and view.slider.maximum() == 2 and view.index == 2  # followed the run
    assert view.epoch_label.text() == "epoch 2 of 2"
    teacher = view.frames[0]
    assert teacher.class_source == "labels" and teacher.triggered_source == "folder" and teacher.target == 0
    assert len(view.class_items) == 10 and len(view.legend.items) == 11  # ten classes and the triggered set
    drawn = sum(len(item.getData()[0]) for item in view.class_items)
    assert drawn == len(view.frames[2].clean) and len(view.triggered_item.getData()[0]) == len(teacher.triggered)

    view.slider.setValue(0)  # scrub back to the teacher
    assert view.index == 0 and view.epoch_label.text() == "epoch 0 (teacher)"
    xs, ys = view.triggered_item.getData()
    assert np.allclose(xs, teacher.triggered[:, 0]) and np.allclose(ys, teacher.triggered[:, 1])
    assert "lie nearest class 0's centre" in view.info.text()

    # the run folder's record opens again in a fresh view, every frame as it was shown live
    other = FeatureView()
    qtbot.addWidget(other)
    assert other.load_run(run_dir)
    assert [f.epoch for f in other.frames] == [0, 1, 2] and other.index == 2
    assert np.array_equal(other.frames[1].clean, view.frames[1].clean)

    # reopening the run from the library (window.open_run) shows its frames in the window's own view
    view.reset()
    assert w.open_run(run_dir)
    assert [f.epoch for f in view.frames] == [0, 1, 2]


def test_a_scrubbed_view_stays_put_while_new_frames_arrive_and_a_folder_without_frames_says_so(qtbot, tmp_path):
    view = FeatureView()
    qtbot.addWidget(view)
    rng = np.random.default_rng(0)

    def frame(epoch: int) -> FeatureFrame:
        return FeatureFrame(epoch=epoch, epochs=5, clean=rng.normal(size=(12, 2)).astype(np.float32),
                            classes=np.arange(12) % 3, triggered=rng.normal(size=(4, 2)).astype(np.float32),
                            class_source="teacher", triggered_source="recovered trigger", target=1,
                            at_target=0.5)

    for e in range(3):
        view.add_frame(frame(e))
    assert view.index == 2
    view.slider.setValue(1)
    view.add_frame(frame(3))
    assert view.index == 1 and view.slider.maximum() == 3  # the user's choice of frame is kept
    assert "teacher's prediction" in view.info.text() and "recovered trigger" in view.info.text()
    view.slider.setValue(3)
    view.add_frame(frame(4))
    assert view.index == 4  # back on the newest frame, it follows again
    assert not view.load_run(tmp_path)
    assert "no feature frames" in view.info.text() and view.frames == [] and not view.slider.isEnabled()
