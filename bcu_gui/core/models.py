"""A suspicious model ready to cleanse: checkpoint + architecture + input settings, from any checkpoint form.

This is where the raw file contents (``checkpoints``) meet the architecture registry (``archs``): a bare
state_dict is matched to an architecture, a whole module is used as it is, and the input size and
normalisation come from the user, else the checkpoint's metadata, else the architecture's defaults.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .archs import ArchSpec, infer_architecture
from .checkpoints import RawCheckpoint, read_checkpoint
from .errors import ArchitectureError, CheckpointError, ConfigError
from .normalization import PRESETS, Normalization, from_metadata, parse_normalization
from .reinit import default_init

DEFAULT_INPUT_SIZE = 32


@dataclass
class LoadedModel:
    """The teacher and everything needed to feed it and to rebuild its architecture fresh."""

    module: nn.Module
    path: Path
    source_format: str
    arch: ArchSpec | None  # None for a whole module of a class we do not know
    arch_name: str
    num_classes: int
    width: int | None
    input_size: int
    normalization: Normalization
    notes: list[str] = field(default_factory=list)

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    def fresh(self, seed: int) -> nn.Module:
        """A newly initialised model of the same architecture (seeded, so students are reproducible)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if self.arch is not None:
                return self.arch.build(self.num_classes, self.width).eval()
        return default_init(self.module, seed).eval()

    def metadata(self) -> dict:
        """What a sidecar records so the weights load back without guessing."""
        meta = {"arch": self.arch_name, "num_classes": self.num_classes, "input_size": self.input_size,
                **self.normalization.to_dict()}
        if self.width is not None:
            meta["width"] = self.width
        return meta

    def describe(self) -> str:
        width = f", width {self.width}" if self.width else ""
        return (f"{self.arch_name}{width}, {self.num_classes} classes, input {self.input_size}x{self.input_size}, "
                f"{self.parameter_count:,} parameters, normalisation {self.normalization.describe()}")


def load_model(path: str | Path, *, arch: str | None = None, trust: bool = False,
               input_size: int | None = None, normalize: str | Normalization | None = None) -> LoadedModel:
    """Load a checkpoint as a model in eval mode on the CPU, resolving architecture and input settings."""
    raw = read_checkpoint(path, trust=trust)
    meta = dict(raw.metadata)
    notes: list[str] = []
    if raw.module is not None:
        module, spec, num_classes, width = _from_module(raw, meta, input_size, notes)
    else:
        module, spec, num_classes, width = _from_state_dict(raw, arch or meta.get("arch"), arch is not None, notes)
    size = _input_size(input_size, meta, spec, notes)
    norm = _normalization(normalize, meta, spec, notes)
    module.eval()
    return LoadedModel(module, raw.path, raw.format, spec, spec.name if spec else type(raw.module).__name__,
                       num_classes, width, size, norm, notes)


def _from_state_dict(raw: RawCheckpoint, arch: str | None, named_by_user: bool,
                     notes: list[str]) -> tuple[nn.Module, ArchSpec, int, int | None]:
    assert raw.state_dict is not None
    try:
        found = infer_architecture(raw.state_dict, arch)
    except ArchitectureError:
        if arch and not named_by_user:  # a metadata hint that does not fit: fall back to inference
            notes.append(f"metadata names '{arch}', which does not fit the weights; inferred instead")
            found = infer_architecture(raw.state_dict)
        else:
            raise
    model = found.spec.build(found.num_classes, found.width)
    state = {k: v for k, v in raw.state_dict.items()}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise ArchitectureError(
            f"{raw.path.name} does not fit {found.spec.name}: missing {missing[:4]}, "
            f"unexpected {list(result.unexpected_keys)[:4]}")
    notes.append(f"architecture {'named' if named_by_user else 'inferred'}: {found.spec.title}"
                 + (f", width {found.width}" if found.width else ""))
    return model, found.spec, found.num_classes, found.width


def _from_module(raw: RawCheckpoint, meta: dict, input_size: int | None,
                 notes: list[str]) -> tuple[nn.Module, ArchSpec | None, int, int | None]:
    assert raw.module is not None
    module = raw.module
    size = input_size or int(meta.get("input_size", DEFAULT_INPUT_SIZE))
    try:
        with torch.inference_mode():
            out = copy.deepcopy(module).eval()(torch.zeros(2, 3, size, size))
    except Exception as exc:
        raise CheckpointError(
            f"{raw.path.name}: the model does not run on a 3x{size}x{size} image ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:160]}); set the input size") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise CheckpointError(f"{raw.path.name}: the model must return a [batch, classes] tensor of logits")
    num_classes = int(out.shape[1])
    notes.append(f"whole model of class {type(module).__name__} ({raw.format}); fresh weights by each layer's "
                 "default initialisation")
    return module, None, num_classes, meta.get("width")


def _input_size(override: int | None, meta: dict, spec: ArchSpec | None, notes: list[str]) -> int:
    if override:
        if not 8 <= override <= 1024:
            raise ConfigError(f"input size must lie between 8 and 1024 pixels, got {override}")
        return int(override)
    if "input_size" in meta:
        notes.append("input size from the checkpoint's metadata")
        return int(meta["input_size"])
    if spec is not None:
        return spec.input_size
    notes.append(f"input size unknown: assumed {DEFAULT_INPUT_SIZE}; set it if the model expects another")
    return DEFAULT_INPUT_SIZE


def _normalization(override: str | Normalization | None, meta: dict, spec: ArchSpec | None,
                   notes: list[str]) -> Normalization:
    if isinstance(override, Normalization):
        return override
    if override:
        return parse_normalization(override)
    stated = from_metadata(meta)
    if stated is not None:
        notes.append("normalisation from the checkpoint's metadata")
        return stated
    if spec is not None:
        return PRESETS[spec.normalization]
    notes.append("normalisation unknown: assumed none (pixels in [0, 1]); set it if the model expects another")
    return PRESETS["none"]
