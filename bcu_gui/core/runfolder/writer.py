"""Writes a run folder (layout: runfolder/layout.py): where new runs go, the folder, and the model files.

It exists so that one module writes what the readers (runfolder/reader.py, core/watch.py, core/resume.py)
read; every write replaces a whole file atomically (core/atomic.py), so a reader never sees half a file.
The heartbeat (core/heartbeat.py) and the resume point (core/resume.py) are written by their own modules.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch import nn

from .. import atomic
from .. import untrusted
from .layout import CONFIG_FILE, METRICS_FILE, MODEL_FILE, SUMMARY_FILE


def default_runs_root() -> Path:
    """Where runs go when the user names no folder: the per-user data directory."""
    from platformdirs import user_data_path

    return user_data_path("bcu-studio", appauthor=False) / "runs"


def new_run_dir(root: str | Path | None = None, label: str = "run") -> Path:
    """A fresh, timestamped folder under ``root`` (never reuses an existing one)."""
    base = Path(root) if root else default_runs_root()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        candidate = base / (f"{stamp}-{label}" + (f"-{i}" if i else ""))
        if not candidate.exists():
            return candidate
    raise FileExistsError(f"could not find a free run folder name under {base}")


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """CPU, contiguous, unshared tensors: what both torch.save and safetensors accept."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def model_files(path: str | Path) -> list[Path]:
    """The three files ``save_model(model, path)`` writes: ``<stem>.pt``, ``<stem>.safetensors``, ``<stem>.json``.

    A save dialog confirms replacing the file the user typed; this names the sidecars it would replace too.
    """
    base = Path(path)
    stem = base.with_suffix("") if base.suffix in (".pt", ".pth", ".safetensors") else base
    return [stem.with_suffix(".pt"), stem.with_suffix(".safetensors"), stem.with_suffix(".json")]


def save_model(model: nn.Module, path: str | Path, metadata: dict) -> list[Path]:
    """Save ``model`` as ``<stem>.pt`` and ``<stem>.safetensors`` with a ``<stem>.json`` sidecar."""
    from safetensors.torch import save_file

    state = plain_state_dict(model)
    pt, st, sidecar = model_files(path)
    size = sum(t.numel() * t.element_size() for t in state.values())
    # both copies must fit before the first is written: no run ends with one model file and a full disk
    atomic.ensure_free_space(pt, 2 * size + (1 << 16))
    atomic.write_with(pt, lambda tmp: torch.save(state, tmp), expected_size=size)
    header = {k: json.dumps(v) if not isinstance(v, str) else v for k, v in metadata.items()}
    atomic.write_with(st, lambda tmp: save_file(state, str(tmp), metadata=header), expected_size=size)
    atomic.write_json(sidecar, metadata)
    return [pt, st, sidecar]


class RunFolder:
    """Writes one run's files; every write replaces a whole file atomically."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._metrics: list[dict] = []

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    def write_config(self, config: dict) -> None:
        atomic.write_json(self.path / CONFIG_FILE, config)

    def append_metrics(self, record: dict) -> None:
        self._metrics.append(record)
        atomic.write_text(self.path / METRICS_FILE, "".join(atomic.dumps(r) + "\n" for r in self._metrics))

    def keep_metrics(self, epochs: int) -> None:
        """On resume: keep the first ``epochs`` lines of metrics.jsonl (those of completed epochs)."""
        try:
            rows, _ = untrusted.read_jsonl(self.path, METRICS_FILE)
        except FileNotFoundError:
            rows = []
        self._metrics = [r for r in rows if isinstance(r, dict)][:epochs]

    def write_summary(self, summary: dict) -> None:
        atomic.write_json(self.path / SUMMARY_FILE, summary)

    def save_model(self, model: nn.Module, metadata: dict) -> list[Path]:
        return save_model(model, self.model_path, metadata)
