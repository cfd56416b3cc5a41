"""Frozen entry point of the command line (the ``bcu`` executable of the PyInstaller bundle)."""

import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()  # the core spawns no processes; this guards any library that would
    from bcu_gui.cli import main

    sys.exit(main())
