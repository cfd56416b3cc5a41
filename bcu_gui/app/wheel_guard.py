"""Mouse-wheel scrolling over a long form scrolls the form, not the spin box or combo under the cursor.

Without this, scrolling the left column changes whatever value passes under the pointer (a preset, every
ratio). A field takes wheel events only once it has keyboard focus (clicked or tabbed into).
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject
from PySide6.QtWidgets import QAbstractSlider, QAbstractSpinBox, QApplication, QComboBox, QScrollArea, QWidget

_GUARDED = (QAbstractSpinBox, QComboBox, QAbstractSlider)


class WheelGuard(QObject):
    """Event filter that hands an unfocused field's wheel events to the scroll area instead."""

    def __init__(self, scroll: QScrollArea) -> None:
        super().__init__(scroll)
        self._scroll = scroll

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt's name)
        if (event.type() == QEvent.Type.Wheel and isinstance(watched, _GUARDED) and not watched.hasFocus()
                and watched is not self._scroll.verticalScrollBar() and self._scroll.isAncestorOf(watched)):
            QApplication.sendEvent(self._scroll.verticalScrollBar(), event)
            return True
        return False

    def install(self) -> None:
        """Watch the whole application, so rows built later (a new model's sliders) are guarded too."""
        app = QApplication.instance()
        if app is not None:
            app.installEventFilter(self)
