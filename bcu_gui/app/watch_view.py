"""Watching a run that another process writes: the core follower polled from a timer, shown in the run view.

``RunWatcher`` polls ``core.watch.RunFollower`` (a few small reads; no thread needed) and shows new epochs in
the same plots a live run uses, with a banner above them that says whose run it is, how far it has got, and
in plain colours when it has finished, stopped, failed or died.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import QLabel

from ..common import pct
from ..core.run_library import curves_from_rows, read_record
from ..core.watch import RunFollower, WatchUpdate
from .plain import html_text
from .saved_run import add_rows, show_curves

POLL_MS = 1000
BANNER_STYLES = {
    "live": "background:#e3f2fd; color:#0d3c61; border:1px solid #90caf9;",
    "finished": "background:#e8f5e9; color:#1b5e20; border:1px solid #a5d6a7;",
    "stopped": "background:#fff4d6; color:#4d3800; border:1px solid #e8c66a;",
    "failed": "background:#ffebee; color:#b71c1c; border:1px solid #ef9a9a;",
}
BANNER_STYLES["died"] = BANNER_STYLES["failed"]


class RunWatcher(QObject):
    """Follows one run folder at a time; ``ended`` carries the last ``WatchUpdate``."""

    updated = Signal(object)  # every WatchUpdate with news
    ended = Signal(object)

    def __init__(self, run_view, banner: QLabel, status: Callable[[str], None], parent: QObject | None = None,
                 interval_ms: int = POLL_MS) -> None:
        super().__init__(parent)
        self._view, self.banner, self._status = run_view, banner, status
        self.follower: RunFollower | None = None
        self.last: WatchUpdate | None = None
        self._epochs_shown = 0
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.poll)

    @property
    def is_watching(self) -> bool:
        return self._timer.isActive()

    @property
    def run_dir(self) -> Path | None:
        return self.follower.run_dir if self.follower else None

    def watch(self, path: str | Path) -> None:
        """Start following ``path`` (replacing what the plots show)."""
        self.stop()
        self.follower = RunFollower(path)
        self.last = None
        self._epochs_shown = 0
        record = read_record(path)
        show_curves(self._view, curves_from_rows([]), record.epochs_planned if record else 0)
        self._view.summary.show_text(f"Watching {html.escape(str(path))}…")
        self._show_banner("live", f"Watching <b>{html.escape(Path(path).name)}</b>: waiting for the run…")
        self.banner.setVisible(True)
        self._timer.start()
        self.poll()

    def stop(self, hide: bool = False) -> None:
        self._timer.stop()
        if hide:
            self.banner.setVisible(False)

    def poll(self) -> None:
        if self.follower is None:
            return
        update = self.follower.poll()
        if update.restarted or (update.epochs and update.epochs != self._epochs_shown):
            self._epochs_shown = update.epochs  # the planned epochs became known: the axis spans them
            show_curves(self._view, curves_from_rows(self.follower.rows), update.epochs)
        elif update.new_rows:
            add_rows(self._view, curves_from_rows(list(update.new_rows)))
        rows = self.follower.rows
        name = html_text(self.follower.run_dir.name)  # a folder name: escaped and elided
        done = f"epoch {rows[-1]['epoch']} of {update.epochs or '?'}" if rows else "no epoch yet"
        last = rows[-1] if rows else {}
        scores = (f"; ACC {pct(last.get('acc'))}, ASR {pct(last.get('asr'))}" if rows else "")
        if update.ended:
            self._timer.stop()
            self._finish(update, name, done)
        elif update.state == "running":
            self._show_banner("live", f"Watching <b>{name}</b> live: {done}{scores} "
                              f"<span style='color:#555'>({html.escape(update.message)})</span>")
        if update.new_rows or update.ended or self.last is None or update.state != self.last.state:
            self.updated.emit(update)
        self.last = update
        if update.ended:
            self.ended.emit(update)

    def _finish(self, update: WatchUpdate, name: str, done: str) -> None:
        summary = update.summary
        if summary is not None:  # the whole record now: teacher lines, the result box
            show_curves(self._view, curves_from_rows(self.follower.rows), summary.epochs, summary.teacher.acc,
                        summary.teacher.asr, summary.teacher_scan.proxy_asr if summary.teacher_scan else None)
            self._view.summary.show_finished(summary, summary.preset)
            text = (f"<b>{name}</b> {'stopped' if summary.cancelled else 'finished'}: "
                    f"{summary.epochs_completed} of {summary.epochs} epochs, ACC {pct(summary.cleansed.acc)}, "
                    f"ASR {pct(summary.cleansed.asr)}")
        elif update.state == "failed":
            text = f"<b>{name}</b> failed ({done}): {html.escape(update.message)}"
            self._view.summary.show_failed(update.message)
        else:
            text = f"<b>{name}</b> died ({done}): {html.escape(update.message)}"
            self._view.summary.show_text(f"The watched run is no longer written: {html.escape(update.message)}")
        self._show_banner(update.state, text)
        self._status(f"The watched run {update.state}.")

    def _show_banner(self, kind: str, text: str) -> None:
        self.banner.setText(text)
        self.banner.setStyleSheet(BANNER_STYLES[kind] + " border-radius:3px; padding:5px 8px;")
