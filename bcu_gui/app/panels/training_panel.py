"""How the student is distilled: epochs, batch, learning rate, device, precision, where the run is written.

Values are remembered between sessions (``AppSettings.training``), except when the demo sets its own.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox, QSpinBox,
                               QWidget)

from ...core.devices import available_devices
from ...core.runs import default_runs_root, new_run_dir
from ..settings import AppSettings
from .common import FolderField

PRECISION_CHOICES = (("auto", "auto (bf16 where the hardware supports it)"), ("fp32", "fp32"),
                     ("bf16", "bf16 mixed precision"))
KEEP_BEST_TIP = "Save the epoch with the lowest ASR whose ACC stays within 3 points of the teacher's"


class TrainingPanel(QGroupBox):
    """Training settings; ``values()`` gives the CleanseConfig fields they stand for."""

    changed = Signal()

    def __init__(self, settings: AppSettings, parent: QWidget | None = None) -> None:
        super().__init__("4 · Training", parent)
        self._settings = settings
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(1, 10_000)
        self.epochs_spin.setValue(100)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(2, 8192)
        self.batch_spin.setValue(256)
        self.lr_spin = QDoubleSpinBox()
        self.lr_spin.setDecimals(5)
        self.lr_spin.setRange(0.00001, 10.0)
        self.lr_spin.setSingleStep(0.001)
        self.lr_spin.setValue(0.01)
        self.lr_spin.setToolTip("SGD learning rate (momentum 0.9, cosine schedule)")
        self.device_combo = QComboBox()
        self.device_combo.addItem("auto (best available)", "auto")
        for device in available_devices():
            self.device_combo.addItem(device.label, device.id)
        self.precision_combo = QComboBox()
        for key, label in PRECISION_CHOICES:
            self.precision_combo.addItem(label, key)
        self.limit_spin = QSpinBox()
        self.limit_spin.setRange(0, 10_000_000)
        self.limit_spin.setSpecialValueText("all")
        self.limit_spin.setToolTip("Use only the first N unlabelled images (in sorted order) for a quick try")
        self.output = FolderField("output", f"default: {default_runs_root()}", settings)
        self.output.setToolTip("Each run gets its own timestamped folder inside this one")
        self.keep_best = QCheckBox("Keep the best epoch (needs ASR)")
        self.keep_best.setToolTip(KEEP_BEST_TIP)
        self.keep_best.setEnabled(False)
        # On by default while no triggered folder is given: then the scan's proxy ASR is the only evidence
        # that cleansing worked. With a triggered folder the real ASR says it, and the two scans (about a
        # minute on a CPU) are left to the user. A click by the user wins over the default from then on.
        self.scan_check = QCheckBox("Scan before and after (no trigger needed)")
        self.scan_check.setToolTip("Recover the model's trigger from the unlabelled images before the run, plot "
                                   "its proxy ASR every epoch and scan the cleansed model again at the end")
        self.scan_check.setChecked(True)
        self._scan_chosen = False
        self.scan_check.clicked.connect(self._on_scan_clicked)

        form = QFormLayout(self)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("Epochs", self.epochs_spin)
        form.addRow("Batch size", self.batch_spin)
        form.addRow("Learning rate", self.lr_spin)
        form.addRow("Unlabelled limit", self.limit_spin)
        form.addRow("Device", self.device_combo)
        form.addRow("Precision", self.precision_combo)
        form.addRow("Output folder", self.output)
        form.addRow("", self.keep_best)
        form.addRow("", self.scan_check)
        for w in (self.epochs_spin, self.batch_spin, self.lr_spin, self.limit_spin):
            w.valueChanged.connect(self.changed)
        for c in (self.device_combo, self.precision_combo):
            c.currentIndexChanged.connect(self.changed)
        self.output.changed.connect(self.changed)
        self.keep_best.toggled.connect(self.changed)

    def _on_scan_clicked(self) -> None:
        self._scan_chosen = True
        self.changed.emit()

    def scan_enabled(self) -> bool:
        """Whether the run scans the model before and after (not a CleanseConfig field: the app adds a hook)."""
        return self.scan_check.isChecked()

    def set_asr_available(self, available: bool) -> None:
        """Keeping the best epoch ranks epochs by ASR: without a triggered folder it cannot be offered."""
        if not self._scan_chosen:
            self.scan_check.setChecked(not available)
        self.keep_best.setEnabled(available)
        if not available:
            self.keep_best.setChecked(False)
        self.keep_best.setToolTip(KEEP_BEST_TIP if available else
                                  "Add a triggered folder and target class to measure ASR first")

    def config_fields(self, run_label: str = "run") -> dict[str, Any]:
        """The CleanseConfig fields this panel stands for; ``out`` is a new run folder inside the output folder."""
        fields = self.values()
        root = fields.pop("output_root")
        return {**fields, "out": str(new_run_dir(root, run_label))}

    def values(self) -> dict[str, Any]:
        """What the widgets show (``output_root``: the folder the runs' own folders go into)."""
        return {
            "epochs": self.epochs_spin.value(),
            "batch_size": self.batch_spin.value(),
            "lr": self.lr_spin.value(),
            "device": self.device_combo.currentData(),
            "precision": self.precision_combo.currentData(),
            "unlabeled_limit": self.limit_spin.value() or None,
            "keep": "best" if self.keep_best.isChecked() and self.keep_best.isEnabled() else "last",
            "output_root": self.output.path() or None,
        }

    def set_values(self, values: dict[str, Any]) -> None:
        """Apply saved or demo values; anything malformed is ignored."""
        def as_int(v):
            return int(v)

        for key, spin, cast in (("epochs", self.epochs_spin, as_int), ("batch_size", self.batch_spin, as_int),
                                ("lr", self.lr_spin, float), ("unlabeled_limit", self.limit_spin, as_int)):
            if key in values and values[key] not in (None, ""):
                try:
                    spin.setValue(cast(values[key]))
                except (TypeError, ValueError):
                    pass
            elif key == "unlabeled_limit" and key in values:
                self.limit_spin.setValue(0)
        for key, combo in (("device", self.device_combo), ("precision", self.precision_combo)):
            if key in values:
                index = combo.findData(str(values[key]))
                if index >= 0:
                    combo.setCurrentIndex(index)
        if "output_root" in values:
            self.output.set_path(str(values["output_root"] or ""))

    def remembered(self) -> dict[str, Any]:
        v = self.values()
        return {k: v[k] for k in ("epochs", "batch_size", "lr", "device", "precision")} | {
            "output_root": v["output_root"] or ""}
