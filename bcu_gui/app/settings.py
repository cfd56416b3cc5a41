"""What the app remembers between sessions: recent files, last folders, window layout, training settings.

Stored with QSettings in an INI file in the user's configuration folder. ``$BCU_SETTINGS_ORG`` renames the
organisation folder (the test suite sets it, and points ``QSettings.setPath`` at a temporary folder), so
tests never read or change a user's real settings.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSettings

ORG_ENV_VAR = "BCU_SETTINGS_ORG"
DEFAULT_ORG = "bcu-studio"
APP_NAME = "BCU Studio"
MAX_RECENT = 8


def _org() -> str:
    return os.environ.get(ORG_ENV_VAR) or DEFAULT_ORG


class AppSettings:
    """Typed access to the app's QSettings; every getter tolerates missing or malformed values."""

    def __init__(self) -> None:
        self._s = QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, _org(), APP_NAME)

    @property
    def path(self) -> str:
        return self._s.fileName()

    def sync(self) -> None:
        self._s.sync()

    # -- recent checkpoints ----------------------------------------------------------------------------
    def recent_files(self) -> list[str]:
        """Recently opened checkpoints, newest first; files that no longer exist are dropped."""
        value = self._s.value("recent/files", [])
        if isinstance(value, str):  # QSettings returns a lone string for a one-element list
            value = [value]
        files = [str(v) for v in (value or []) if v and Path(str(v)).is_file()]
        return files[:MAX_RECENT]

    def add_recent_file(self, path: str | os.PathLike) -> None:
        entry = str(Path(path).resolve())
        files = [f for f in self.recent_files() if f != entry]
        self._s.setValue("recent/files", ([entry] + files)[:MAX_RECENT])

    def clear_recent_files(self) -> None:
        self._s.setValue("recent/files", [])

    # -- last-used folders for the file dialogs --------------------------------------------------------
    def last_dir(self, key: str) -> str:
        value = str(self._s.value(f"paths/{key}", "") or "")
        return value if value and Path(value).is_dir() else str(Path.home())

    def set_last_dir(self, key: str, path: str | os.PathLike) -> None:
        p = Path(path)
        self._s.setValue(f"paths/{key}", str(p if p.is_dir() else p.parent))

    # -- window layout ---------------------------------------------------------------------------------
    def window_state(self, key: str) -> QByteArray | None:
        value = self._s.value(f"window/{key}")
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def set_window_state(self, key: str, value: QByteArray) -> None:
        self._s.setValue(f"window/{key}", value)

    # -- training settings -----------------------------------------------------------------------------
    def training(self) -> dict[str, Any]:
        """The training panel's last values (types are checked by the panel, which ignores bad ones)."""
        self._s.beginGroup("training")
        try:
            return {k: self._s.value(k) for k in self._s.childKeys()}
        finally:
            self._s.endGroup()

    def set_training(self, values: dict[str, Any]) -> None:
        self._s.beginGroup("training")
        try:
            for key, value in values.items():
                self._s.setValue(key, value)
        finally:
            self._s.endGroup()

    # -- run library folders ---------------------------------------------------------------------------
    def library_folders(self) -> list[str]:
        """Folders the user added to the run library (besides the default runs folder), in order added."""
        value = self._s.value("library/folders", [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or []) if v]

    def set_library_folders(self, folders: list[str]) -> None:
        self._s.setValue("library/folders", list(dict.fromkeys(str(f) for f in folders)))
