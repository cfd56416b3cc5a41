"""The plots: throttled redraws, smoothing that keeps the raw values, and hover values."""

from __future__ import annotations

import numpy as np
import pytest

from bcu_gui.app.plots import EpochsPlot, LossPlot


def test_loss_plot_throttles_redraws_and_recomputes_smoothing_from_raw(qtbot):
    plot = LossPlot()
    qtbot.addWidget(plot)
    for step in range(1, 2001):
        plot.add_step(step, 1.0 / step)
    assert plot.redraws == 0  # 2000 steps, not one redraw yet: the timer decides
    qtbot.waitUntil(lambda: plot.redraws >= 1, timeout=2000)
    assert plot.redraws == 1
    x, y = plot.raw_curve.getData()
    assert len(x) == 2000 and y[0] == 1.0

    plot.set_smoothing(0.0)
    assert np.allclose(plot.smoothed_values(), plot.raw_values())
    plot.set_smoothing(0.99)
    assert plot.smoothed_values()[-1] > plot.raw_values()[-1]  # lags behind a falling loss
    assert len(plot.raw_values()) == 2000
    assert plot.smooth_slider.value() == pytest.approx(0.99)
    plot.smooth_slider.setValue(0.0)  # as a drag would: the labelled slider drives the smoothing
    assert np.allclose(plot.smoothed_values(), plot.raw_values())
    text = plot._hover_text(10.2)[2]
    assert "step 10" in text and "loss 0.1000" in text


def test_epochs_plot_shows_teacher_lines_references_and_hover_values(qtbot):
    plot = EpochsPlot()
    qtbot.addWidget(plot)
    plot.start_run(3, 0.99, 1.0)
    plot.add_epoch(1, 0.5, 0.2, 0.5)
    plot.add_epoch(2, 0.9, 0.05, 0.9)
    plot.flush()
    assert plot.acc_values() == [50.0, 90.0] and plot.asr_values() == [20.0, 5.0]
    assert plot.teacher_lines["asr"].value() == 100.0 and plot.teacher_lines["acc"].isVisible()
    assert "epoch 2" in plot._hover_text(1.8)[2] and "ASR 5.0%" in plot._hover_text(1.8)[2]
    plot.keep_as_reference("strong run")
    plot.start_run(3, 0.99, 1.0)
    assert plot.acc_values() == [] and len(plot.reference_curves) == 2
    plot.add_epoch(1, None, 0.5, 0.7)  # no clean folder: ACC is missing, not zero
    plot.flush()
    assert np.isnan(plot.acc_values()[0])
    assert len(plot.curves["acc"].getData()[0] or []) == 0
