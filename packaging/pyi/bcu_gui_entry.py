"""Frozen entry point of the desktop app (the ``bcu-gui`` executable of the PyInstaller bundle)."""

import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()  # the core spawns no processes; this guards any library that would
    from bcu_gui.app.__main__ import main

    sys.exit(main())
