"""The sweep view: run several ratio settings on the loaded model and images, and compare them.

A sibling of the run view and the scan view. The user picks presets, or a grid over groups' ratios (on a base
preset), and seeds; the view runs the core's ``SweepJob`` in the background through the same ``JobRunner`` a
single run uses (one job at a time, Stop saves the run in progress so running the sweep again continues it),
fills a table as runs end, and draws final ACC against ASR (or the scan's proxy ASR without a triggered set)
for every run, the Pareto front as a line through highlighted points. Hovering a point names its setting;
clicking it (or double-clicking a table row) emits ``run_activated(Path)`` with that run's folder. "Open
sweep…" shows an earlier sweep's folder the same way, and fills the controls with its spec so Run continues it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pyqtgraph as pg
from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QButtonGroup, QCheckBox, QComboBox, QFileDialog, QGridLayout,
                               QHBoxLayout, QHeaderView, QLabel, QLineEdit, QPushButton, QRadioButton,
                               QSplitter, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from ..common import pct
from ..core.errors import BcuError
from ..core.events import EpochEnd, Failed, Log
from ..core.groups import PRESET_NAMES
from ..core.job import CleanseConfig
from ..core.models import LoadedModel
from ..core.runfolder.writer import new_run_dir
from ..core.sweep import (METRIC_LABEL, RunBegins, RunEnds, SweepFinished, SweepJob, SweepRow, SweepSpec,
                          SweepStarted, front_metric, load_sweep, pareto_front, parse_grid, parse_seeds)
from . import dialogs
from .log_pane import LogPane
from .plain import plain, tip
from .worker import JobRunner

COLUMNS = ("setting", "seed", "ACC", "ASR", "proxy ASR", "status", "time")
RUN_COLOR, FRONT_COLOR, TEACHER_COLOR = "#78909c", "#c62828", "#1565c0"
DEFAULT_PRESETS = ("paper", "strong")
Inputs = Callable[[], tuple[CleanseConfig, LoadedModel]]


def tip_text(row: SweepRow, metric: str | None) -> str:
    """A point's tool tip: the setting and what it scored."""
    lines = [row.name, row.label, f"ACC {pct(row.acc)}, ASR {pct(row.asr)}, proxy ASR {pct(row.proxy_asr)}",
             f"{row.status}" + ("" if row.seconds is None else f", {row.seconds:.0f} s")]
    return "\n".join(lines)


class SweepScatter(QWidget):
    """Final ACC (up) against ASR or proxy ASR (right) per run; the Pareto front as a red line and red points."""

    point_clicked = Signal(object)  # the SweepRow of a clicked point

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.plot_widget = pg.PlotWidget(background="w")
        self.plot = self.plot_widget.getPlotItem()
        self.plot.setLabel("left", "final ACC (%)")
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.plot.setXRange(0, 100, padding=0.04)
        self.plot.setYRange(0, 100, padding=0.04)
        self.plot.setMouseEnabled(False, False)
        self.plot.hideButtons()
        self.legend = self.plot.addLegend(offset=(-10, -10), labelTextSize="8pt")
        self.front_line = pg.PlotDataItem([], [], pen=pg.mkPen(FRONT_COLOR, width=2), name="Pareto front")
        self.plot.addItem(self.front_line)
        self.teacher = pg.ScatterPlotItem([], [], symbol="star", size=16, brush=pg.mkBrush(TEACHER_COLOR),
                                          pen=pg.mkPen("w"), name="teacher")
        self.teacher.setZValue(10)  # drawn over a run that ends where the teacher started (a kept backdoor)
        self.plot.addItem(self.teacher)
        self.points = pg.ScatterPlotItem([], [], hoverable=True, tip=self._tip, hoverSize=16,
                                         hoverPen=pg.mkPen("k", width=2), name="runs")
        self.plot.addItem(self.points)
        self.points.sigClicked.connect(self._on_clicked)
        self.rows: list[SweepRow] = []  # the plotted runs, in the points' order
        self.front: list[SweepRow] = []
        self.metric: str | None = None
        self._set_axis(None)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot_widget)

    def _set_axis(self, metric: str | None) -> None:
        what = METRIC_LABEL.get(metric or "", "ASR")
        source = {"asr": "triggered set", "proxy_asr": "scan's trigger"}
        self.plot.setLabel("bottom", f"final {what} (%)" + (f", {source[metric]}" if metric in source else ""))
        self.plot.setTitle("Final ACC against ASR: best at the top left", size="10pt")

    def _tip(self, x: float, y: float, data: SweepRow) -> str:
        return tip_text(data, self.metric)

    def show_rows(self, rows: list[SweepRow]) -> None:
        """Plot every run that has both numbers (finished and stopped ones; stopped hollow), front in red."""
        self.metric = front_metric(rows)
        self._set_axis(self.metric)
        metric = self.metric or "asr"
        self.front = pareto_front(rows, self.metric)
        on_front = {r.name for r in self.front}
        self.rows = [r for r in rows if r.acc is not None and r.value(metric) is not None
                     and r.status in ("finished", "stopped")]
        spots = []
        for r in self.rows:
            front = r.name in on_front
            color = FRONT_COLOR if front else RUN_COLOR
            spots.append({"pos": (100 * r.value(metric), 100 * r.acc), "data": r, "size": 13 if front else 9,
                          "pen": pg.mkPen(color, width=2),
                          "brush": pg.mkBrush(color if r.status == "finished" else "w")})
        self.points.setData(spots)
        self.front_line.setData([100 * r.value(metric) for r in self.front], [100 * r.acc for r in self.front])
        teacher = next((r for r in rows if r.teacher_acc is not None and r.value(f"teacher_{metric}") is not None),
                       None)
        if teacher is not None:
            self.teacher.setData([100 * teacher.value(f"teacher_{metric}")], [100 * teacher.teacher_acc])
        else:
            self.teacher.setData([], [])
        # ACC of useful settings clusters near the teacher's: show from a little below the lowest point
        accs = [100 * r.acc for r in self.rows] + ([100 * teacher.teacher_acc] if teacher is not None else [])
        self.plot.setYRange(max(0.0, min(accs, default=0.0) - 5.0), 100.0, padding=0.04)

    def _on_clicked(self, item, points, ev=None) -> None:
        if len(points):
            self.point_clicked.emit(points[0].data())


class SweepView(QObject):
    """Controls, runner, table and scatter of a ratio sweep; ``run_activated(Path)`` names a clicked run."""

    run_activated = Signal(Path)
    running_changed = Signal(bool)
    sweep_finished = Signal(object)  # SweepFinished

    def __init__(self, window: QWidget, log_pane: LogPane, status: Callable[[str], None]) -> None:
        super().__init__(window)
        self._window, self.log_pane, self._status = window, log_pane, status
        self.inputs: Inputs | None = None  # the window's config and model (set by the window)
        self.output_root: Callable[[], Path] | None = None  # where a new sweep folder goes
        self.runner = JobRunner(self)
        self.runner.event.connect(self.handle)
        self.runner.running_changed.connect(self._on_running_changed)
        self.job: SweepJob | None = None
        self.rows: list[SweepRow] = []
        self.last_finished: SweepFinished | None = None
        self.last_failed: Failed | None = None
        self.folder: Path | None = None
        self._available = False
        self._run_text = ""
        self._build()
        self._update()

    # ------------------------------------------------------------------------------------------ building
    def _build(self) -> None:
        self.widget = QWidget()
        self.preset_radio = QRadioButton("Presets")
        self.grid_radio = QRadioButton("Grid")
        self.mode = QButtonGroup(self.widget)
        self.mode.addButton(self.preset_radio)
        self.mode.addButton(self.grid_radio)
        self.preset_radio.setChecked(True)
        self.preset_boxes = {name: QCheckBox(name) for name in PRESET_NAMES}
        for name, box in self.preset_boxes.items():
            box.setChecked(name in DEFAULT_PRESETS)
        self.grid_edit = QLineEdit("layer4=0.27,0.5,1 head=0.1,1")
        self.grid_edit.setToolTip("group=ratio,ratio,... separated by spaces; every combination runs, the other "
                                  "groups take the base preset's ratios")
        self.base_combo = QComboBox()
        self.base_combo.addItems(PRESET_NAMES)
        self.base_combo.setToolTip("the ratios of the groups the grid leaves out")
        self.seeds_edit = QLineEdit("0")
        self.seeds_edit.setToolTip("seeds to run each setting with, e.g. 0,1,2")
        self.seeds_edit.setMaximumWidth(90)
        self.scan_box = QCheckBox("Proxy ASR (scan the teacher once)")
        self.scan_box.setToolTip("follow each run's attack success rate under the scan's recovered trigger: what "
                                 "the plot uses when there is no triggered folder")
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("a new folder for the sweep")
        self.choose_button = QPushButton("Choose…")
        self.run_button = QPushButton("Run sweep")
        self.run_button.setStyleSheet("font-weight: bold;")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("stop the run in progress (it is saved); Run sweep again continues it")
        self.open_button = QPushButton("Open sweep…")
        self.progress_label = plain(QLabel("Choose presets or a grid, then Run sweep."))  # names folders, runs
        self.progress_label.setWordWrap(True)

        grid = QGridLayout()
        grid.setContentsMargins(6, 6, 6, 0)
        presets = QHBoxLayout()
        for box in self.preset_boxes.values():
            presets.addWidget(box)
        presets.addStretch(1)
        grid.addWidget(self.preset_radio, 0, 0)
        grid.addLayout(presets, 0, 1, 1, 5)
        grid.addWidget(self.grid_radio, 1, 0)
        grid.addWidget(self.grid_edit, 1, 1)
        grid.addWidget(QLabel("on"), 1, 2)
        grid.addWidget(self.base_combo, 1, 3)
        grid.addWidget(QLabel("Seeds"), 1, 4)
        grid.addWidget(self.seeds_edit, 1, 5)
        grid.addWidget(QLabel("Folder"), 2, 0)
        grid.addWidget(self.folder_edit, 2, 1, 1, 3)
        grid.addWidget(self.choose_button, 2, 4, 1, 2)
        buttons = QHBoxLayout()
        for w in (self.run_button, self.stop_button, self.open_button):
            buttons.addWidget(w)
        buttons.addWidget(self.scan_box)
        buttons.addStretch(1)
        grid.addLayout(buttons, 3, 0, 1, 6)
        grid.setColumnStretch(1, 1)

        self.scatter = SweepScatter()
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in range(1, len(COLUMNS)):
            self.table.horizontalHeader().setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.table.setWordWrap(False)
        self.table.setToolTip("double-click a run to open it")
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(self.scatter)
        self.splitter.addWidget(self.table)
        self.splitter.setSizes([1000, 1000])

        layout = QVBoxLayout(self.widget)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(grid)
        layout.addWidget(self.progress_label)
        layout.addWidget(self.splitter, 1)

        self.run_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.open_button.clicked.connect(self.choose_sweep)
        self.choose_button.clicked.connect(self._choose_folder)
        self.preset_radio.toggled.connect(self._update)
        self.scatter.point_clicked.connect(self._activate_row)
        self.table.cellDoubleClicked.connect(lambda r, _c: self._activate_row(self.rows[r]))

    # --------------------------------------------------------------------------------------------- state
    @property
    def is_running(self) -> bool:
        return self.runner.is_running

    def set_available(self, available: bool) -> None:
        """A model and images are loaded and nothing else runs: Run sweep may start."""
        self._available = available
        self._update()

    def _update(self) -> None:
        running = self.is_running
        presets = self.preset_radio.isChecked()
        for box in self.preset_boxes.values():
            box.setEnabled(presets and not running)
        for w in (self.grid_edit, self.base_combo):
            w.setEnabled(not presets and not running)
        for w in (self.preset_radio, self.grid_radio, self.seeds_edit, self.scan_box, self.folder_edit,
                  self.choose_button, self.open_button):
            w.setEnabled(not running)
        self.run_button.setEnabled(self._available and not running)
        self.stop_button.setEnabled(running)

    def spec(self) -> SweepSpec:
        """The spec the controls describe; bad text raises ``ConfigError`` (shown in a dialog by ``start``)."""
        seeds = parse_seeds(self.seeds_edit.text())
        if self.preset_radio.isChecked():
            presets = tuple(n for n, box in self.preset_boxes.items() if box.isChecked())
            spec = SweepSpec(presets=presets, seeds=seeds, scan=self.scan_box.isChecked())
            if not presets:
                from ..core.errors import ConfigError

                raise ConfigError("tick at least one preset")
        else:
            spec = SweepSpec(grid=parse_grid([self.grid_edit.text()]), base_preset=self.base_combo.currentText(),
                             seeds=seeds, scan=self.scan_box.isChecked())
        spec.validate()
        return spec

    def set_spec(self, spec: SweepSpec) -> None:
        """Fill the controls from a spec (an opened sweep), so Run sweep continues it."""
        self.preset_radio.setChecked(bool(spec.presets))
        self.grid_radio.setChecked(not spec.presets)
        for name, box in self.preset_boxes.items():
            box.setChecked(name in spec.presets)
        if spec.grid:
            self.grid_edit.setText(" ".join(f"{g}={','.join(f'{v:g}' for v in vals)}" for g, vals in spec.grid))
            self.base_combo.setCurrentText(spec.base_preset)
        self.seeds_edit.setText(",".join(str(s) for s in spec.seeds))
        self.scan_box.setChecked(spec.scan)
        self._update()

    # ---------------------------------------------------------------------------------------------- runs
    def start(self) -> bool:
        """Start the sweep the controls describe on the window's model and images; False if it cannot."""
        if self.is_running or self.inputs is None:
            return False
        try:
            spec = self.spec()
            base, model = self.inputs()
            base.validate()
        except BcuError as exc:
            dialogs.error(self._window, "Cannot start the sweep", str(exc))
            return False
        folder = self.folder_edit.text().strip()
        if not folder:
            root = self.output_root() if self.output_root else None
            folder = str(new_run_dir(root, "sweep"))
            self.folder_edit.setText(folder)
        self.folder = Path(folder)
        self.job = SweepJob(spec, base, self.folder, model=model)
        self.last_finished = self.last_failed = None
        self.rows = []
        self._fill_table()
        self.scatter.show_rows([])
        self.progress_label.setText(f"Starting the sweep in {self.folder}…")
        self.log_pane.append_message(f"sweep: {len(spec.settings())} runs into {self.folder}")
        self.runner.start(self.job)
        return True

    def stop(self) -> None:
        if self.is_running:
            self.progress_label.setText("Stopping after this batch; the run in progress is saved…")
            self.runner.stop()

    def close(self, timeout_ms: int = 120_000) -> bool:
        """Stop and wait for the sweep's thread (closing the window)."""
        return self.runner.stop_and_wait(timeout_ms)

    def handle(self, event) -> None:
        """Every event of the sweep (its own and its runs')."""
        if isinstance(event, SweepStarted):
            self.rows = list(event.rows)
            self._refresh()
        elif isinstance(event, RunBegins):
            self.rows[event.index] = _with_status(self.rows[event.index], "running")
            self._fill_table()
            self._run_text = (f"Run {event.index + 1} of {event.total}: {event.name}"
                              + (" (resumed)" if event.resumed else ""))
            scanning = self.job is not None and self.job.spec.scan and self.job._teacher_scan is None
            self.progress_label.setText(self._run_text + (" (scanning the teacher first)" if scanning else ""))
        elif isinstance(event, EpochEnd):
            self.progress_label.setText(f"{self._run_text}: epoch {event.epoch}/{event.epochs}, ACC {pct(event.acc)}, "
                                        f"ASR {pct(event.asr)}")
        elif isinstance(event, RunEnds):
            self.rows[event.index] = event.row
            self._refresh()
        elif isinstance(event, Log) and event.level == "warning":
            self.log_pane.append_message(f"sweep: {event.message}")
        elif isinstance(event, SweepFinished):
            self.last_finished = event
            self.rows = list(event.rows)
            self._refresh()
            front = ", ".join(event.front) or "none"
            if event.cancelled:
                text = f"Stopped. Run sweep again (same folder) to continue. Front so far: {front}."
            else:
                text = f"Sweep done: {len(event.rows)} runs. Pareto front: {front}. Table: {event.table}"
                self.folder_edit.clear()  # the next Run starts a new sweep (Open sweep… to come back to this one)
            self.progress_label.setText(text)
            self.log_pane.append_message(f"sweep: {text}")
            self._status(text)
            self.sweep_finished.emit(event)
        elif isinstance(event, Failed):
            self.last_failed = event
            self.progress_label.setText(f"The sweep stopped: {event.message}")
            dialogs.error(self._window, "The sweep could not run", event.message)

    def _refresh(self) -> None:
        self.scatter.show_rows(self.rows)
        self._fill_table()

    def _fill_table(self) -> None:
        front = {r.name for r in self.scatter.front}
        self.table.setRowCount(len(self.rows))
        for i, r in enumerate(self.rows):
            values = (r.name + (" *" if r.name in front else ""), str(r.seed), pct(r.acc), pct(r.asr),
                      pct(r.proxy_asr), r.status, "" if r.seconds is None else f"{r.seconds:.0f} s")
            for col, text in enumerate(values):
                item = QTableWidgetItem(text)
                item.setToolTip(tip(r.label + (f"\n{r.note}" if r.note else "")))
                if col:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(i, col, item)
        for col, key in ((3, "asr"), (4, "proxy_asr")):  # a column no run can fill is hidden
            self.table.setColumnHidden(col, bool(self.rows) and all(r.value(key) is None for r in self.rows))
        self.table.setColumnHidden(1, len({r.seed for r in self.rows}) == 1)  # one seed: said in the controls

    def _activate_row(self, row: SweepRow) -> None:
        if row.run_dir and Path(row.run_dir).is_dir():
            self.run_activated.emit(Path(row.run_dir))

    def _on_running_changed(self, running: bool) -> None:
        self._update()
        self.running_changed.emit(running)

    # ----------------------------------------------------------------------------------- earlier sweeps
    def choose_sweep(self) -> None:
        start = self.output_root() if self.output_root else Path.home()
        path = QFileDialog.getExistingDirectory(self._window, "Open a sweep folder",
                                                str(start if start.is_dir() else Path.home()))
        if path:
            self.open_sweep(path)

    def open_sweep(self, path: str | Path) -> bool:
        """Show the sweep in ``path`` (its table and scatter) and fill the controls to continue it."""
        if self.is_running:
            return False
        try:
            sweep = load_sweep(path)
        except BcuError as exc:
            dialogs.error(self._window, "Cannot open the sweep", str(exc))
            return False
        self.folder = sweep.path
        self.folder_edit.setText(str(sweep.path))
        self.set_spec(sweep.spec)
        self.rows = sweep.rows
        self._refresh()
        done = sum(r.status == "finished" for r in self.rows)
        self.progress_label.setText(f"{sweep.path}: {done} of {len(self.rows)} runs finished.")
        return True

    def _choose_folder(self) -> None:
        start = self.output_root() if self.output_root else Path.home()
        path = QFileDialog.getExistingDirectory(self._window, "Folder for the sweep",
                                                str(start if start.is_dir() else Path.home()))
        if path:
            self.folder_edit.setText(path)


def _with_status(row: SweepRow, status: str) -> SweepRow:
    from dataclasses import replace

    return replace(row, status=status)
