"""Screenshots of the run library and of watching a run (docs and reviews).

    xvfb-run -a -s "-screen 0 1280x800x24" python -m bcu_gui.app.library_screenshot docs/screenshots \
        --runs RUNS_DIR [--watch]

Takes library-overlay.png (every run under RUNS_DIR ticked and overlaid, the library docked below) and
library-open.png (the first run reopened). ``--watch`` also starts a short demo ``bcu cleanse`` in another
process and takes watch.png while it is followed live and watch-finished.png once it has ended. Private
settings and an empty default runs folder: nothing of the user's is read or changed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bcu_gui.app.library_screenshot",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--runs", required=True, help="a folder of runs to list and overlay")
    parser.add_argument("--watch", action="store_true", help="also watch.png and watch-finished.png")
    parser.add_argument("--watch-epochs", type=int, default=12)
    parser.add_argument("--data", help="a folder laid out like the demo's (model.pt, unlabeled/, clean/, "
                        "triggered/) for the watched run; default: the demo")
    parser.add_argument("--size", default="1280x800")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    width, height = (int(v) for v in args.size.lower().split("x"))
    os.environ["BCU_SETTINGS_ORG"] = "bcu-studio-screenshots-library"
    os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="bcu-screenshot-data-")

    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(["bcu-gui"])
    from .main_window import MainWindow
    from .screenshot import _save

    window = MainWindow()
    window.settings.set_library_folders([])
    window.resize(width, height)
    window.show()
    panel = window.library_panel
    state: dict = {"code": 1}

    def loaded(_n: int) -> None:
        panel.loaded.disconnect(loaded)
        finished = [r for r in panel.model.records() if r.status == "finished"]
        window.open_run(finished[0].path)
        QTimer.singleShot(400, lambda: (_save(window, out / "library-open.png"), overlay()))

    def overlay() -> None:
        for r in panel.model.records():
            panel.model.set_checked(r.path, r.epochs_done > 0)  # a run killed before its first epoch has no curve
        panel.compare_checked()
        QTimer.singleShot(400, lambda: (_save(window, out / "library-overlay.png"), watch() if args.watch else done()))

    def watch() -> None:
        from ..demo import demo_dir

        demo = Path(args.data) if args.data else demo_dir()
        run = Path(tempfile.mkdtemp(prefix="bcu-watch-")) / "20261125-130000-server-run"
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        state["proc"] = subprocess.Popen(
            [sys.executable, "-m", "bcu_gui.cli", "cleanse", str(demo / "model.pt"), "--unlabeled",
             str(demo / "unlabeled"), "--eval-clean", str(demo / "clean"), "--eval-poisoned", str(demo / "triggered"),
             "--target-class", "0", "--preset", "strong", "--epochs", str(args.watch_epochs), "--no-flip",
             "--batch-size", "16", "--device", "cpu", "--precision", "fp32", "--out", str(run)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        window.watcher._timer.setInterval(250)
        window.watcher.updated.connect(on_update)
        window.watcher.ended.connect(lambda _u: QTimer.singleShot(
            400, lambda: (_save(window, out / "watch-finished.png"), done())))
        window.watch_run(run)

    def on_update(update) -> None:
        rows = window.watcher.follower.rows if window.watcher.follower else []
        if not state.get("mid") and len(rows) >= args.watch_epochs // 2 and not update.ended:
            state["mid"] = True
            _save(window, out / "watch.png")

    def done() -> None:
        state["code"] = 0
        app.exit(0)

    panel.loaded.connect(loaded)
    panel.add_folder(args.runs)
    app.exec()
    if state.get("proc") is not None:
        state["proc"].wait(timeout=60)
    window.close()
    return state["code"]


if __name__ == "__main__":
    sys.exit(main())
