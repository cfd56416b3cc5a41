"""Run controls (Start, Pause/Resume, Stop, Save), progress with time left, and the result summary.

The panel sits in a fixed bar under the scrolling form, so the actions and the progress are always in view.
Its buttons show the run view's actions (``QAction`` with keyboard shortcuts, also in the Run menu): the
panel only displays; the run view decides what the actions do and when they are enabled.
"""

from __future__ import annotations

import html
import time

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (QGroupBox, QHBoxLayout, QLabel, QProgressBar, QPushButton, QSizePolicy,
                               QToolButton, QVBoxLayout, QWidget)

from ...common import pct
from ...core.events import CpuShare, EpochEnd, Started, Step
from ...core.summary import RunSummary
from ..plain import NAME_LIMIT, html_text


def duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _action_button(action: QAction, bold: bool = False) -> QToolButton:
    button = QToolButton()
    button.setDefaultAction(action)
    button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
    button.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
    button.setMinimumHeight(30)
    if bold:
        button.setStyleSheet("QToolButton:enabled { font-weight: bold; }")
    return button


class RunPanel(QGroupBox):
    """The action buttons, the line saying what is missing, the progress bar and the after-run buttons."""

    run_again_clicked = Signal()

    def __init__(self, start: QAction, pause: QAction, stop: QAction, save: QAction,
                 parent: QWidget | None = None) -> None:
        super().__init__("5 · Run", parent)
        self.start_button = _action_button(start, bold=True)
        self.pause_button = _action_button(pause)
        self.stop_button = _action_button(stop)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button, 2)
        buttons.addWidget(self.pause_button, 1)
        buttons.addWidget(self.stop_button, 1)
        self._buttons = buttons

        self.missing_label = QLabel()
        self.missing_label.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress.setFormat("idle")
        self.progress.setValue(0)
        self.eta_label = QLabel()
        self.eta_label.setStyleSheet("color: gray;")
        self.cpu_label = QLabel()  # shown only while other programs compete for the CPUs
        self.cpu_label.setWordWrap(True)
        self.cpu_label.setStyleSheet("color: #8a5300;")
        self.cpu_label.setVisible(False)

        self.save_button = _action_button(save)
        self.run_again_button = QPushButton("Run again with the paper's ratios")
        self.run_again_button.setToolTip("Same demo, Paper preset: see what the ratios change (the previous "
                                         "curves stay as faded references)")
        self.run_again_button.clicked.connect(self.run_again_clicked)
        self.run_again_button.setVisible(False)
        after = QHBoxLayout()
        after.addWidget(self.save_button)
        after.addWidget(self.run_again_button)

        layout = QVBoxLayout(self)
        layout.setSpacing(4)
        layout.addLayout(buttons)
        layout.addWidget(self.missing_label)
        layout.addWidget(self.progress)
        layout.addWidget(self.eta_label)
        layout.addWidget(self.cpu_label)
        layout.addLayout(after)

        self._total_steps = 0
        self._epochs = 1
        self._t0 = 0.0
        self._paused_at: float | None = None
        self._label = ""  # the progress text without the pause note

    def add_action_button(self, action: QAction) -> QToolButton:
        """One more action in the button row (the scan view's Scan)."""
        button = _action_button(action)
        self._buttons.addWidget(button, 1)
        return button

    # -- state -------------------------------------------------------------------------------------------
    def show_ready(self, missing: list[str], ready_text: str) -> None:
        """Say plainly what is missing, or that the run can start."""
        if missing:
            self.missing_label.setText("<span style='color:#8a5300'>To start: "
                                       + html.escape("; ".join(missing)) + ".</span>")
        else:
            self.missing_label.setText(f"<span style='color:#1b5e20'>Ready. {html.escape(ready_text)}</span>")

    def show_pause(self, state: str) -> None:
        """'pausing' (asked, the batch under way finishes), 'paused' (the job confirmed) or 'running'."""
        now = time.monotonic()
        if state == "paused" and self._paused_at is None:
            self._paused_at = now
        elif state == "running" and self._paused_at is not None:
            self._t0 += now - self._paused_at  # time left ignores the pause
            self._paused_at = None
        note = {"pausing": " · pausing after this batch…", "paused": " · paused"}.get(state, "")
        self.progress.setFormat(self._label + note)

    def set_stopping(self) -> None:
        self._label = "stopping after this batch; saving…"
        self.progress.setFormat(self._label)

    # -- progress ----------------------------------------------------------------------------------------
    def begin(self) -> None:
        self.run_again_button.setVisible(False)
        self.cpu_label.setVisible(False)
        self.missing_label.setText("Preparing: reading images, measuring the teacher, building the student…")
        self.progress.setRange(0, 0)  # busy until Started tells the total
        self._label = "preparing…"
        self.progress.setFormat(self._label)
        self.eta_label.setText("")
        self._paused_at = None

    def on_started(self, event: Started) -> None:
        self._epochs = event.epochs
        self._total_steps = event.epochs * event.steps_per_epoch
        self._t0 = time.monotonic()
        self.progress.setRange(0, self._total_steps)
        self.progress.setValue(0)
        self._label = f"epoch 1/{event.epochs} · step 0/{self._total_steps}"
        self.progress.setFormat(self._label)
        self.missing_label.setText(f"Training on {event.device}: {event.images:,} unlabelled images, "
                                   f"{event.steps_per_epoch} steps per epoch.")

    def on_step(self, event: Step) -> None:
        self.progress.setValue(event.step)
        text = f"epoch {event.epoch + 1}/{self._epochs} · step {event.step:,}/{self._total_steps:,}"
        elapsed = time.monotonic() - self._t0
        if event.step >= 2 and elapsed > 0:
            left = elapsed / event.step * (self._total_steps - event.step)
            text += f" · {duration(left)} left"
            self.eta_label.setText(f"elapsed {duration(elapsed)}; loss {event.loss:.4f}; "
                                   f"T {event.temperature:.2f}; lr {event.lr:.4g}")
        if not self._label.startswith("stopping"):
            self._label = text
            self.progress.setFormat(text + (" · paused" if self._paused_at is not None else ""))

    def on_cpu_share(self, event: CpuShare) -> None:
        """Say while it lasts that other programs slow the run down, and how many threads it trains with."""
        self.cpu_label.setVisible(event.contended)
        if event.contended and event.others is not None:
            self.cpu_label.setText(f"CPU busy: other programs keep {event.others:.1f} of {event.cpus} CPUs busy; "
                                   f"training with {event.threads} thread{'s' if event.threads != 1 else ''}, "
                                   "slower than alone.")
            self.cpu_label.setToolTip(event.message)

    def on_epoch(self, event: EpochEnd) -> None:
        self.eta_label.setText(f"epoch {event.epoch}/{event.epochs}: ACC {pct(event.acc)}, ASR {pct(event.asr)}, "
                               f"agreement {pct(event.agreement)}, {event.seconds:.1f} s")

    def end(self, text: str) -> None:
        """The run's last event arrived (its thread may still be winding down)."""
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
        self._label = text
        self._paused_at = None
        self.progress.setFormat(text)
        self.cpu_label.setVisible(False)


def scan_table(summary: RunSummary) -> str:
    """The two scans side by side (teacher | cleansed), with the proxy ASR of the teacher's trigger; '' when
    the run did not scan."""
    t, c = summary.teacher_scan, summary.cleansed_scan
    if t is None:
        return ""

    def cell(record) -> str:
        if record is None:
            return "not scanned"
        text = html.escape(record.verdict_line())
        color = "#b00020" if record.verdict == "backdoor" else "#2e7d32" if record.verdict == "clean" else "gray"
        return f"<span style='color:{color}'>{text}</span>"

    return ("<table cellspacing='0' cellpadding='2'>"
            "<tr><td></td><td><b>Scan: teacher</b>&nbsp;&nbsp;</td><td><b>Scan: cleansed</b></td></tr>"
            f"<tr><td>Verdict&nbsp;</td><td>{cell(t)}&nbsp;&nbsp;</td><td>{cell(c)}</td></tr>"
            f"<tr><td>Proxy ASR&nbsp;</td><td>{pct(t.proxy_asr)}</td>"
            f"<td><b>{pct(c.proxy_asr) if c else 'n/a'}</b></td></tr></table>")


# The verdict line's colour by outcome kind (core/outcome.py): green only for a verified removal.
VERDICT_COLOURS = {"removed": "#1b7a2f", "remains": "#b00020", "ruined": "#b00020", "unverified": "#8a5a00",
                   "stopped": "#555555"}


class SummaryBox(QGroupBox):
    """Teacher vs cleansed ACC/ASR, time and where the run was saved; earlier runs of this session stay listed."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Result", parent)
        self.label = QLabel("Start a run to compare the teacher with the cleansed student here.")
        self.label.setWordWrap(True)
        self.label.setTextFormat(Qt.TextFormat.RichText)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        self.label.setOpenExternalLinks(True)
        self.label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        layout = QVBoxLayout(self)
        layout.addWidget(self.label)
        self._previous: list[str] = []
        self._current = ""

    def text(self) -> str:
        return self.label.text()

    def remember_current(self, label: str) -> None:
        """Keep the last result as a line under the next one (the demo's before/after comparison)."""
        if self._current:
            self._previous.append(f"<b>{html.escape(label)}:</b> {self._current}")

    def clear_history(self) -> None:
        self._previous = []

    def show_text(self, body: str) -> None:
        prev = "".join(f"<br><span style='color:gray'>{p}</span>" for p in self._previous)
        self.label.setText(body + prev)

    def show_teacher(self, acc: float | None, asr: float | None) -> None:
        self._current = ""
        self.show_text(f"Teacher (suspicious model): ACC <b>{pct(acc)}</b>, ASR <b>{pct(asr)}</b>. Training…")

    def show_finished(self, summary: RunSummary, preset: str) -> None:
        teacher, final = summary.teacher, summary.cleansed
        state = (f"Stopped after {summary.epochs_completed} of {summary.epochs} epochs" if summary.cancelled
                 else f"Done: {summary.epochs_completed} epochs")
        self._current = (f"ACC {pct(final.acc)}, ASR {pct(final.asr)} "
                         f"(teacher {pct(teacher.acc)} / {pct(teacher.asr)}), preset {preset}")
        url = html.escape(QUrl.fromLocalFile(summary.run_dir).toString(), quote=True)
        ema = summary.ema  # the other label-free candidate, beside the saved one (its file is ema.pt)
        ema_cell = (f"<td>&nbsp;&nbsp;<span style='color:gray'>moving average: {pct(ema.acc)} / {pct(ema.asr)}"
                    "</span></td>" if ema is not None and summary.kept != "ema" else "")
        # why this student: said when a rule ranked the epochs, or could not (last and EMA say it in their name)
        ranked = summary.kept in ("best", "proxy") or summary.kept_reason.startswith("no epoch")
        why = f": {html.escape(summary.kept_reason)}" if ranked and summary.kept_reason else ""
        outcome = summary.outcome()
        colour = VERDICT_COLOURS.get(outcome.kind, "black")
        self.show_text(
            f"<p style='color:{colour}'><b>{html.escape(outcome.headline[:1].upper() + outcome.headline[1:])}"
            "</b></p>"
            "<table cellspacing='0' cellpadding='2'>"
            "<tr><td></td><td><b>ACC</b></td><td><b>ASR</b></td></tr>"
            f"<tr><td>Teacher&nbsp;</td><td>{pct(teacher.acc)}&nbsp;&nbsp;</td>"
            f"<td>{pct(teacher.asr)}</td></tr>"
            f"<tr><td>Cleansed&nbsp;</td><td><b>{pct(final.acc)}</b>&nbsp;&nbsp;</td>"
            f"<td><b>{pct(final.asr)}</b></td>{ema_cell}</tr></table>"
            f"{scan_table(summary)}"
            f"{state} in {duration(summary.seconds)} on {html.escape(summary.device)}, "
            f"preset {html.escape(preset)}; saved {html.escape(summary.kept_text())}{why}.<br>"
            f"Run folder: <a href='{url}'>{html_text(summary.run_dir, 2 * NAME_LIMIT)}</a>")

    def show_failed(self, message: str) -> None:
        self._current = ""
        self.show_text(f"<span style='color:#b00020'><b>The run failed:</b> {html.escape(message)}</span>")
