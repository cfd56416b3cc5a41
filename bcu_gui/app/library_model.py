"""The run library's table: one row per ``RunRecord``, ticks for the comparison, sorting and filtering.

The model holds frozen records and never reads a file; records arrive in batches from a background scan
(``add_records``), so a library of thousands of runs fills in while the window stays responsive. Sorting uses
each column's raw value (``SORT_ROLE``), so dates and percentages sort as numbers, and empty values last.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Qt
from PySide6.QtGui import QColor

from ..common import pct
from ..core.runfolder.reader import RunRecord
from .plain import tip

SORT_ROLE = Qt.ItemDataRole.UserRole + 1
COLUMNS = ("Run", "Date", "Model", "Preset / ratios", "Epochs", "ACC", "ASR", "Proxy ASR", "Status")
STATUS_COLORS = {"running": "#1565c0", "finished": "#2e7d32", "stopped": "#8d6e00", "unfinished": "#8d6e00",
                 "failed": "#c62828", "damaged": "#c62828"}
Index = QModelIndex | QPersistentModelIndex


class RunTableModel(QAbstractTableModel):
    """Rows of run records; column 0 is checkable (runs ticked for the overlay)."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._records: list[RunRecord] = []
        self._rows: dict[Path, int] = {}
        self._checked: set[Path] = set()

    # -- contents ----------------------------------------------------------------------------------------
    def clear(self) -> None:
        self.beginResetModel()
        self._records, self._rows = [], {}
        self.endResetModel()

    def add_records(self, records: list[RunRecord]) -> None:
        """Append new records and replace those already listed (same path) in place."""
        fresh = []
        for r in records:
            row = self._rows.get(r.path)
            if row is None:
                fresh.append(r)
            else:
                self._records[row] = r
                self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))
        if fresh:
            first = len(self._records)
            self.beginInsertRows(QModelIndex(), first, first + len(fresh) - 1)
            for i, r in enumerate(fresh):
                self._rows[r.path] = first + i
            self._records.extend(fresh)
            self.endInsertRows()

    def remove_path(self, path: Path) -> None:
        row = self._rows.get(path)
        if row is None:
            return
        self.beginRemoveRows(QModelIndex(), row, row)
        del self._records[row]
        self._rows = {r.path: i for i, r in enumerate(self._records)}
        self._checked.discard(path)
        self.endRemoveRows()

    def record(self, row: int) -> RunRecord:
        return self._records[row]

    def records(self) -> list[RunRecord]:
        return list(self._records)

    def row_of(self, path: Path) -> int | None:
        return self._rows.get(path)

    def checked(self) -> list[RunRecord]:
        """Ticked runs, in table order."""
        return [r for r in self._records if r.path in self._checked]

    def set_checked(self, path: Path, on: bool) -> None:
        row = self._rows.get(path)
        (self._checked.add if on else self._checked.discard)(path)
        if row is not None:
            self.dataChanged.emit(self.index(row, 0), self.index(row, 0), [Qt.ItemDataRole.CheckStateRole])

    # -- Qt's model interface ----------------------------------------------------------------------------
    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self._records)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def flags(self, index: Index) -> Qt.ItemFlag:
        base = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        return base | Qt.ItemFlag.ItemIsUserCheckable if index.column() == 0 else base

    def setData(self, index: Index, value: Any, role: int = Qt.ItemDataRole.EditRole) -> bool:  # noqa: N802
        if index.column() == 0 and role == Qt.ItemDataRole.CheckStateRole:
            on = Qt.CheckState(value) == Qt.CheckState.Checked if not isinstance(value, bool) else value
            self.set_checked(self._records[index.row()].path, on)
            return True
        return False

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        r, col = self._records[index.row()], index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return _display(r, col)
        if role == SORT_ROLE:
            return _sort_key(r, col)
        if role == Qt.ItemDataRole.CheckStateRole and col == 0:
            return Qt.CheckState.Checked if r.path in self._checked else Qt.CheckState.Unchecked
        if role == Qt.ItemDataRole.ForegroundRole and col == len(COLUMNS) - 1:
            return QColor(STATUS_COLORS.get(r.status, "#222"))
        if role == Qt.ItemDataRole.ToolTipRole:
            lines = [str(r.path)]
            if r.note:
                lines.append(r.note)
            if r.teacher_acc is not None or r.teacher_asr is not None:
                lines.append(f"teacher: ACC {pct(r.teacher_acc)}, ASR {pct(r.teacher_asr)}")
            return tip("\n".join(lines))  # a folder's name and note: shown as written, never as HTML
        if role == Qt.ItemDataRole.TextAlignmentRole and 4 <= col <= 7:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


def _display(r: RunRecord, col: int) -> str:
    if col == 0:
        return r.name
    if col == 1:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started)) if r.started else ""
    if col == 2:
        return f"{r.checkpoint} ({r.arch})" if r.arch else r.checkpoint
    if col == 3:
        return r.ratios_text
    if col == 4:
        return r.epochs_text if r.epochs_planned or r.epochs_done else ""
    if col in (5, 6, 7):
        value = (r.acc, r.asr, r.proxy_asr)[col - 5]
        return "" if value is None else pct(value)
    return r.status


def _sort_key(r: RunRecord, col: int) -> Any:
    if col == 1:
        return r.started
    if col == 4:
        return float(r.epochs_done)
    if col in (5, 6, 7):
        value = (r.acc, r.asr, r.proxy_asr)[col - 5]
        return float("inf") if value is None else value  # empty values sort after every number
    return _display(r, col).lower()


class RunFilterProxy(QSortFilterProxyModel):
    """Sort by raw values; filter by text (any of name, model, preset, status, note) and by status."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setSortRole(SORT_ROLE)
        self._text = ""
        self._status = ""

    def set_text(self, text: str) -> None:
        self.beginFilterChange()
        self._text = text.strip().lower()
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def set_status(self, status: str) -> None:
        """Only runs of this status ('' for all)."""
        self.beginFilterChange()
        self._status = status
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def filterAcceptsRow(self, row: int, parent: Index) -> bool:  # noqa: N802
        model = self.sourceModel()
        assert isinstance(model, RunTableModel)
        r = model.record(row)
        if self._status and r.status != self._status:
            return False
        if not self._text:
            return True
        hay = " ".join((r.name, r.checkpoint, r.arch, r.ratios_text, r.status, r.note, str(r.path.parent))).lower()
        return all(word in hay for word in self._text.split())
