"""The window's ways in: welcome buttons, Help > Open the demo, drag and drop, and the 1280x800 layout."""

from __future__ import annotations

from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QFileDialog

from bcu_gui.demo.config import DEMO_BATCH_SIZE, DEMO_EPOCHS


def _assert_demo_loaded(w, demo_env):
    assert w.demo and w.demo_banner.isVisible()
    assert "keeps its backdoor under the paper's ratios" in w.demo_banner.text()
    assert w.model_panel.model.path == demo_env / "model.pt"
    assert w.data_panel.unlabeled_path() == str(demo_env / "unlabeled")
    assert w.data_panel.clean_path() == str(demo_env / "clean")
    assert w.data_panel.triggered_path() == str(demo_env / "triggered")
    assert w.data_panel.target_class() == 0
    assert w.reinit_panel.preset() == "strong"
    assert w.training_panel.epochs_spin.value() == DEMO_EPOCHS
    assert w.training_panel.values()["batch_size"] == DEMO_BATCH_SIZE


def test_the_welcome_button_opens_the_demo(qtbot, window, demo_env):
    w = window
    assert w.right_stack.currentWidget() is w.welcome
    qtbot.mouseClick(w.welcome_demo_button, Qt.MouseButton.LeftButton)
    _assert_demo_loaded(w, demo_env)
    assert w.right_stack.currentWidget() is w.right_splitter
    qtbot.waitUntil(lambda: not w.data_panel.is_checking() and not w.missing_inputs(), timeout=20_000)


def test_help_open_the_demo_and_then_another_checkpoint_leaves_demo_mode(qtbot, window, demo_env, tmp_path,
                                                                         monkeypatch):
    w = window
    w.demo_action.trigger()
    _assert_demo_loaded(w, demo_env)
    other = tmp_path / "other.pt"
    other.write_bytes((demo_env / "model.pt").read_bytes())
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(other), "")))
    w.open_action.trigger()
    assert w.model_panel.model.path == other
    assert not w.demo and not w.demo_banner.isVisible()
    assert w.data_panel.demo_box.isHidden()


def test_dropping_a_checkpoint_onto_the_window_opens_it(qtbot, window, demo_env):
    w = window
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(demo_env / "model.pt"))])
    event = QDropEvent(QPointF(200, 200), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    w.dropEvent(event)
    assert w.model_panel.model is not None and w.model_panel.model.arch_name == "resnet18_cifar"


def test_nothing_clips_sideways_at_1280_by_800(qtbot, window):
    w = window
    assert w.open_demo()
    qtbot.waitUntil(lambda: not w.data_panel.is_checking(), timeout=20_000)
    assert w.width() <= 1280 and w.height() <= 800
    column = w.left_scroll.widget()
    assert column.width() <= w.left_scroll.viewport().width()  # the left column only scrolls vertically
    assert w.centralWidget().minimumSizeHint().width() <= 1280


def test_wheel_over_an_unfocused_field_scrolls_the_column_not_the_value(qtbot):
    from PySide6.QtCore import QPoint, QPointF, Qt
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication, QSpinBox

    from bcu_gui.app.main_window import MainWindow

    window = MainWindow()
    qtbot.addWidget(window)
    window.resize(1280, 400)
    window.show()
    spin = next(s for s in window.left_column.findChildren(QSpinBox) if s.isEnabled() and s.value() < s.maximum()
                and s.value() > s.minimum())

    def wheel():
        event = QWheelEvent(QPointF(5, 5), QPointF(5, 5), QPoint(0, 0), QPoint(0, 120), Qt.MouseButton.NoButton,
                            Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
        QApplication.sendEvent(spin, event)

    before = spin.value()
    wheel()
    assert spin.value() == before  # unfocused: the column scrolls instead
    spin.setFocus()
    qtbot.waitUntil(spin.hasFocus)
    wheel()
    assert spin.value() != before  # focused: the wheel edits the value as usual


def test_a_tiny_saved_window_size_is_not_restored(qtbot):
    from PySide6.QtCore import QRect

    from bcu_gui.app.main_window import MIN_WINDOW, MainWindow

    first = MainWindow()
    qtbot.addWidget(first)
    first.setGeometry(QRect(10, 10, 600, 300))
    first.close()  # saves the tiny geometry
    window = MainWindow()
    qtbot.addWidget(window)
    area = window.screen().availableGeometry()
    assert window.width() >= min(MIN_WINDOW.width(), area.width())
    assert window.height() >= min(MIN_WINDOW.height(), area.height())


def test_form_fields_never_take_focus_from_the_wheel(qtbot):
    """A real wheel notch gives a WheelFocus field focus before any filter runs; the form's fields must be
    StrongFocus so scrolling over the form can never change a setting (issue 22)."""
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QAbstractSlider, QAbstractSpinBox, QComboBox, QWidget

    from bcu_gui.app.main_window import MainWindow

    window = MainWindow()
    qtbot.addWidget(window)
    window.resize(1280, 800)
    window.show()
    assert window.open_demo()
    qtbot.waitUntil(lambda: not window.data_panel.is_checking(), timeout=20_000)
    fields = [w for w in window.left_column.findChildren(QWidget)
              if isinstance(w, (QAbstractSpinBox, QComboBox, QAbstractSlider)) and w.isVisibleTo(window)]
    assert len(fields) > 5
    wheel_focus = [f.objectName() or type(f).__name__ for f in fields
                   if f.focusPolicy() == Qt.FocusPolicy.WheelFocus]
    assert wheel_focus == []
