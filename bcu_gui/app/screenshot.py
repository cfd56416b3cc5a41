"""Screenshots of the real window on the demo: before a run, during it and at the end (docs and reviews).

    xvfb-run -a -s "-screen 0 1280x800x24" python -m bcu_gui.app.screenshot docs/screenshots
    xvfb-run -a -s "-screen 0 1920x1080x24" python -m bcu_gui.app.screenshot docs/screenshots \
        --size 1920x1080 --prefix 1920x1080-
    xvfb-run -a -s "-screen 0 1280x800x24" python -m bcu_gui.app.screenshot docs/screenshots --scan

``--scan`` takes scan.png (the scan view on the demo model) and run-proxy.png (a demo run that scans before
and after: the proxy-ASR curve beside the real ASR, both verdicts in the result box) instead.
``--features`` runs the demo and takes its Feature space tab at the first frame (the teacher, epoch 0) and at
the last: features-first.png and features-last.png; ``--features-from RUN_DIR`` takes the same two shots of
a finished run's recorded frames (its ``features.npz``), reopened in the tab, without training again.

Uses private settings and a temporary run folder, so it leaves nothing in the user's configuration or run
library. The PNGs are palette-reduced to keep the repository small.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Sequence


def _save(widget, path: Path) -> None:
    from PIL import Image

    widget.grab().save(str(path))
    with Image.open(path) as img:
        small = img.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)
    print(f"saved {path} ({path.stat().st_size // 1024} KiB)", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bcu_gui.app.screenshot", description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder for before.png, during.png, after.png")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of the demo run (default: the demo's)")
    parser.add_argument("--during-epoch", type=int, default=None, help="epoch after which 'during' is taken")
    parser.add_argument("--size", default="1280x800", help="window size, WxH")
    parser.add_argument("--prefix", default="", help="prefix of the file names (e.g. the size)")
    parser.add_argument("--scan", action="store_true", help="scan.png and run-proxy.png instead")
    parser.add_argument("--features", action="store_true", help="features-first.png and features-last.png instead")
    parser.add_argument("--features-from", metavar="RUN_DIR", help="the same, from a run folder's recorded frames")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    width, height = (int(v) for v in args.size.lower().split("x"))

    os.environ.setdefault("BCU_SETTINGS_ORG", "bcu-studio-screenshots")
    import torch
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    app = QApplication.instance() or QApplication(["bcu-gui"])
    from ..core.events import EpochEnd
    from .main_window import MainWindow

    window = MainWindow()
    window.resize(width, height)
    window.show()
    runs = tempfile.mkdtemp(prefix="bcu-screenshot-runs-")
    state = {"code": 1, "during": False}

    rv = window.run_view

    def shot(name: str):
        return out / f"{args.prefix}{name}.png"

    def before() -> None:
        if window.data_panel.is_checking() or window.missing_inputs():
            QTimer.singleShot(100, before)
            return
        QTimer.singleShot(300, lambda: (_save(window, shot("before")), start()))

    def start() -> None:
        if not window.start_run():
            print("the run did not start:", window.missing_inputs(), file=sys.stderr)
            app.exit(1)

    def on_event(event) -> None:
        if not isinstance(event, EpochEnd):
            return
        during = args.during_epoch or max(1, event.epochs // 3)
        if event.epoch >= during and not state["during"]:
            state["during"] = True
            rv.loss_plot.flush()
            rv.epochs_plot.flush()
            _save(window, shot("during"))

    def on_finished(_event) -> None:
        QTimer.singleShot(300, lambda: (_save(window, shot("after")), state.update(code=0), app.exit(0)))

    def on_failed(event) -> None:
        print(f"the run failed: {event.message}", file=sys.stderr)
        app.exit(1)

    if args.scan:
        def scan_first() -> None:
            if window.data_panel.is_checking() or window.missing_inputs():
                QTimer.singleShot(100, scan_first)
                return
            window.scan_view.scan_action.trigger()

        def scanned(_result) -> None:
            QTimer.singleShot(300, lambda: (_save(window, shot("scan")), run_with_scan()))

        def run_with_scan() -> None:
            if not window.training_panel.scan_enabled():
                window.training_panel.scan_check.click()
            start()

        window.scan_view.scan_finished.connect(scanned)
        rv.run_finished.connect(lambda _e: QTimer.singleShot(
            300, lambda: (_save(window, shot("run-proxy")), state.update(code=0), app.exit(0))))
        rv.run_failed.connect(on_failed)
        if not window.open_demo():
            return 1
        window.training_panel.output.set_path(runs)
        if args.epochs:
            window.training_panel.epochs_spin.setValue(args.epochs)
        QTimer.singleShot(500, scan_first)
        app.exec()
        window.close()
        return state["code"]

    if args.features or args.features_from:
        def frames_done(_event) -> None:
            window.view_tabs.setCurrentWidget(rv.feature_view)
            QTimer.singleShot(300, first)

        def first() -> None:
            rv.feature_view.slider.setValue(0)
            QTimer.singleShot(300, lambda: (_save(window, shot("features-first")), last()))

        def last() -> None:
            rv.feature_view.slider.setValue(rv.feature_view.slider.maximum())
            QTimer.singleShot(300, lambda: (_save(window, shot("features-last")), state.update(code=0),
                                            app.exit(0)))

        rv.run_finished.connect(frames_done)
        rv.run_failed.connect(on_failed)
        if not window.open_demo():
            return 1
        if args.features_from:
            if not rv.feature_view.load_run(args.features_from):
                print(rv.feature_view.info.text(), file=sys.stderr)
                return 1
            QTimer.singleShot(800, lambda: frames_done(None))
            app.exec()
            window.close()
            return state["code"]
        window.training_panel.output.set_path(runs)
        window.training_panel.features_check.setChecked(True)
        if args.epochs:
            window.training_panel.epochs_spin.setValue(args.epochs)
        QTimer.singleShot(500, lambda: before_features())

        def before_features() -> None:
            if window.data_panel.is_checking() or window.missing_inputs():
                QTimer.singleShot(100, before_features)
                return
            start()

        app.exec()
        window.close()
        return state["code"]

    rv.runner.event.connect(on_event)
    rv.run_finished.connect(on_finished)
    rv.run_failed.connect(on_failed)
    if not window.open_demo():
        return 1
    window.training_panel.output.set_path(runs)
    if args.epochs:
        window.training_panel.epochs_spin.setValue(args.epochs)
    QTimer.singleShot(500, before)
    app.exec()
    window.close()
    return state["code"]


if __name__ == "__main__":
    sys.exit(main())
