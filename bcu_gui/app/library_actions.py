"""What the window does for the run library: reopen a run, overlay several, watch one being written.

Kept beside the window rather than in it, so the window only names its entry points (``open_run``,
``compare_runs``, ``watch_run``) and places the views.
"""

from __future__ import annotations

from pathlib import Path

from ..core.run_library import read_curves
from ..core.runfolder.layout import CONFIG_FILE, HEARTBEAT_FILE, METRICS_FILE, SUMMARY_FILE
from ..core.runfolder.reader import RunRecord, read_record, read_summary
from . import dialogs
from .saved_run import record_html, show_curves


def _show_run_page(window) -> None:
    window.right_stack.setCurrentWidget(window.right_splitter)


def open_run(window, path: str | Path) -> bool:
    """Curves, result box and status of the run in ``path``; the library selects it."""
    record = read_record(path)
    if record is None:
        dialogs.error(window, "Not a run folder", f"{path} holds no run of BCU Studio (no config.json, "
                      "metrics.jsonl or summary.json)")
        return False
    if record.status == "running":  # being written by another process: follow it live
        return watch_run(window, record.path)
    window.watcher.stop(hide=True)
    summary = read_summary(record.path)
    curves = read_curves(record.path)
    teacher_proxy = summary.teacher_scan.proxy_asr if summary is not None and summary.teacher_scan else None
    show_curves(window.run_view, curves, record.epochs_planned or record.epochs_done,
                summary.teacher.acc if summary else record.teacher_acc,
                summary.teacher.asr if summary else record.teacher_asr, teacher_proxy)
    rv = window.run_view
    rv.feature_view.load_run(record.path)  # its feature-space frames, when it recorded them
    rv.summary.clear_history()
    if summary is not None and record.status in ("finished", "stopped"):
        rv.summary.show_finished(summary, summary.preset)
    else:
        rv.summary.show_text(record_html(record))
    _show_run_page(window)
    window.view_tabs.setCurrentWidget(window.plot_splitter)
    window.library_panel.select(record.path)
    window.log_pane.append_message(f"opened run {record.path} ({record.status})")
    window.statusBar().showMessage(f"Showing the saved run {record.name} ({record.status}).")
    return True


def compare_runs(window, runs) -> None:
    records: list[RunRecord] = []
    for run in runs:
        record = run if isinstance(run, RunRecord) else read_record(run)
        if record is not None:
            records.append(record)
    window.compare_view.show_runs(records)
    _show_run_page(window)
    window.view_tabs.setCurrentWidget(window.compare_view)
    splitter = window.right_splitter  # four plots need room: give them at least 75% of the height
    sizes = splitter.sizes()
    total = sum(sizes)
    if total and sizes[0] < 0.75 * total:
        rest = total - int(0.75 * total)
        below = sum(sizes[1:]) or 1
        splitter.setSizes([int(0.75 * total)] + [int(rest * v / below) for v in sizes[1:]])
    window.statusBar().showMessage(f"Comparing {len(records)} runs.")


def watch_run(window, path: str | Path) -> bool:
    folder = Path(path)
    if folder.exists() and not folder.is_dir() or not folder.parent.is_dir():
        dialogs.error(window, "Cannot watch this folder", f"{folder} is not a folder")
        return False
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()  # absent: a run about to start
    if not names & {CONFIG_FILE, METRICS_FILE, HEARTBEAT_FILE, SUMMARY_FILE} and names:
        dialogs.error(window, "Not a run folder", f"{folder} holds other files and no run; choose the folder "
                      "named by `bcu cleanse --out`, or an empty one a run is about to write")
        return False
    _show_run_page(window)
    window.view_tabs.setCurrentWidget(window.plot_splitter)
    window.run_view.summary.clear_history()
    window.watcher.watch(folder)
    window.log_pane.append_message(f"watching {folder}")
    return True
