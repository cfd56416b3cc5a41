"""Resume points: what lets a run killed at any moment (Ctrl-C, SIGTERM, kill -9, a power cut) go on later.

At the start and at every epoch end the job writes ``resume.pt`` into the run folder, atomically: the
student, optimiser, schedule, gradient scaler, the loop's generators, torch's global RNG, the best-so-far
weights (``Distiller.tensors()``), state dicts of hooks that keep state (EMA weights), and the plain
``RunState``. A run that completes removes it, so "unfinished" has one meaning: the folder holds a
``resume.pt``. A stopped run keeps it and can be resumed from its last completed epoch.

The file is read back with ``torch.load(weights_only=True)``: a run folder is a file on disk like any other,
and nothing in it may run code.

The same module decides whether ``--out`` may be used: an empty or absent folder, or an unfinished run of
the same settings (continued); anything else is refused, so a run never overwrites earlier work.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import torch

from . import atomic
from . import untrusted
from .errors import ConfigError
from .heartbeat import read_heartbeat, writer_alive
from .runfolder.layout import (CONFIG_FILE, ENVIRONMENT_FILE, FAILED_FILE, HEARTBEAT_FILE, RESUME_FILE,
                               SUMMARY_FILE)

FORMAT = 1
RunStatus = Literal["absent", "empty", "unfinished", "finished", "foreign"]


@dataclass(frozen=True)
class FolderState:
    """What a folder is, as far as a run is concerned."""

    status: RunStatus
    config: dict | None = None  # the run's config.json, when it has one
    problem: str | None = None  # why config.json could not be used (a link, a pipe, too large, not JSON)


def folder_state(path: str | Path) -> FolderState:
    """``absent``/``empty``; ``unfinished`` (a run with a resume point, or one killed before its first);
    ``finished`` (a run with a summary and no resume point); ``foreign`` (anything else: the user's files)."""
    folder = Path(path)
    if not folder.exists():
        return FolderState("absent")
    if not folder.is_dir():
        return FolderState("foreign")
    names = {p.name for p in folder.iterdir()}
    if not names:
        return FolderState("empty")
    problems: list[str] = []
    config = untrusted.read_json_or_none(folder, CONFIG_FILE, dict, problems)
    if config is None or not {"checkpoint", "unlabeled", "resolved"} <= set(config):
        # a user's own config.json is not a run's
        return FolderState("foreign", problem=f"{folder / problems[0]}" if problems else None)
    if RESUME_FILE in names:
        return FolderState("unfinished", config)
    if SUMMARY_FILE in names:
        return FolderState("finished", config)
    # a run killed before its first resume point holds nothing but its config, environment and heartbeat
    # files (and maybe temporary files)
    markers = {CONFIG_FILE, ENVIRONMENT_FILE, HEARTBEAT_FILE, FAILED_FILE}
    if names <= markers | {n for n in names if n.startswith(".") and n.endswith(".tmp")}:
        return FolderState("unfinished", config)
    return FolderState("foreign", config)


def settings_of(config: dict) -> dict:
    """The settings that define a run's result: everything but where it is written, the record added, and
    whether the checkpoint was trusted (a decision made anew each time, never read from the folder)."""
    return {k: v for k, v in config.items() if k not in ("out", "resolved", "trust_checkpoint")}


def suggest_name(path: str | Path) -> Path:
    """A sibling of ``path`` that does not exist yet: ``run-2``, ``run-3``, ..."""
    folder = Path(path)
    for i in range(2, 10_000):
        candidate = folder.with_name(f"{folder.name}-{i}")
        if not candidate.exists():
            return candidate
    return folder.with_name(f"{folder.name}-new")


def check_out_folder(path: str | Path, settings: dict, resume: bool = False,
                     normalise: Callable[[dict], dict] | None = None) -> bool:
    """May a run with ``settings`` write into ``path``? Returns True when it continues an unfinished run there.

    Refused (``ConfigError``, one line with a free name to use): a finished run, an unfinished run of other
    settings, a folder of the user's own files, and ``resume`` of anything but an unfinished run.
    ``normalise`` reads the saved config the way the current version would (settings added since the run
    began take their defaults), so a run folder stays resumable after an upgrade adds a setting.
    """
    state = folder_state(path)
    other = suggest_name(path)
    beat = read_heartbeat(path)
    if beat is not None and writer_alive(beat):  # two processes writing one folder would corrupt it
        raise ConfigError(f"{path} is being written right now by {beat.describe()}; wait for it to end, "
                          f"or write this run to a new folder, e.g. --out {other}")
    if state.status in ("absent", "empty"):
        if resume:
            raise ConfigError(f"{path} is not a run folder: there is nothing to resume")
        return False
    if state.problem is not None:
        raise ConfigError(f"{state.problem}; nothing in {path} is used or overwritten: choose a new folder, "
                          f"e.g. --out {other}")
    if state.status == "unfinished":
        untrusted.refuse_links(path)  # it will be written again: never through a link planted in it
        saved = state.config
        if saved is not None and normalise is not None:
            try:
                saved = normalise(saved)
            except ConfigError:
                pass  # unreadable as a config today: compared as written, so it is refused below
        if saved is not None and settings_of(saved) == settings_of(settings):
            return True
        raise ConfigError(f"{path} holds an unfinished run with other settings; resume it with "
                          f"`bcu cleanse --resume {path}`, or write this run to a new folder, e.g. --out {other}")
    if state.status == "finished":
        raise ConfigError(f"{path} holds a finished run, which is not overwritten; choose a new folder, "
                          f"e.g. --out {other}" + (" (a finished run has nothing to resume)" if resume else ""))
    if state.config is not None:  # a run's folder, but with neither a resume point nor a summary
        raise ConfigError(f"{path} holds an earlier run that has no resume point, which is not overwritten; choose "
                          f"a new folder, e.g. --out {other}")
    raise ConfigError(f"{path} is not empty and is not a run folder; nothing in it is overwritten: choose a new "
                      f"folder, e.g. --out {other}")


def save_point(run_dir: str | Path, distiller, hooks_state: list[Any] | None = None) -> Path:
    """Write the resume point of ``distiller`` (at an epoch boundary) into ``run_dir``, atomically."""
    payload = {
        "format": FORMAT,
        "state": distiller.state.to_dict(),
        "tensors": _cpu(distiller.tensors()),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "hooks": [_cpu(h.state_dict()) if hasattr(h, "state_dict") else None for h in distiller.hooks],
    }
    path = Path(run_dir) / RESUME_FILE
    atomic.write_with(path, lambda tmp: torch.save(payload, tmp), expected_size=_size(payload))
    return path


def read_point(run_dir: str | Path) -> dict:
    """The resume point of ``run_dir``, read without running anything (``weights_only=True``)."""
    path = Path(run_dir) / RESUME_FILE
    try:
        untrusted.check_file(run_dir, RESUME_FILE)  # a regular file, not a link: then read weights-only
        with open(path, "rb") as fh:
            payload = torch.load(fh, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"{run_dir} has no resume point ({RESUME_FILE})") from None
    except untrusted.UntrustedFileError:
        raise
    except Exception as exc:  # damaged, truncated, or not ours: one clear line
        raise ConfigError(f"the resume point {path} cannot be read ({type(exc).__name__}); "
                          "start the run again in a new folder") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or "state" not in payload:
        raise ConfigError(f"{path} is not a resume point this version of BCU Studio can read")
    return payload


def restore(distiller, payload: dict) -> None:
    """Put ``distiller`` back where the resume point left it (its next epoch is ``state.epoch``)."""
    from .training import RunState

    tensors = payload["tensors"]
    device = distiller.plan.device
    distiller.state = RunState.from_dict(payload["state"])
    distiller.student.load_state_dict(tensors["student"])
    distiller.optimizer.load_state_dict(tensors["optimizer"])
    distiller.schedule.load_state_dict(tensors["schedule"])
    distiller.scaler.load_state_dict(tensors["scaler"])
    distiller.order_gen.set_state(tensors["order_rng"])
    distiller.aug_gen.set_state(tensors["aug_rng"])
    best = tensors.get("best_weights")
    distiller.best_weights = {k: v.to(device) for k, v in best.items()} if best else None
    for name, value in tensors.items():  # anything a later loop keeps by name (EMA weights)
        if name not in _KNOWN and hasattr(distiller, "load_extra_tensor"):
            distiller.load_extra_tensor(name, value)
    torch.set_rng_state(payload["torch_rng"])
    if payload.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["cuda_rng"])
    for hook, saved in zip(distiller.hooks, payload.get("hooks", [])):
        if saved is not None and hasattr(hook, "load_state_dict"):
            hook.load_state_dict(saved)


def discard(run_dir: str | Path) -> None:
    """Remove the resume point: the run finished, so the folder is no longer unfinished."""
    (Path(run_dir) / RESUME_FILE).unlink(missing_ok=True)


_KNOWN = {"student", "optimizer", "schedule", "scaler", "order_rng", "aug_rng", "best_weights"}


def _cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu").clone()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def _size(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_size(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_size(v) for v in obj)
    return 0
