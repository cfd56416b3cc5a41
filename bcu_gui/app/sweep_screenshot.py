"""A screenshot of the Sweep tab showing a sweep folder made by ``bcu sweep`` (docs and reviews).

    bcu sweep resources/demo/model.pt --unlabeled resources/demo/unlabeled --eval-clean resources/demo/clean \
        --eval-poisoned resources/demo/triggered --target-class 0 --grid layer4=0.27,0.5,1 head=0.1,1 \
        --epochs 10 --precision fp32 --out /tmp/demo-grid
    xvfb-run -a -s "-screen 0 1280x800x24" python -m bcu_gui.app.sweep_screenshot /tmp/demo-grid \
        docs/screenshots/sweep-pareto.png

The window opens the demo as a user would, then the sweep folder in the Sweep tab (private settings: nothing
is left in the user's configuration).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bcu_gui.app.sweep_screenshot",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("sweep", help="a sweep folder (bcu sweep --out)")
    parser.add_argument("png", help="where to save the screenshot")
    parser.add_argument("--size", default="1280x800", help="window size, WxH")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))

    os.environ.setdefault("BCU_SETTINGS_ORG", "bcu-studio-screenshots")
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(["bcu-gui"])
    from .main_window import MainWindow
    from .screenshot import _save

    window = MainWindow()
    window.resize(width, height)
    window.show()
    window.open_demo()
    view = window.sweep_view
    window.view_tabs.setCurrentWidget(view.widget)
    window.right_splitter.setSizes([560, 0, 170])  # the sweep needs the room the run's result box takes
    if not view.open_sweep(args.sweep):
        print(f"cannot open {args.sweep} as a sweep", file=sys.stderr)
        return 2
    loop = QEventLoop()
    QTimer.singleShot(1500, loop.quit)  # let the layout and the plot settle
    loop.exec()
    Path(args.png).parent.mkdir(parents=True, exist_ok=True)
    _save(window, Path(args.png))
    window.close()
    app.processEvents()
    return 0


if __name__ == "__main__":
    sys.exit(main())
