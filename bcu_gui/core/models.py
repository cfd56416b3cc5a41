"""A suspicious model ready to cleanse: checkpoint + architecture + input settings, from any checkpoint form.

This is where the raw file contents (``checkpoints``) meet the architecture registry (``archs``): a bare
state_dict is matched to an architecture, a whole module is used as it is (a trusted TorchScript model is
rebuilt as our eager model of its architecture when it computes the same thing, else made trainable), and
each input setting comes from the first of: the user, the checkpoint's metadata, the dataset the checkpoint
names, the architecture's defaults. ``LoadedModel.sources`` says which, for the model panel and ``inspect``.
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
from .normalization import PRESETS, Normalization, dataset_rule, from_metadata, parse_normalization
from .reinit import DEFAULT_INIT_RULE, default_init
from .scripted import ScriptedModel, eager_equivalent

DEFAULT_INPUT_SIZE = 32
MIN_INPUT_SIZE, MAX_INPUT_SIZE = 8, 1024


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
    style: dict = field(default_factory=dict)  # the key spelling of the architecture (build keywords)
    init_rule: str = ""  # how fresh weights are drawn, in words
    sources: dict[str, str] = field(default_factory=dict)  # setting -> where its value came from
    raw: RawCheckpoint | None = field(default=None, repr=False)  # the file as read (for saving back its form)

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    def fresh(self, seed: int) -> nn.Module:
        """A newly initialised model of the same architecture (seeded, so students are reproducible)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if self.arch is not None:
                return self.arch.build(self.num_classes, self.width, self.style).eval()
        return default_init(self.module, seed).eval()

    def metadata(self) -> dict:
        """What a sidecar records so the weights load back without guessing."""
        meta = {"arch": self.arch_name, "num_classes": self.num_classes, "input_size": self.input_size,
                **self.normalization.to_dict()}
        if self.width is not None:
            meta["width"] = self.width
        if self.raw is not None and "dataset" in self.raw.metadata:
            meta["dataset"] = self.raw.metadata["dataset"]
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
    sources: dict[str, str] = {}
    dataset = _dataset(meta, notes)
    size = _stated_input_size(input_size, meta, dataset, sources, raw)
    if raw.module is not None:
        module, spec, num_classes, width, style = _from_module(raw, meta, size, notes, sources)
    else:
        module, spec, num_classes, width, style = _from_state_dict(raw, arch or meta.get("arch"), arch is not None,
                                                                   notes, sources)
    if size is None:
        size = _default_input_size(spec, sources)
    norm = _normalization(normalize, meta, dataset, spec, sources)
    init_rule = spec.init_rule(style) if spec is not None else DEFAULT_INIT_RULE
    notes.append(f"fresh weights: {init_rule}")
    _refuse_non_finite(module, raw.path)
    module.eval()
    name = spec.name if spec else type(raw.module).__name__
    for setting in ("input size", "normalisation"):
        notes.append(f"{setting} from {sources[setting]}")
    return LoadedModel(module, raw.path, raw.format, spec, name, num_classes, width, size, norm, notes, style,
                       init_rule, sources, raw)


def _refuse_non_finite(module: nn.Module, path: Path) -> None:
    """NaN or Inf weights make every output NaN, whose argmax is class 0: a model that 'cleanses' to nonsense
    and reports ASR 100%. Refuse it at load, naming the first bad tensors."""
    bad = [name for name, t in (*module.named_parameters(), *module.named_buffers())
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise CheckpointError(f"{Path(path).name} holds non-finite weights (NaN or Inf) in {', '.join(bad[:3])}{more}; "
                              "a model like that cannot be measured or cleansed")


def _dataset(meta: dict, notes: list[str]) -> tuple[str, Normalization, int, str] | None:
    """The dataset the checkpoint names, with the statistics and input size its code uses and the rule that
    chose them (shown by `bcu inspect`)."""
    name = meta.get("dataset")
    if not name or not isinstance(name, str):
        return None
    known = dataset_rule(name)
    if known is None:
        if from_metadata(meta) is None:  # it would have mattered: say why the dataset was not used
            notes.append(f"the checkpoint names the dataset '{name}', whose normalisation is not known here")
        return None
    return name, known[0], known[1], known[2]


def _from_state_dict(raw: RawCheckpoint, arch: str | None, named_by_user: bool, notes: list[str],
                     sources: dict[str, str]) -> tuple[nn.Module, ArchSpec, int, int | None, dict]:
    assert raw.state_dict is not None
    try:
        found = infer_architecture(raw.state_dict, arch)
        how = "named with --arch / the model panel" if named_by_user else (
            "named in the checkpoint's metadata" if arch else "inferred from the key names and shapes")
    except ArchitectureError:
        if arch and not named_by_user:  # a metadata hint that does not fit: fall back to inference
            notes.append(f"metadata names '{arch}', which does not fit the weights; inferred instead")
            found = infer_architecture(raw.state_dict)
            how = "inferred from the key names and shapes"
        else:
            raise
    model = found.spec.build(found.num_classes, found.width, found.style)
    state = {k: v for k, v in raw.state_dict.items()}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise ArchitectureError(
            f"{raw.path.name} does not fit {found.spec.name}: missing {missing[:4]}, "
            f"unexpected {list(result.unexpected_keys)[:4]}")
    notes.append(f"architecture {'named' if named_by_user else 'inferred'}: {found.spec.title}"
                 + (f", width {found.width}" if found.width else ""))
    notes.extend(found.notes)
    sources["architecture"] = how
    sources["classes"] = "the head's shape"
    return model, found.spec, found.num_classes, found.width, found.style


def _from_module(raw: RawCheckpoint, meta: dict, size: int | None, notes: list[str],
                 sources: dict[str, str]) -> tuple[nn.Module, ArchSpec | None, int, int | None, dict]:
    assert raw.module is not None
    module = raw.module
    size = size or DEFAULT_INPUT_SIZE
    if raw.format == "torchscript":
        rebuilt = eager_equivalent(module, size)
        if rebuilt is not None:
            eager, found = rebuilt
            notes.append(f"TorchScript model rebuilt as {found.spec.title}"
                         + (f", width {found.width}" if found.width else "")
                         + ": same outputs, trainable, grouped and initialised like that architecture")
            notes.extend(found.notes)
            sources["architecture"] = "the TorchScript model's weights (checked against its outputs)"
            sources["classes"] = "the head's shape"
            return eager, found.spec, found.num_classes, found.width, found.style
        module = ScriptedModel(module)
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
    kind = type(raw.module).__name__
    notes.append(f"whole model of class {kind} ({raw.format})")
    sources["architecture"] = f"the file's own {'TorchScript code' if raw.format == 'torchscript' else 'class'}"
    sources["classes"] = "a forward pass"
    return module, None, num_classes, meta.get("width"), {}


def _stated_input_size(override: int | None, meta: dict, dataset: tuple | None, sources: dict[str, str],
                       raw: RawCheckpoint) -> int | None:
    """The input size the user, the checkpoint or its dataset states (checked), else None."""
    if override is not None:
        if not MIN_INPUT_SIZE <= override <= MAX_INPUT_SIZE:
            raise ConfigError(f"input size must lie between {MIN_INPUT_SIZE} and {MAX_INPUT_SIZE} pixels, "
                              f"got {override}")
        sources["input size"] = "your setting"
        return int(override)
    if "input_size" in meta:
        size = int(meta["input_size"])
        if not MIN_INPUT_SIZE <= size <= MAX_INPUT_SIZE:
            raise CheckpointError(
                f"{raw.path.name}: its metadata claims an input size of {size:,} pixels, outside "
                f"{MIN_INPUT_SIZE}..{MAX_INPUT_SIZE}; set the input size yourself (--input-size)")
        sources["input size"] = "the checkpoint's metadata"
        return size
    if dataset is not None:
        sources["input size"] = f"the dataset it names ('{dataset[0]}')"
        return dataset[2]
    return None


def _default_input_size(spec: ArchSpec | None, sources: dict[str, str]) -> int:
    if spec is not None:
        sources["input size"] = f"{spec.name}'s default"
        return spec.input_size
    sources["input size"] = f"an assumption ({DEFAULT_INPUT_SIZE}; set it if the model expects another)"
    return DEFAULT_INPUT_SIZE


def _normalization(override: str | Normalization | None, meta: dict, dataset: tuple | None,
                   spec: ArchSpec | None, sources: dict[str, str]) -> Normalization:
    if isinstance(override, Normalization):
        sources["normalisation"] = "your setting"
        return override
    if override is not None:  # an empty value is a mistake to report, not a request for the default
        sources["normalisation"] = "your setting"
        return parse_normalization(override)
    stated = from_metadata(meta)
    if stated is not None:
        sources["normalisation"] = "the checkpoint's metadata"
        return stated
    if dataset is not None:
        sources["normalisation"] = f"the dataset it names ('{dataset[0]}'; chosen by {dataset[3]})"
        return dataset[1]
    if spec is not None:
        sources["normalisation"] = f"{spec.name}'s default"
        return PRESETS[spec.normalization]
    sources["normalisation"] = "an assumption (none: pixels in [0, 1]; set it if the model expects another)"
    return PRESETS["none"]
