"""File › Export report…: the current (or last) run as one self-contained HTML page, then an offer to open it.

The page is the core's (core/report.py), the same as ``bcu report RUN_DIR``. The run exported is the run
view's current or last run; with none yet, the user picks a run (or sweep) folder. The save dialog starts
in the run folder; replacing an existing file is asked here (the dialog's own question is turned off so the
wording matches the rest of the app), and a failure is a dialog that names the file, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from PySide6.QtCore import QObject, QUrl
from PySide6.QtGui import QAction, QDesktopServices
from PySide6.QtWidgets import QFileDialog, QWidget

from ..core.errors import BcuError
from ..core.report import is_sweep_folder, write_report
from ..core.runfolder.layout import REPORT_NAME
from ..core.runfolder.reader import is_run_folder
from . import dialogs
from .panels.common import wait_cursor
from .settings import AppSettings

TITLE = "Cannot export the report"


class ReportExporter(QObject):
    """Owns the Export report action; ``run_dir`` says which run it exports (a callable on the run view)."""

    def __init__(self, window: QWidget, run_dir: Callable[[], Path | None], settings: AppSettings) -> None:
        super().__init__(window)
        self._window, self._run_dir, self._settings = window, run_dir, settings
        self.action = QAction("Export &report…", self)
        self.action.setToolTip("Write the current or last run (or a run folder you choose) as one HTML page that "
                               "opens offline in any browser")
        self.action.triggered.connect(self.choose_and_export)
        self.open_url: Callable[[QUrl], bool] = QDesktopServices.openUrl  # tests replace it

    def current_run(self) -> Path | None:
        folder = self._run_dir()
        return folder if folder is not None and folder.is_dir() and is_run_folder(folder) else None

    def choose_and_export(self) -> None:
        folder = self.current_run()
        if folder is None:  # no run in this session yet: any run (or sweep) folder on disk
            from ..core.runfolder.writer import default_runs_root

            root = default_runs_root()
            chosen = QFileDialog.getExistingDirectory(self._window, "Choose a run folder to report on",
                                                      str(root if root.is_dir() else Path.home()))
            if not chosen:
                return
            folder = Path(chosen)
            if not (is_run_folder(folder) or is_sweep_folder(folder)):
                dialogs.error(self._window, TITLE, f"{folder} is not a BCU Studio run folder (it has no config.json "
                                                   "of a run and no summary.json) nor a sweep folder")
                return
        path, _ = QFileDialog.getSaveFileName(self._window, "Export report", str(folder / REPORT_NAME),
                                              "HTML page (*.html *.htm)",
                                              options=QFileDialog.Option.DontConfirmOverwrite)
        if path:
            self.export(folder, path)

    def export(self, folder: str | Path, path: str | Path) -> Path | None:
        """Write the report of ``folder`` to ``path`` (asking before replacing a file); None when not written."""
        target = Path(path)
        if target.suffix.lower() not in (".html", ".htm"):
            target = target.with_name(target.name + ".html")
        if target.exists() and not target.is_dir() and not dialogs.ask(
                self._window, "Replace the existing file?", f"{target.name} already exists in {target.parent}.\n\n"
                                                            "Replace it with this report?"):
            return None
        try:
            with wait_cursor():
                written = write_report(folder, target, overwrite=True)
        except BcuError as exc:
            dialogs.error(self._window, TITLE, str(exc))
            return None
        except OSError as exc:
            dialogs.error(self._window, TITLE, f"could not write {exc.filename or target}: {exc.strerror or exc}")
            return None
        except Exception as exc:  # a damaged folder the reader did not foresee: say so, keep the app usable
            dialogs.error(self._window, TITLE, f"unexpected error while writing {target}: {type(exc).__name__}: {exc}")
            return None
        self._settings.set_last_dir("report", written)
        if dialogs.ask(self._window, "Report written", f"The report was written to {written}.\n\n"
                                                       "Open it in your web browser?"):
            self.open_url(QUrl.fromLocalFile(str(written.resolve())))
        return written
