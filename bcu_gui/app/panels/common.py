"""Small widgets the panels share: a folder picker row and a wait cursor."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QFileDialog, QHBoxLayout, QLineEdit, QToolButton, QWidget

from ..settings import AppSettings


@contextlib.contextmanager
def wait_cursor() -> Iterator[None]:
    """A busy cursor for the short synchronous steps (loading a small checkpoint)."""
    QGuiApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
    try:
        yield
    finally:
        QGuiApplication.restoreOverrideCursor()


class FolderField(QWidget):
    """A folder path: editable line, Browse… and clear; ``changed`` fires once per real change."""

    changed = Signal(str)

    def __init__(self, settings_key: str, placeholder: str, settings: AppSettings | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._key = settings_key
        self._settings = settings
        self._value = ""
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(placeholder)
        self.edit.setClearButtonEnabled(True)
        self.edit.editingFinished.connect(self._on_edited)
        self.edit.textChanged.connect(self._on_text_changed)
        self.browse = QToolButton()
        self.browse.setText("Browse…")
        self.browse.clicked.connect(self._on_browse)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.edit, 1)
        row.addWidget(self.browse)

    def path(self) -> str:
        return self._value

    def set_path(self, path: str | Path | None) -> None:
        text = str(path) if path else ""
        self.edit.setText(text)
        self._commit(text)

    def _on_edited(self) -> None:
        self._commit(self.edit.text().strip())

    def _on_text_changed(self, text: str) -> None:
        if not text:  # the clear button: act at once, there is no editingFinished for it
            self._commit("")

    def _on_browse(self) -> None:
        start = self._value or (self._settings.last_dir(self._key) if self._settings else "")
        chosen = QFileDialog.getExistingDirectory(self, "Choose a folder", start)
        if chosen:
            if self._settings:
                self._settings.set_last_dir(self._key, chosen)
            self.set_path(chosen)

    def _commit(self, text: str) -> None:
        if text != self._value:
            self._value = text
            self.changed.emit(text)
