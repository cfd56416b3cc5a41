"""The Feature space tab: where a fixed sample of images sits in the penultimate layer, epoch by epoch.

The paper's Figure 3, live. Clean images are dots coloured by class (their label, or the teacher's
prediction when the clean set is unlabelled), triggered images are black crosses. Epoch 0 is the teacher:
a backdoored teacher puts the triggered images in a cluster of their own beside the target class; as the
run cleanses the student, that cluster dissolves into the classes the images really show.

Frames come from the core (``core.feature_space``): live as ``FeatureFrame`` events, or read back from a run
folder's ``features.npz`` (``load_run``). The projection is the teacher's, fixed for the run, and so are the
axes here (the range of every frame so far), so a frame can be compared with any other; the slider scrubs
back through them, and while it sits on the newest frame it follows the run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSizePolicy, QSlider, QVBoxLayout, QWidget

from ..common import pct
from ..core.errors import BcuError
from ..core.events import FeatureFrame
from ..core.feature_space import load_frames
from .plain import html_text, plain

# Ten distinct colours (Tableau 10, the usual categorical palette); more classes cycle through hues.
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#79706e")
TRIGGERED_COLOR = (20, 20, 20, 190)
EMPTY_TEXT = ("No feature frames yet. Tick “Feature space every epoch” in Training and start a run: each "
              "epoch shows where clean and triggered images sit in the model's penultimate layer.")


def class_color(index: int, classes: int) -> pg.QtGui.QColor:
    if classes <= len(PALETTE):
        return pg.mkColor(PALETTE[index % len(PALETTE)])
    return pg.intColor(index, hues=classes, values=1, maxValue=230, minValue=150)


class FeatureView(QWidget):
    """A scatter of one feature frame, a slider over the frames, and a line saying what is shown."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.frames: list[FeatureFrame] = []
        self.index = -1
        # the plot and, to its right, the legend: outside the data, so it never hides a cluster
        self.plot_widget = pg.GraphicsLayoutWidget()
        self.plot_widget.setMinimumSize(300, 200)
        self.plot = self.plot_widget.addPlot(row=0, col=0)
        self.plot.setTitle("Penultimate-layer features (2-D projection fitted on the teacher)", size="10pt")
        self.plot.showGrid(x=True, y=True, alpha=0.15)
        self.plot.setMenuEnabled(True)  # Export… (PNG, CSV) from the context menu
        self.plot.hideAxis("left")  # the axes are principal directions: their numbers mean nothing to a reader
        self.plot.hideAxis("bottom")
        self.plot.vb.setMouseEnabled(x=True, y=True)
        self.plot.vb.disableAutoRange()
        self.legend = pg.LegendItem(labelTextSize="9pt", colCount=1)
        self.plot_widget.addItem(self.legend, row=0, col=1)
        self.plot_widget.ci.layout.setColumnStretchFactor(0, 1)
        self.legend.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)  # compact, at the top
        self.plot_widget.ci.layout.setAlignment(self.legend, Qt.AlignmentFlag.AlignTop)
        self.class_items: list[pg.ScatterPlotItem] = []
        # thin, slightly see-through crosses: where they land matters, and the classes under them stay legible
        self.triggered_item = pg.ScatterPlotItem(symbol="x", size=7, pen=pg.mkPen(TRIGGERED_COLOR, width=0.8),
                                                 brush=pg.mkBrush(TRIGGERED_COLOR), name="triggered")
        self.triggered_item.setZValue(3)
        self.plot.addItem(self.triggered_item)
        self.empty = pg.TextItem(color="#555", anchor=(0.5, 0.5))
        self.empty.setHtml(f"<div style='width:360px;text-align:center'>{EMPTY_TEXT}</div>")
        self.plot.addItem(self.empty, ignoreBounds=True)
        self.plot.setXRange(-1, 1)
        self.plot.setYRange(-1, 1)
        self._bounds: np.ndarray | None = None  # [xmin, xmax, ymin, ymax] of every frame so far

        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, 0)
        self.slider.setEnabled(False)
        self.slider.setToolTip("Scrub through the epochs (0 is the teacher); on the newest frame it follows the run")
        self.slider.valueChanged.connect(self.show_frame)
        self.epoch_label = QLabel("epoch –")
        self.epoch_label.setMinimumWidth(150)
        self.info = plain(QLabel(""))  # names folders and class names read from the run's features.npz
        self.info.setWordWrap(True)
        self.info.setStyleSheet("color: #444")
        row = QHBoxLayout()
        row.addWidget(QLabel("Epoch"))
        row.addWidget(self.slider, 1)
        row.addWidget(self.epoch_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 4)
        layout.addWidget(self.plot_widget, 1)
        layout.addLayout(row)
        layout.addWidget(self.info)

    # -- frames in ----------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every frame (a new run starts)."""
        self.frames, self.index, self._bounds = [], -1, None
        self.slider.blockSignals(True)
        self.slider.setRange(0, 0)
        self.slider.blockSignals(False)
        self.slider.setEnabled(False)
        for item in self.class_items:
            item.setData([], [])
        self.triggered_item.setData([], [])
        self.empty.setVisible(True)
        self.epoch_label.setText("epoch –")
        self.info.setText("")

    def add_frame(self, frame: FeatureFrame) -> None:
        """A new frame from a run; the view follows it unless the user scrubbed back to an older one."""
        if self.frames and frame.epoch <= self.frames[-1].epoch:  # a resumed run sends its frames again
            self.frames = [f for f in self.frames if f.epoch < frame.epoch]
            self._bounds = None
            for f in self.frames:
                self._grow_bounds(f)
        following = self.index < 0 or self.index == len(self.frames) - 1
        self.frames.append(frame)
        self._grow_bounds(frame)
        self.slider.blockSignals(True)
        self.slider.setRange(0, len(self.frames) - 1)
        self.slider.blockSignals(False)
        self.slider.setEnabled(len(self.frames) > 1)
        if following:
            self.slider.setValue(len(self.frames) - 1)
            self.show_frame(len(self.frames) - 1)
        self._fit_range()

    def set_frames(self, frames: list[FeatureFrame]) -> None:
        self.reset()
        for frame in frames:
            self.add_frame(frame)
        if frames:
            self.slider.setValue(len(frames) - 1)

    def load_run(self, run_dir: str | Path) -> bool:
        """Show the frames a run folder recorded; False (and a line saying why) when it has none."""
        try:
            record = load_frames(run_dir)
        except BcuError as exc:
            self.reset()
            self.info.setText(str(exc))
            return False
        if record is None or not record.epochs:
            self.reset()
            self.info.setText(f"{run_dir} has no feature frames: the run was made without the feature space.")
            return False
        self.set_frames(record.frames())
        return True

    # -- drawing ------------------------------------------------------------------------------------------
    def _grow_bounds(self, frame: FeatureFrame) -> None:
        pts = [p for p in (frame.clean, frame.triggered) if len(p)]
        if not pts:
            return
        xy = np.concatenate(pts)
        xy = xy[np.isfinite(xy).all(1)]
        if not len(xy):
            return
        lo, hi = np.percentile(xy, 0.5, axis=0), np.percentile(xy, 99.5, axis=0)  # a stray point cannot zoom out
        b = np.array([lo[0], hi[0], lo[1], hi[1]], dtype=np.float64)
        self._bounds = b if self._bounds is None else np.array(
            [min(self._bounds[0], b[0]), max(self._bounds[1], b[1]), min(self._bounds[2], b[2]),
             max(self._bounds[3], b[3])])

    def _fit_range(self) -> None:
        if self._bounds is not None:
            x0, x1, y0, y1 = (float(v) for v in self._bounds)
            self.plot.setXRange(x0, x1, padding=0.06)
            self.plot.setYRange(y0, y1, padding=0.06)

    def _ensure_class_items(self, frame: FeatureFrame) -> None:
        classes = np.asarray(frame.classes)
        count = int(classes.max()) + 1 if len(classes) else 0
        names = list(frame.class_names)
        if len(self.class_items) == count and all(
                item.name() == _class_label(i, names) for i, item in enumerate(self.class_items)):
            return
        for item in self.class_items:
            self.plot.removeItem(item)
            self.legend.removeItem(item)
        self.legend.removeItem(self.triggered_item)
        self.class_items = []
        for i in range(count):
            color = class_color(i, count)
            item = pg.ScatterPlotItem(symbol="o", size=6, pen=pg.mkPen(color.darker(130), width=0.6),
                                      brush=pg.mkBrush(color), name=_class_label(i, names))
            item.setZValue(2)
            self.plot.addItem(item)
            self.legend.addItem(item, item.name())
            self.class_items.append(item)
        self.legend.addItem(self.triggered_item, "triggered")

    def show_frame(self, index: int) -> None:
        """Draw frame ``index`` (0: the teacher)."""
        if not 0 <= index < len(self.frames):
            return
        self.index = index
        frame = self.frames[index]
        self._ensure_class_items(frame)
        classes = np.asarray(frame.classes)
        clean = np.asarray(frame.clean)
        present = np.zeros(len(self.class_items), bool)
        for i, item in enumerate(self.class_items):
            rows = clean[classes == i]
            present[i] = len(rows) > 0
            item.setData(rows[:, 0], rows[:, 1]) if len(rows) else item.setData([], [])
        trig = np.asarray(frame.triggered)
        self.triggered_item.setData(trig[:, 0], trig[:, 1]) if len(trig) else self.triggered_item.setData([], [])
        self.triggered_item.setVisible(len(trig) > 0)
        self.empty.setVisible(False)
        last = self.frames[-1].epochs or self.frames[-1].epoch
        self.epoch_label.setText("epoch 0 (teacher)" if frame.epoch == 0 else f"epoch {frame.epoch} of {last}")
        self.info.setText(self._describe(frame))

    def _describe(self, frame: FeatureFrame) -> str:
        colours = "label" if frame.class_source == "labels" else "the teacher's prediction (no labels)"
        parts = [f"{len(frame.clean)} clean images coloured by {colours}"]
        if len(frame.triggered):
            source = "the triggered folder" if frame.triggered_source == "folder" else \
                "the scan's recovered trigger stamped on clean images"
            parts.append(f"{len(frame.triggered)} triggered images (×) from {source}")
            if frame.at_target is not None and frame.target is not None:
                parts.append(f"in the model's own features, {pct(frame.at_target)} of them lie nearest class "
                             f"{frame.target}'s centre")
        else:
            parts.append("no triggered images (give a triggered folder, or scan the model)")
        return "; ".join(parts) + "."


def _class_label(index: int, names: list[str]) -> str:
    """A class's legend entry; its name comes from a file, and pyqtgraph's legend renders HTML: escaped."""
    name = names[index] if index < len(names) else str(index)
    return html_text(name if name == str(index) else f"{index} {name}", limit=40)
