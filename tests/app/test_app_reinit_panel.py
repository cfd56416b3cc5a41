"""Re-initialisation ratios: one row per layer group, presets, Custom on any edit, counts and the total line."""

from __future__ import annotations

import re

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLineEdit
from torch import nn

from bcu_gui.app.panels.reinit_panel import ReinitPanel
from bcu_gui.core.groups import PRESET_HELP, layer_groups, preset_ratios


def _total(panel) -> tuple[int, int, float]:
    m = re.fullmatch(r"randomising ([\d,]+) of ([\d,]+) weights, ([\d.]+)%", panel.total_label.text())
    assert m, panel.total_label.text()
    return int(m[1].replace(",", "")), int(m[2].replace(",", "")), float(m[3])


def test_moving_a_slider_updates_counts_and_total_and_switches_to_custom(window, demo_env, qtbot):
    w = window
    assert w.open_checkpoint(demo_env / "model.pt")
    panel = w.reinit_panel
    assert panel.preset() == "unlearn"  # the default: the paper's ratios and the unlearning term
    paper = preset_ratios("paper", panel.groups)
    assert panel.ratios() == paper
    chosen, total, share = _total(panel)
    assert total == sum(g.weight_count for g in panel.groups)
    assert chosen == sum(g.reinit_estimate(paper[g.name]) for g in panel.groups)

    layer4 = next(r for r in panel.rows if r.group.name == "layer4")
    layer4.slider.setValue(0.5)  # as a drag would
    assert panel.preset() == "custom"
    assert layer4.ratio() == 0.5
    assert layer4.reinit.text() == f"{layer4.group.reinit_estimate(0.5):,}"
    chosen2, _, share2 = _total(panel)
    assert chosen2 > chosen and share2 > share

    box = layer4.slider.findChild(QLineEdit)  # the labelled slider's exact box, as a user types in it
    box.selectAll()
    qtbot.keyClicks(box, "0.123")
    qtbot.keyClick(box, Qt.Key.Key_Return)
    assert layer4.slider.value() == pytest.approx(0.123) and layer4.ratio() == 0.123
    # recorded as 'custom' with every ratio (not 'none', which means nothing re-initialised)
    # the default preset (unlearn) turned the unlearning term on; Custom keeps it as it was
    assert panel.config_fields() == {"preset": "custom", "ratios": {**paper, "layer4": 0.123}, "seed": 0,
                                     "adversarial": 1.0}

    panel.set_preset("strong")
    assert all(v == 1.0 for v in panel.ratios().values())
    assert _total(panel)[2] == 100.0
    panel.seed_spin.setValue(7)
    assert panel.config_fields() == {"preset": "strong", "ratios": {}, "seed": 7, "adversarial": 0.0}
    assert not panel.unlearn_check.isChecked()  # a named preset says whether the term is on
    panel.set_preset("unlearn")
    assert panel.unlearn_check.isChecked() and panel.config_fields()["adversarial"] == 1.0


def test_presets_have_the_engines_help_as_tooltips(qtbot):
    panel = ReinitPanel()
    qtbot.addWidget(panel)
    from PySide6.QtCore import Qt

    names = [panel.preset_combo.itemText(i) for i in range(panel.preset_combo.count())]
    assert names == ["Unlearn", "Paper", "Strong", "Uniform", "Decreasing", "None", "Custom"]
    for i, key in enumerate(["unlearn", "paper", "strong", "uniform", "decreasing", "none"]):
        assert panel.preset_combo.itemData(i, Qt.ItemDataRole.ToolTipRole) == PRESET_HELP[key]


def test_a_model_that_is_not_a_resnet_gets_the_engines_grouping(qtbot):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 28 * 28, 10))
    panel = ReinitPanel()
    qtbot.addWidget(panel)
    panel.set_model(model)
    groups = layer_groups(model)
    assert [r.group.name for r in panel.rows] == [g.name for g in groups]
    assert not panel.placeholder.isVisibleTo(panel)
    assert _total(panel)[1] == sum(g.weight_count for g in groups)
