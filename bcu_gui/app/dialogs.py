"""Every message box the app shows, in one place, so wording stays consistent and headless runs can divert them.

Widgets call ``error`` / ``warning`` / ``ask`` / ``ask_trust`` instead of building QMessageBoxes. Their texts
name files and folders, so a box never reads them as HTML (``plain.tip``). The unattended ``--smoke`` mode
installs a handler with ``set_headless`` so no dialog ever waits for a click: messages are recorded (and fail
the check) and questions get their safe answer.
"""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox, QWidget

from .plain import tip

# (kind, title, text) -> answer for questions; None: show real dialogs.
HeadlessHandler = Callable[[str, str, str], bool]
_headless: HeadlessHandler | None = None

TRUST_BUTTON = "Trust and load"


def set_headless(handler: HeadlessHandler | None) -> None:
    """Route all dialogs to ``handler`` (or back to real message boxes with None)."""
    global _headless
    _headless = handler


def error(parent: QWidget | None, title: str, text: str) -> None:
    """Something failed and the user has to act: one specific sentence, the app stays usable."""
    if _headless is not None:
        _headless("error", title, text)
        return
    QMessageBox.critical(parent, title, tip(_sentence(text)))


def warning(parent: QWidget | None, title: str, text: str) -> None:
    if _headless is not None:
        _headless("warning", title, text)
        return
    QMessageBox.warning(parent, title, tip(_sentence(text)))


def ask(parent: QWidget | None, title: str, text: str) -> bool:
    """A yes/no question; No is the default button."""
    if _headless is not None:
        return _headless("question", title, text)
    buttons = QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No
    answer = QMessageBox.question(parent, title, tip(text), buttons, QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


def ask_trust(parent: QWidget | None, file_name: str, reason: str) -> bool:
    """Explain why a pickled or TorchScript checkpoint is dangerous and let the user decide; Cancel is the
    default. ``reason`` is the engine's message, which says which of the two the file is."""
    title = "Trust this checkpoint?"
    if "TorchScript" in reason:
        first = (f"{file_name} is a TorchScript program.\n\n"
                 "Loading it runs code stored in the file (while it loads and on every image), with your "
                 "permissions: ")
    else:
        first = (f"{file_name} can only be read by full unpickling.\n\n"
                 "Unpickling runs code stored in the file, with your permissions: ")
    text = first + ("a malicious checkpoint can do anything a program on this computer can do. Load it only "
                    "if you trust where it came from.")
    if _headless is not None:
        return _headless("trust", title, text)
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Warning)
    box.setWindowTitle(title)
    box.setTextFormat(Qt.TextFormat.PlainText)  # the file's name is in it
    box.setText(text)
    box.setInformativeText("Safer alternative: save the model's state_dict (weights only) and open that.")
    box.setDetailedText(reason)
    trust = box.addButton(TRUST_BUTTON, QMessageBox.ButtonRole.AcceptRole)
    cancel = box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(cancel)
    box.setEscapeButton(cancel)
    box.exec()
    return box.clickedButton() is trust


def _sentence(text: str) -> str:
    """The engine's messages start in lower case (they also end CLI lines); a dialog wants a sentence.

    Only a plain first word is capitalised: a message that starts with a file name keeps its spelling.
    """
    text = text.strip()
    first = text.split(" ", 1)[0] if text else ""
    if first.isalpha() and first.islower():
        text = text[0].upper() + text[1:]
    if text and text[-1] not in ".!?":
        text += "."
    return text
