"""Text from files, shown as text: no widget may read a file name, a run folder, a class name or a checkpoint's
metadata as HTML.

Qt guesses: a ``QLabel``, a tool tip or a message box renders rich text when the string merely looks like HTML
(``Qt.mightBeRichText``), and pyqtgraph's legends and titles always do. A run folder named
``<b><font color=red size=7>FAKE VERDICT CLEAN`` then draws as a verdict, and ``<img width=12000>.pt`` widens
the window to 12,000 px. So:

- labels fed from files are made plain (:func:`plain`, :func:`set_plain`), with long names elided;
- labels that mix our own markup with such text escape the text (:func:`html_text`);
- widgets that always guess (tool tips, message boxes) get :func:`tip`: the text itself when it cannot be
  mistaken for HTML, else Qt's own rich-text rendering of it as plain text;
- pyqtgraph legends and titles get :func:`html_text` (escaped and elided).

Control characters and bidi overrides are escaped on the way too (``core.printable``).
"""

from __future__ import annotations

import html

from PySide6.QtCore import Qt
from PySide6.QtGui import Qt as GuiQt  # mightBeRichText / convertFromPlainText live in QtGui
from PySide6.QtWidgets import QLabel

from ..core.printable import elide, printable

NAME_LIMIT = 80  # characters of a file or run name shown in a label, legend or title before it is elided


def plain(label: QLabel) -> QLabel:
    """``label``, set to show its text as plain text whatever it looks like."""
    label.setTextFormat(Qt.TextFormat.PlainText)
    return label


def set_plain(label: QLabel, text: object, limit: int | None = None) -> None:
    """Show ``text`` in ``label`` as plain text (escaped controls; elided to ``limit`` characters if given)."""
    label.setTextFormat(Qt.TextFormat.PlainText)
    shown = printable(text, keep_newlines=True)
    label.setText(elide(shown, limit) if limit else shown)


def html_text(text: object, limit: int | None = NAME_LIMIT) -> str:
    """``text`` escaped for a place that renders HTML (pyqtgraph legends and titles, our rich labels)."""
    shown = printable(text)
    return html.escape(elide(shown, limit) if limit else shown, quote=False)


def tip(text: object) -> str:
    """``text`` for a tool tip or a message box (which render HTML when it looks like HTML), shown as written."""
    shown = printable(text, keep_newlines=True)
    if not GuiQt.mightBeRichText(shown):
        return shown
    return GuiQt.convertFromPlainText(shown, Qt.WhiteSpaceMode.WhiteSpaceNormal)
