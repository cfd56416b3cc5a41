"""Live plots of a run: the distillation loss per step, and ACC / ASR / agreement per epoch.

One ``PlotDataItem`` per curve, fed with ``setData`` from NumPy buffers that grow by doubling, so an update
costs one copy of a view, never a rebuild of the plot. Redraws are throttled by a single-shot timer (at most
every ``REDRAW_MS``), so a fast run on a GPU cannot flood the event loop. pyqtgraph's own context menu
(right click, Export…) stays available for PNG/CSV export, and hovering shows exact values.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, QTimer
from PySide6.QtWidgets import QHBoxLayout, QLabel, QVBoxLayout, QWidget
from superqt import QLabeledDoubleSlider

REDRAW_MS = 100
ACC_COLOR, ASR_COLOR, AGREE_COLOR = "#2e7d32", "#c62828", "#607d8b"
PROXY_COLOR = "#ef6c00"  # proxy ASR: the scan's recovered trigger, next to (or instead of) the real ASR
LOSS_COLOR, LOSS_RAW_COLOR = "#1565c0", (21, 101, 192, 110)

pg.setConfigOptions(antialias=True, background="w", foreground="#222")


class GrowingSeries:
    """x/y float buffers with amortised O(1) append; ``x``/``y`` are views of the filled part."""

    def __init__(self, capacity: int = 256) -> None:
        self._x = np.empty(capacity, dtype=np.float64)
        self._y = np.empty(capacity, dtype=np.float64)
        self.n = 0

    def append(self, x: float, y: float) -> None:
        if self.n == len(self._x):
            self._x = np.concatenate([self._x, np.empty_like(self._x)])
            self._y = np.concatenate([self._y, np.empty_like(self._y)])
        self._x[self.n], self._y[self.n] = x, y
        self.n += 1

    @property
    def x(self) -> np.ndarray:
        return self._x[: self.n]

    @property
    def y(self) -> np.ndarray:
        return self._y[: self.n]

    def clear(self) -> None:
        self.n = 0


class _ThrottledPlot(QWidget):
    """A plot whose curves are redrawn at most every REDRAW_MS, and that shows values under the mouse."""

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.plot_widget = pg.PlotWidget()
        self.plot_widget.setMinimumSize(220, 180)
        self.plot = self.plot_widget.getPlotItem()
        self.plot.setTitle(title, size="10pt")
        self.plot.showGrid(x=True, y=True, alpha=0.25)
        self.plot.setMenuEnabled(True)  # keeps Export… (PNG, CSV, SVG) in the context menu
        self.hover = pg.TextItem(color="#111", fill=pg.mkBrush(255, 255, 255, 220), border=pg.mkPen("#999"),
                                 anchor=(0, 1))
        self.hover.setZValue(100)
        self.hover.setVisible(False)
        self.plot.addItem(self.hover, ignoreBounds=True)
        self.marker = pg.ScatterPlotItem(size=9, pen=pg.mkPen("#111"), brush=pg.mkBrush(255, 255, 255, 0))
        self.marker.setZValue(99)
        self.plot.addItem(self.marker, ignoreBounds=True)
        self.plot_widget.scene().sigMouseMoved.connect(self._on_mouse)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(REDRAW_MS)
        self._timer.timeout.connect(self.flush)
        self.redraws = 0  # how many times curves were actually redrawn (tests check the throttling)

    def _schedule(self) -> None:
        if not self._timer.isActive():
            self._timer.start()

    def flush(self) -> None:
        """Push the buffers to the curve items now."""
        self._timer.stop()
        self._redraw()
        self.redraws += 1

    def _redraw(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _hover_text(self, x: float) -> tuple[float, float, str] | None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _on_mouse(self, pos: QPointF) -> None:
        if not self.plot.sceneBoundingRect().contains(pos):
            self.hover.setVisible(False)
            self.marker.setData([], [])
            return
        point = self.plot.vb.mapSceneToView(pos)
        found = self._hover_text(point.x())
        if found is None:
            self.hover.setVisible(False)
            self.marker.setData([], [])
            return
        x, y, text = found
        self.hover.setText(text)
        self.hover.setPos(point.x(), point.y())
        self.hover.setVisible(True)
        self.marker.setData([x], [y])

    @staticmethod
    def _nearest(xs: np.ndarray, x: float) -> int | None:
        if len(xs) == 0:
            return None
        i = int(np.searchsorted(xs, x))
        if i >= len(xs):
            return len(xs) - 1
        if i > 0 and abs(xs[i - 1] - x) <= abs(xs[i] - x):
            return i - 1
        return i


class LossPlot(_ThrottledPlot):
    """Distillation loss per optimiser step: the raw values, faint, and an EMA-smoothed curve on top."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Distillation loss", parent)
        self.plot.setLabel("bottom", "step")
        self.plot.setLabel("left", "KL loss")
        self.plot.addLegend(offset=(-10, 10), labelTextSize="8pt")
        self.raw_curve = self.plot.plot(pen=pg.mkPen(LOSS_RAW_COLOR, width=1), name="raw")
        self.smooth_curve = self.plot.plot(pen=pg.mkPen(LOSS_COLOR, width=2), name="smoothed")
        self.series = GrowingSeries(1024)
        self.smoothed = GrowingSeries(1024)
        self._factor = 0.9
        self.epoch_marks: list[pg.InfiniteLine] = []

        self.smooth_slider = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
        self.smooth_slider.setRange(0.0, 0.99)
        self.smooth_slider.setDecimals(2)
        self.smooth_slider.setSingleStep(0.05)
        self.smooth_slider.setValue(0.9)
        self.smooth_slider.setToolTip("Exponential moving average: 0 shows the raw loss, 0.99 smooths the most")
        self.smooth_slider.valueChanged.connect(self.set_smoothing)
        controls = QHBoxLayout()
        controls.setContentsMargins(4, 0, 4, 0)
        controls.addWidget(QLabel("Smoothing"))
        controls.addWidget(self.smooth_slider, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.plot_widget, 1)
        layout.addLayout(controls)

    def reset(self) -> None:
        self.series.clear()
        self.smoothed.clear()
        for line in self.epoch_marks:
            self.plot.removeItem(line)
        self.epoch_marks = []
        self.flush()

    def add_step(self, step: int, loss: float) -> None:
        a = self._factor
        prev = self.smoothed.y[-1] if self.smoothed.n else loss
        self.series.append(step, loss)
        self.smoothed.append(step, a * prev + (1 - a) * loss)
        self._schedule()

    def mark_epoch(self, step: int) -> None:
        """A faint vertical line where an epoch ended."""
        line = pg.InfiniteLine(step, angle=90, pen=pg.mkPen(200, 200, 200, 160, width=1))
        self.plot.addItem(line, ignoreBounds=True)
        self.epoch_marks.append(line)

    def set_smoothing(self, factor: float) -> None:
        """Change the EMA factor and recompute the smoothed curve from the raw values (which are kept)."""
        self._factor = round(float(factor), 2)
        self.smooth_slider.blockSignals(True)
        self.smooth_slider.setValue(self._factor)
        self.smooth_slider.blockSignals(False)
        raw = self.series.y.copy()
        xs = self.series.x.copy()
        self.smoothed.clear()
        value = raw[0] if len(raw) else 0.0
        for x, y in zip(xs, raw):
            value = self._factor * value + (1 - self._factor) * y
            self.smoothed.append(x, value)
        self._schedule()

    def raw_values(self) -> np.ndarray:
        return self.series.y.copy()

    def smoothed_values(self) -> np.ndarray:
        return self.smoothed.y.copy()

    def _redraw(self) -> None:
        self.raw_curve.setData(self.series.x, self.series.y)
        self.smooth_curve.setData(self.smoothed.x, self.smoothed.y)

    def _hover_text(self, x: float):
        i = self._nearest(self.series.x, x)
        if i is None:
            return None
        return (self.series.x[i], self.smoothed.y[i],
                f"step {int(self.series.x[i])}\nloss {self.series.y[i]:.4f}\nsmoothed {self.smoothed.y[i]:.4f}")


class EpochsPlot(_ThrottledPlot):
    """ACC, ASR and agreement with the teacher per epoch, in %, with the teacher's ACC and ASR as dashed lines.

    A run with large evaluation sets measures most epochs on a fixed subset (core/eval_schedule.py): those points
    are drawn hollow, with a legend note and the subset's size in the hover text; points measured on the full
    sets (the last epoch always) are solid. Epochs the run did not measure get no ACC / ASR point.
    """

    CURVES = (("acc", "ACC", ACC_COLOR, "o"), ("asr", "ASR", ASR_COLOR, "t"),
              ("agreement", "agreement", AGREE_COLOR, "s"), ("proxy", "proxy ASR", PROXY_COLOR, "d"))

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("ACC, ASR and agreement per epoch", parent)
        self.plot.setLabel("bottom", "epoch")
        self.plot.setLabel("left", "%")
        self.plot.setYRange(0, 100, padding=0.04)
        self.plot.setXRange(0, 10, padding=0.02)
        self.legend = self.plot.addLegend(labelTextSize="8pt", brush=pg.mkBrush(255, 255, 255, 200),
                                          pen=pg.mkPen(200, 200, 200))
        self.legend.anchor(itemPos=(1, 0.5), parentPos=(1, 0.5), offset=(-10, 0))  # right, mid-height
        self.series = {key: GrowingSeries(64) for key, *_ in self.CURVES}
        self.curves: dict[str, pg.PlotDataItem] = {}
        for key, name, color, symbol in self.CURVES:
            agree = key == "agreement"
            style = {"agreement": Qt.PenStyle.DotLine, "proxy": Qt.PenStyle.DashLine}.get(key, Qt.PenStyle.SolidLine)
            self.curves[key] = self.plot.plot(
                pen=pg.mkPen(color, width=1.5 if agree else 2, style=style),
                symbol=symbol, symbolSize=4 if agree else 6, symbolBrush=color, symbolPen=pg.mkPen(color, width=1.2),
                name=name, connect="finite")
            self.curves[key].setZValue(1 if agree else 2)  # ACC and ASR stay on top of agreement
        # The teacher's values: dashed horizontal lines, named in the legend (labels on the lines would
        # collide, as ACC and ASR are both near 100% for a backdoored model).
        self.teacher_lines: dict[str, pg.InfiniteLine] = {}
        self._teacher_legend: dict[str, pg.PlotDataItem] = {}
        for key, color in (("acc", ACC_COLOR), ("asr", ASR_COLOR), ("proxy", PROXY_COLOR)):
            pen = pg.mkPen(color, width=1.5, style=Qt.PenStyle.DotLine if key == "proxy" else Qt.PenStyle.DashLine)
            line = pg.InfiniteLine(angle=0, movable=False, pen=pen)
            line.setVisible(False)
            self.plot.addItem(line, ignoreBounds=True)
            self.teacher_lines[key] = line
            self._teacher_legend[key] = pg.PlotDataItem(pen=pen)  # a legend swatch only, never plotted
        self.teacher: dict[str, float | None] = {"acc": None, "asr": None, "proxy": None}
        self.scopes: list[str] = []  # per epoch point: "full", "subset" (estimate) or "none" (not measured)
        self.notes: list[str] = []  # per epoch point: what an estimate was measured on, for the hover text
        self._solid = {key: pg.mkBrush(color) for key, _, color, _ in self.CURVES}
        self._hollow = pg.mkBrush(255, 255, 255, 255)
        self.subset_swatch = pg.ScatterPlotItem(symbol="o", size=7, brush=self._hollow,
                                                pen=pg.mkPen("#444", width=1.2))  # legend only, never plotted
        self._subset_note = False
        self.reference_curves: list[pg.PlotDataItem] = []
        self.reference_data: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot_widget)

    # -- data --------------------------------------------------------------------------------------------
    def start_run(self, epochs: int, teacher_acc: float | None, teacher_asr: float | None) -> None:
        for s in self.series.values():
            s.clear()
        self.scopes, self.notes = [], []
        if self._subset_note:
            self.legend.removeItem(self.subset_swatch)
            self._subset_note = False
        self.teacher = {"acc": teacher_acc, "asr": teacher_asr, "proxy": None}
        for key, value in self.teacher.items():
            self._show_teacher_line(key, value)
        self.plot.setXRange(0, max(epochs, 1) + 0.5, padding=0.02)
        axis = self.plot.getAxis("bottom")
        if epochs <= 12:
            axis.setTickSpacing(1, 1)  # whole epochs only
        else:
            axis.setTickSpacing()  # automatic
        self.flush()

    def _show_teacher_line(self, key: str, value: float | None) -> None:
        line, swatch = self.teacher_lines[key], self._teacher_legend[key]
        line.setVisible(value is not None)
        self.legend.removeItem(swatch)
        if value is not None:
            line.setValue(value * 100)
            name = "proxy ASR" if key == "proxy" else key.upper()
            self.legend.addItem(swatch, f"teacher {name} {value * 100:.1f}%")

    def set_teacher_proxy(self, value: float | None) -> None:
        """The teacher's proxy ASR (its own recovered trigger), known once the scan before the run is done."""
        self.teacher["proxy"] = value
        self._show_teacher_line("proxy", value)

    def add_epoch(self, epoch: int, acc: float | None, asr: float | None, agreement: float | None,
                  proxy: float | None = None, scope: str = "full", note: str = "") -> None:
        """One epoch's point; ``scope`` 'subset' draws it hollow (an estimate, ``note`` says on what)."""
        for key, value in (("acc", acc), ("asr", asr), ("agreement", agreement), ("proxy", proxy)):
            self.series[key].append(epoch, np.nan if value is None else value * 100)
        self.scopes.append(scope)
        self.notes.append(note)
        if scope == "subset" and not self._subset_note:
            self.legend.addItem(self.subset_swatch, "hollow: estimate on a subset")
            self._subset_note = True
        self._schedule()

    def subset_epochs(self) -> list[int]:
        """Epochs whose ACC / ASR are subset estimates."""
        return [int(x) for x, scope in zip(self.series["acc"].x, self.scopes) if scope == "subset"]

    def keep_as_reference(self, label: str) -> None:
        """Turn the current ACC/ASR curves into faded reference curves (the previous run, for comparison)."""
        self.clear_reference()
        for key, name, color, _ in self.CURVES[:2]:
            s = self.series[key]
            if s.n == 0 or np.all(np.isnan(s.y)):
                continue
            c = pg.mkColor(color)
            c.setAlpha(90)
            curve = self.plot.plot(s.x.copy(), s.y.copy(), pen=pg.mkPen(c, width=2, style=Qt.PenStyle.DashDotLine),
                                   name=f"{name} ({label})", connect="finite")
            self.reference_curves.append(curve)
            self.reference_data[key] = (s.x.copy(), s.y.copy())

    def clear_reference(self) -> None:
        for curve in self.reference_curves:
            self.plot.removeItem(curve)
            self.legend.removeItem(curve)
        self.reference_curves = []
        self.reference_data = {}

    def epochs(self) -> list[int]:
        return [int(x) for x in self.series["acc"].x]

    def acc_values(self) -> list[float]:
        """ACC per epoch in % (NaN where no clean folder was given)."""
        return self.series["acc"].y.tolist()

    def asr_values(self) -> list[float]:
        return self.series["asr"].y.tolist()

    def proxy_values(self) -> list[float]:
        """Proxy ASR per epoch in % (NaN where the run did not scan)."""
        return self.series["proxy"].y.tolist()

    def _redraw(self) -> None:
        scopes = np.array(self.scopes, dtype=object)
        for key, curve in self.curves.items():
            s = self.series[key]
            if not s.n or np.all(np.isnan(s.y)):
                curve.setData([], [])
            elif key == "proxy":  # the scan's number, measured every epoch whatever the evaluation plan
                curve.setData(s.x, s.y)
            else:  # epochs not measured leave no point (the line joins the measured ones)
                shown = scopes != "none"
                brushes = [self._hollow if scope == "subset" else self._solid[key] for scope in scopes[shown]]
                curve.setData(s.x[shown], s.y[shown], symbolBrush=brushes)

    def _hover_text(self, x: float):
        xs = self.series["acc"].x
        i = self._nearest(xs, x)
        if i is None:
            return None
        parts = [f"epoch {int(xs[i])}"]
        if i < len(self.notes) and self.notes[i]:
            parts.append(f"({self.notes[i]})")
        y_mark = None
        for key, name, *_ in self.CURVES:
            value = self.series[key].y[i]
            if not np.isnan(value):
                parts.append(f"{name} {value:.1f}%")
                y_mark = value if y_mark is None else y_mark
        for key, (rx, ry) in self.reference_data.items():
            j = self._nearest(rx, xs[i])
            if j is not None and rx[j] == xs[i] and not np.isnan(ry[j]):
                parts.append(f"previous {key.upper()} {ry[j]:.1f}%")
        return xs[i], (y_mark if y_mark is not None else 0.0), "\n".join(parts)
