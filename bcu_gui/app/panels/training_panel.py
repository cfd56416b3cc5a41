"""How the student is distilled: epochs, batch, learning rate, device, precision, where the run is written,
which student is kept, and the paper's ablations (hard labels, cosine period, flips, temperature range).

Values are remembered between sessions (``AppSettings.training``), except when the demo sets its own. The
batch size is "auto" unless the user picks one: the engine then chooses it from the unlabelled set's size
(``core/batching.py``), and the panel says which size and why, as soon as the folder's size is known.
"""

from __future__ import annotations

from typing import Any

import torch
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox, QHBoxLayout,
                               QLabel, QSpinBox, QWidget)

from ...core.batching import choose_batch_size
from ...core.devices import available_devices
from ...core.keep import KEEP_CHOICES, KEEP_HELP
from ...core.runfolder.writer import default_runs_root, new_run_dir
from ..settings import AppSettings
from .common import FolderField

PRECISION_CHOICES = (("auto", "auto (bf16 where the hardware supports it)"), ("fp32", "fp32"),
                     ("bf16", "bf16 mixed precision"))
KEEP_LABELS = {"last": "Last epoch", "best": "Best epoch (needs ASR)", "ema": "Moving average (EMA)",
               "proxy": "Lowest proxy ASR (needs a scan)"}
AUTO_BATCH = 1  # the batch spin box's minimum, shown as "auto"
AUTO_BATCH_NOTE = "auto: about 10 steps an epoch, between 16 and 256 images a batch"
FLIP_TIP = ("Random horizontal flips while distilling: right for natural photos, wrong for digits and traffic "
            "signs, whose mirror image is another symbol")


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
        self.batch_spin.setRange(AUTO_BATCH, 8192)
        self.batch_spin.setSpecialValueText("auto")
        self.batch_spin.setValue(AUTO_BATCH)
        self.batch_spin.setToolTip("Images an optimiser step sees; auto chooses it from the unlabelled set's size")
        self.batch_note = QLabel(AUTO_BATCH_NOTE)
        self.batch_note.setWordWrap(True)
        self.batch_note.setStyleSheet("color: palette(placeholder-text);")
        self._images: int | None = None
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
        # several GPUs: the run can be started as one DDP process per GPU (bcu cleanse --nproc N, via torchrun)
        self.gpus_spin = QSpinBox()
        self.gpus_spin.setRange(1, max(1, torch.cuda.device_count()))
        self.gpus_spin.setToolTip("Train on this many GPUs at once (one process per GPU, DistributedDataParallel); "
                                  "the batch size stays the global one. Pausing is not offered for such runs.")
        self.precision_combo = QComboBox()
        for key, label in PRECISION_CHOICES:
            self.precision_combo.addItem(label, key)
        self.limit_spin = QSpinBox()
        self.limit_spin.setRange(0, 10_000_000)
        self.limit_spin.setSpecialValueText("all")
        self.limit_spin.setToolTip("Use only the first N unlabelled images (in sorted order) for a quick try")
        self.output = FolderField("output", f"default: {default_runs_root()}", settings)
        self.output.setToolTip("Each run gets its own timestamped folder inside this one")
        self.keep_combo = QComboBox()
        for key in KEEP_CHOICES:
            self.keep_combo.addItem(KEEP_LABELS[key], key)
            self.keep_combo.setItemData(self.keep_combo.count() - 1, KEEP_HELP[key],
                                        Qt.ItemDataRole.ToolTipRole)
        self.keep_combo.setToolTip("Which student the run saves")
        self._available = {"last": True, "best": False, "ema": True, "proxy": False}
        self._apply_keep_availability()
        # the paper's ablations
        self.hard_labels = QCheckBox("Hard labels (teacher's top class, cross-entropy)")
        self.hard_labels.setToolTip("The paper's Table 5 ablation; the default distils the teacher's softened "
                                    "probabilities (KL divergence)")
        self.flip_check = QCheckBox("Horizontal flips")
        self.flip_check.setChecked(True)
        self.flip_check.setToolTip(FLIP_TIP)
        self.cosine_spin = QSpinBox()
        self.cosine_spin.setRange(0, 100_000)
        self.cosine_spin.setSpecialValueText("the run's epochs")
        self.cosine_spin.setSuffix(" epochs")
        self.cosine_spin.setToolTip("Period of the cosine learning-rate schedule; the BCU authors' code uses 100 "
                                    "whatever the epochs")
        self.temp_start = QDoubleSpinBox()
        self.temp_end = QDoubleSpinBox()
        for spin, value in ((self.temp_start, 1.0), (self.temp_end, 4.0)):
            spin.setDecimals(2)
            spin.setRange(0.05, 100.0)
            spin.setSingleStep(0.5)
            spin.setValue(value)
        self.temp_start.setToolTip("Distillation temperature at the start; it rises linearly to the end value")
        self.temp_end.setToolTip("Distillation temperature at the last epoch (not below the start)")
        self.temp_start.valueChanged.connect(lambda v: self.temp_end.setMinimum(v))
        self.temp_end.setMinimum(self.temp_start.value())
        temps = QWidget()
        row = QHBoxLayout(temps)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.temp_start)
        row.addWidget(QLabel("to"))
        row.addWidget(self.temp_end)
        # On by default while no triggered folder is given: then the scan's proxy ASR is the only evidence
        # that cleansing worked. With a triggered folder the real ASR says it, and the two scans (about a
        # minute on a CPU) are left to the user. A click by the user wins over the default from then on.
        self.scan_check = QCheckBox("Scan before and after (no trigger needed)")
        self.scan_check.setToolTip("Recover the model's trigger from the unlabelled images before the run, plot "
                                   "its proxy ASR every epoch and scan the cleansed model again at the end")
        self.scan_check.setChecked(True)
        self._scan_chosen = False
        self.scan_check.clicked.connect(self._on_scan_clicked)
        self.scan_check.toggled.connect(self.set_proxy_available)  # keep=proxy needs the scan's proxy ASR
        self._available["proxy"] = True  # the scan starts checked
        # On by default: on the demo it costs about a tenth of a second an epoch (README, "Feature space").
        self.features_check = QCheckBox("Feature space every epoch (penultimate layer)")
        self.features_check.setToolTip("Every epoch, project the penultimate-layer features of a fixed sample of "
                                       "clean and triggered images to 2-D (the Feature space tab); recorded in "
                                       "the run folder as features.npz")
        self.features_check.setChecked(True)

        form = QFormLayout(self)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("Epochs", self.epochs_spin)
        form.addRow("Batch size", self.batch_spin)
        form.addRow("", self.batch_note)
        form.addRow("Learning rate", self.lr_spin)
        form.addRow("Unlabelled limit", self.limit_spin)
        form.addRow("Device", self.device_combo)
        form.addRow("GPUs", self.gpus_spin)
        form.setRowVisible(self.gpus_spin, self.gpus_spin.maximum() > 1)  # hidden on machines with < 2 GPUs
        form.addRow("Precision", self.precision_combo)
        form.addRow("Output folder", self.output)
        form.addRow("Keep", self.keep_combo)
        form.addRow("Temperature", temps)
        form.addRow("Cosine period", self.cosine_spin)
        form.addRow("", self.hard_labels)
        form.addRow("", self.flip_check)
        form.addRow("", self.scan_check)
        form.addRow("", self.features_check)
        for w in (self.epochs_spin, self.batch_spin, self.lr_spin, self.limit_spin, self.cosine_spin,
                  self.temp_start, self.temp_end, self.gpus_spin):
            w.valueChanged.connect(self.changed)
        for c in (self.device_combo, self.precision_combo, self.keep_combo):
            c.currentIndexChanged.connect(self.changed)
        for box in (self.hard_labels, self.flip_check, self.features_check):
            box.toggled.connect(self.changed)
        self.output.changed.connect(self.changed)
        self.batch_spin.valueChanged.connect(self._update_batch_note)

    def processes(self) -> int:
        """How many GPUs (processes) the run uses: 1 unless the machine has several and the user chose more."""
        return self.gpus_spin.value() if self.gpus_spin.maximum() > 1 else 1

    # -- which students can be kept ---------------------------------------------------------------------------
    def set_asr_available(self, available: bool) -> None:
        """Keeping the best epoch ranks epochs by ASR: without a triggered folder it cannot be offered.

        Without ASR the scan is the only evidence that cleansing worked, so it is on by default then (until the
        user sets it).
        """
        if not self._scan_chosen:
            self.scan_check.setChecked(not available)
        self._available["best"] = available
        self._apply_keep_availability()

    def _on_scan_clicked(self) -> None:
        self._scan_chosen = True
        self.changed.emit()

    def scan_enabled(self) -> bool:
        """Whether the run scans the model before and after (not a CleanseConfig field: the app adds a hook)."""
        return self.scan_check.isChecked()

    def set_proxy_available(self, available: bool) -> None:
        """Keeping the lowest-proxy-ASR epoch needs a trigger scan attached to the run."""
        self._available["proxy"] = available
        self._apply_keep_availability()

    def _apply_keep_availability(self) -> None:
        model = self.keep_combo.model()
        for i in range(self.keep_combo.count()):
            model.item(i).setEnabled(self._available[self.keep_combo.itemData(i)])
        if not self._available.get(self.keep_combo.currentData(), False):
            self.keep_combo.setCurrentIndex(self.keep_combo.findData("last"))

    def can_keep(self, key: str) -> bool:
        """Whether the keep choice ``key`` is offered now (best needs ASR; proxy needs a scan)."""
        return self._available.get(key, False)

    def keep(self) -> str:
        key = self.keep_combo.currentData()
        return key if self._available.get(key, False) else "last"

    # -- the batch size the engine will use ---------------------------------------------------------------------
    def set_image_count(self, images: int | None) -> None:
        """The unlabelled set's usable size: the note under the batch size says what auto will choose."""
        self._images = images
        self._update_batch_note()

    def show_batch_choice(self, size: int, reason: str) -> None:
        """What a started run chose (the engine's own sentence)."""
        if size:
            self.batch_note.setText(reason)

    def _update_batch_note(self) -> None:
        requested = None if self.batch_spin.value() == AUTO_BATCH else self.batch_spin.value()
        if self._images is not None and self._images >= 2:
            self.batch_note.setText(choose_batch_size(self._images, requested).reason)
        else:
            self.batch_note.setText(AUTO_BATCH_NOTE if requested is None else f"batch size {requested}")

    def config_fields(self, run_label: str = "run") -> dict[str, Any]:
        """The CleanseConfig fields this panel stands for; ``out`` is a new run folder inside the output folder."""
        fields = self.values()
        root = fields.pop("output_root")
        return {**fields, "out": str(new_run_dir(root, run_label))}

    def values(self) -> dict[str, Any]:
        """What the widgets show (``output_root``: the folder the runs' own folders go into)."""
        return {
            "epochs": self.epochs_spin.value(),
            "batch_size": None if self.batch_spin.value() == AUTO_BATCH else self.batch_spin.value(),
            "lr": self.lr_spin.value(),
            "device": self.device_combo.currentData(),
            "precision": self.precision_combo.currentData(),
            "unlabeled_limit": self.limit_spin.value() or None,
            "keep": self.keep(),
            "hard_labels": self.hard_labels.isChecked(),
            "flip": self.flip_check.isChecked(),
            "feature_space": self.features_check.isChecked(),
            "cosine_period": self.cosine_spin.value() or None,
            "temperature_start": self.temp_start.value(),
            "temperature_rise": round(max(0.0, self.temp_end.value() - self.temp_start.value()), 6),
            "output_root": self.output.path() or None,
        }

    def set_values(self, values: dict[str, Any]) -> None:
        """Apply saved or demo values; anything malformed is ignored."""
        def as_int(v):
            return int(v)

        if "batch_size" in values and values["batch_size"] in (None, ""):
            self.batch_spin.setValue(AUTO_BATCH)  # a config's None: automatic
        for key, spin, cast in (("epochs", self.epochs_spin, as_int), ("batch_size", self.batch_spin, as_int),
                                ("batch", self.batch_spin, as_int), ("lr", self.lr_spin, float),
                                ("unlabeled_limit", self.limit_spin, as_int)):
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
        """What the next session restores. The batch is stored as ``batch`` (0: auto): the ``batch_size`` key
        of earlier versions held their fixed default of 256 and is not read back."""
        v = self.values()
        return {k: v[k] for k in ("epochs", "lr", "device", "precision")} | {
            "batch": v["batch_size"] or 0, "output_root": v["output_root"] or ""}
