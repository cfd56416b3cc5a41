"""Build hook: the wheel carries the repository's top-level ``resources/`` (demo, icons) as ``bcu_gui/resources``.

The design keeps ``resources/`` at the top of the repository (the demo's generator lives beside its files,
the installers read the icons from there), outside the ``bcu_gui`` package, so plain package data cannot
reach it. ``build_py`` copies it into the built package instead; ``bcu_gui.demo.demo_dir`` and the app's
icon lookup look there after the source tree. Editable installs need no copy: they find the source tree.
Everything else about the build is declared in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
RESOURCES = ROOT / "resources"
SKIP = {"__pycache__", ".ipynb_checkpoints"}


class BuildPyWithResources(build_py):
    """``build_py`` plus a copy of ``resources/`` into ``<build>/bcu_gui/resources``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False) or not RESOURCES.is_dir():
            return
        target = Path(self.build_lib) / "bcu_gui" / "resources"
        for path in sorted(RESOURCES.rglob("*")):
            if path.is_file() and not SKIP.intersection(path.relative_to(RESOURCES).parts) \
                    and path.suffix != ".pyc":
                dest = target / path.relative_to(RESOURCES)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest)


setup(cmdclass={"build_py": BuildPyWithResources})
