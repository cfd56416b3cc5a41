"""The run library panel: every run under the library's folders, listed as it is found.

The folders are the default runs folder (``core.runfolder.writer.default_runs_root``) and those the user
added (kept in the app settings). A refresh scans them in a background task that hands records over in batches
(``core.run_library.scan_runs``), so thousands of runs fill the table without freezing the window; only
small JSON files are read. From here a run is reopened, revealed in the file manager or deleted (to the
trash where the system has one, after a confirmation), its cleansed model opened, and ticked runs are
overlaid in the window's Compare tab. The panel only emits requests; the window decides what they do.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QFile, QItemSelectionModel, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QFileDialog, QHBoxLayout, QHeaderView, QLabel,
                               QLineEdit, QMenu, QPushButton, QTableView, QToolButton, QVBoxLayout, QWidget)

from ..core.run_library import scan_runs
from ..core.runfolder.layout import MODEL_FILE
from ..core.runfolder.reader import STATUSES, RunRecord, read_record
from ..core.runfolder.writer import default_runs_root
from . import dialogs
from .library_model import COLUMNS, RunFilterProxy, RunTableModel
from .plain import plain
from .settings import AppSettings
from .worker import BackgroundTask, run_task

BATCH = 200  # records per hand-over from the scanning thread
LIVE_REFRESH_MS = 5000  # how often rows of running runs are re-read


class LibraryPanel(QWidget):
    """The table of runs and its actions; ``refresh()`` rescans the folders in the background."""

    open_requested = Signal(object)  # Path of a run to reopen
    compare_requested = Signal(list)  # the ticked RunRecords
    open_model_requested = Signal(object)  # Path of a run's cleansed.pt
    resume_requested = Signal(object)  # Path of an unfinished or stopped run to continue
    loaded = Signal(int)  # a scan ended with this many runs listed

    def __init__(self, settings: AppSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.model = RunTableModel(self)
        self.proxy = RunFilterProxy(self)
        self.proxy.setSourceModel(self.model)
        self._task: BackgroundTask | None = None
        self.extra_roots: Callable[[], list[Path]] = lambda: []  # the window adds where its runs are written
        self.batches_received = 0  # batches of the last scan (tests check that a big library loads in several)

        self.filter_edit = QLineEdit()
        self.filter_edit.setPlaceholderText("Filter: name, model, preset, status…")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.textChanged.connect(self.proxy.set_text)
        self.status_combo = QComboBox()
        self.status_combo.addItem("All", "")
        for status in STATUSES:
            self.status_combo.addItem(status.capitalize(), status)
        self.status_combo.currentIndexChanged.connect(
            lambda: self.proxy.set_status(self.status_combo.currentData() or ""))

        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(1, Qt.SortOrder.DescendingOrder)  # newest first
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(22)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        for col, width in enumerate((230, 120, 170, 150, 60, 60, 60, 76, 90)):
            self.table.setColumnWidth(col, width)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)  # preset and ratios take the spare width
        self.table.doubleClicked.connect(lambda index: self._open(self._record_at(index.row())))
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._context_menu)
        self.table.selectionModel().selectionChanged.connect(self._update_buttons)
        self.model.dataChanged.connect(self._update_buttons)

        self.open_button = QPushButton("Open")
        self.open_button.setToolTip("Show the run's curves and summary (double-click a row)")
        self.compare_button = QPushButton("Compare ticked")
        self.compare_button.setToolTip("Overlay the curves of the ticked runs in the Compare tab")
        self.model_button = QPushButton("Open model")
        self.model_button.setToolTip("Open the run's cleansed model as the model to work on")
        self.reveal_button = QPushButton("Reveal")
        self.reveal_button.setToolTip("Show the run folder in the file manager")
        self.delete_button = QPushButton("Delete…")
        self.delete_button.setToolTip("Move the selected run folders to the trash (asks first)")
        self.folders_button = QToolButton()
        self.folders_button.setText("Folders")
        self.folders_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.folders_menu = QMenu(self)
        self.folders_menu.aboutToShow.connect(self._fill_folders_menu)
        self.folders_button.setMenu(self.folders_menu)
        self.refresh_button = QPushButton("Refresh")
        # Runs being written change under the table: re-read those rows (a few small files each) now and then.
        self._live_timer = QTimer(self)
        self._live_timer.setInterval(LIVE_REFRESH_MS)
        self._live_timer.timeout.connect(self.refresh_running)
        self._live_timer.start()
        self.open_button.clicked.connect(lambda: self._open(self.current()))
        self.compare_button.clicked.connect(self.compare_checked)
        self.model_button.clicked.connect(self._open_model)
        self.reveal_button.clicked.connect(lambda: self.reveal(self.current()))
        self.delete_button.clicked.connect(lambda: self.delete_runs(self.selected()))
        self.refresh_button.clicked.connect(self.refresh)
        self.count_label = plain(QLabel(""))  # may quote an error naming a folder
        self.count_label.setStyleSheet("color: gray;")

        top = QHBoxLayout()
        top.addWidget(self.filter_edit, 1)
        top.addWidget(self.status_combo)
        top.addWidget(self.folders_button)
        top.addWidget(self.refresh_button)
        actions = QHBoxLayout()
        for b in (self.open_button, self.compare_button, self.model_button, self.reveal_button, self.delete_button):
            actions.addWidget(b)
        actions.addStretch(1)
        actions.addWidget(self.count_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(top)
        layout.addWidget(self.table, 1)
        layout.addLayout(actions)
        self._update_buttons()

    # -- folders -----------------------------------------------------------------------------------------
    def roots(self) -> list[Path]:
        """The default runs folder first, then where the app writes runs now, then the folders the user added."""
        roots = [default_runs_root(), *self.extra_roots(), *(Path(f) for f in self.settings.library_folders())]
        return list(dict.fromkeys(Path(r) for r in roots))

    def add_folder(self, folder: str | Path) -> None:
        folders = self.settings.library_folders()
        path = str(Path(folder).resolve())
        if path not in folders and Path(path) != default_runs_root():
            self.settings.set_library_folders([*folders, path])
        self.refresh()

    def remove_folder(self, folder: str | Path) -> None:
        """Forget a folder (its runs stay on disk)."""
        self.settings.set_library_folders([f for f in self.settings.library_folders() if f != str(folder)])
        self.refresh()

    def choose_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Add a folder of runs to the library",
                                                self.settings.last_dir("library"))
        if path:
            self.settings.set_last_dir("library", path)
            self.add_folder(path)

    def _fill_folders_menu(self) -> None:
        menu = self.folders_menu
        menu.clear()
        menu.addAction("Add folder…").triggered.connect(self.choose_folder)
        menu.addSeparator()
        menu.addAction(f"{default_runs_root()} (default)").setEnabled(False)
        for folder in self.settings.library_folders():
            menu.addAction(f"Remove {folder}").triggered.connect(lambda _=False, f=folder: self.remove_folder(f))

    # -- loading -----------------------------------------------------------------------------------------
    @property
    def is_loading(self) -> bool:
        return self._task is not None

    def refresh(self) -> None:
        """Rescan every folder in the background; rows appear batch by batch."""
        self.cancel()
        self.model.clear()
        self.batches_received = 0
        self.count_label.setText("scanning…")
        roots = self.roots()

        def scan(report) -> int:
            total = 0
            for batch in scan_runs(roots, batch=BATCH):
                total += len(batch)
                report(batch)
            return total

        task = self._task = run_task(scan)  # no parent: the worker registry owns it until its thread ends
        task.progress.connect(lambda records, t=task: self._on_batch(t, records))
        task.error.connect(lambda exc, t=task: self._on_error(t, exc))
        task.ended.connect(lambda t=task: self._on_ended(t))

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _on_batch(self, task: BackgroundTask, records: list[RunRecord]) -> None:
        if task is not self._task:  # a scan that a refresh replaced
            return
        self.batches_received += 1
        self.model.add_records(records)
        self.count_label.setText(f"{_runs(self.model.rowCount())}, scanning…")

    def _on_error(self, task: BackgroundTask, exc: BaseException) -> None:
        if task is self._task:
            self.count_label.setText(f"could not scan the folders: {exc}")

    def _on_ended(self, task: BackgroundTask) -> None:
        if task is self._task:
            self._task = None
            if not self.count_label.text().startswith("could not"):
                self.count_label.setText(f"{_runs(self.model.rowCount())}")
            self._update_buttons()
            self.loaded.emit(self.model.rowCount())

    def update_run(self, path: str | Path) -> None:
        """Re-read one run (it was just written or changed) and show it; a new run is added."""
        record = read_record(path)
        if record is not None:
            self.model.add_records([record])
            if not self.is_loading:
                self.count_label.setText(f"{_runs(self.model.rowCount())}")

    def refresh_running(self) -> None:
        """Re-read the rows of runs that were being written (they may have ended or died since)."""
        if self.is_loading:
            return
        running = [r.path for r in self.model.records() if r.status == "running"]
        if running:
            self.model.add_records([r for r in map(read_record, running) if r is not None])

    # -- selection ---------------------------------------------------------------------------------------
    def _record_at(self, proxy_row: int) -> RunRecord:
        return self.model.record(self.proxy.mapToSource(self.proxy.index(proxy_row, 0)).row())

    def current(self) -> RunRecord | None:
        rows = self.table.selectionModel().selectedRows()
        return self._record_at(rows[0].row()) if rows else None

    def selected(self) -> list[RunRecord]:
        return [self._record_at(i.row()) for i in self.table.selectionModel().selectedRows()]

    def select(self, path: str | Path) -> bool:
        """Select the row of ``path`` (and scroll to it); False when it is not listed."""
        row = self.model.row_of(Path(path))
        if row is None:
            return False
        index = self.proxy.mapFromSource(self.model.index(row, 0))
        if not index.isValid():
            return False
        self.table.selectionModel().select(index, QItemSelectionModel.SelectionFlag.ClearAndSelect
                                           | QItemSelectionModel.SelectionFlag.Rows)
        self.table.scrollTo(index)
        return True

    def _update_buttons(self, *_args) -> None:
        one = len(self.table.selectionModel().selectedRows()) == 1
        current = self.current() if one else None
        self.open_button.setEnabled(one)
        self.reveal_button.setEnabled(one)
        self.model_button.setEnabled(current is not None and (current.path / MODEL_FILE).is_file())
        self.delete_button.setEnabled(bool(self.table.selectionModel().selectedRows()))
        n = len(self.model.checked())
        self.compare_button.setText(f"Compare ticked ({n})" if n else "Compare ticked")
        self.compare_button.setEnabled(n > 0)

    def _context_menu(self, pos) -> None:
        record = self.current()
        if record is None:
            return
        menu = QMenu(self)
        menu.addAction("Open").triggered.connect(lambda: self._open(record))
        open_model = menu.addAction("Open model")
        open_model.setEnabled(self.model_button.isEnabled())
        open_model.triggered.connect(self._open_model)
        menu.addAction("Reveal in file manager").triggered.connect(lambda: self.reveal(record))
        resume = menu.addAction("Resume run")
        resume.setEnabled(record.resumable and record.status in ("stopped", "unfinished"))
        resume.triggered.connect(lambda: self.resume_requested.emit(record.path))
        menu.addSeparator()
        menu.addAction("Delete…").triggered.connect(lambda: self.delete_runs(self.selected()))
        menu.popup(self.table.viewport().mapToGlobal(pos))

    # -- actions -----------------------------------------------------------------------------------------
    def _open(self, record: RunRecord | None) -> None:
        if record is not None:
            self.open_requested.emit(record.path)

    def _open_model(self) -> None:
        record = self.current()
        if record is not None:
            self.open_model_requested.emit(record.path / MODEL_FILE)

    def compare_checked(self) -> None:
        records = self.model.checked()
        if records:
            self.compare_requested.emit(records)

    def reveal(self, record: RunRecord | None) -> None:
        if record is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(record.path)))

    def delete_runs(self, records: list[RunRecord]) -> int:
        """Delete run folders after asking: to the trash when the system has one, else for good (asked
        again in those words). A run that is being written is never deleted. Returns how many were removed."""
        records = [r for r in records if r is not None]
        if not records:
            return 0
        running = [r for r in records if (fresh := read_record(r.path)) is not None and fresh.status == "running"]
        if running:
            dialogs.error(self, "A run is being written", f"{running[0].path} is being written right now "
                          f"({running[0].note}); it cannot be deleted until it has ended")
            return 0
        names = "\n".join(f"  {r.path}" for r in records[:10]) + ("\n  …" if len(records) > 10 else "")
        if not dialogs.ask(self, "Delete runs?", f"Move {len(records)} run folder{'s' if len(records) > 1 else ''} "
                           f"to the trash?\n\n{names}\n\nTheir models, curves and summaries go with them."):
            return 0
        removed = 0
        for r in records:
            if not r.path.exists():
                self.model.remove_path(r.path)
                continue
            if not QFile.moveToTrash(str(r.path)):
                if not dialogs.ask(self, "No trash here", f"{r.path} cannot be moved to a trash on this system. "
                                   "Delete it permanently? This cannot be undone."):
                    continue
                try:
                    shutil.rmtree(r.path)
                except OSError as exc:
                    dialogs.error(self, "Cannot delete the run", f"could not delete {r.path}: {exc.strerror or exc}")
                    continue
            self.model.remove_path(r.path)
            removed += 1
        self._update_buttons()
        return removed


__all__ = ["LibraryPanel", "COLUMNS"]


def _runs(count: int) -> str:
    """'1 run', '2 runs', '1,204 runs'."""
    return f"{count:,} run" + ("" if count == 1 else "s")
