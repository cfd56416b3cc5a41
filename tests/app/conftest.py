"""App test setup: private settings and data folders, recorded message boxes, a small copy of the demo.

Every test gets a fresh QSettings file and user-data folder under its tmp_path, so nothing touches the real
user's settings or run library. Message boxes are replaced by a recorder (tests assert on what the user
would have read, and nothing ever blocks). The demo is copied in a reduced form (the same model and real
images, fewer of them) and pointed to with $BCU_DEMO_DIR, so a run takes seconds on two CPU cores.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings, QStandardPaths
from PySide6.QtWidgets import QMessageBox

from bcu_gui.demo import demo_dir

MINI_UNLABELED = 64
MINI_PER_CLASS = 5


@pytest.fixture(autouse=True)
def private_settings(tmp_path, monkeypatch):
    """QSettings and platformdirs both point into tmp_path for the length of one test."""
    QStandardPaths.setTestModeEnabled(True)
    settings_dir = tmp_path / "settings"
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(settings_dir))
    monkeypatch.setenv("BCU_SETTINGS_ORG", "bcu-studio-tests")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    yield settings_dir


@dataclass
class Messages:
    """What message boxes would have shown: (kind, title, text); questions get ``answer``, trust ``trust``."""

    shown: list[tuple[str, str, str]] = field(default_factory=list)
    answer: bool = True
    trust: bool = False

    def kinds(self) -> list[str]:
        return [k for k, _, _ in self.shown]

    def titles(self) -> list[str]:
        return [t for _, t, _ in self.shown]

    def texts(self) -> str:
        return "\n".join(f"{t}: {x}" for _, t, x in self.shown)


@pytest.fixture(autouse=True)
def messages(monkeypatch) -> Messages:
    """Record every QMessageBox instead of showing it."""
    rec = Messages()

    def recorder(kind):
        def show(parent, title, text, *args, **kwargs):
            rec.shown.append((kind, title, text))
            if kind == "question":
                return QMessageBox.StandardButton.Yes if rec.answer else QMessageBox.StandardButton.No
            return QMessageBox.StandardButton.Ok
        return staticmethod(show)

    for kind in ("critical", "warning", "information", "question"):
        monkeypatch.setattr(QMessageBox, kind, recorder(kind))
    monkeypatch.setattr(QMessageBox, "about", staticmethod(lambda *a, **k: rec.shown.append(("about", a[1], a[2]))))

    def exec_(box):
        rec.shown.append(("box", box.windowTitle(), box.text()))
        wanted = "Trust and load" if rec.trust else "Cancel"
        for button in box.buttons():
            if button.text().replace("&", "") == wanted:
                button.click()
                break
        return 0

    monkeypatch.setattr(QMessageBox, "exec", exec_)
    return rec


@pytest.fixture(scope="session")
def mini_demo(tmp_path_factory) -> Path:
    """The shipped demo with fewer images: same model, same real digits, a few seconds per run."""
    src = demo_dir()
    dst = tmp_path_factory.mktemp("mini_demo")
    for name in ("model.pt", "model.json"):
        shutil.copy2(src / name, dst / name)
    for folder, limit in (("unlabeled", MINI_UNLABELED), ("ood_unlabeled", 16)):
        (dst / folder).mkdir()
        for f in sorted((src / folder).iterdir())[:limit]:
            shutil.copy2(f, dst / folder / f.name)
    for folder in ("clean", "triggered"):
        for class_dir in sorted((src / folder).iterdir()):
            if class_dir.is_dir():
                (dst / folder / class_dir.name).mkdir(parents=True)
                for f in sorted(class_dir.iterdir())[:MINI_PER_CLASS]:
                    shutil.copy2(f, dst / folder / class_dir.name / f.name)
    return dst


@pytest.fixture
def demo_env(mini_demo, monkeypatch) -> Path:
    monkeypatch.setenv("BCU_DEMO_DIR", str(mini_demo))
    return mini_demo


@pytest.fixture
def window(qtbot, demo_env, tmp_path):
    """The real main window at 1280x800, runs written under tmp_path/runs, CPU and fp32 for repeatability."""
    from bcu_gui.app.main_window import MainWindow
    from bcu_gui.app.worker import cancel_all_tasks

    w = MainWindow()
    qtbot.addWidget(w)
    w.resize(1280, 800)
    w.show()
    w.training_panel.output.set_path(tmp_path / "runs")
    tp = w.training_panel
    tp.device_combo.setCurrentIndex(tp.device_combo.findData("cpu"))
    tp.precision_combo.setCurrentIndex(tp.precision_combo.findData("fp32"))
    yield w
    if w.run_view.runner.is_running:
        w.run_view.runner.stop_and_wait()
    cancel_all_tasks()

