"""The run view: one cleansing run's life in the app, from Start to the saved model.

It owns the ``JobRunner``, the live plots, the run panel (actions and progress), the result box and the
Start / Pause / Stop / Save actions (with their keyboard shortcuts), and it handles the job's events in one
method, ``handle(event)``, the same shape as the CLI's console reporter. The window only places its widgets,
gives it a config to start and locks its input panels while ``running_changed`` says a run is on. A scan
view or a run library would be siblings of this class, not new branches in the window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QFileDialog, QStyle, QWidget

from ..common import pct
from ..core.eval_schedule import describe_scope
from ..core.events import CpuShare, EpochEnd, Event, Failed, FeatureFrame, Finished, Log, Paused, Resumed, Started, Step
from ..core.job import CleanseConfig, CleanseJob
from ..core.models import LoadedModel
from ..core import untrusted
from ..core.runfolder.layout import MODEL_FILE, SIDECAR_FILE
from ..core.runfolder.writer import model_files, save_model
from . import dialogs
from .feature_view import FeatureView
from .log_pane import LogPane
from .panels.common import wait_cursor
from .panels.run_panel import RunPanel, SummaryBox
from .plots import EpochsPlot, LossPlot
from .settings import AppSettings
from .worker import JobRunner


class _ScanRelay(QObject):
    """Carries a run's scan progress from the job's thread to the GUI thread (a queued signal)."""

    progress = Signal(str, object)  # phase ("teacher" / "cleansed"), a core.scan event

FAILURE_TITLES = {"memory": "Out of memory", "disk": "Disk full", "input": "Cannot run with these inputs",
                  "diverged": "Training diverged", "internal": "Unexpected error"}
MODEL_FILTER = "PyTorch state_dict (*.pt);;safetensors (*.safetensors)"
START_KEYS = (QKeySequence("F5"), QKeySequence("Ctrl+Return"))
PAUSE_KEYS = (QKeySequence("F6"),)
STOP_KEYS = (QKeySequence("Shift+F5"),)

JobFactory = Callable[[CleanseConfig, LoadedModel], object]


def _shortcut_tip(text: str, keys: tuple[QKeySequence, ...]) -> str:
    return f"{text} ({' or '.join(k.toString(QKeySequence.SequenceFormat.NativeText) for k in keys)})"


class RunView(QObject):
    """Runner, plots, progress, result and the run actions; ``handle(event)`` shows every job event."""

    start_requested = Signal()  # Start pressed: the window builds the config from its panels
    run_again_requested = Signal()  # the demo's comparison with the paper's ratios
    running_changed = Signal(bool)
    run_finished = Signal(object)  # Finished, after the view has shown it
    run_failed = Signal(object)  # Failed, after the view has shown it
    batch_chosen = Signal(int, str)  # the batch size a started run uses, and the engine's reason

    def __init__(self, window: QWidget, settings: AppSettings, log_pane: LogPane,
                 status: Callable[[str], None]) -> None:
        super().__init__(window)
        self._window, self._settings, self.log_pane, self._status = window, settings, log_pane, status
        self.runner = JobRunner(self)
        self._resume_next = False  # the next start continues the unfinished run in cfg.out
        self._hooks: list = []  # this run's extra hooks (the scan's), built by ``start``
        self.job_factory: JobFactory = lambda cfg, model: CleanseJob(cfg, model=model, hooks=self._hooks,
                                                                     resume=self._resume_next)
        self.job: object | None = None  # the last run's job (its ``trained`` model outlives a full disk)
        self.scan_relay = _ScanRelay(self)
        self.scan_relay.progress.connect(self._on_scan_event)
        self._scan_shown = -1.0
        self.scan_config = None  # a ScanConfig for runs that scan (None: the scan's measured defaults)
        self.offer_paper_comparison = False  # the demo offers "run again with the paper's ratios"
        self.last_config: CleanseConfig | None = None
        self.last_finished: Finished | None = None
        self.last_failed: Failed | None = None
        self.result_dir: Path | None = None  # the run whose student "Save cleansed model…" saves
        self._run_model: LoadedModel | None = None
        self._preset_label = ""
        self._last_step = 0
        self._ready = False
        self._stopping = False
        self._ended = False  # the run's last event has arrived (its thread may still be ending)
        self._closed = False  # the window has closed: late events are ignored

        style = window.style()
        self.start_action = self._action("Start cleansing", START_KEYS, "Start distilling the student",
                                         style.standardIcon(QStyle.StandardPixmap.SP_MediaPlay))
        self.pause_action = self._action("Pause", PAUSE_KEYS, "Pause after the current batch; press again "
                                         "to resume", style.standardIcon(QStyle.StandardPixmap.SP_MediaPause))
        self.stop_action = self._action("Stop", STOP_KEYS, "Stop after the current batch; the student so far "
                                        "is saved and measured, the run folder kept",
                                        style.standardIcon(QStyle.StandardPixmap.SP_MediaStop))
        self.save_action = QAction("&Save cleansed model…", self, shortcut=QKeySequence.StandardKey.Save)
        self.save_action.setToolTip("Save the student as a state_dict (.pt) and .safetensors, with a .json "
                                    "sidecar")
        self.start_action.triggered.connect(self.start_requested)
        self.pause_action.triggered.connect(self.toggle_pause)
        self.stop_action.triggered.connect(self.stop)
        self.save_action.triggered.connect(self.choose_save_path)

        self.loss_plot = LossPlot()
        self.epochs_plot = EpochsPlot()
        self.feature_view = FeatureView()  # its own tab beside the curves; fed by FeatureFrame events
        self.summary = SummaryBox()
        self.run_panel = RunPanel(self.start_action, self.pause_action, self.stop_action, self.save_action)
        self.run_panel.run_again_clicked.connect(self.run_again_requested)

        self.runner.event.connect(self.handle)
        self.runner.running_changed.connect(self._on_running_changed)
        self.runner.paused_changed.connect(self._on_paused_changed)
        self._update_actions()

    def _action(self, text: str, keys: tuple[QKeySequence, ...], tip: str, icon) -> QAction:
        action = QAction(icon, text, self)
        action.setShortcuts(list(keys))
        action.setToolTip(_shortcut_tip(tip, keys))
        self._window.addAction(action)  # shortcuts work wherever the focus is in the window
        return action

    # -------------------------------------------------------------------------------------------- state
    @property
    def is_running(self) -> bool:
        return self.runner.is_running

    def set_ready(self, missing: list[str], ready_text: str) -> None:
        """What the inputs allow: Start is enabled only with nothing missing."""
        self._ready = not missing
        if not self.runner.is_running:
            self.run_panel.show_ready(missing, ready_text)
        self._update_actions()

    def _update_actions(self) -> None:
        running = self.runner.is_running
        live = running and not self._stopping and not self._ended
        self.start_action.setEnabled(self._ready and not running)
        self.pause_action.setEnabled(live and getattr(self.job, "pausable", True))
        self.stop_action.setEnabled(live)
        self.save_action.setEnabled(self.result_dir is not None and not running)
        self.pause_action.setText("Resume" if self.runner.is_paused else "Pause")

    # ----------------------------------------------------------------------------------------- control
    def start(self, cfg: CleanseConfig, model: LoadedModel, preset_label: str, keep_reference: bool = False,
              resume: bool = False, scan: bool = False, teacher_scan=None, processes: int = 1) -> bool:
        """Start a run of ``cfg`` on the already loaded ``model``; False if one is running.

        ``resume``: continue the unfinished run in ``cfg.out`` from its last completed epoch.
        ``scan``: scan the teacher first (or reuse ``teacher_scan``, a ``ScanResult`` for the same model and
        images), plot the proxy ASR every epoch and scan the cleansed model at the end.
        ``processes`` > 1: one DDP process per GPU, started as ``bcu cleanse --nproc N`` and followed
        (launcher.LaunchedRun); the scan then runs in rank 0's process.
        """
        if self.runner.is_running:
            return False
        self._resume_next = resume
        self._hooks = [self._scan_hook(cfg, model, teacher_scan)] if scan and processes <= 1 else []
        self.last_config, self._run_model, self._preset_label = cfg, model, preset_label
        self.last_finished = self.last_failed = None
        self._stopping = self._ended = False
        self._last_step = 0
        if not keep_reference:
            self.epochs_plot.clear_reference()
            self.summary.clear_history()
        self.loss_plot.reset()
        self.feature_view.reset()
        self.epochs_plot.start_run(cfg.epochs, None, None)
        self.log_pane.append_message(f"starting: preset {preset_label}, {cfg.epochs} epochs, batch "
                                     f"{cfg.batch_size or 'auto'}, keep {cfg.keep}, lr {cfg.lr:g}, device {cfg.device}; run folder {cfg.out}")
        self.summary.show_text("Preparing the run…")
        self.run_panel.begin()
        if processes > 1:
            from ..launcher import LaunchedRun

            self.job = job = LaunchedRun(cfg, processes, scan=scan, resume=resume)
            self.log_pane.append_message(f"training as {processes} processes, one a GPU (torchrun)")
        else:
            self.job = job = self.job_factory(cfg, model)
        for hook in self._hooks:
            hook.cancel = lambda: job.cancelled
        self.runner.start(job)
        self._status("Running…")
        return True

    def _scan_hook(self, cfg: CleanseConfig, model: LoadedModel, teacher_scan):
        from ..core.data import load_unlabeled
        from ..core.scan import ScanHook

        def images():  # read in the job's thread, not the GUI's
            return load_unlabeled(cfg.unlabeled, model.input_size, limit=400).images

        return ScanHook(images, model.normalization, model.num_classes, self.scan_config,
                        teacher_result=teacher_scan,
                        progress=self.scan_relay.progress.emit)

    def _on_scan_event(self, phase: str, event) -> None:
        """The scan before or after the run: progress in the run bar and result box, verdicts in the log."""
        from ..core.scan import ScanFinished, ScanProgress

        if self._closed:
            return
        who = "the model before cleansing" if phase == "teacher" else "the cleansed model"
        if isinstance(event, ScanProgress) and event.fraction - self._scan_shown >= 0.02:
            self._scan_shown = event.fraction
            self._status(f"Scanning {who}: {event.fraction:.0%} ({event.probe} probe)")
            if phase == "teacher":
                self.summary.show_text(f"Scanning {who} for a backdoor (no trigger needed): {event.fraction:.0%}…")
        elif isinstance(event, ScanFinished):
            self._scan_shown = -1.0
            self.log_pane.append_message(f"scan of {who}: {event.result.verdict_line()} "
                                         f"({event.result.seconds:.0f} s)")
            if phase == "teacher":
                hook = self._hooks[0] if self._hooks else None
                if hook is not None and event.result.trigger is not None:
                    self.log_pane.append_message(
                        f"following the proxy ASR of the recovered trigger (class {event.result.trigger.target})")
                self.summary.show_text("Teacher scanned: " + event.result.verdict_line() + ". Training…")

    def keep_as_reference(self) -> None:
        """Keep this run's curves and result as faded references under the next run (the demo's comparison)."""
        label = f"{self._preset_label} run"
        self.epochs_plot.keep_as_reference(label)
        self.summary.remember_current(f"Previous: {label}")

    def toggle_pause(self) -> None:
        if self.runner.is_paused:
            self.runner.resume()
        else:
            self.runner.pause()

    def stop(self) -> None:
        if self.runner.is_running and not self._stopping and not self._ended:
            self._stopping = True
            self.runner.stop()
            self.run_panel.set_stopping()
            self.log_pane.append_message("stopping after the current batch; the student so far is saved",
                                         "warning")
            self._update_actions()

    def close(self, timeout_ms: int = 120_000) -> bool:
        """The window is closing: stop the run and wait for its thread. False: still saving after the wait."""
        if not self.runner.is_running:
            self._closed = True
            return True
        with wait_cursor():
            ended = self.runner.stop_and_wait(timeout_ms)
        self._closed = ended
        return ended

    # ------------------------------------------------------------------------------------------ events
    def handle(self, event: Event) -> None:
        """Show one event of the job (in the GUI thread, in the job's order)."""
        if self._closed:
            return
        if isinstance(event, Step):
            first = event.step - len(event.losses) + 1
            for i, loss in enumerate(event.losses or (event.loss,)):
                self.loss_plot.add_step(first + i, loss)
            self._last_step = event.step
            self.run_panel.on_step(event)
        elif isinstance(event, EpochEnd):
            proxy = event.extra.get("proxy_asr")
            note = describe_scope(event.eval_scope, event.eval_clean, event.eval_triggered)
            self.epochs_plot.add_epoch(event.epoch, event.acc, event.asr, event.agreement, proxy,
                                       scope=event.eval_scope, note=note)
            if self._hooks and self.epochs_plot.teacher.get("proxy") is None:
                self.epochs_plot.set_teacher_proxy(getattr(self._hooks[0], "teacher_proxy", None))
            self.loss_plot.mark_epoch(self._last_step)
            self.run_panel.on_epoch(event)
            self.log_pane.append_message(
                f"epoch {event.epoch}/{event.epochs}: loss {event.loss:.4f}, ACC {pct(event.acc)}, "
                f"ASR {pct(event.asr)}, agreement {pct(event.agreement)}"
                + (f", proxy ASR {pct(proxy)}" if "proxy_asr" in event.extra else "") + f" ({event.seconds:.1f} s)"
                + (f" [{note}]" if note else ""))
        elif isinstance(event, FeatureFrame):
            self.feature_view.add_frame(event)
        elif isinstance(event, Log):
            if isinstance(event, CpuShare):
                self.run_panel.on_cpu_share(event)
            self.log_pane.append_message(event.message, event.level)
        elif isinstance(event, Started):
            self.epochs_plot.start_run(event.epochs, event.teacher_acc, event.teacher_asr)
            self.run_panel.on_started(event)
            self.summary.show_teacher(event.teacher_acc, event.teacher_asr)
            self.log_pane.append_message(f"teacher: ACC {pct(event.teacher_acc)}, ASR {pct(event.teacher_asr)}; "
                                         f"training on {event.device}")
            if event.batch_size:
                self.batch_chosen.emit(event.batch_size, event.batch_reason)
        elif isinstance(event, Paused):
            self.run_panel.show_pause("paused")
            self.log_pane.append_message(f"paused at step {event.step}")
            self._status("Paused: press Resume (F6) to go on.")
        elif isinstance(event, Resumed):
            self.run_panel.show_pause("running")
            self.log_pane.append_message(f"resumed at step {event.step}")
            self._status("Running…")
        elif isinstance(event, Finished):
            self._on_finished(event)
        elif isinstance(event, Failed):
            self._on_failed(event)

    def _on_finished(self, event: Finished) -> None:
        s = event.summary
        self._ended = True
        self.loss_plot.flush()
        self.epochs_plot.flush()
        self.last_finished = event
        self.result_dir = Path(s.run_dir) if (Path(s.run_dir) / MODEL_FILE).is_file() else None
        self.summary.show_finished(s, self._preset_label)
        state = "stopped" if s.cancelled else "done"
        outcome = s.outcome()
        if outcome.kind == "ruined":
            state = "ruined"  # never "done" for a model that no longer classifies
        self.run_panel.end(f"{state}: ACC {pct(s.cleansed.acc)}, ASR {pct(s.cleansed.asr)}")
        if not outcome.ok:
            self.log_pane.append_message(outcome.headline, "error" if outcome.kind == "ruined" else "warning")
        why = f" ({s.kept_reason})" if s.kept_reason else ""
        self.log_pane.append_message(f"run {state}; saved {s.kept_text()}{why} in {s.run_dir}")
        self._status(f"Run {state}. The run folder is {s.run_dir}.")
        offer = self.offer_paper_comparison and not s.cancelled and self._preset_label != "Paper"
        self.run_panel.run_again_button.setVisible(offer)
        self._update_actions()
        self.run_finished.emit(event)

    def _on_failed(self, event: Failed) -> None:
        self._ended = True
        self.last_failed = event
        self.run_panel.end("failed")
        self.summary.show_failed(event.message)
        self.log_pane.append_message(event.message, "error")
        if event.detail:
            self.log_pane.append_message(event.detail, "detail")
        text = event.message
        if event.kind == "internal":
            text += ". The technical details are in the log (please include them in a bug report)"
        self._status("The run failed.")
        self._update_actions()
        dialogs.error(self._window, FAILURE_TITLES.get(event.kind, "The run failed"), text)
        if event.kind == "diverged" and self.last_config is not None:
            folder = Path(self.last_config.out or "")
            self.result_dir = folder if (folder / MODEL_FILE).is_file() else None  # the last finite epoch
            self._update_actions()
        if event.kind == "disk":
            self.offer_save_elsewhere()
        self.run_failed.emit(event)

    def offer_save_elsewhere(self) -> None:
        """The run folder's disk was full: the trained model is still in memory; offer to save it elsewhere."""
        if getattr(self.job, "trained", None) is None:
            return
        if not dialogs.ask(self._window, "Save the model elsewhere?",
                           "The disk of the run folder is full, but the trained model is still in memory. "
                           "Save it to another folder or disk now?"):
            return
        path, _ = QFileDialog.getSaveFileName(self._window, "Save the trained model elsewhere",
                                              str(Path(self._settings.last_dir("save")) / MODEL_FILE),
                                              MODEL_FILTER, options=QFileDialog.Option.DontConfirmOverwrite)
        if path:
            self.save_trained_to(path)

    def save_trained_to(self, path: str | Path) -> list[Path] | None:
        """Save the model the last job kept in memory (after a full disk); None when cancelled or failed."""
        if getattr(self.job, "trained", None) is None or not self.confirm_replace(path):
            return None
        try:
            with wait_cursor():
                files = self.job.save_trained(path)  # type: ignore[union-attr]
        except OSError as exc:
            dialogs.error(self._window, "Cannot save the model", _write_failure(exc, path))
            return None
        self.log_pane.append_message("saved the trained model: " + ", ".join(str(f) for f in files))
        self._status(f"Saved {files[0]}")
        return files

    def confirm_replace(self, path: str | Path) -> bool:
        """Ask before replacing any of the files a save writes, sidecars included; True: go ahead."""
        existing = [f for f in model_files(path) if f.exists()]
        if not existing:
            return True
        names = "\n".join(f"  {f.name}" for f in existing)
        return dialogs.ask(self._window, "Replace existing files?",
                           f"Saving as {Path(path).name} writes three files; in {existing[0].parent} these "
                           f"already exist and would be replaced:\n{names}\n\nReplace them?")

    def _on_running_changed(self, running: bool) -> None:
        if not running:
            self._stopping = False
        self._update_actions()
        self.running_changed.emit(running)

    def _on_paused_changed(self, paused: bool) -> None:
        """The user's request; the job confirms with a ``Paused`` event once the batch under way is done."""
        self._update_actions()
        if paused:
            self.run_panel.show_pause("pausing")
        elif not self._stopping:
            self.run_panel.show_pause("running")

    # ------------------------------------------------------------------------------------------ saving
    def choose_save_path(self) -> None:
        if self.result_dir is None:
            return
        stem = self._run_model.path.stem if self._run_model else "model"
        start = str(Path(self._settings.last_dir("save")) / f"{stem}-cleansed.pt")
        # our own question names every file replaced (the dialog's would name only the one typed)
        path, _ = QFileDialog.getSaveFileName(self._window, "Save cleansed model", start, MODEL_FILTER,
                                              options=QFileDialog.Option.DontConfirmOverwrite)
        if path:
            self._settings.set_last_dir("save", path)
            self.save_cleansed_to(path)

    def save_cleansed_to(self, path: str | Path) -> list[Path] | None:
        """Save the last run's student to ``path`` (.pt + .safetensors + .json sidecar); None on failure."""
        if self.result_dir is None or self._run_model is None:
            dialogs.error(self._window, "Nothing to save", "no finished or stopped run has a model to save yet")
            return None
        if not self.confirm_replace(path):
            return None
        source = self.result_dir / MODEL_FILE
        sidecar = self.result_dir / SIDECAR_FILE
        try:
            with wait_cursor():
                untrusted.check_file(self.result_dir, source.name)  # a regular file, not a link planted there
                state = torch.load(source, map_location="cpu", weights_only=True)
                student = self._run_model.fresh(0)
                student.load_state_dict(state)
                meta = untrusted.read_json_or_none(self.result_dir, sidecar.name) or self._run_model.metadata()
                files = save_model(student, path, meta)
        except OSError as exc:
            dialogs.error(self._window, "Cannot save the cleansed model", _write_failure(exc, path))
            return None
        except Exception as exc:  # a damaged run folder: say so, keep the app usable
            dialogs.error(self._window, "Cannot save the cleansed model",
                          f"could not read the run's model {source}: {type(exc).__name__}: {exc}")
            return None
        self.log_pane.append_message("saved the cleansed model: " + ", ".join(str(f) for f in files))
        self._status(f"Saved {files[0]}")
        return files


def _write_failure(exc: OSError, path: str | Path) -> str:
    """One sentence for a failed save: a full disk is named as such (nothing half-written was left)."""
    import errno

    if exc.errno == errno.ENOSPC:
        return (f"the disk is full: could not write {exc.filename or path}; nothing half-written was left. "
                "Free some space or choose another folder")
    return f"could not write {exc.filename or path}: {exc.strerror or exc}"
