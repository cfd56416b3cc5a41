"""``bcu-gui``: start the desktop app, optionally pre-filled; ``--smoke`` is the packaging build's self-test.

    bcu-gui [CHECKPOINT] [--unlabeled DIR] [--eval-clean DIR] [--eval-poisoned DIR --target-class K]
    bcu-gui --demo
    bcu-gui --smoke OUT_DIR     open the demo, cleanse for 2 epochs through the real window and worker,
                                save the model as "Save cleansed model…" does, print one line, exit 0

Exit codes: 0 success, 1 failure (smoke), 2 bad command line (one line on stderr).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Sequence

from ..common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, OneLineParser

SMOKE_EPOCHS = 2
SMOKE_TIMEOUT_S = 300
SMOKE_MODEL_NAME = "cleansed-demo.pt"


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    p = OneLineParser(prog="bcu-gui", description="BCU Studio: remove backdoors from image classifiers with "
                                            "unlabelled data (desktop app).")
    p.add_argument("checkpoint", nargs="?", help="suspicious model to open (.pt/.pth/.safetensors/TorchScript)")
    p.add_argument("--unlabeled", metavar="DIR", help="unlabelled images to distil on")
    p.add_argument("--eval-clean", metavar="DIR", help="labelled clean images, one sub-folder per class (ACC)")
    p.add_argument("--eval-poisoned", metavar="DIR", help="triggered images (ASR); needs --target-class")
    p.add_argument("--target-class", type=int, metavar="K", help="the attack's target class")
    p.add_argument("--demo", action="store_true", help="open the built-in backdoored digits demo")
    p.add_argument("--smoke", metavar="OUT_DIR", help="unattended self-test: run the demo for 2 epochs through "
                                                      "the window, save the model into OUT_DIR, exit 0 on success")
    p.add_argument("--version", action="version", version=f"bcu-gui {__version__}")
    return p


def check_args(args: argparse.Namespace) -> str | None:
    """The first problem with the command line, as one line, or None."""
    if args.smoke and (args.checkpoint or args.unlabeled or args.eval_clean or args.eval_poisoned):
        return "--smoke runs the built-in demo; it takes no checkpoint or folders"
    if args.demo and args.checkpoint:
        return "give either a checkpoint or --demo, not both"
    if args.checkpoint and not Path(args.checkpoint).expanduser().is_file():
        return f"checkpoint {args.checkpoint} does not exist or is not a file"
    for flag, value in (("--unlabeled", args.unlabeled), ("--eval-clean", args.eval_clean),
                        ("--eval-poisoned", args.eval_poisoned)):
        if value and not Path(value).expanduser().is_dir():
            return f"{flag} {value} is not a folder"
    if args.eval_poisoned and args.target_class is None:
        return "--eval-poisoned needs --target-class K (the class the backdoor sends images to)"
    if args.target_class is not None and args.target_class < 0:
        return f"--target-class must be 0 or more, got {args.target_class}"
    if args.smoke:
        out = Path(args.smoke).expanduser()
        if out.exists() and not out.is_dir():
            return f"--smoke {args.smoke} is a file, not a folder"
    return None


def _icon_path() -> Path | None:
    """The app icon from the source tree, an installed wheel (bcu_gui/resources) or a PyInstaller bundle."""
    here = Path(__file__).resolve()
    for base in (here.parents[2], here.parents[1], Path(getattr(sys, "_MEIPASS", "") or "/nonexistent")):
        candidate = base / "resources" / "icons" / "bcu-studio.png"
        if candidate.is_file():
            return candidate
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_BAD_INPUT
    problem = check_args(args)
    if problem:
        print(f"bcu-gui: error: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.smoke:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # unattended: no display needed

    import torch
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    if torch.get_num_threads() > (os.cpu_count() or 1):
        torch.set_num_threads(os.cpu_count() or 1)
    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "bcu-gui"])
    app.setApplicationName("BCU Studio")
    app.setDesktopFileName("bcu-studio")
    icon = _icon_path()
    if icon is not None:
        from PySide6.QtGui import QIcon

        app.setWindowIcon(QIcon(str(icon)))
    from .. import __version__

    app.setApplicationVersion(__version__)

    from .main_window import MainWindow

    window = MainWindow()
    if args.smoke:
        return run_smoke(app, window, Path(args.smoke).expanduser())

    previous_hook = sys.excepthook
    sys.excepthook = _dialog_excepthook(window)
    previous_sigint = signal.signal(signal.SIGINT, lambda *_: window.close())  # Ctrl-C in the terminal
    ticker = QTimer()  # Python handles signals only between bytecodes: keep it ticking while Qt waits
    ticker.timeout.connect(lambda: None)
    ticker.start(250)
    try:
        window.show()
        _prefill(window, args)
        return app.exec()
    finally:
        ticker.stop()
        signal.signal(signal.SIGINT, previous_sigint)
        sys.excepthook = previous_hook


def _prefill(window, args: argparse.Namespace) -> None:
    if args.demo:
        window.open_demo()
        return
    if args.checkpoint:
        window.open_checkpoint(args.checkpoint)
    if args.unlabeled or args.eval_clean or args.eval_poisoned:
        window.data_panel.set_folders(args.unlabeled, args.eval_clean, args.eval_poisoned, args.target_class)


def _dialog_excepthook(window):
    """A bug in a slot: a dialog and the traceback in the log pane, instead of a traceback on the console."""
    from . import dialogs

    def hook(exc_type, exc, tb) -> None:
        detail = "".join(traceback.format_exception(exc_type, exc, tb))
        try:
            window.log_pane.append_message(detail, "detail")
            dialogs.error(window, "Unexpected error",
                          f"{exc_type.__name__}: {exc}. The details are in the log; the app can go on")
        except Exception:  # the window itself is broken: fall back to the console
            sys.__excepthook__(exc_type, exc, tb)

    return hook


# ------------------------------------------------------------------------------------------------ smoke


def run_smoke(app, window, out_dir: Path) -> int:
    """Open the demo, cleanse for SMOKE_EPOCHS epochs, save via the Save code path; 0 on success, 1 otherwise."""
    from PySide6.QtCore import QtMsgType, QTimer, qInstallMessageHandler

    from ..common import pct
    from . import dialogs

    def qt_messages(kind: QtMsgType, _context, message: str) -> None:
        # The offscreen platform warns on every window resize hint; anything else goes to stderr as usual.
        if "propagateSizeHints" not in message:
            print(message, file=sys.stderr)

    state: dict = {"code": None, "started": False}
    t0 = time.monotonic()

    def finish(code: int, message: str | None = None) -> None:
        if state["code"] is not None:
            return
        state["code"] = code
        if message:
            print(message, file=sys.stdout if code == EXIT_OK else sys.stderr, flush=True)
        QTimer.singleShot(0, lambda: app.exit(code))

    def headless(kind: str, title: str, text: str) -> bool:
        if kind in ("error", "warning"):
            finish(EXIT_FAILED, f"bcu-gui --smoke: failed: {title}: {text}")
        return kind == "question"  # "stop the run and quit?": yes

    def try_start() -> None:
        if state["started"] or state["code"] is not None:
            return
        missing = window.missing_inputs()
        if not missing:
            state["started"] = True
            if not window.start_run():
                finish(EXIT_FAILED, "bcu-gui --smoke: failed: the run did not start")
        elif not any(m.startswith("checking") for m in missing):
            finish(EXIT_FAILED, f"bcu-gui --smoke: failed: the demo is not ready: {'; '.join(missing)}")

    def on_finished(event) -> None:
        if event.cancelled:
            finish(EXIT_FAILED, "bcu-gui --smoke: failed: the run was cancelled")
            return
        files = window.run_view.save_cleansed_to(out_dir / SMOKE_MODEL_NAME)
        if not files:
            finish(EXIT_FAILED, "bcu-gui --smoke: failed: the model was not saved")
            return
        s = event.summary
        finish(EXIT_OK, f"bcu-gui smoke ok: ACC {pct(s.teacher.acc)} -> {pct(s.cleansed.acc)}, "
                        f"ASR {pct(s.teacher.asr)} -> {pct(s.cleansed.asr)} after "
                        f"{s.epochs_completed} epochs in {time.monotonic() - t0:.0f} s; "
                        f"saved {files[0]}")

    def setup() -> None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            finish(EXIT_FAILED, f"bcu-gui --smoke: failed: cannot create {out_dir}: {exc.strerror or exc}")
            return
        if not window.open_demo():
            finish(EXIT_FAILED, "bcu-gui --smoke: failed: the demo did not open")
            return
        window.training_panel.epochs_spin.setValue(SMOKE_EPOCHS)
        window.training_panel.output.set_path(out_dir / "runs")
        window.data_panel.changed.connect(try_start)
        try_start()

    def on_exception(exc_type, exc, tb) -> None:
        traceback.print_exception(exc_type, exc, tb)
        finish(EXIT_FAILED, f"bcu-gui --smoke: failed: {exc_type.__name__}: {exc}")

    def timeout() -> None:
        finish(EXIT_FAILED, f"bcu-gui --smoke: failed: no result after {SMOKE_TIMEOUT_S} s (watchdog)")

    window.run_view.run_finished.connect(on_finished)
    window.run_view.run_failed.connect(lambda e: finish(EXIT_FAILED, f"bcu-gui --smoke: failed ({e.kind}): {e.message}"))
    watchdog = QTimer()
    watchdog.setSingleShot(True)
    watchdog.timeout.connect(timeout)
    watchdog.start(SMOKE_TIMEOUT_S * 1000)
    dialogs.set_headless(headless)
    previous_handler = qInstallMessageHandler(qt_messages)
    previous_hook = sys.excepthook
    sys.excepthook = on_exception
    try:
        window.show()
        QTimer.singleShot(0, setup)
        code = app.exec()
    finally:
        watchdog.stop()
        if window.run_view.is_running and not window.run_view.runner.stop_and_wait(30_000):
            print("bcu-gui --smoke: the run did not stop within 30 s", file=sys.stderr, flush=True)
            os._exit(EXIT_FAILED)  # a stuck worker thread: leave without waiting for it
        window.close()  # waits for any background check too
        dialogs.set_headless(None)
        qInstallMessageHandler(previous_handler)
        sys.excepthook = previous_hook
        window.deleteLater()
    return state["code"] if state["code"] is not None else (code or EXIT_FAILED)


if __name__ == "__main__":
    sys.exit(main())
