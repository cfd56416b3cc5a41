"""The main window: assembles the input panels, the run view and the log, and connects them.

Left: the inputs, top to bottom in the order a user fills them (model, images, re-initialisation, training),
in a scroll area so nothing clips on a small screen, and under it, fixed and always in view, the run bar
(Start / Pause / Stop with their shortcuts, progress, Save). Right: a welcome page until a model is loaded,
then the live plots, the result summary and the log. The run itself (runner, plots, result, actions) lives
in ``RunView``; the window builds its config from the panels' ``config_fields()`` and locks the inputs while
it runs. Panels never see the job, and the job never sees a widget.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSize, Qt, QTimer
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (QDockWidget, QFileDialog, QLabel, QMainWindow, QMessageBox, QPushButton, QScrollArea,
                               QSplitter, QStackedWidget, QHBoxLayout, QTabWidget, QVBoxLayout, QWidget)

from .. import __version__
from ..core.errors import BcuError
from ..core.job import CleanseConfig
from ..core.models import LoadedModel
from ..core.printable import elide, printable
from . import dialogs
from .compare_view import CompareView
from .library_view import LibraryPanel
from .log_pane import LogPane
from .panels.data_panel import DataPanel
from .panels.model_panel import ModelPanel
from .panels.reinit_panel import ReinitPanel
from .panels.training_panel import TrainingPanel
from .plain import NAME_LIMIT
from .report_export import ReportExporter
from .run_view import RunView
from .scan_view import ScanView
from .settings import AppSettings
from .sweep_view import SweepView
from .watch_view import RunWatcher
from .wheel_guard import WheelGuard
from .worker import cancel_all_tasks

DEMO_BANNER = ("Demo: this small model keeps its backdoor under the paper's ratios; 400 digits are enough to "
               "re-learn it from scratch, so the demo re-initialises every weight ('Strong'). The default, "
               "'Unlearn', removes it too; at real scale the paper's ratios did not (README, \"The method\").")
LEFT_WIDTH = 470
MIN_WINDOW = QSize(1200, 760)  # below this the panels and both plots no longer fit side by side
CLOSE_WAIT_MS = 120_000  # how long closing waits for a stopped run to save before giving the window back


class MainWindow(QMainWindow):
    """BCU Studio's window. ``open_demo``, ``open_checkpoint`` and ``start_run`` are the entry points the menus,
    the command line and the tests share; the run's own entry points are on ``run_view``."""

    def __init__(self, settings: AppSettings | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings or AppSettings()
        self.demo = False
        self._demo_root: Path | None = None
        self.close_wait_ms = CLOSE_WAIT_MS
        self._close_when_stopped = False

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
        self.input_panels = (self.model_panel, self.data_panel, self.reinit_panel, self.training_panel)
        self.log_pane = LogPane()
        self.run_view = RunView(self, self.settings, self.log_pane, lambda text: self.statusBar().showMessage(text))
        self.scan_view = ScanView(self, self.log_pane, lambda text: self.statusBar().showMessage(text))
        self.scan_view.inputs = lambda: (self.model_panel.model, self.data_panel.unlabeled_path())
        self.scan_view.output_root = self._output_root
        self.sweep_view = SweepView(self, self.log_pane, lambda text: self.statusBar().showMessage(text))
        self.sweep_view.inputs = lambda: (self.build_config(), self.model_panel.model)
        self.sweep_view.output_root = self._output_root
        self.library_panel = LibraryPanel(self.settings)
        self.library_panel.extra_roots = lambda: [self._output_root()]
        self.compare_view = CompareView()
        self.watch_banner = QLabel()
        self.watch_banner.setWordWrap(True)
        self.watch_banner.setVisible(False)
        self.watcher = RunWatcher(self.run_view, self.watch_banner, lambda text: self.statusBar().showMessage(text),
                                  self)

    def _build_right(self) -> None:
        rv = self.run_view
        self.plot_splitter = QSplitter(Qt.Orientation.Horizontal)
        self.plot_splitter.addWidget(rv.loss_plot)
        self.plot_splitter.addWidget(rv.epochs_plot)
        self.plot_splitter.setSizes([1, 1])
        # The run's plots and the scan view share the top of the right side, one tab each.
        self.view_tabs = QTabWidget()
        self.view_tabs.setDocumentMode(True)
        self.view_tabs.addTab(self.plot_splitter, "Run")
        self.view_tabs.addTab(self.scan_view.widget, "Scan")
        self.view_tabs.addTab(rv.feature_view, "Feature space")
        self.view_tabs.addTab(self.sweep_view.widget, "Sweep")
        self.view_tabs.addTab(self.compare_view, "Compare")
        top = QWidget()  # the banner of a watched run sits above the plots it fills
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.setSpacing(2)
        top_layout.addWidget(self.watch_banner)
        top_layout.addWidget(self.view_tabs, 1)
        self.right_splitter = QSplitter(Qt.Orientation.Vertical)
        self.right_splitter.addWidget(top)
        self.right_splitter.addWidget(rv.summary)
        self.right_splitter.addWidget(self.log_pane)
        self.right_splitter.setStretchFactor(0, 5)
        self.right_splitter.setStretchFactor(1, 0)
        self.right_splitter.setStretchFactor(2, 2)
        self.right_splitter.setSizes([430, 130, 170])
        # the result box is what a run ends on: when the plots' legends grow (proxy ASR, teacher lines) the
        # splitter must shrink the plots, never squeeze the result (or the log) away to nothing
        self.right_splitter.setCollapsible(1, False)
        self.right_splitter.setCollapsible(2, False)

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
        for panel in self.input_panels:
            col.addWidget(panel)
        col.addStretch(1)
        self.left_scroll = QScrollArea()
        self.left_scroll.setWidgetResizable(True)
        self.left_scroll.setWidget(column)
        self.left_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.left_column = column
        self._wheel_guard = WheelGuard(self.left_scroll)
        self._wheel_guard.install()

        # The run bar stays under the scrolling form: the actions and the progress are never below the fold.
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.setSpacing(4)
        left_layout.addWidget(self.left_scroll, 1)
        left_layout.addWidget(self.run_panel)
        self.left_pane = left
        self._fit_left_column()

        self.demo_banner = QLabel(DEMO_BANNER)
        self.demo_banner.setWordWrap(True)
        self.demo_banner.setStyleSheet("background:#fff4d6; color:#4d3800; border:1px solid #e8c66a; "
                                       "border-radius:3px; padding:5px 8px;")
        self.demo_banner.setVisible(False)

        self.main_splitter = QSplitter(Qt.Orientation.Horizontal)
        self.main_splitter.addWidget(left)
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

        self.library_dock = QDockWidget("Run library", self)
        self.library_dock.setObjectName("library_dock")  # saveState names docks by object name
        self.library_dock.setWidget(self.library_panel)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.library_dock)
        self.resizeDocks([self.library_dock], [190], Qt.Orientation.Vertical)
        # on a short screen the dock would squeeze the plots to a strip: it starts closed there (View › Run
        # library, Ctrl+L opens it, and the window remembers the choice)
        screen = self.screen()
        if screen is not None and screen.availableGeometry().height() < 1000:
            self.library_dock.hide()

    @property
    def run_panel(self):
        return self.run_view.run_panel

    def _fit_left_column(self) -> None:
        """Wide enough for the column's widest row plus the scroll bar: scroll vertically, never clip sideways."""
        bar = self.left_scroll.verticalScrollBar().sizeHint().width()
        need = self.left_column.minimumSizeHint().width() + bar + 2 * self.left_scroll.frameWidth()
        self.left_scroll.setMinimumWidth(max(LEFT_WIDTH, need))

    def _build_menus(self) -> None:
        rv = self.run_view
        file_menu = self.menuBar().addMenu("&File")
        self.open_action = QAction("&Open checkpoint…", self, shortcut=QKeySequence.StandardKey.Open)
        self.open_action.triggered.connect(self.choose_checkpoint)
        file_menu.addAction(self.open_action)
        self.recent_menu = file_menu.addMenu("Recent files")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        self.resume_action = QAction("&Resume run…", self)
        self.resume_action.setToolTip("Continue an unfinished run (stopped, crashed or killed) from its last "
                                      "completed epoch")
        self.resume_action.triggered.connect(self.choose_run_to_resume)
        file_menu.addAction(self.resume_action)
        self.watch_action = QAction("&Watch run folder…", self)
        self.watch_action.setToolTip("Follow a run that another process is writing (another terminal, a server)")
        self.watch_action.triggered.connect(self.choose_run_to_watch)
        file_menu.addAction(self.watch_action)
        file_menu.addSeparator()
        file_menu.addAction(rv.save_action)
        self.report_exporter = ReportExporter(self, self._last_run_dir, self.settings)
        file_menu.addAction(self.report_exporter.action)
        file_menu.addSeparator()
        quit_action = QAction("&Quit", self, shortcut=QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        file_menu.addAction(quit_action)

        run_menu = self.menuBar().addMenu("&Run")
        for action in (rv.start_action, rv.pause_action, rv.stop_action):
            run_menu.addAction(action)
        run_menu.addSeparator()
        run_menu.addAction(self.scan_view.scan_action)
        self.scan_run_button = self.run_panel.add_action_button(self.scan_view.scan_action)
        self.scan_run_button.setText("Scan")

        view_menu = self.menuBar().addMenu("&View")
        library_toggle = self.library_dock.toggleViewAction()
        library_toggle.setShortcut(QKeySequence("Ctrl+L"))
        view_menu.addAction(library_toggle)

        help_menu = self.menuBar().addMenu("&Help")
        self.demo_action = QAction("Open the &demo", self)
        self.demo_action.triggered.connect(lambda: self.open_demo())
        help_menu.addAction(self.demo_action)
        about = QAction("&About BCU Studio", self)
        about.triggered.connect(self._about)
        help_menu.addAction(about)

    def _last_run_dir(self) -> Path | None:
        """The folder of the run view's current or last run: what File › Export report… exports."""
        folder = getattr(self.run_view.job, "run_dir", None)
        return Path(folder) if folder else self.run_view.result_dir

    def _connect(self) -> None:
        self.model_panel.model_changed.connect(self._on_model_changed)
        self.data_panel.bundled_note.connect(
            lambda line: self.log_pane.append_message(line, "warning" if "not used" in line or "not read" in line
                                                      else "info"))
        for signal in (self.data_panel.changed, self.reinit_panel.changed, self.training_panel.changed):
            signal.connect(self._update_state)
        self.welcome_demo_button.clicked.connect(lambda: self.open_demo())
        self.welcome_open_button.clicked.connect(self.choose_checkpoint)
        self.run_view.start_requested.connect(self.start_run)
        self.run_view.run_again_requested.connect(self.run_again_with_paper)
        self.run_view.running_changed.connect(self._on_running_changed)
        self.run_view.batch_chosen.connect(self.training_panel.show_batch_choice)
        self.scan_view.running_changed.connect(lambda _running: self._update_state())
        self.scan_view.show_requested.connect(lambda: self.view_tabs.setCurrentWidget(self.scan_view.widget))
        self.scan_view.use_as_triggered.connect(self.use_triggered_set)
        self.sweep_view.running_changed.connect(self._on_running_changed)
        self.sweep_view.run_activated.connect(self.open_run)
        self.library_panel.open_requested.connect(self.open_run)
        self.library_panel.compare_requested.connect(self.compare_runs)
        self.library_panel.open_model_requested.connect(self.open_checkpoint)
        self.library_panel.resume_requested.connect(self.resume_run)
        self.run_view.run_finished.connect(lambda event: self.library_panel.update_run(event.run_dir))
        self.watcher.ended.connect(lambda update: self._on_watch_ended(update))
        QTimer.singleShot(0, self.library_panel.refresh)

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
        docks = s.window_state("docks")
        if docks is not None:
            self.restoreState(docks)
        # "batch_size" is what earlier versions remembered: their fixed 256, not a choice (now "batch", 0: auto)
        self.training_panel.set_values({k: v for k, v in s.training().items() if k != "batch_size"})

    def _save_settings(self) -> None:
        s = self.settings
        s.set_window_state("geometry", self.saveGeometry())
        for key, splitter in (("main_splitter", self.main_splitter), ("right_splitter", self.right_splitter),
                              ("plot_splitter", self.plot_splitter)):
            s.set_window_state(key, splitter.saveState())
        s.set_window_state("docks", self.saveState())
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
        self.run_view.summary.clear_history()
        self.run_view.epochs_plot.clear_reference()
        self.log_pane.append_message(f"demo loaded from {root}: backdoored digits model, BadNets patch, "
                                     f"target class {cfg.target_class}, preset '{cfg.preset}'")
        self.statusBar().showMessage("Demo loaded: press Start cleansing (F5).")
        return True

    def _set_demo(self, on: bool, root: Path | None = None) -> None:
        self.demo = on
        self._demo_root = root if on else None
        self.demo_banner.setVisible(on)
        self.data_panel.set_demo_root(root if on else None)
        self.run_view.offer_paper_comparison = on
        if not on:
            self.run_panel.run_again_button.setVisible(False)

    def _on_model_changed(self, model: LoadedModel) -> None:
        if self.demo and self._demo_root is not None and \
                model.path.resolve() != (self._demo_root / "model.pt").resolve():
            self._set_demo(False)  # another checkpoint: the demo's settings no longer apply
        self.reinit_panel.set_model(model.module)
        self.data_panel.set_model(model.input_size, model.num_classes)
        self.data_panel.check_bundled(model.raw, model.input_size)  # off the GUI thread; answers in the panel
        self.right_stack.setCurrentWidget(self.right_splitter)
        self._fit_left_column()
        name = elide(printable(model.path.name), NAME_LIMIT)  # anyone's text: no controls, no 12,000 px title
        self.setWindowTitle(f"BCU Studio — {name}")
        self.log_pane.append_message(f"model: {model.describe()}")
        for note in model.notes:
            self.log_pane.append_message(f"  {note}")
        self.statusBar().showMessage(f"Loaded {name}: {model.arch_name}, {model.num_classes} classes.")
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
        if self.scan_view.is_running:
            missing.append("wait for the scan to finish (or cancel it)")
        if self.sweep_view.is_running:
            missing.append("wait for the sweep to finish (or stop it)")
        return missing

    def _output_root(self) -> Path:
        from ..core.runfolder.writer import default_runs_root

        root = self.training_panel.values().get("output_root")
        return Path(root) if root else default_runs_root()

    def use_triggered_set(self, folder: str, target: int) -> None:
        """The scan view wrote its recovered trigger as a triggered folder: measure real ASR with it."""
        dp = self.data_panel
        dp.set_folders(dp.unlabeled_path(), dp.clean_path(), folder, target)
        self.statusBar().showMessage(f"Triggered folder set to the scan's stamped images (target class {target}).")

    def _update_state(self) -> None:
        self.scan_view.set_available(self.model_panel.model is not None and bool(self.data_panel.unlabeled_path())
                                     and not self.run_view.is_running and not self.sweep_view.is_running)
        self.training_panel.set_asr_available(self.data_panel.asr_available())
        usable = self.data_panel.state("unlabeled").usable or 0
        self.training_panel.set_image_count(usable or None)
        ready = f"{usable:,} unlabelled images. {self.data_panel.curves_sentence()}"
        self.run_view.set_ready(self.missing_inputs(), ready)
        self.sweep_view.set_available(not self.missing_inputs() and not self.run_view.is_running)

    def _refuse_while_running(self) -> bool:
        if self.run_view.is_running or self.sweep_view.is_running:
            self.statusBar().showMessage("A run is in progress: stop it first.", 5000)
            return True
        return False

    # --------------------------------------------------------------------------------------------- runs
    def build_config(self) -> CleanseConfig:
        """The CleanseConfig the panels describe, every field from a panel's ``config_fields()``."""
        fields: dict = {}
        for panel in (self.model_panel, self.data_panel, self.reinit_panel):
            fields.update(panel.config_fields())
        fields.update(self.training_panel.config_fields(run_label="demo" if self.demo else "run"))
        return CleanseConfig(**fields)

    def start_run(self, keep_reference: bool = False) -> bool:
        """Start a run with the current inputs; False (and nothing started) if something is missing."""
        if self.run_view.is_running or self.missing_inputs():
            return False
        try:
            cfg = self.build_config()
            cfg.validate()
        except BcuError as exc:
            dialogs.error(self, "Cannot start the run", str(exc))
            return False
        model = self.model_panel.model
        assert model is not None
        scan = self.training_panel.scan_enabled()
        self.view_tabs.setCurrentWidget(self.plot_splitter)
        return self.run_view.start(cfg, model, self.reinit_panel.preset_label(), keep_reference, scan=scan,
                                   teacher_scan=self.scan_view.result_for(model, cfg.unlabeled, self.run_view.scan_config)
                                   if scan else None, processes=self.training_panel.processes())

    def choose_run_to_resume(self) -> None:
        if self._refuse_while_running():
            return
        from ..core.runfolder.writer import default_runs_root

        start = default_runs_root()
        path = QFileDialog.getExistingDirectory(self, "Resume an unfinished run",
                                                str(start if start.is_dir() else Path.home()))
        if path:
            self.resume_run(path)

    def resume_run(self, path: str | Path) -> bool:
        """Continue the unfinished run in ``path``; False (after a dialog saying why) when it cannot."""
        from .resume_run import open_unfinished_run

        if self._refuse_while_running():
            return False
        opened = open_unfinished_run(self, path)
        if opened is None:
            return False
        cfg, model = opened
        from ..core.resume import folder_state

        resolved = (folder_state(path).config or {}).get("resolved") or {}
        processes = int(resolved.get("world_size", 1))  # a run goes on with as many processes as it started with
        return self.run_view.start(cfg, model, f"{cfg.preset} (resumed)", resume=True, processes=processes)

    def open_run(self, path: str | Path) -> bool:
        """Show a saved run (its curves, summary and status) in the run view; the library, a sweep's chart and
        a report call this. False (after a message) when it is not a run folder or a run is in progress."""
        from .library_actions import open_run

        if self._refuse_while_running():
            return False
        return open_run(self, path)

    def compare_runs(self, runs) -> None:
        """Overlay several runs' curves (run records or folders) in the Compare tab."""
        from .library_actions import compare_runs

        compare_runs(self, runs)

    def choose_run_to_watch(self) -> None:
        if self._refuse_while_running():
            return
        path = QFileDialog.getExistingDirectory(self, "Watch a run folder being written",
                                                self.settings.last_dir("watch"))
        if path:
            self.settings.set_last_dir("watch", path)
            self.watch_run(path)

    def watch_run(self, path: str | Path) -> bool:
        """Follow the run another process is writing in ``path``, live, in the run view's plots."""
        from .library_actions import watch_run

        if self._refuse_while_running():
            return False
        return watch_run(self, path)

    def _on_watch_ended(self, update) -> None:
        self.log_pane.append_message(f"watched run {update.state}: {update.message}",
                                     "info" if update.state == "finished" else "warning")
        if self.watcher.run_dir is not None:
            self.library_panel.update_run(self.watcher.run_dir)

    def run_again_with_paper(self) -> bool:
        """The demo's comparison: same inputs, the paper's ratios; the previous curves stay as references."""
        self.run_view.keep_as_reference()
        self.reinit_panel.set_preset("paper")
        return self.start_run(keep_reference=True)

    def _on_running_changed(self, running: bool) -> None:
        if running:  # the plots are the live run's now
            from .saved_run import restore_step_axis

            self.watcher.stop(hide=True)
            restore_step_axis(self.run_view)
        for panel in self.input_panels:
            panel.setEnabled(not running)
        for action in (self.open_action, self.demo_action, self.resume_action, self.watch_action):
            action.setEnabled(not running)
        self.recent_menu.setEnabled(not running)
        self.welcome_demo_button.setEnabled(not running)
        self.welcome_open_button.setEnabled(not running)
        if not running and self._close_when_stopped:
            QTimer.singleShot(0, self.close)  # the run that outlived the close wait has saved: close now
        self._update_state()

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
        """During a run: ask, then stop it and wait for it to save, so no thread is ever left running.

        If the run has not stopped within the wait (a slow disk, a long batch), the window stays open, says
        so, and closes itself as soon as the run's thread has ended.
        """
        if self.run_view.is_running:
            if not self._close_when_stopped and not dialogs.ask(
                    self, "Stop the run and quit?", "A cleansing run is in progress. Stop it and quit?\n\n"
                    "The run folder and the model as it is now are kept."):
                event.ignore()
                return
            if not self.run_view.close(self.close_wait_ms):
                self._close_when_stopped = True
                self.statusBar().showMessage("The run is still saving; the window closes when it has stopped.")
                event.ignore()
                return
        if self.sweep_view.is_running:
            if not self._close_when_stopped and not dialogs.ask(
                    self, "Stop the sweep and quit?", "A sweep is in progress. Stop it and quit?\n\n"
                    "The run in progress is saved; running the sweep again continues it."):
                event.ignore()
                return
            if not self.sweep_view.close(self.close_wait_ms):
                self._close_when_stopped = True
                self.statusBar().showMessage("The sweep is still saving; the window closes when it has stopped.")
                event.ignore()
                return
        self.data_panel.cancel_checks()
        self.watcher.stop()
        self.library_panel.cancel()
        self.scan_view.close()
        cancel_all_tasks()
        self._save_settings()
        event.accept()
