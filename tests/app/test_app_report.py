"""File › Export report…: the current run's page written where the save dialog says, a question before replacing
a file, an error dialog on failure, and an offer to open the page in the browser."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from PySide6.QtWidgets import QFileDialog


def _export_action(w):
    file_menu = next(a.menu() for a in w.menuBar().actions() if a.text() == "&File")
    return next(a for a in file_menu.actions() if a.text() == "Export &report…")


def test_export_report_of_the_last_run(window, demo_run_dir, tmp_path, monkeypatch, messages):
    w = window
    w.run_view.result_dir = demo_run_dir  # what a finished run leaves: its folder
    target = tmp_path / "exported" / "page.html"
    asked = []

    def save_dialog(parent, title, start, *args, **kwargs):
        asked.append(start)
        return str(target), "HTML page (*.html *.htm)"

    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(save_dialog))
    opened = []
    w.report_exporter.open_url = lambda url: opened.append(url.toLocalFile()) or True
    _export_action(w).trigger()
    assert asked == [str(demo_run_dir / "report.html")]  # the dialog starts in the run folder
    assert target.read_text().startswith("<!DOCTYPE html>")
    assert messages.titles() == ["Report written"]
    assert opened == [str(target.resolve())]

    # the file exists now: the user is asked, and "No" keeps it as it is
    target.write_text("mine")
    messages.answer = False
    _export_action(w).trigger()
    assert target.read_text() == "mine"
    assert messages.titles()[-1] == "Replace the existing file?"
    messages.answer = True
    _export_action(w).trigger()
    assert target.read_text().startswith("<!DOCTYPE html>")
    assert len(opened) == 2


def test_the_running_jobs_folder_is_exported(window, demo_run_dir, tmp_path, monkeypatch, messages):
    w = window
    w.run_view.job = SimpleNamespace(run_dir=demo_run_dir)  # a job knows its folder once it has made it
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        staticmethod(lambda *a, **k: (str(tmp_path / "r"), "")))
    messages.answer = False  # do not open the browser
    _export_action(w).trigger()
    assert (tmp_path / "r.html").is_file()  # the .html suffix added
    assert messages.titles() == ["Report written"]


def test_failures_are_dialogs(window, demo_run_dir, tmp_path, monkeypatch, messages):
    w = window
    # no run in this session: the user picks a folder, here one that is not a run
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(tmp_path)))
    saves = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: saves.append(a) or ("", "")))
    _export_action(w).trigger()
    assert messages.kinds() == ["critical"] and "not a BCU Studio run folder" in messages.texts()
    assert saves == []
    # a run folder, but the page cannot be written (its folder is a file)
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    assert w.report_exporter.export(demo_run_dir, blocker / "page.html") is None
    assert messages.kinds()[-1] == "critical" and messages.titles()[-1] == "Cannot export the report"
    assert not Path(blocker / "page.html").exists()
