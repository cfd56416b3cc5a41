"""Run controls (Start, Pause/Resume, Stop, Save), progress with time left, and the result summary.

The panel only displays and emits intentions; the window decides what they mean and talks to the runner.
"""

from __future__ import annotations

import html
import time

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtWidgets import (QGroupBox, QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout,
                               QWidget)

from ...core.events import EpochEnd, Started, Step


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class RunPanel(QGroupBox):
    """Start / Pause / Stop, the line saying what is missing, the progress bar and Save."""

    start_clicked = Signal()
    pause_clicked = Signal()
    stop_clicked = Signal()
    save_clicked = Signal()
    run_again_clicked = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("5 · Run", parent)
        self.start_button = QPushButton("Start cleansing")
        self.start_button.setDefault(True)
        self.start_button.setStyleSheet("QPushButton:enabled { font-weight: bold; }")
        self.pause_button = QPushButton("Pause")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop after the current batch; the run folder and the model so far are kept")
        self.start_button.clicked.connect(self.start_clicked)
        self.pause_button.clicked.connect(self.pause_clicked)
        self.stop_button.clicked.connect(self.stop_clicked)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button, 2)
        buttons.addWidget(self.pause_button, 1)
        buttons.addWidget(self.stop_button, 1)

        self.missing_label = QLabel()
        self.missing_label.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress.setFormat("idle")
        self.progress.setValue(0)
        self.eta_label = QLabel()
        self.eta_label.setStyleSheet("color: gray;")

        self.save_button = QPushButton("Save cleansed model…")
        self.save_button.setToolTip("Save the student as a state_dict (.pt) and .safetensors, with a .json sidecar")
        self.save_button.clicked.connect(self.save_clicked)
        self.save_button.setEnabled(False)
        self.run_again_button = QPushButton("Run again with the paper's ratios")
        self.run_again_button.setToolTip("Same demo, Paper preset: see what the ratios change (the previous "
                                         "curves stay as faded references)")
        self.run_again_button.clicked.connect(self.run_again_clicked)
        self.run_again_button.setVisible(False)
        after = QHBoxLayout()
        after.addWidget(self.save_button)
        after.addWidget(self.run_again_button)

        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addWidget(self.missing_label)
        layout.addWidget(self.progress)
        layout.addWidget(self.eta_label)
        layout.addLayout(after)

        self._running = False
        self._total_steps = 0
        self._steps_per_epoch = 1
        self._epochs = 1
        self._t0 = 0.0
        self._paused_at: float | None = None
        self.set_running(False)
        self.set_ready([], "")

    # -- state -------------------------------------------------------------------------------------------
    def set_ready(self, missing: list[str], ready_text: str) -> None:
        """Enable Start only with nothing missing; say plainly what is."""
        ok = not missing
        self.start_button.setEnabled(ok and not self._running)
        if self._running:
            return
        if ok:
            self.missing_label.setText(f"<span style='color:#1b5e20'>Ready. {html.escape(ready_text)}</span>")
        else:
            self.missing_label.setText("<span style='color:#8a5300'>To start: "
                                       + html.escape("; ".join(missing)) + ".</span>")

    def set_running(self, running: bool) -> None:
        """Buttons for a run in progress (Start is re-enabled by the next ``set_ready`` once it has ended)."""
        self._running = running
        self.pause_button.setEnabled(running)
        self.stop_button.setEnabled(running)
        if running:
            self.start_button.setEnabled(False)
            self.run_again_button.setVisible(False)
        else:
            self.pause_button.setText("Pause")
            self._paused_at = None

    def set_paused(self, paused: bool) -> None:
        self.pause_button.setText("Resume" if paused else "Pause")
        now = time.monotonic()
        if paused:
            self._paused_at = now
            self.progress.setFormat(self.progress.format().split(" · paused")[0] + " · paused")
        elif self._paused_at is not None:
            self._t0 += now - self._paused_at  # time left ignores the pause
            self._paused_at = None

    def set_stopping(self) -> None:
        self.stop_button.setEnabled(False)
        self.pause_button.setEnabled(False)
        self.progress.setFormat("stopping after this batch…")

    # -- progress ----------------------------------------------------------------------------------------
    def begin(self) -> None:
        self.set_running(True)
        self.missing_label.setText("Preparing: reading images, measuring the teacher, building the student…")
        self.progress.setRange(0, 0)  # busy until Started tells the total
        self.progress.setFormat("preparing…")
        self.eta_label.setText("")

    def on_started(self, event: Started) -> None:
        self._epochs, self._steps_per_epoch = event.epochs, event.steps_per_epoch
        self._total_steps = event.epochs * event.steps_per_epoch
        self._t0 = time.monotonic()
        self.progress.setRange(0, self._total_steps)
        self.progress.setValue(0)
        self.progress.setFormat(f"epoch 1/{event.epochs} · step 0/{self._total_steps}")
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
        self.progress.setFormat(text)

    def on_epoch(self, event: EpochEnd) -> None:
        self.eta_label.setText(f"epoch {event.epoch}/{event.epochs}: ACC {pct(event.acc)}, ASR {pct(event.asr)}, "
                               f"agreement {pct(event.agreement)}, {event.seconds:.1f} s")

    def end(self, text: str) -> None:
        """The run's last event arrived; its thread may still be winding down, so Start waits for set_running."""
        self.pause_button.setEnabled(False)
        self.stop_button.setEnabled(False)
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
        self.progress.setFormat(text)


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

    def show_finished(self, summary: dict, run_dir: str, cancelled: bool, preset: str) -> None:
        teacher = summary.get("teacher") or {}
        final = summary.get("cleansed") or {}
        state = (f"Stopped after {summary.get('epochs_completed', 0)} of {summary.get('epochs', '?')} epochs"
                 if cancelled else f"Done: {summary.get('epochs_completed', 0)} epochs")
        self._current = (f"ACC {pct(final.get('acc'))}, ASR {pct(final.get('asr'))} "
                         f"(teacher {pct(teacher.get('acc'))} / {pct(teacher.get('asr'))}), preset {preset}")
        url = html.escape(QUrl.fromLocalFile(run_dir).toString(), quote=True)
        self.show_text(
            "<table cellspacing='0' cellpadding='2'>"
            "<tr><td></td><td><b>ACC</b></td><td><b>ASR</b></td></tr>"
            f"<tr><td>Teacher&nbsp;</td><td>{pct(teacher.get('acc'))}&nbsp;&nbsp;</td>"
            f"<td>{pct(teacher.get('asr'))}</td></tr>"
            f"<tr><td>Cleansed&nbsp;</td><td><b>{pct(final.get('acc'))}</b>&nbsp;&nbsp;</td>"
            f"<td><b>{pct(final.get('asr'))}</b></td></tr></table>"
            f"{state} in {duration(summary.get('seconds', 0))} on {html.escape(str(summary.get('device', '')))}, "
            f"preset {html.escape(preset)}, kept the {html.escape(str(summary.get('kept', 'last')))} epoch.<br>"
            f"Run folder: <a href='{url}'>{html.escape(run_dir)}</a>")

    def show_failed(self, message: str) -> None:
        self._current = ""
        self.show_text(f"<span style='color:#b00020'><b>The run failed:</b> {html.escape(message)}</span>")
