"""Mouse-wheel scrolling over a long form scrolls the form, not the spin box or combo under the cursor.

Without this, scrolling the left column changes whatever value passes under the pointer (a preset, every
ratio). A field takes wheel events only once it has keyboard focus (clicked or tabbed into).

Qt's spin boxes and combo boxes have the ``WheelFocus`` policy: a real (spontaneous) wheel event gives them
focus *before* any event filter sees it, so a filter that asks ``hasFocus()`` alone lets the first notch
through (Epochs went 40 -> 38 while a user scrolled the form). Every guarded field inside the scroll area is
therefore switched to ``StrongFocus`` (click or Tab only) as it is polished, the usual Qt idiom.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtWidgets import QAbstractSlider, QAbstractSpinBox, QApplication, QComboBox, QScrollArea, QWidget

_GUARDED = (QAbstractSpinBox, QComboBox, QAbstractSlider)


class WheelGuard(QObject):
    """Event filter that hands an unfocused field's wheel events to the scroll area instead."""

    def __init__(self, scroll: QScrollArea) -> None:
        super().__init__(scroll)
        self._scroll = scroll

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt's name)
        if event.type() in (QEvent.Type.Polish, QEvent.Type.Show) and isinstance(watched, _GUARDED):
            self._strong_focus(watched)
        if (event.type() == QEvent.Type.Wheel and isinstance(watched, _GUARDED) and not watched.hasFocus()
                and watched is not self._scroll.verticalScrollBar() and self._scroll.isAncestorOf(watched)):
            QApplication.sendEvent(self._scroll.verticalScrollBar(), event)
            return True
        return False

    def _strong_focus(self, field: QWidget) -> None:
        """Click or Tab focuses the field; the wheel never does (see the module's docstring)."""
        if field.focusPolicy() == Qt.FocusPolicy.WheelFocus and self._scroll.isAncestorOf(field):
            field.setFocusPolicy(Qt.FocusPolicy.StrongFocus)

    def install(self) -> None:
        """Watch the whole application, so rows built later (a new model's sliders) are guarded too."""
        widget = self._scroll.widget()
        for field in widget.findChildren(QWidget) if widget is not None else []:
            if isinstance(field, _GUARDED):
                self._strong_focus(field)
        app = QApplication.instance()
        if app is not None:
            app.installEventFilter(self)
