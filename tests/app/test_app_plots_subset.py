"""Subset estimates on the epochs plot: hollow points with a legend note; full-set points solid; skipped epochs absent."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg

from bcu_gui.app.plots import ACC_COLOR, ASR_COLOR, EpochsPlot


def _fills(curve) -> list[tuple[int, int, int]]:
    """The fill colour of each drawn symbol of a curve, as the scatter item holds it."""
    return [p.brush().color().getRgb()[:3] for p in curve.scatter.points()]


def _legend_names(plot: EpochsPlot) -> list[str]:
    return [label.text for _, label in plot.legend.items]


def test_subset_points_are_hollow_and_the_final_full_point_is_solid(qtbot):
    plot = EpochsPlot()
    qtbot.addWidget(plot)
    plot.start_run(4, 0.99, 1.0)
    plot.add_epoch(1, None, None, None, scope="none", note="not evaluated this epoch")
    plot.add_epoch(2, 0.8, 0.3, 0.8, scope="subset", note="estimate on 500 clean + 450 triggered images")
    plot.add_epoch(3, 0.85, 0.1, 0.85, scope="subset", note="estimate on 500 clean + 450 triggered images")
    plot.add_epoch(4, 0.9, 0.05, 0.9, scope="full")
    plot.flush()
    x, y = plot.curves["acc"].getData()
    assert list(x) == [2, 3, 4] and np.allclose(y, [80, 85, 90])  # the skipped epoch leaves no point
    white = (255, 255, 255)
    acc = pg.mkColor(ACC_COLOR).getRgb()[:3]
    asr = pg.mkColor(ASR_COLOR).getRgb()[:3]
    assert _fills(plot.curves["acc"]) == [white, white, acc]
    assert _fills(plot.curves["asr"]) == [white, white, asr]
    assert plot.subset_epochs() == [2, 3]
    assert "hollow: estimate on a subset" in _legend_names(plot)
    assert "estimate on 500 clean + 450 triggered images" in plot._hover_text(2.1)[2]
    assert "estimate" not in plot._hover_text(4.0)[2]

    plot.start_run(2, 0.99, 1.0)  # a new run starts without the note until it has estimates of its own
    plot.add_epoch(1, 0.9, 0.1, 0.9)
    plot.flush()
    assert "hollow: estimate on a subset" not in _legend_names(plot)
    assert _fills(plot.curves["acc"]) == [acc]
