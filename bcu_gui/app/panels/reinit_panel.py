"""How much of the teacher the student forgets: one ratio per layer group, as the engine groups the model.

The rows come from ``core.groups.layer_groups`` (six for a ResNet: stem, layer1..4, head; whatever the
grouping gives for other models), top (input) to bottom (head). Each ratio is a superqt labelled slider: a slider and an editable exact value in
one widget, kept in sync by superqt (no hand-written slider/box pair);
each row shows its weight count and how many weights its ratio re-initialises, and a total line sums it up.
Touching any value turns the preset into Custom, so the combo always tells the truth about the ratios.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QGridLayout, QGroupBox, QLabel, QSpinBox,
                               QVBoxLayout, QWidget)
from superqt import QLabeledDoubleSlider

from ...core.groups import (CUSTOM_PRESET, DEFAULT_PRESET, PRESET_HELP, PRESET_NAMES, PRESET_TERM_WEIGHT, LayerGroup,
                            layer_groups, preset_ratios, resolve_ratios)
from ...core.errors import BcuError
from ..plain import plain, tip

CUSTOM_HELP = "your own ratios: drag a slider, or click its number and type an exact value"
CUSTOM = CUSTOM_PRESET  # the combo's Custom entry is recorded in the config under the same name


class _GroupRow:
    """The widgets of one layer group."""

    def __init__(self, group: LayerGroup) -> None:
        self.group = group
        self.name = plain(QLabel(group.name))  # named after the checkpoint's own keys
        self.name.setToolTip(tip(f"{len(group.params)} parameter tensors, from {group.params[0]} to "
                                 f"{group.params[-1]}"))
        self.slider = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0.0, 1.0)
        self.slider.setDecimals(3)
        self.slider.setSingleStep(0.01)
        self.slider.setMinimumWidth(150)
        self.slider.setToolTip(f"Share of {group.name}'s weights to re-initialise: drag, or click the number and "
                               "type an exact value")
        self.weights = QLabel(f"{group.weight_count:,}")
        self.weights.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.reinit = QLabel()
        self.reinit.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

    def set_ratio(self, ratio: float) -> None:
        self.slider.blockSignals(True)
        self.slider.setValue(ratio)
        self.slider.blockSignals(False)
        self.reinit.setText(f"{self.group.reinit_estimate(self.ratio()):,}")

    def ratio(self) -> float:
        return round(float(self.slider.value()), 3)


class ReinitPanel(QGroupBox):
    """Preset, per-group ratios and seed; ``changed`` fires on any change."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("3 · Re-initialise (student = teacher with a share of weights reset)", parent)
        self.groups: list[LayerGroup] = []
        self.rows: list[_GroupRow] = []

        self.preset_combo = QComboBox()
        for key in PRESET_NAMES:
            self.preset_combo.addItem(key.capitalize(), key)
            self.preset_combo.setItemData(self.preset_combo.count() - 1, PRESET_HELP[key],
                                          Qt.ItemDataRole.ToolTipRole)
        self.preset_combo.addItem("Custom", CUSTOM)
        self.preset_combo.setItemData(self.preset_combo.count() - 1, CUSTOM_HELP,
                                      Qt.ItemDataRole.ToolTipRole)
        self.preset_combo.currentIndexChanged.connect(self._on_preset_chosen)
        self.preset_help = QLabel()
        self.preset_help.setWordWrap(True)
        self.preset_help.setStyleSheet("color: gray;")
        self.unlearn_check = QCheckBox("Unlearn shortcuts while distilling")
        self.unlearn_check.setToolTip(
            "The adversarial consistency term (core/unlearning.py): the student must give the teacher's "
            "clean-image answer on images moved by the one small change that most easily sends them to a "
            "class. Removed backdoors that the paper's method keeps at real scale, at some accuracy and about "
            "twice the time per step. The Unlearn preset turns it on; the paper's method has it off.")
        self.unlearn_check.setChecked(PRESET_TERM_WEIGHT.get(DEFAULT_PRESET, 0.0) > 0)
        self.unlearn_check.toggled.connect(self.changed)
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.seed_spin.setToolTip("Seed of the re-initialisation masks and of training: same seed, same student")
        self.seed_spin.valueChanged.connect(self.changed)

        form = QFormLayout()
        form.addRow("Preset", self.preset_combo)
        form.addRow("", self.preset_help)
        form.addRow("", self.unlearn_check)

        self.grid = QGridLayout()
        self.grid.setHorizontalSpacing(8)
        self.grid.setVerticalSpacing(2)
        self.placeholder = QLabel("Open a model to see its layer groups.")
        self.placeholder.setStyleSheet("color: gray;")
        self.total_label = QLabel()
        bold = QFont(self.total_label.font())
        bold.setBold(True)
        self.total_label.setFont(bold)
        self.total_label.setWordWrap(True)

        seed_form = QFormLayout()
        seed_form.addRow("Seed", self.seed_spin)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.placeholder)
        layout.addLayout(self.grid)
        layout.addWidget(self.total_label)
        layout.addLayout(seed_form)
        self._update_help()

    # -- model -------------------------------------------------------------------------------------------
    def set_model(self, module) -> None:
        """Rebuild the rows for this model's layer groups, keeping the chosen preset (Custom falls back)."""
        try:
            groups = layer_groups(module)
        except BcuError:
            groups = []
        self._clear_rows()
        self.groups = groups
        self.placeholder.setVisible(not groups)
        if groups:
            for col, (text, align) in enumerate((("group", Qt.AlignmentFlag.AlignLeft),
                                                 ("ratio", Qt.AlignmentFlag.AlignLeft),
                                                 ("weights", Qt.AlignmentFlag.AlignRight),
                                                 ("reset", Qt.AlignmentFlag.AlignRight))):
                header = QLabel(f"<span style='color:gray'>{text}</span>")
                header.setAlignment(align)
                self.grid.addWidget(header, 0, col)
        for i, group in enumerate(groups, start=1):
            row = _GroupRow(group)
            row.slider.valueChanged.connect(lambda _v, r=row: self._user_edit(r))
            self.grid.addWidget(row.name, i, 0)
            self.grid.addWidget(row.slider, i, 1)
            self.grid.addWidget(row.weights, i, 2)
            self.grid.addWidget(row.reinit, i, 3)
            self.rows.append(row)
        self.grid.setColumnStretch(1, 1)
        preset = self.preset()
        self.set_preset(preset if preset != CUSTOM else DEFAULT_PRESET)

    def _clear_rows(self) -> None:
        while self.grid.count():
            item = self.grid.takeAt(0)
            if item.widget() is not None:
                item.widget().hide()
                item.widget().deleteLater()
        self.rows = []

    # -- presets and values ------------------------------------------------------------------------------
    def preset(self) -> str:
        return str(self.preset_combo.currentData())

    def set_preset(self, key: str) -> None:
        """Select a preset by name ('paper', 'strong', …) and apply its ratios."""
        index = self.preset_combo.findData(key)
        if index < 0:
            raise ValueError(f"unknown preset {key!r}")
        if index == self.preset_combo.currentIndex():
            self._on_preset_chosen(index)
        else:
            self.preset_combo.setCurrentIndex(index)

    def ratios(self) -> dict[str, float]:
        return {row.group.name: row.ratio() for row in self.rows}

    def set_ratio(self, group: str, value: float) -> None:
        """Set one group's ratio as the user would (switches the preset to Custom)."""
        for row in self.rows:
            if row.group.name == group:
                row.slider.setValue(value)
                return
        raise KeyError(group)

    def config_fields(self) -> dict:
        """``preset``, ``ratios`` and ``seed`` for CleanseConfig: a named preset, or 'custom' with every ratio."""
        if self.preset() == CUSTOM:
            return {"preset": CUSTOM_PRESET, "ratios": self.ratios(), "seed": self.seed_spin.value(),
                    "adversarial": self.adversarial()}
        return {"preset": self.preset(), "ratios": {}, "seed": self.seed_spin.value(),
                "adversarial": self.adversarial()}

    def adversarial(self) -> float:
        """The unlearning term's weight the check box stands for (the Unlearn preset's when on, else 0)."""
        return PRESET_TERM_WEIGHT.get(DEFAULT_PRESET, 1.0) if self.unlearn_check.isChecked() else 0.0

    def preset_label(self) -> str:
        """The preset as the combo shows it ('Strong', 'Custom')."""
        return self.preset_combo.currentText()

    def problem(self) -> str | None:
        """Why these ratios cannot run, or None (the engine's own validation, so both faces agree)."""
        if not self.groups:
            return None
        try:
            resolve_ratios(self.groups, "none", self.ratios())
        except BcuError as exc:
            return str(exc)
        return None

    def totals(self) -> tuple[int, int]:
        """(weights re-initialised by the current ratios, all weights in the groups)."""
        chosen = sum(r.group.reinit_estimate(r.ratio()) for r in self.rows)
        return chosen, sum(g.weight_count for g in self.groups)

    # -- reactions ---------------------------------------------------------------------------------------
    def _on_preset_chosen(self, _index: int) -> None:
        key = self.preset()
        if key != CUSTOM:  # a named preset says whether the term is on (Custom keeps the box as it is)
            self.unlearn_check.blockSignals(True)
            self.unlearn_check.setChecked(PRESET_TERM_WEIGHT.get(key, 0.0) > 0)
            self.unlearn_check.blockSignals(False)
        if key != CUSTOM and self.groups:
            ratios = preset_ratios(key, self.groups)
            for row in self.rows:
                row.set_ratio(ratios[row.group.name])
        self._update_help()
        self._update_total()
        self.changed.emit()

    def _user_edit(self, row: _GroupRow) -> None:
        row.reinit.setText(f"{row.group.reinit_estimate(row.ratio()):,}")
        if self.preset() != CUSTOM:
            self.preset_combo.blockSignals(True)
            self.preset_combo.setCurrentIndex(self.preset_combo.findData(CUSTOM))
            self.preset_combo.blockSignals(False)
            self._update_help()
        self._update_total()
        self.changed.emit()

    def _update_help(self) -> None:
        key = self.preset()
        text = PRESET_HELP.get(key, CUSTOM_HELP)
        self.preset_help.setText(text[0].upper() + text[1:] + ".")
        self.preset_combo.setToolTip(text)

    def _update_total(self) -> None:
        if not self.groups:
            self.total_label.setText("")
            return
        chosen, total = self.totals()
        share = chosen / total if total else 0.0
        self.total_label.setText(f"randomising {chosen:,} of {total:,} weights, {share:.1%}")
