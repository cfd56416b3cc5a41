"""The run library in the real window: list real runs, reopen one, overlay three, export, delete, watch a
live `bcu cleanse` to its end, and a library of 2,000 runs that loads in batches while the window stays live."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QTimer, Qt

from bcu_gui.core.events import Finished
from bcu_gui.core.job import CleanseConfig, CleanseJob
from bcu_gui.core.outcome import EXIT_RUINED


def _cfg(demo: Path, out: Path, preset: str, epochs: int, **kw) -> CleanseConfig:
    return CleanseConfig(checkpoint=str(demo / "model.pt"), unlabeled=str(demo / "unlabeled"),
                         eval_clean=str(demo / "clean"), eval_poisoned=str(demo / "triggered"), target_class=0,
                         preset=preset, epochs=epochs, batch_size=16, device="cpu", precision="fp32", out=str(out),
                         unlabeled_limit=32, **kw)


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory, mini_demo) -> Path:
    """Three real runs of the demo: the strong preset, the paper's ratios, and one with layer4 at 0.5."""
    root = tmp_path_factory.mktemp("library")
    for name, preset, ratios in (("20260301-100000-strong", "strong", {}), ("20260301-110000-paper", "paper", {}),
                                 ("20260301-120000-layer4", "paper", {"layer4": 0.5})):
        job = CleanseJob(_cfg(mini_demo, root / name, preset, 2, ratios=ratios, ema_decay=None), step_rate=0)
        events = list(job.events())
        assert isinstance(events[-1], Finished), events[-1]
    return root


def _load(qtbot, w, folder: Path, rows: int) -> None:
    w.library_panel.add_folder(folder)
    qtbot.waitUntil(lambda: not w.library_panel.is_loading and w.library_panel.model.rowCount() == rows,
                    timeout=20_000)


def test_library_lists_reopens_overlays_and_exports(qtbot, window, three_runs, tmp_path, messages):
    w = window
    _load(qtbot, w, three_runs, 3)
    panel = w.library_panel
    names = [panel._record_at(i).name for i in range(3)]
    assert names == ["20260301-120000-layer4", "20260301-110000-paper", "20260301-100000-strong"]  # newest first
    record = panel._record_at(0)
    assert record.status == "finished" and record.epochs_text == "2/2" and record.ratios_text == "paper, layer4=0.5"
    assert panel.model.data(panel.model.index(panel.model.row_of(record.path), 8)) == "finished"

    # reopen a run: its curves, summary and status; its model is offered
    panel.select(three_runs / "20260301-100000-strong")
    assert panel.model_button.isEnabled()
    panel.open_button.click()
    assert w.right_stack.currentWidget() is w.right_splitter and w.view_tabs.currentWidget() is w.plot_splitter
    assert w.run_view.epochs_plot.epochs() == [1, 2] and len(w.run_view.loss_plot.raw_values()) == 2
    assert "Cleansed" in w.run_view.summary.text() and "preset strong" in w.run_view.summary.text()
    assert w.run_view.epochs_plot.teacher["asr"] is not None  # the teacher's reference lines are back

    # filter by text
    panel.filter_edit.setText("layer4")
    assert panel.proxy.rowCount() == 1
    panel.filter_edit.clear()

    # tick three and overlay them
    for r in panel.model.records():
        panel.model.setData(panel.model.index(panel.model.row_of(r.path), 0), Qt.CheckState.Checked.value,
                            Qt.ItemDataRole.CheckStateRole)
    assert panel.compare_button.isEnabled() and "(3)" in panel.compare_button.text()
    panel.compare_button.click()
    assert w.view_tabs.currentWidget() is w.compare_view
    cv = w.compare_view
    for key in ("loss", "acc", "asr"):
        assert len(cv.plots[key].listDataItems()) == 3
    assert [label.text for _, label in cv.legend.items] == names  # one legend entry per run, table order
    assert not cv.plots["proxy_asr"].listDataItems()  # no run scanned: said in the plot, no empty curves
    assert "none of these runs" in cv.empty_labels["proxy_asr"].textItem.toPlainText()

    png, table = tmp_path / "cmp.png", tmp_path / "cmp.csv"
    assert cv.export_png(png) and cv.export_csv(table)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(io.StringIO(table.read_text())))
    assert len(rows) == 6 and {r["run"] for r in rows} == set(names)
    first = json.loads((three_runs / rows[0]["run"] / "metrics.jsonl").read_text().splitlines()[0])
    assert float(rows[0]["acc"]) == pytest.approx(first["acc"]) and rows[0]["proxy_asr"] == ""
    before = table.read_bytes()
    messages.answer = False  # an existing file is never replaced without a yes
    table.write_text("mine")
    assert not cv.export_csv(table) and table.read_text() == "mine" and "Replace the file?" in messages.titles()


def test_delete_asks_and_reveal_opens_the_folder(qtbot, window, three_runs, tmp_path, messages, monkeypatch):
    w = window
    copy = tmp_path / "lib"
    shutil.copytree(three_runs / "20260301-100000-strong", copy / "20260301-100000-strong")
    shutil.copytree(three_runs / "20260301-110000-paper", copy / "20260301-110000-paper")
    _load(qtbot, w, copy, 2)
    panel = w.library_panel
    opened = []
    monkeypatch.setattr("bcu_gui.app.library_view.QDesktopServices.openUrl", lambda url: opened.append(url))
    panel.select(copy / "20260301-100000-strong")
    panel.reveal_button.click()
    assert opened and Path(opened[0].toLocalFile()) == copy / "20260301-100000-strong"

    messages.answer = False
    panel.delete_button.click()
    assert (copy / "20260301-100000-strong").exists() and panel.model.rowCount() == 2
    messages.answer = True
    panel.delete_button.click()  # to the trash, or (no trash here) deleted after a second question
    assert not (copy / "20260301-100000-strong").exists() and panel.model.rowCount() == 1
    assert messages.titles()[0] == "Delete runs?"


def test_two_thousand_runs_and_a_damaged_one_load_in_batches_and_the_window_stays_live(qtbot, window, three_runs, tmp_path):
    w = window
    src = three_runs / "20260301-100000-strong"
    config, summary = (src / "config.json").read_bytes(), (src / "summary.json").read_bytes()
    root = tmp_path / "many"
    for i in range(2000):
        folder = root / f"20250101-{i // 60 // 60:02d}{i // 60 % 60:02d}{i % 60:02d}-run"
        folder.mkdir(parents=True)
        (folder / "config.json").write_bytes(config)
        (folder / "summary.json").write_bytes(summary)
    (root / "20250102-000000-damaged").mkdir()  # listed as damaged, never a crash
    (root / "20250102-000000-damaged" / "config.json").write_text("{half a fi")
    (root / "20250102-000000-damaged" / "summary.json").write_bytes(summary)
    (root / "photos").mkdir()  # not a run: skipped
    (root / "photos" / "config.json").write_text('{"camera": "x"}')
    ticks = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    start = time.perf_counter()
    _load(qtbot, w, root, 2001)
    seconds = time.perf_counter() - start
    timer.stop()
    panel = w.library_panel
    assert panel.batches_received >= 10  # handed over in batches, each shown as it came
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert len(ticks) >= 5 and max(gaps) < max(1.0, seconds / 3), (len(ticks), max(gaps), seconds)
    assert panel._record_at(0).name == "20250102-000000-damaged"  # sorted newest first
    assert panel._record_at(0).status == "damaged" and panel._record_at(1).name == "20250101-003319-run"
    assert panel.count_label.text() == "2,001 runs"


@pytest.mark.slow
def test_watch_a_live_cleanse_in_another_process_to_its_end(qtbot, window, mini_demo, tmp_path):
    w = window
    run = tmp_path / "remote-run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bcu_gui.cli", "cleanse", str(mini_demo / "model.pt"), "--unlabeled",
         str(mini_demo / "unlabeled"), "--eval-clean", str(mini_demo / "clean"), "--eval-poisoned",
         str(mini_demo / "triggered"), "--target-class", "0", "--preset", "strong", "--epochs", "12",
         "--batch-size", "16", "--device", "cpu", "--precision", "fp32", "--out", str(run)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        w.watcher._timer.setInterval(50)
        updates = []
        w.watcher.updated.connect(updates.append)
        assert w.watch_run(run)  # before the process has made the folder: it waits for the run
        assert w.watch_banner.isVisible() and "waiting" in w.watch_banner.text()
        with qtbot.waitSignal(w.watcher.ended, timeout=120_000) as ended:
            pass
    finally:
        _, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, EXIT_RUINED), err  # a short run (or a random tiny teacher) may be judged ruined: exit 3
    assert ended.args[0].state == "finished"
    assert len([u for u in updates if u.new_rows]) >= 2  # followed epoch by epoch
    assert "running" in [u.state for u in updates]
    assert w.run_view.epochs_plot.epochs() == list(range(1, 13))
    assert "finished" in w.watch_banner.text() and "12 of 12 epochs" in w.watch_banner.text()
    assert "Cleansed" in w.run_view.summary.text()


def test_library_folders_are_remembered_and_forgotten(qtbot, window, three_runs):
    from bcu_gui.app.settings import AppSettings

    w = window
    _load(qtbot, w, three_runs, 3)
    assert str(three_runs.resolve()) in AppSettings().library_folders()  # kept for the next session
    assert Path(w.training_panel.values()["output_root"]) in w.library_panel.roots()  # where the app writes runs
    w.library_panel.remove_folder(str(three_runs.resolve()))
    qtbot.waitUntil(lambda: not w.library_panel.is_loading, timeout=20_000)
    assert w.library_panel.model.rowCount() == 0 and three_runs.exists()  # forgotten, not deleted


def test_watching_a_run_whose_writer_is_gone_says_it_died(qtbot, window, three_runs, tmp_path):
    from bcu_gui.core.heartbeat import HEARTBEAT_FILE, this_host

    w = window
    run = tmp_path / "killed"
    shutil.copytree(three_runs / "20260301-100000-strong", run)
    (run / "summary.json").unlink()
    (run / HEARTBEAT_FILE).write_text(json.dumps({"pid": 2 ** 22 + 4321, "host": this_host(),
                                                  "started": time.time(), "beat": time.time(), "beats": 9,
                                                  "interval": 5}))
    with qtbot.waitSignal(w.watcher.ended, timeout=10_000) as ended:
        assert w.watch_run(run)
    assert ended.args[0].state == "died" and "died" in w.watch_banner.text()
    assert w.run_view.epochs_plot.epochs() == [1, 2]  # what it wrote before it died is shown
    assert w.library_panel.model.row_of(run) is not None  # and the library lists it as unfinished
    assert w.library_panel.model.record(w.library_panel.model.row_of(run)).status == "unfinished"


def test_a_running_run_opens_live_and_its_row_follows_it(qtbot, window, three_runs, tmp_path):
    from bcu_gui.core.heartbeat import Heartbeat

    w = window
    root = tmp_path / "lib"
    run = root / "20260301-130000-live"
    shutil.copytree(three_runs / "20260301-100000-strong", run)
    summary = (run / "summary.json").read_bytes()
    (run / "summary.json").unlink()
    beat = Heartbeat(run, epochs=2, interval=0.1)  # this process plays the writer
    beat.start()
    try:
        _load(qtbot, w, root, 1)
        panel = w.library_panel
        assert panel.model.record(0).status == "running"
        w.watcher._timer.setInterval(50)
        assert w.open_run(run)  # a run being written is followed, not shown as a still
        assert w.watcher.is_watching and "live" in w.watch_banner.text()
    finally:
        (run / "summary.json").write_bytes(summary)
        beat.stop()
    with qtbot.waitSignal(w.watcher.ended, timeout=10_000) as ended:
        pass
    assert ended.args[0].state == "finished"
    panel.refresh_running()
    assert panel.model.record(0).status == "finished"
