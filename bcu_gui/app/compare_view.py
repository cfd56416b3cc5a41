"""Several runs' curves on the same axes: loss, ACC, ASR and proxy ASR per epoch, one colour per run.

Each run keeps its colour in all four plots and is named in each plot's legend, so a reader can follow a
setting across the panels. The whole figure is exported as one PNG (pyqtgraph's ``ImageExporter`` renders
the layout) and the numbers as one CSV (``core.run_library.comparison_csv``); both are written atomically
and an existing file is replaced only after asking.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt
from PySide6.QtWidgets import QFileDialog, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from ..core import atomic
from ..core.run_library import RunCurves, comparison_csv, read_curves
from ..core.runfolder.reader import RunRecord
from . import dialogs
from .plain import html_text, tip

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
           "#bcbd22")
PANELS = (("loss", "Distillation loss per epoch", "KL loss", 1.0),
          ("acc", "ACC (clean accuracy)", "%", 100.0),
          ("asr", "ASR (attack success rate)", "%", 100.0),
          ("proxy_asr", "Proxy ASR (the scan's recovered trigger)", "%", 100.0))
EXPORT_WIDTH = 1600


class CompareView(QWidget):
    """Four plots of the ticked runs; ``show_runs`` replaces what is shown."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setMinimumSize(300, 240)
        self.plots: dict[str, pg.PlotItem] = {}
        self.empty_labels: dict[str, pg.TextItem] = {}
        for i, (key, title, unit, _scale) in enumerate(PANELS):
            plot = self.graphics.addPlot(row=i // 2, col=i % 2)
            plot.setTitle(title, size="9pt")
            if i >= 2:  # the bottom row names the shared axis
                plot.setLabel("bottom", "epoch")
            plot.setLabel("left", unit)
            plot.showGrid(x=True, y=True, alpha=0.25)
            if unit == "%":
                plot.setYRange(0, 100, padding=0.04)
            empty = pg.TextItem("", color="#777", anchor=(0.5, 0.5))
            plot.addItem(empty, ignoreBounds=True)
            self.empty_labels[key] = empty
            self.plots[key] = plot
        # One legend for the four plots, under them: a run has the same colour everywhere, and no legend
        # covers a curve in a small plot. It is part of the layout, so the PNG export includes it.
        self.legend = pg.LegendItem(colCount=3, labelTextSize="9pt", pen=pg.mkPen(210, 210, 210),
                                    brush=pg.mkBrush(255, 255, 255, 230))
        self.graphics.addItem(self.legend, row=2, col=0, colspan=2)
        self.runs: list[tuple[RunRecord, RunCurves]] = []
        self.hint = QLabel("Tick runs in the run library and press Compare to overlay their curves here.")
        self.hint.setStyleSheet("color: gray;")
        self.png_button = QPushButton("Export PNG…")
        self.csv_button = QPushButton("Export CSV…")
        self.png_button.clicked.connect(self.choose_png)
        self.csv_button.clicked.connect(self.choose_csv)
        bar = QHBoxLayout()
        bar.addWidget(self.hint, 1)
        bar.addWidget(self.png_button)
        bar.addWidget(self.csv_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.graphics, 1)
        layout.addLayout(bar)
        self._update_buttons()

    # -- showing -----------------------------------------------------------------------------------------
    def show_runs(self, records: list[RunRecord], curves: list[RunCurves] | None = None) -> None:
        """Overlay ``records`` (their curves read now unless given), one colour each, in table order."""
        curves = curves if curves is not None else [read_curves(r.path) for r in records]
        self.runs = list(zip(records, curves))
        labels = self.labels()
        self.legend.clear()
        for i, label in enumerate(labels):
            color = PALETTE[i % len(PALETTE)]
            swatch = pg.PlotDataItem(pen=pg.mkPen(color, width=2), symbol="o", symbolSize=5, symbolBrush=color,
                                     symbolPen=None)  # a legend sample only, never plotted
            self.legend.addItem(swatch, html_text(label))  # a folder name: pyqtgraph legends render HTML
        for key, _title, _unit, scale in PANELS:
            plot = self.plots[key]
            for item in list(plot.listDataItems()):
                plot.removeItem(item)
            shown = 0
            for i, (record, c) in enumerate(self.runs):
                y = np.array([np.nan if v is None else v * scale for v in c.curve(key)], dtype=float)
                if not len(y) or np.all(np.isnan(y)):
                    continue
                color = PALETTE[i % len(PALETTE)]
                item = plot.plot(np.array(c.epochs, dtype=float), y, connect="finite",
                                 pen=pg.mkPen(color, width=2), symbol="o", symbolSize=5, symbolBrush=color,
                                 symbolPen=None)
                item.setToolTip(tip(record.path))
                shown += 1
            empty = self.empty_labels[key]
            empty.setText("" if shown or not self.runs else "none of these runs has this curve")
            plot.enableAutoRange(x=True, y=scale == 1.0)
            if shown == 0 and self.runs:
                plot.setXRange(0, 1)
                view = plot.vb.viewRange()
                empty.setPos((view[0][0] + view[0][1]) / 2, (view[1][0] + view[1][1]) / 2)
        n = len(self.runs)
        self.hint.setText(f"{n} run{'s' if n != 1 else ''} overlaid." if n else
                          "Tick runs in the run library and press Compare to overlay their curves here.")
        self._update_buttons()

    def labels(self) -> list[str]:
        """Legend names: the folder name, with its parent's when two runs share a name."""
        names = [r.name for r, _ in self.runs]
        return [f"{r.path.parent.name}/{r.name}" if names.count(r.name) > 1 else r.name for r, _ in self.runs]

    def _update_buttons(self) -> None:
        for b in (self.png_button, self.csv_button):
            b.setEnabled(bool(self.runs))

    # -- exporting ---------------------------------------------------------------------------------------
    def png_bytes(self, width: int = EXPORT_WIDTH) -> bytes:
        """The four plots with their legends as one PNG image."""
        from pyqtgraph.exporters import ImageExporter

        exporter = ImageExporter(self.graphics.ci)
        exporter.parameters()["width"] = width
        image = exporter.export(toBytes=True)
        data = QByteArray()
        buffer = QBuffer(data)
        buffer.open(QIODevice.OpenModeFlag.WriteOnly)
        image.save(buffer, "PNG")
        buffer.close()
        return bytes(data.data())

    def csv_text(self) -> str:
        return comparison_csv(zip(self.labels(), (c for _, c in self.runs)))

    def export_png(self, path: str | Path) -> bool:
        return self._write(path, lambda: self.png_bytes())

    def export_csv(self, path: str | Path) -> bool:
        return self._write(path, lambda: self.csv_text().encode("utf-8"))

    def _write(self, path: str | Path, content) -> bool:
        """Write atomically; an existing file is replaced only when the user says so. True when written."""
        target = Path(path)
        if target.exists() and not dialogs.ask(self, "Replace the file?",
                                               f"{target.name} already exists in {target.parent}. Replace it?"):
            return False
        try:
            atomic.write_bytes(target, content())
        except OSError as exc:
            dialogs.error(self, "Cannot export the comparison",
                          f"could not write {exc.filename or target}: {exc.strerror or exc}")
            return False
        return True

    def choose_png(self) -> None:
        self._choose("Export the comparison as PNG", "comparison.png", "PNG image (*.png)", self.export_png)

    def choose_csv(self) -> None:
        self._choose("Export the comparison as CSV", "comparison.csv", "CSV (*.csv)", self.export_csv)

    def _choose(self, title: str, name: str, filter_: str, write) -> None:
        start = str((self.runs[0][0].path.parent if self.runs else Path.home()) / name)
        path, _ = QFileDialog.getSaveFileName(self, title, start, filter_,
                                              options=QFileDialog.Option.DontConfirmOverwrite)
        if path:
            write(path)
