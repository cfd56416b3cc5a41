"""Text from files is text in the app (issue 19, point 7): a run folder, a checkpoint's name, a class name or a
skipped file's name that looks like HTML is shown as written, never rendered; long names do not widen the
window."""

from __future__ import annotations

import shutil
import time

import numpy as np
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtGui import Qt as GuiQt, QTextDocument

from bcu_gui.app import dialogs
from bcu_gui.app.compare_view import CompareView
from bcu_gui.app.feature_view import _class_label
from bcu_gui.app.plain import html_text, tip
from bcu_gui.core.run_library import RunCurves
from bcu_gui.core.runfolder.reader import RunRecord

FAKE = "<b><font color=red size=7>FAKE VERDICT CLEAN"
WIDE = "<img src=x width=12000 height=40>"


def _rendered(rich_or_plain: str) -> str:
    """What Qt shows for a string a widget guesses the format of (tool tips, message boxes)."""
    doc = QTextDocument()
    if GuiQt.mightBeRichText(rich_or_plain):
        doc.setHtml(rich_or_plain)
    else:
        doc.setPlainText(rich_or_plain)
    return doc.toPlainText()


def test_tip_shows_markup_as_written_and_leaves_plain_text_alone():
    assert _rendered(tip(f"{FAKE}\nsecond line")) == f"{FAKE}\nsecond line"
    assert tip("runs/2024-01-01 demo") == "runs/2024-01-01 demo"
    assert html_text("<b>a</b> & b") == "&lt;b&gt;a&lt;/b&gt; &amp; b"
    assert len(html_text("x" * 500)) == 80


def test_compare_legend_escapes_a_hostile_run_folder_name(qtbot, tmp_path):
    view = CompareView()
    qtbot.addWidget(view)
    folder = tmp_path / FAKE.replace("/", "_")
    record = RunRecord(path=folder, status="finished", started=time.time())
    curves = RunCurves(epochs=(1, 2), values={"acc": (0.5, 0.6), "asr": (0.9, 0.1)})
    view.show_runs([record], [curves])
    (_, label), = view.legend.items
    assert "&lt;b&gt;&lt;font" in label.text and "<font" not in label.text
    data_item = view.plots["acc"].listDataItems()[0]
    assert _rendered(data_item.toolTip()) == str(folder)


def test_class_names_from_a_file_are_escaped_in_the_feature_legend():
    assert _class_label(0, [WIDE]) == "0 &lt;img src=x width=12000 height=40&gt;"


def test_a_checkpoint_named_like_html_opens_as_text_and_the_window_stays_its_width(window, tiny_checkpoint,
                                                                                   tmp_path, qtbot):
    width = window.width()
    path = tmp_path / f"{WIDE}{'long-name-' * 15}.pt"  # 200 characters, no spaces to wrap at
    shutil.copy(tiny_checkpoint, path)
    assert window.open_checkpoint(path)
    qtbot.wait(50)
    panel = window.model_panel
    assert window.width() <= max(width, 1400) and window.minimumSizeHint().width() < 1400
    assert "&lt;img" in panel.path_label.text() and "<img" not in panel.path_label.text()
    assert _rendered(panel.path_label.toolTip()) == str(path)
    assert "<img" in window.windowTitle() and len(window.windowTitle()) < 120  # plain there, and elided


def test_a_skipped_file_named_like_html_shows_as_text_in_the_tooltip(window, tmp_path, qtbot):
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((32, 32, 3), 60 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "<b>bold.png").write_bytes(b"not an image")
    data = window.data_panel
    data.unlabeled.set_path(str(folder))
    qtbot.waitUntil(lambda: not data.is_checking(), timeout=20_000)
    status = data.unlabeled_status
    assert status.textFormat() == Qt.TextFormat.PlainText
    assert "<b>bold.png" in _rendered(status.toolTip())


def test_message_boxes_show_file_names_as_written(messages):
    dialogs.error(None, "Cannot open the checkpoint", f"{WIDE}.pt is not a checkpoint")
    kind, _, text = messages.shown[-1]
    assert kind == "critical" and _rendered(text) == f"{WIDE}.pt is not a checkpoint."


def test_the_log_escapes_control_characters(window):
    window.log_pane.append_message("skipped evil\x1b]0;pwned\x07\u202egnp.exe")
    assert window.log_pane.lines()[-1].endswith("skipped evil\\x1b]0;pwned\\x07\\u202egnp.exe")


def test_folder_status_errors_are_plain(window, tmp_path, qtbot):
    missing = tmp_path / FAKE.replace("/", "_")
    data = window.data_panel
    data.clean.set_path(str(missing))
    qtbot.waitUntil(lambda: not data.is_checking(), timeout=20_000)
    assert data.clean_status.textFormat() == Qt.TextFormat.PlainText and "<font" in data.clean_status.text()
