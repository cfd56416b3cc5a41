"""The scan view: look for a backdoor in the loaded model with the unlabelled images only (no trigger).

A sibling of the run view. It owns the Scan action, runs the core's scan in a background task (cancellable,
with progress), and shows the result: a bar per class of how many times smaller than the median its
recovered trigger is (or, for the margin probe, how many times larger its margin is: the deciding probe's
scores), a line at the score the top class needed to stand out at the chosen false-alarm rate, the suspected
class in red; the recovered trigger as images (mask and pattern, or the perturbation, and stamped examples); the
verdict sentence. "Use as triggered set" writes the stamped held-out images into a new folder and asks the
window (``use_as_triggered``) to fill the data panel's triggered folder and target class with it.

The last result is kept with what it was computed from (model file, image folder), so a run with
"Scan before and after" on the same inputs reuses it instead of scanning the teacher twice.
"""

from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pyqtgraph as pg
import torch
from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QAction, QImage, QKeySequence, QPixmap
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QProgressBar, QPushButton, QSizePolicy, QVBoxLayout,
                               QWidget)

from ..core.data import load_unlabeled
from ..core.devices import plan_compute
from ..core.errors import BcuError
from ..core.models import LoadedModel
from ..core.runfolder.writer import default_runs_root
from ..core.scan import (ScanConfig, ScanFinished, ScanProgress, ScanResult, format_p, format_rate, run_scan,
                         split_images, stamp, write_triggered_set)
from . import dialogs
from .log_pane import LogPane
from .panels.run_panel import duration
from .plain import NAME_LIMIT, html_text
from .worker import BackgroundTask, run_task

SCAN_KEYS = (QKeySequence("Ctrl+Shift+S"),)
SCAN_IMAGES = 400  # as `bcu scan`'s default --limit
EXAMPLES = 4
THUMB = 96
BAR_COLOR, SUSPECT_COLOR, THRESHOLD_COLOR = "#90a4ae", "#c62828", "#ef6c00"


def class_scores(result: ScanResult) -> list[float]:
    """Per class: the deciding probe's score (times the median class; the top class's score is the scan's
    anomaly index). For trigger probes that is the median trigger size over that class's size, and a class
    that never flipped scores 0."""
    report = next(r for r in result.probes if r.kind == result.probe)
    if report.scores and report.kind == "margin":
        return list(report.scores)
    sizes = [s for s in report.sizes if s is not None and s > 0]
    if not sizes:
        return [0.0] * len(report.sizes)
    median = statistics.median([s if s is not None and s > 0 else max(sizes) for s in report.sizes])
    return [0.0 if s is None or s <= 0 else median / s for s in report.sizes]


def _pixmap(chw: torch.Tensor, size: int = THUMB) -> QPixmap:
    """[C, H, W] float in [0, 1] as a square pixmap, enlarged without smoothing (the pixels are the point)."""
    arr = np.ascontiguousarray((chw.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy())
    if arr.shape[2] == 1:
        arr = np.ascontiguousarray(np.repeat(arr, 3, axis=2))
    h, w, _ = arr.shape
    image = QImage(arr.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
    return QPixmap.fromImage(image).scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio,
                                           Qt.TransformationMode.FastTransformation)


class ScanChart(QWidget):
    """Bars of the per-class anomaly score, the threshold as a dashed line, the suspected class in red."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.plot_widget = pg.PlotWidget(background="w")
        self.plot = self.plot_widget.getPlotItem()
        self.plot.setTitle("How far each class stands out (times the median class)", size="10pt")
        self.plot.setLabel("bottom", "class")
        self.plot.setLabel("left", "anomaly score (× smaller)")
        self.plot.showGrid(y=True, alpha=0.2)
        self.plot.setMouseEnabled(False, False)
        self.plot.hideButtons()
        self.bars = pg.BarGraphItem(x=[], height=[], width=0.7, brushes=[])
        self.plot.addItem(self.bars)
        self.threshold_line = pg.InfiniteLine(angle=0, movable=False, label="threshold",
                                              labelOpts={"position": 0.92, "color": THRESHOLD_COLOR},
                                              pen=pg.mkPen(THRESHOLD_COLOR, width=2, style=Qt.PenStyle.DashLine))
        self.threshold_line.setVisible(False)
        self.plot.addItem(self.threshold_line)
        self.scores: list[float] = []
        self.highlighted: int | None = None
        self._value_labels: list[pg.TextItem] = []
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot_widget)

    def show_result(self, result: ScanResult) -> None:
        """Bars for ``result``. A backdoored class can score 80x while the others sit near 1 and the threshold
        at 2: the axis is cut above the ordinary classes and the threshold, and a bar that runs past the cut
        is drawn to it with its value written on top."""
        self.scores = class_scores(result)
        self.highlighted = result.suspected_class
        n = len(self.scores)
        ordered = sorted(self.scores)
        cut = max(result.threshold * 2.5, (ordered[-2] if n > 1 else ordered[-1]) * 1.5)
        heights = [min(v, cut * 0.8) for v in self.scores]
        brushes = [pg.mkBrush(SUSPECT_COLOR if k == result.suspected_class else BAR_COLOR) for k in range(n)]
        self.bars.setOpts(x=np.arange(n), height=np.array(heights), width=0.7, brushes=brushes)
        for item in self._value_labels:
            self.plot.removeItem(item)
        self._value_labels = []
        for k, value in enumerate(self.scores):
            if value > cut * 0.8:
                label = pg.TextItem(f"{value:.1f}×", color=SUSPECT_COLOR, anchor=(0.5, 1.0))
                label.setPos(k, cut * 0.8)
                self.plot.addItem(label)
                self._value_labels.append(label)
        self.threshold_line.label.setFormat(f"needed at {format_rate(result.false_alarm)} false alarms: "
                                            f"{result.threshold:.2f}")
        self.threshold_line.setValue(result.threshold)
        self.threshold_line.label.valueChanged()  # redraw the text even when the value itself did not change
        self.threshold_line.setVisible(True)
        self.plot.setYRange(0, cut, padding=0)
        self.plot.setXRange(-0.6, n - 0.4, padding=0)
        self.plot.getAxis("bottom").setTicks([[(k, str(k)) for k in range(n)]])

    def clear(self) -> None:
        self.scores, self.highlighted = [], None
        for item in self._value_labels:
            self.plot.removeItem(item)
        self._value_labels = []
        self.bars.setOpts(x=[], height=[], brushes=[])
        self.threshold_line.setVisible(False)


class ScanView(QObject):
    """The Scan action, its background task, and the result (chart, trigger images, verdict)."""

    use_as_triggered = Signal(str, int)  # folder, target class: for the data panel
    running_changed = Signal(bool)
    scan_finished = Signal(object)  # ScanResult
    show_requested = Signal()  # the window brings the view to the front

    def __init__(self, window: QWidget, log_pane: LogPane, status: Callable[[str], None]) -> None:
        super().__init__(window)
        self._window, self.log_pane, self._status = window, log_pane, status
        self.task: BackgroundTask | None = None
        self.result: ScanResult | None = None
        self.held_out: torch.Tensor | None = None  # the measure split: stamped examples, triggered sets
        self.source: tuple[str, str] | None = None  # (model file, image folder) the result belongs to
        self._model: LoadedModel | None = None
        self.config = ScanConfig()
        self._result_config: ScanConfig | None = None
        self.output_root: Callable[[], Path] = default_runs_root
        self.inputs: Callable[[], tuple[LoadedModel | None, str | None]] = lambda: (None, None)

        self.scan_action = QAction("&Scan for a backdoor", self)
        self.scan_action.setShortcuts(list(SCAN_KEYS))
        self.scan_action.setToolTip("Recover a trigger for every class from the unlabelled images and say whether "
                                    "one class stands out (no trigger or labels needed; Ctrl+Shift+S)")
        self.scan_action.triggered.connect(self.start_from_inputs)
        window.addAction(self.scan_action)

        self.widget = QWidget()
        self.verdict_label = QLabel("Scan the loaded model to see whether one class needs a suspiciously small "
                                    "trigger. Only the unlabelled images are used.")
        self.verdict_label.setWordWrap(True)
        self.verdict_label.setTextFormat(Qt.TextFormat.RichText)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setVisible(False)
        self._started_at = time.monotonic()
        self.scan_button = QPushButton("Scan")
        self.scan_button.clicked.connect(self.scan_action.trigger)
        self.cancel_button = QPushButton("Cancel scan")
        self.cancel_button.setVisible(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.use_button = QPushButton("Use as triggered set")
        self.use_button.setToolTip("Write the recovered trigger stamped on held-out images into a new folder and "
                                   "use it as the triggered folder (with the suspected class as target): the "
                                   "run then plots a real ASR")
        self.use_button.setEnabled(False)
        self.use_button.clicked.connect(self.make_triggered_set)
        self.chart = ScanChart()
        self.image_labels: list[QLabel] = []
        self.caption_labels: list[QLabel] = []
        images_row = QHBoxLayout()
        for _ in range(2 + EXAMPLES):
            cell = QVBoxLayout()
            picture, caption = QLabel(), QLabel()
            picture.setFixedSize(THUMB, THUMB)
            picture.setAlignment(Qt.AlignmentFlag.AlignCenter)
            picture.setStyleSheet("border: 1px solid #ccc; background: #fafafa;")
            caption.setAlignment(Qt.AlignmentFlag.AlignHCenter)
            caption.setStyleSheet("color: gray;")
            cell.addWidget(picture)
            cell.addWidget(caption)
            images_row.addLayout(cell)
            self.image_labels.append(picture)
            self.caption_labels.append(caption)
        images_row.addStretch(1)

        top = QHBoxLayout()
        top.addWidget(self.verdict_label, 1)
        for w in (self.progress, self.scan_button, self.cancel_button, self.use_button):
            top.addWidget(w)
        self.progress.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self.progress.setFixedWidth(250)  # 'perturbation probe · 45% · 1:20 left'
        layout = QVBoxLayout(self.widget)
        layout.addLayout(top)
        layout.addWidget(self.chart, 1)
        self.trigger_title = QLabel("<b>Recovered trigger</b>")
        layout.addWidget(self.trigger_title)
        layout.addLayout(images_row)
        self._show_images(None)

    # ------------------------------------------------------------------------------------------ state
    @property
    def is_running(self) -> bool:
        return self.task is not None

    def set_available(self, available: bool) -> None:
        """A model and an unlabelled folder are there, and no run holds the model."""
        self.scan_action.setEnabled(available and self.task is None)
        self.scan_button.setEnabled(available and self.task is None)

    def result_for(self, model: LoadedModel, folder: str, config: ScanConfig | None = None) -> ScanResult | None:
        """The last result when it was computed for this model file, image folder and config (else None)."""
        config = config or ScanConfig()
        if self.result is not None and self.source == (str(model.path), str(folder)) \
                and self._result_config == config:
            return self.result
        return None

    # ------------------------------------------------------------------------------------------ the scan
    def start_from_inputs(self) -> bool:
        model, folder = self.inputs()
        if model is None or not folder:
            dialogs.error(self._window, "Cannot scan", "open a model and choose an unlabelled image folder first")
            return False
        return self.start(model, folder)

    def start(self, model: LoadedModel, folder: str, device: str = "auto") -> bool:
        """Scan ``model`` with the images in ``folder`` in the background; False if a scan is running."""
        if self.task is not None:
            return False
        config, module, normalization = self.config, copy.deepcopy(model.module), model.normalization
        size, classes = model.input_size, model.num_classes

        def work(report):
            images = load_unlabeled(folder, size, limit=SCAN_IMAGES)
            if len(images) < 3:
                raise BcuError(f"a scan needs at least 3 readable images in {folder}, found {len(images)}")
            plan = plan_compute(device)
            result = run_scan(module, images.images, normalization, classes, config, plan, progress=report)
            return result, split_images(images.images, config)[1], module

        self._model = model
        self._result_config = config
        self.source = None
        self.result = self.held_out = None
        self.chart.clear()
        self._show_images(None)
        self.use_button.setEnabled(False)
        self.verdict_label.setText(f"Scanning {html_text(model.path.name)} with the images in "
                                   f"{html_text(folder, 2 * NAME_LIMIT)}…")
        self.progress.setValue(0)
        self.progress.setFormat("reading images…")
        self.progress.setVisible(True)
        self._started_at = time.monotonic()
        self.cancel_button.setVisible(True)
        self.scan_button.setVisible(False)
        self.log_pane.append_message(f"scan: {model.path.name} on {folder}")
        self.task = run_task(work, self)
        self.task.progress.connect(self._on_progress)
        self.task.result.connect(lambda value, f=folder: self._on_result(value, f))
        self.task.error.connect(self._on_error)
        self.task.ended.connect(self._on_ended)
        self.scan_action.setEnabled(False)
        self.running_changed.emit(True)
        self.show_requested.emit()
        self._status("Scanning…")
        return True

    def cancel(self) -> None:
        """Stop the scan at its next progress report (within a few optimiser steps)."""
        if self.task is not None:
            self.task.cancel()
            self.verdict_label.setText("Scan cancelled.")
            self.log_pane.append_message("scan cancelled", "warning")

    def _on_progress(self, event) -> None:
        if isinstance(event, ScanProgress):
            self.progress.setValue(int(event.fraction * 100))
            self.progress.setFormat(f"{event.probe} probe · %p%" + scan_time_left(
                time.monotonic() - self._started_at, event.fraction))

    def _on_result(self, value, folder: str) -> None:
        result, held_out, module = value
        self.result, self.held_out = result, held_out
        self._scanned_module = module
        self.source = (str(self._model.path), str(folder)) if self._model is not None else None
        self.show_result(result)
        self.log_pane.append_message(f"scan: {result.verdict_line()} ({result.seconds:.0f} s on {result.device})")
        self._status(f"Scan done: {result.verdict_line()}")
        self.scan_finished.emit(result)

    def _on_error(self, exc: BaseException) -> None:
        self.verdict_label.setText(f"<span style='color:#b00020'><b>The scan failed:</b> "
                                   f"{html_text(exc, limit=None)}</span>")
        self.log_pane.append_message(f"scan failed: {exc}", "error")
        dialogs.error(self._window, "Cannot scan", str(exc))

    def _on_ended(self) -> None:
        self.task = None
        self.progress.setVisible(False)
        self.cancel_button.setVisible(False)
        self.scan_button.setVisible(True)
        self.scan_action.setEnabled(True)
        self.running_changed.emit(False)

    def close(self, timeout_ms: int = 30_000) -> bool:
        """The window is closing: cancel and join the scan's thread."""
        if self.task is None:
            return True
        task = self.task
        task.cancel()
        ended = task.wait(timeout_ms)
        return ended

    # ------------------------------------------------------------------------------------------ showing
    def show_result(self, result: ScanResult) -> None:
        self.chart.show_result(result)
        rate, p = format_rate(result.false_alarm), format_p(result.p_value)
        how = ("its margin is" if result.probe == "margin" else "its trigger is")
        how += f" {result.anomaly_index:.1f}× {'larger' if result.probe == 'margin' else 'smaller'} than the median class's"
        if result.suspected_class is not None:
            text = (f"<span style='color:#b00020'><b>Backdoor suspected: class {result.suspected_class}.</b></span> "
                    f"{how[0].upper() + how[1:]} ({result.probe} probe); p = {p}, below the {rate} "
                    f"false-alarm rate.")
        else:
            text = (f"<span style='color:#2e7d32'><b>No class stands out</b></span> at a {rate} false-alarm rate "
                    f"(top class {result.top_class}: p = {p}; {how}).")
        text += ("<br><span style='color:gray'>p: how likely a clean model's most extreme class would be this "
                 "extreme. Only the top class is judged: a second bar past the line is measured against "
                 "classes that include the first, so it is not evidence on its own.</span>")
        text += (f"<br><span style='color:gray'>{result.fit_images} images fitted the triggers, "
                 f"{result.measure_images} others measured them; {result.seconds:.0f} s on "
                 f"{result.device}.</span>")
        self.verdict_label.setText(text)
        self._show_images(result)
        self.use_button.setEnabled(result.trigger is not None)

    def _show_images(self, result: ScanResult | None) -> None:
        for picture, caption in zip(self.image_labels, self.caption_labels):
            picture.clear()
            caption.setText("")
            picture.setVisible(False)
            caption.setVisible(False)
        trigger = result.candidate if result is not None else None
        self.trigger_title.setVisible(trigger is not None)
        if trigger is None:
            return
        self.trigger_title.setText(f"<b>Recovered trigger of class {trigger.target}</b>"
                                   + ("" if result.suspected_class is not None else
                                      " <span style='color:gray'>(the most anomalous class; below the "
                                      "threshold)</span>"))
        pictures: list[tuple[QPixmap, str]] = []
        if trigger.kind == "mask":
            pictures += [(_pixmap(trigger.mask), "mask"), (_pixmap(trigger.pattern), "pattern")]
        else:
            scale = max(float(trigger.pattern.abs().max()), 1e-6)
            pictures.append((_pixmap(0.5 + trigger.pattern / (2 * scale)), "perturbation (stretched)"))
        if self.held_out is not None:
            for img in stamp(self.held_out[:EXAMPLES], trigger):
                pictures.append((_pixmap(img.float() / 255), "stamped"))
        for (pixmap, text), picture, caption in zip(pictures, self.image_labels, self.caption_labels):
            picture.setPixmap(pixmap)
            caption.setText(text)
            picture.setVisible(True)
            caption.setVisible(True)

    # ------------------------------------------------------------------------------------- triggered set
    def make_triggered_set(self) -> Path | None:
        """Write the suspected class's trigger stamped on the held-out images into a new folder and hand it
        to the data panel (``use_as_triggered``); None (and a dialog) when that is not possible."""
        result = self.result
        if result is None or result.trigger is None or self.held_out is None:
            dialogs.error(self._window, "No trigger to use", "the last scan named no suspected class")
            return None
        stem = Path(self.source[0]).stem if self.source else "model"
        folder = Path(self.output_root()) / "scan-triggered" / (
            f"{stem}-class{result.trigger.target}-{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            files = write_triggered_set(folder, self.held_out, result.trigger,
                                        model=getattr(self, "_scanned_module", None),
                                        normalization=self._model.normalization if self._model else None)
        except (BcuError, OSError) as exc:
            dialogs.error(self._window, "Cannot write the triggered set", str(exc))
            return None
        self.log_pane.append_message(f"wrote {len(files)} stamped held-out images to {folder}; they are now the "
                                     f"triggered folder, target class {result.trigger.target}")
        self.use_as_triggered.emit(str(folder), result.trigger.target)
        return folder


def scan_time_left(elapsed: float, fraction: float) -> str:
    """' · 1:20 left' once enough of the scan (the bar runs over every probe) has passed to say."""
    if fraction < 0.03 or elapsed < 2:
        return ""
    return f" · {duration(elapsed / fraction * (1 - fraction))} left"
