"""The run's log: the engine's Log events, warnings and errors highlighted, tracebacks kept for bug reports."""

from __future__ import annotations

import html
import time

from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import QPlainTextEdit, QWidget

from ..core.printable import printable

COLORS = {"info": "#222222", "warning": "#9a5b00", "error": "#b00020", "detail": "#666666"}


class LogPane(QPlainTextEdit):
    """Read-only, bounded, appends with a timestamp; ``lines()`` gives the plain text for tests and copies."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setReadOnly(True)
        self.setMaximumBlockCount(5000)
        self.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.setPlaceholderText("The run's log appears here.")
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)

    def append_message(self, message: str, level: str = "info") -> None:
        message = printable(message, keep_newlines=True)  # file names in it: no controls or bidi overrides
        level = level if level in COLORS else "info"
        stamp = time.strftime("%H:%M:%S")
        prefix = {"warning": "warning: ", "error": "error: "}.get(level, "")
        weight = "font-weight:bold;" if level in ("warning", "error") else ""
        if level == "detail":  # a traceback: keep its line breaks and indentation
            body = "<pre style='margin:0'>" + html.escape(message.rstrip()) + "</pre>"
        else:
            body = html.escape(prefix + message)
        self.appendHtml(f"<span style='color:{COLORS[level]};{weight}'>{stamp}  {body}</span>")

    def lines(self) -> list[str]:
        return self.toPlainText().splitlines()
