"""File › Resume run…: pick a run folder, check it is an unfinished run, and load what it needs to go on.

The folder's ``config.json`` is a file on disk like any other: a ``trust_checkpoint`` it records is not taken
on its word, the user is asked again (the same question as when opening the checkpoint).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QWidget

from ..core.errors import BcuError, UntrustedCheckpointError
from ..core.job import CleanseConfig
from ..core.models import LoadedModel, load_model
from ..core.resume import folder_state
from . import dialogs
from .panels.common import wait_cursor

TITLE = "Cannot resume this folder"


def why_not_resumable(path: Path) -> str | None:
    """None for an unfinished run; otherwise one sentence saying what the folder is instead."""
    state = folder_state(path)
    status = state.status
    if status == "unfinished":
        return None
    if status == "foreign" and state.config is not None:
        return f"{path} holds a run that left no resume point (it ended before resume points existed, or its " \
               "files were moved), so it cannot be resumed"
    return {
        "absent": f"{path} does not exist",
        "empty": f"{path} is empty: it is not a run folder",
        "finished": f"{path} holds a finished run, so there is nothing to resume; its model is "
                    f"{path / 'cleansed.pt'} (File › Save cleansed model… after opening it, or use it as it is)",
    }.get(status, f"{path} is not a BCU Studio run folder: it holds no run's config.json")


def open_unfinished_run(parent: QWidget, path: str | Path) -> tuple[CleanseConfig, LoadedModel] | None:
    """The config and the loaded teacher of the unfinished run in ``path``; None (after a dialog) otherwise."""
    folder = Path(path)
    reason = why_not_resumable(folder)
    if reason:
        dialogs.error(parent, TITLE, reason)
        return None
    try:
        cfg = CleanseConfig.from_run(folder, out=str(folder))
        cfg.validate()
        kwargs = dict(arch=cfg.arch, input_size=cfg.input_size, normalize=cfg.normalize)
        with wait_cursor():
            try:
                model = load_model(cfg.checkpoint, trust=False, **kwargs)
            except UntrustedCheckpointError as exc:
                model = None
                question = str(exc)
        if model is None:
            if not dialogs.ask_trust(parent, Path(cfg.checkpoint).name, question):
                return None
            with wait_cursor():
                model = load_model(cfg.checkpoint, trust=True, **kwargs)
            cfg.trust_checkpoint = True
    except BcuError as exc:
        dialogs.error(parent, "Cannot resume this run", str(exc))
        return None
    except OSError as exc:
        dialogs.error(parent, "Cannot resume this run", f"could not read {exc.filename or path}: {exc.strerror}")
        return None
    return cfg, model
