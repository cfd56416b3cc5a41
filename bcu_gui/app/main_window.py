"""The main window: composes the panels, plots, log and summary, and turns user intentions into runs.

Left: the inputs, top to bottom in the order a user fills them (model, images, re-initialisation, training,
run), in a scroll area so nothing clips on a small screen. Right: a welcome page until a model is loaded,
then the live plots, the result summary and the log. The window is the only place that connects panels to
each other and to the ``JobRunner``; panels never see the job, and the job never sees a widget.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (QFileDialog, QHBoxLayout, QLabel, QMainWindow, QMessageBox, QPushButton,
                               QScrollArea, QSplitter, QStackedWidget, QVBoxLayout, QWidget)

from .. import __version__
from ..core.bundled import describe_bundled
from ..core.errors import BcuError
from ..core.events import EpochEnd, Failed, Finished, Started, Step
from ..core.job import CleanseConfig, CleanseJob
from ..core.models import LoadedModel
from ..core.runs import MODEL_STEM, new_run_dir, save_model
from . import dialogs
from .log_pane import LogPane
from .wheel_guard import WheelGuard
from .panels.common import wait_cursor
from .panels.data_panel import DataPanel
from .panels.model_panel import ModelPanel
from .panels.reinit_panel import CUSTOM, ReinitPanel
from .panels.run_panel import RunPanel, SummaryBox, pct
from .panels.training_panel import TrainingPanel
from .plots import EpochsPlot, LossPlot
from .settings import AppSettings
from .worker import JobRunner, cancel_all_tasks

DEMO_BANNER = ("Demo: this small model keeps its backdoor under the paper's ratios, so the demo uses the "
               "measured 'Strong' preset (every weight re-initialised).")
FAILURE_TITLES = {"memory": "Out of memory", "disk": "Disk full", "input": "Cannot run with these inputs",
                  "internal": "Unexpected error"}
LEFT_WIDTH = 470

JobFactory = Callable[[CleanseConfig, LoadedModel], object]


MIN_WINDOW = QSize(1200, 760)  # below this the panels and both plots no longer fit side by side


class MainWindow(QMainWindow):
    """BCU Studio's window. ``open_demo``, ``open_checkpoint``, ``start_run`` and ``save_cleansed_to`` are the
    entry points the menus, the command line and the tests share."""

    run_finished = Signal(object)  # Finished, after the window has shown it
    run_failed = Signal(object)  # Failed, after the window has shown it

    def __init__(self, settings: AppSettings | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings or AppSettings()
        self.runner = JobRunner(self)
        self.job_factory: JobFactory = lambda cfg, model: CleanseJob(cfg, model=model)
        self.demo = False
        self._demo_root: Path | None = None
        self.last_finished: Finished | None = None
        self.last_failed: Failed | None = None
        self.last_config: CleanseConfig | None = None
        self._run_model: LoadedModel | None = None
        self._run_preset = ""
        self._result_dir: Path | None = None  # the run whose student "Save cleansed model…" saves
        self._last_step = 0
        self._stopping = False
        self._closed = False  # set once the window has accepted closing: late run events are ignored

        self.setWindowTitle("BCU Studio")
        self.setAcceptDrops(True)
        self._build_panels()
        self._build_right()
        self._build_layout()
        self._build_menus()
        self._connect()
        self._restore()
        self._update_state()

    # ------------------------------------------------------------------------------------------ building
    def _build_panels(self) -> None:
        self.model_panel = ModelPanel(self.settings)
        self.data_panel = DataPanel(self.settings)
        self.reinit_panel = ReinitPanel()
        self.training_panel = TrainingPanel(self.settings)
        self.run_panel = RunPanel()
        self.input_panels = (self.model_panel, self.data_panel, self.reinit_panel, self.training_panel)

    def _build_right(self) -> None:
        self.loss_plot = LossPlot()
        self.epochs_plot = EpochsPlot()
        self.summary = SummaryBox()
        self.log_pane = LogPane()

        self.plot_splitter = QSplitter(Qt.Orientation.Horizontal)
        self.plot_splitter.addWidget(self.loss_plot)
        self.plot_splitter.addWidget(self.epochs_plot)
        self.plot_splitter.setSizes([1, 1])
        self.right_splitter = QSplitter(Qt.Orientation.Vertical)
        self.right_splitter.addWidget(self.plot_splitter)
        self.right_splitter.addWidget(self.summary)
        self.right_splitter.addWidget(self.log_pane)
        self.right_splitter.setStretchFactor(0, 5)
        self.right_splitter.setStretchFactor(1, 0)
        self.right_splitter.setStretchFactor(2, 2)
        self.right_splitter.setSizes([430, 130, 170])

        self.welcome = self._welcome_page()
        self.right_stack = QStackedWidget()
        self.right_stack.addWidget(self.welcome)
        self.right_stack.addWidget(self.right_splitter)

    def _welcome_page(self) -> QWidget:
        page = QWidget()
        page.setObjectName("welcome")
        page.setStyleSheet("#welcome { background: palette(base); }")
        title = QLabel("<h1 style='margin-bottom:0'>BCU Studio</h1>")
        text = QLabel(
            "<p style='font-size:11pt'>Remove a backdoor from an image classifier with <b>unlabelled</b> "
            "images.</p>"
            "<p>The suspicious model teaches a student: a copy of it with a share of each layer group's "
            "weights re-initialised, distilled on images without labels. The student keeps what the images "
            "show (clean accuracy) and forgets what they never show (the trigger): the attack success rate "
            "falls from about 100% to a few percent.<br><span style='color:gray'>Pang et al., "
            "<i>Backdoor Cleansing with Unlabeled Data</i>, CVPR 2023.</span></p>")
        text.setWordWrap(True)
        text.setFixedWidth(560)  # a fixed width lets the wrapped label compute its real height
        self.welcome_demo_button = QPushButton("Open the demo")
        self.welcome_demo_button.setToolTip("A backdoored digit classifier with its images: everything ready to run")
        self.welcome_open_button = QPushButton("Open a checkpoint…")
        for b in (self.welcome_demo_button, self.welcome_open_button):
            b.setMinimumHeight(40)
            b.setMinimumWidth(200)
        self.welcome_demo_button.setStyleSheet("font-weight: bold;")
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.welcome_demo_button)
        buttons.addWidget(self.welcome_open_button)
        buttons.addStretch(1)
        hint = QLabel("<span style='color:gray'>…or drop a checkpoint file (.pt, .pth, .safetensors, TorchScript) "
                      "onto this window.</span>")
        col = QVBoxLayout(page)
        col.addStretch(2)
        for w in (title, hint):
            w.setAlignment(Qt.AlignmentFlag.AlignHCenter)
        col.addWidget(title, 0, Qt.AlignmentFlag.AlignHCenter)
        col.addWidget(text, 0, Qt.AlignmentFlag.AlignHCenter)
        col.addSpacing(12)
        col.addLayout(buttons)
        col.addSpacing(8)
        col.addWidget(hint, 0, Qt.AlignmentFlag.AlignHCenter)
        col.addStretch(3)
        return page

    def _build_layout(self) -> None:
        column = QWidget()
        col = QVBoxLayout(column)
        col.setContentsMargins(6, 6, 6, 6)
        for panel in (*self.input_panels, self.run_panel):
            col.addWidget(panel)
        col.addStretch(1)
        self.left_scroll = QScrollArea()
        self.left_scroll.setWidgetResizable(True)
        self.left_scroll.setWidget(column)
        self.left_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.left_column = column
        self._wheel_guard = WheelGuard(self.left_scroll)
        self._wheel_guard.install()
        self._fit_left_column()

        self.demo_banner = QLabel(DEMO_BANNER)
        self.demo_banner.setWordWrap(True)
        self.demo_banner.setStyleSheet("background:#fff4d6; color:#4d3800; border:1px solid #e8c66a; "
                                       "border-radius:3px; padding:5px 8px;")
        self.demo_banner.setVisible(False)

        self.main_splitter = QSplitter(Qt.Orientation.Horizontal)
        self.main_splitter.addWidget(self.left_scroll)
        self.main_splitter.addWidget(self.right_stack)
        self.main_splitter.setStretchFactor(0, 0)
        self.main_splitter.setStretchFactor(1, 1)
        self.main_splitter.setCollapsible(0, False)
        self.main_splitter.setSizes([LEFT_WIDTH + 20, 800])

        central = QWidget()
        outer = QVBoxLayout(central)
        outer.setContentsMargins(4, 4, 4, 4)
        outer.setSpacing(4)
        outer.addWidget(self.demo_banner)
        outer.addWidget(self.main_splitter, 1)
        self.setCentralWidget(central)
        self.statusBar().showMessage("Open the demo or a checkpoint to begin.")

    def _fit_left_column(self) -> None:
        """Wide enough for the column's widest row plus the scroll bar: scroll vertically, never clip sideways."""
        bar = self.left_scroll.verticalScrollBar().sizeHint().width()
        need = self.left_column.minimumSizeHint().width() + bar + 2 * self.left_scroll.frameWidth()
        self.left_scroll.setMinimumWidth(max(LEFT_WIDTH, need))

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        self.open_action = QAction("&Open checkpoint…", self, shortcut=QKeySequence.StandardKey.Open)
        self.open_action.triggered.connect(self.choose_checkpoint)
        file_menu.addAction(self.open_action)
        self.recent_menu = file_menu.addMenu("Recent files")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        file_menu.addSeparator()
        self.save_action = QAction("&Save cleansed model…", self, shortcut=QKeySequence.StandardKey.Save)
        self.save_action.triggered.connect(self.choose_save_path)
        self.save_action.setEnabled(False)
        file_menu.addAction(self.save_action)
        file_menu.addSeparator()
        quit_action = QAction("&Quit", self, shortcut=QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        file_menu.addAction(quit_action)

        help_menu = self.menuBar().addMenu("&Help")
        self.demo_action = QAction("Open the &demo", self)
        self.demo_action.triggered.connect(lambda: self.open_demo())
        help_menu.addAction(self.demo_action)
        about = QAction("&About BCU Studio", self)
        about.triggered.connect(self._about)
        help_menu.addAction(about)

    def _connect(self) -> None:
        self.model_panel.model_changed.connect(self._on_model_changed)
        for signal in (self.data_panel.changed, self.reinit_panel.changed, self.training_panel.changed):
            signal.connect(self._update_state)
        self.welcome_demo_button.clicked.connect(lambda: self.open_demo())
        self.welcome_open_button.clicked.connect(self.choose_checkpoint)

        rp = self.run_panel
        rp.start_clicked.connect(self.start_run)
        rp.pause_clicked.connect(self.toggle_pause)
        rp.stop_clicked.connect(self.stop_run)
        rp.save_clicked.connect(self.choose_save_path)
        rp.run_again_clicked.connect(self.run_again_with_paper)

        r = self.runner
        r.started.connect(self._on_started)
        r.step.connect(self._on_step)
        r.epoch.connect(self._on_epoch)
        r.log.connect(self.log_pane.append_message)
        r.finished.connect(self._on_finished)
        r.failed.connect(self._on_failed)
        r.running_changed.connect(self._on_running_changed)
        r.paused_changed.connect(self._on_paused_changed)

    # ---------------------------------------------------------------------------------------- settings
    def _fit_to_screen(self) -> None:
        """Never restore a window too small to use (a crash or a tiny virtual screen saved it) or off screen."""
        screen = self.screen()
        if screen is None:
            return
        area = screen.availableGeometry()
        width = min(area.width(), max(self.width(), MIN_WINDOW.width()))
        height = min(area.height(), max(self.height(), MIN_WINDOW.height()))
        if (width, height) != (self.width(), self.height()):
            self.resize(width, height)

    def _restore(self) -> None:
        s = self.settings
        geometry = s.window_state("geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1280, 800)
        self._fit_to_screen()
        for key, splitter in (("main_splitter", self.main_splitter), ("right_splitter", self.right_splitter),
                              ("plot_splitter", self.plot_splitter)):
            state = s.window_state(key)
            if state is not None:
                splitter.restoreState(state)
        self.training_panel.set_values(s.training())

    def _save_settings(self) -> None:
        s = self.settings
        s.set_window_state("geometry", self.saveGeometry())
        for key, splitter in (("main_splitter", self.main_splitter), ("right_splitter", self.right_splitter),
                              ("plot_splitter", self.plot_splitter)):
            s.set_window_state(key, splitter.saveState())
        if not self.demo:  # the demo's settings are the demo's, not the user's
            s.set_training(self.training_panel.remembered())
        s.sync()

    # ------------------------------------------------------------------------------------------- models
    def choose_checkpoint(self) -> None:
        if self._refuse_while_running():
            return
        self.model_panel.choose_file()

    def open_checkpoint(self, path: str | Path) -> bool:
        """Open a checkpoint as a new, non-demo model (menu, recent files, drop, command line)."""
        if self._refuse_while_running():
            return False
        self.model_panel.reset_overrides()
        return self.model_panel.load(path)

    def open_demo(self, ood: bool = False) -> bool:
        """Load the shipped demo: model, folders, target class, the 'strong' preset and the demo's epochs."""
        if self._refuse_while_running():
            return False
        from ..demo import demo_dir
        from ..demo.config import demo_config

        try:
            root = demo_dir()
            cfg = demo_config(ood=ood)
        except (FileNotFoundError, BcuError) as exc:
            dialogs.error(self, "The demo is not available", str(exc))
            return False
        self.model_panel.reset_overrides()
        self._set_demo(True, root)  # before loading, so the model change is known to be the demo's
        if not self.model_panel.load(cfg.checkpoint):
            self._set_demo(False)
            return False
        self.data_panel.set_folders(cfg.unlabeled, cfg.eval_clean, cfg.eval_poisoned, cfg.target_class)
        self.reinit_panel.set_preset(cfg.preset)
        self.reinit_panel.seed_spin.setValue(cfg.seed)
        self.training_panel.set_values({"epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr,
                                        "unlabeled_limit": cfg.unlabeled_limit})
        self.summary.clear_history()
        self.epochs_plot.clear_reference()
        self.log_pane.append_message(f"demo loaded from {root}: backdoored digits model, BadNets patch, "
                                     f"target class {cfg.target_class}, preset '{cfg.preset}'")
        self.statusBar().showMessage("Demo loaded: press Start cleansing.")
        return True

    def _set_demo(self, on: bool, root: Path | None = None) -> None:
        self.demo = on
        self._demo_root = root if on else None
        self.demo_banner.setVisible(on)
        self.data_panel.set_demo_root(root if on else None)
        if not on:
            self.run_panel.run_again_button.setVisible(False)

    def _on_model_changed(self, model: LoadedModel) -> None:
        if self.demo and self._demo_root is not None and \
                model.path.resolve() != (self._demo_root / "model.pt").resolve():
            self._set_demo(False)  # another checkpoint: the demo's settings no longer apply
        self.reinit_panel.set_model(model.module)
        self.data_panel.set_model(model.input_size, model.num_classes)
        self.data_panel.set_bundled(describe_bundled(model.raw))
        self.right_stack.setCurrentWidget(self.right_splitter)
        self._fit_left_column()
        self.setWindowTitle(f"BCU Studio — {model.path.name}")
        self.log_pane.append_message(f"model: {model.describe()}")
        for note in model.notes:
            self.log_pane.append_message(f"  {note}")
        self.statusBar().showMessage(f"Loaded {model.path.name}: {model.arch_name}, {model.num_classes} classes.")
        self._update_state()

    # ----------------------------------------------------------------------------------------- validity
    def missing_inputs(self) -> list[str]:
        """What stops Start, in the words shown under it."""
        missing: list[str] = []
        if self.model_panel.model is None:
            missing.append("open a model (the demo, or File > Open checkpoint…)")
        missing += self.data_panel.problems()
        problem = self.reinit_panel.problem()
        if problem:
            missing.append(problem)
        return missing

    def _update_state(self) -> None:
        self.training_panel.set_asr_available(self.data_panel.asr_available())
        usable = self.data_panel.state("unlabeled").usable or 0
        ready = f"{usable:,} unlabelled images. {self.data_panel.curves_sentence()}"
        self.run_panel.set_ready(self.missing_inputs(), ready)
        self.save_action.setEnabled(self._result_dir is not None and not self.runner.is_running)
        self.run_panel.save_button.setEnabled(self.save_action.isEnabled())

    def _refuse_while_running(self) -> bool:
        if self.runner.is_running:
            self.statusBar().showMessage("A run is in progress: stop it first.", 5000)
            return True
        return False

    # --------------------------------------------------------------------------------------------- runs
    def build_config(self) -> CleanseConfig:
        """The CleanseConfig the panels describe (the run folder is named now, inside the output folder)."""
        model = self.model_panel.model
        if model is None:
            raise RuntimeError("no model loaded")
        training = self.training_panel.values()
        root = training.pop("output_root")
        out = new_run_dir(root, "demo" if self.demo else "run")
        return CleanseConfig(
            checkpoint=str(model.path), unlabeled=self.data_panel.unlabeled_path() or "",
            eval_clean=self.data_panel.clean_path(), eval_poisoned=self.data_panel.triggered_path(),
            target_class=self.data_panel.target_class() if self.data_panel.triggered_path() else None,
            use_bundled_eval=self.data_panel.use_bundled(),
            arch=self.model_panel.arch_override(), input_size=self.model_panel.size_override(),
            normalize=self.model_panel.norm_override(), trust_checkpoint=self.model_panel.trusted,
            seed=self.reinit_panel.seed_spin.value(), out=str(out), **self.reinit_panel.config_fields(),
            **training)

    def start_run(self, keep_reference: bool = False) -> bool:
        """Start a run with the current inputs; False (and nothing started) if something is missing."""
        if self.runner.is_running or self.missing_inputs():
            return False
        try:
            cfg = self.build_config()
            cfg.validate()
        except BcuError as exc:
            dialogs.error(self, "Cannot start the run", str(exc))
            return False
        model = self.model_panel.model
        assert model is not None
        self.last_config, self._run_model = cfg, model
        self.last_finished = self.last_failed = None
        preset = self.reinit_panel.preset()
        self._run_preset = "Custom" if preset == CUSTOM else preset.capitalize()
        if not keep_reference:
            self.epochs_plot.clear_reference()
            self.summary.clear_history()
        self.loss_plot.reset()
        self.epochs_plot.start_run(cfg.epochs, None, None)
        self._last_step, self._stopping = 0, False
        self.log_pane.append_message(f"starting: preset {self._run_preset}, {cfg.epochs} epochs, batch "
                                     f"{cfg.batch_size}, lr {cfg.lr:g}, device {cfg.device}; run folder {cfg.out}")
        self.summary.show_text("Preparing the run…")
        self.run_panel.begin()
        self._lock_inputs(True)
        self.runner.start(self.job_factory(cfg, model))
        self.statusBar().showMessage("Running…")
        return True

    def run_again_with_paper(self) -> bool:
        """The demo's comparison: same inputs, the paper's ratios; the previous curves stay as references."""
        label = f"{self._run_preset} run"
        self.epochs_plot.keep_as_reference(label)
        self.summary.remember_current(f"Previous: {label}")
        self.reinit_panel.set_preset("paper")
        return self.start_run(keep_reference=True)

    def toggle_pause(self) -> None:
        if self.runner.is_paused:
            self.runner.resume()
        else:
            self.runner.pause()

    def stop_run(self) -> None:
        if self.runner.is_running and not self._stopping:
            self._stopping = True
            self.runner.stop()
            self.run_panel.set_stopping()
            self.log_pane.append_message("stopping after the current batch; what was written is kept", "warning")

    def _lock_inputs(self, locked: bool) -> None:
        for panel in self.input_panels:
            panel.setEnabled(not locked)
        for action in (self.open_action, self.demo_action):
            action.setEnabled(not locked)
        self.recent_menu.setEnabled(not locked)
        self.welcome_demo_button.setEnabled(not locked)
        self.welcome_open_button.setEnabled(not locked)

    # ----------------------------------------------------------------------------------- run events
    def _on_started(self, event: Started) -> None:
        self.epochs_plot.start_run(event.epochs, event.teacher_acc, event.teacher_asr)
        self.run_panel.on_started(event)
        self.summary.show_teacher(event.teacher_acc, event.teacher_asr)
        self.log_pane.append_message(f"teacher: ACC {pct(event.teacher_acc)}, ASR {pct(event.teacher_asr)}; "
                                     f"training on {event.device}")

    def _on_step(self, event: Step) -> None:
        self._last_step = event.step
        self.loss_plot.add_step(event.step, event.loss)
        self.run_panel.on_step(event)

    def _on_epoch(self, event: EpochEnd) -> None:
        self.epochs_plot.add_epoch(event.epoch, event.acc, event.asr, event.agreement)
        self.loss_plot.mark_epoch(self._last_step)
        self.run_panel.on_epoch(event)
        self.log_pane.append_message(
            f"epoch {event.epoch}/{event.epochs}: loss {event.loss:.4f}, ACC {pct(event.acc)}, "
            f"ASR {pct(event.asr)}, agreement {pct(event.agreement)} ({event.seconds:.1f} s)")

    def _on_finished(self, event: Finished) -> None:
        if self._closed:
            return
        self.loss_plot.flush()
        self.epochs_plot.flush()
        self.last_finished = event
        model_file = Path(event.run_dir) / f"{MODEL_STEM}.pt"
        self._result_dir = Path(event.run_dir) if model_file.is_file() else None
        self.summary.show_finished(event.summary, event.run_dir, event.cancelled, self._run_preset)
        cleansed = event.summary.get("cleansed") or {}
        state = "stopped" if event.cancelled else "done"
        self.run_panel.end(f"{state}: ACC {pct(cleansed.get('acc'))}, ASR {pct(cleansed.get('asr'))}")
        self.log_pane.append_message(f"run {state}; saved in {event.run_dir}")
        self.statusBar().showMessage(f"Run {state}. The run folder is {event.run_dir}.")
        offer = self.demo and not event.cancelled and self._run_preset != "Paper"
        self.run_panel.run_again_button.setVisible(offer)
        self.run_finished.emit(event)

    def _on_failed(self, event: Failed) -> None:
        if self._closed:
            return
        self.last_failed = event
        self.run_panel.end("failed")
        self.summary.show_failed(event.message)
        self.log_pane.append_message(event.message, "error")
        if event.detail:
            self.log_pane.append_message(event.detail, "detail")
        text = event.message
        if event.kind == "internal":
            text += ". The technical details are in the log (please include them in a bug report)"
        self.statusBar().showMessage("The run failed.")
        dialogs.error(self, FAILURE_TITLES.get(event.kind, "The run failed"), text)
        self.run_failed.emit(event)

    def _on_running_changed(self, running: bool) -> None:
        if not running:
            self._lock_inputs(False)
            self.run_panel.set_running(False)
            self._stopping = False
        self._update_state()

    def _on_paused_changed(self, paused: bool) -> None:
        self.run_panel.set_paused(paused)
        self.statusBar().showMessage("Paused: press Resume to go on." if paused else "Running…")

    # --------------------------------------------------------------------------------------------- saving
    def choose_save_path(self) -> None:
        if self._result_dir is None:
            return
        stem = self._run_model.path.stem if self._run_model else "model"
        start = str(Path(self.settings.last_dir("save")) / f"{stem}-cleansed.pt")
        path, _ = QFileDialog.getSaveFileName(self, "Save cleansed model", start,
                                              "PyTorch state_dict (*.pt);;safetensors (*.safetensors)")
        if path:
            self.settings.set_last_dir("save", path)
            self.save_cleansed_to(path)

    def save_cleansed_to(self, path: str | Path) -> list[Path] | None:
        """Save the last run's student to ``path`` (.pt + .safetensors + .json sidecar); None on failure."""
        if self._result_dir is None or self._run_model is None:
            dialogs.error(self, "Nothing to save", "no finished or stopped run has a model to save yet")
            return None
        source = self._result_dir / f"{MODEL_STEM}.pt"
        sidecar = self._result_dir / f"{MODEL_STEM}.json"
        try:
            with wait_cursor():
                state = torch.load(source, map_location="cpu", weights_only=True)
                student = self._run_model.fresh(0)
                student.load_state_dict(state)
                meta = json.loads(sidecar.read_text()) if sidecar.is_file() else self._run_model.metadata()
                files = save_model(student, path, meta)
        except OSError as exc:
            dialogs.error(self, "Cannot save the cleansed model",
                          f"could not write {exc.filename or path}: {exc.strerror or exc}")
            return None
        except Exception as exc:  # a damaged run folder: say so, keep the app usable
            dialogs.error(self, "Cannot save the cleansed model",
                          f"could not read the run's model {source}: {type(exc).__name__}: {exc}")
            return None
        self.log_pane.append_message("saved the cleansed model: " + ", ".join(str(f) for f in files))
        self.statusBar().showMessage(f"Saved {files[0]}")
        return files

    # ------------------------------------------------------------------------------------ menus, drops
    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        files = self.settings.recent_files()
        for f in files:
            action = self.recent_menu.addAction(f)
            action.triggered.connect(lambda _=False, p=f: self.open_checkpoint(p))
        if not files:
            self.recent_menu.addAction("(none)").setEnabled(False)
        else:
            self.recent_menu.addSeparator()
            self.recent_menu.addAction("Clear recent files").triggered.connect(self.settings.clear_recent_files)

    def _about(self) -> None:
        QMessageBox.about(self, "About BCU Studio",
                          f"<b>BCU Studio {__version__}</b><p>Backdoor cleansing with unlabelled data: the "
                          "suspicious model teaches a partly re-initialised copy of itself on images without "
                          "labels, which keeps the task and drops the backdoor.</p><p>Method: L. Pang, T. Sun, "
                          "H. Ling, C. Chen, <i>Backdoor Cleansing with Unlabeled Data</i>, CVPR 2023.</p>")

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt's name
        urls = event.mimeData().urls()
        if urls and urls[0].isLocalFile() and Path(urls[0].toLocalFile()).is_file():
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        urls = event.mimeData().urls()
        if urls and urls[0].isLocalFile():
            event.acceptProposedAction()
            self.open_checkpoint(urls[0].toLocalFile())

    # ------------------------------------------------------------------------------------------ closing
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        """During a run: ask, then stop it and wait for its thread, so nothing is left running."""
        if self.runner.is_running:
            if not dialogs.ask(self, "Stop the run and quit?",
                               "A cleansing run is in progress. Stop it and quit?\n\nThe run folder and the model "
                               "as it is now are kept."):
                event.ignore()
                return
            with wait_cursor():
                self.runner.stop_and_wait()
        self.data_panel.cancel_checks()
        cancel_all_tasks()
        self._save_settings()
        self._closed = True
        event.accept()
