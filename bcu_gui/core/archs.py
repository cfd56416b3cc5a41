"""Registry of the architectures backdoor research uses, and inference of one from a bare state_dict.

A state_dict carries no architecture, so we match its key names against every registered architecture and
read the number of classes and the channel width off tensor shapes. An architecture may be spelled several
ways (a CIFAR ResNet's head ``fc`` or ``linear``, its projections ``shortcut`` or ``downsample``): each spec
lists its spellings as build keyword sets, and every spelling is tried, so a new repository's naming is one
more spelling, not one more registry entry. torchvision is imported only when one of its models is built, so
a CPU build that ships without torchvision still handles the in-house networks.

What a file may claim is bounded (classes, width) before anything is allocated: a hostile state_dict can
describe a 50 GB head with a few kilobytes of zero-stride tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from functools import lru_cache, partial
from typing import Callable, Mapping

import torch
from torch import nn

from .errors import ArchitectureError, BcuError
from .nets import INIT_RULES, VGG, VGG_CONFIGS, PreActResNet, cifar_init_rule, cifar_resnet


@dataclass(frozen=True)
class ArchSpec:
    """How to build one architecture and how to recognise it in a state_dict."""

    name: str
    title: str
    build_fn: Callable[..., nn.Module]
    head_key: str  # weight whose first dim is the number of classes
    width_key: str | None = None  # weight whose first dim is the base width (None: fixed width)
    input_size: int = 32
    normalization: str = "cifar10"  # a key of normalization.PRESETS
    needs_torchvision: bool = False
    default_width: int = 64
    # key spellings: extra build keywords, each as a tuple of (name, value); () is the default spelling
    styles: tuple[tuple[tuple[str, Any], ...], ...] = ((),)
    # how a fresh model is initialised: a key of INIT_RULES, or a sentence for models that bring their own
    init: str = "the layers' own initialisation (as the architecture's code sets it)"

    def build(self, num_classes: int, width: int | None = None, style: dict | None = None) -> nn.Module:
        """A freshly initialised model (uses the global RNG: seed around it for reproducibility)."""
        extra = dict(style or {})
        if self.width_key is not None:
            return self.build_fn(num_classes=num_classes, width=width or self.default_width, **extra)
        return self.build_fn(num_classes=num_classes, **extra)

    def init_rule(self, style: dict | None = None) -> str:
        """One sentence: how this architecture (in this spelling) initialises fresh weights."""
        if self.name.endswith("_cifar"):
            style = style or {}
            return INIT_RULES[cifar_init_rule(style.get("head", "fc"), style.get("shortcut", "shortcut"))]
        return INIT_RULES.get(self.init, self.init)

    def describe_style(self, style: dict | None) -> str:
        """The spelling in words, for notes: "head 'linear', blocks with 'downsample'"."""
        if not style:
            return ""
        parts = []
        if "head" in style:
            parts.append(f"head '{style['head']}'")
        if "shortcut" in style:
            parts.append(f"blocks with '{style['shortcut']}'")
        return ", ".join(parts)


def _torchvision_model(tv_name: str, num_classes: int) -> nn.Module:
    try:
        from torchvision import models
    except Exception as exc:  # ImportError, or a broken CUDA build beside a CPU torch
        raise BcuError(
            f"the architecture '{tv_name}' comes from torchvision, which is not available in this build "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    return models.get_model(tv_name, weights=None, num_classes=num_classes)


def _tv(name: str, title: str, head_key: str) -> ArchSpec:
    return ArchSpec(name, title, partial(_torchvision_model, name), head_key, None, 224, "imagenet", True,
                    init="torchvision's own initialisation for this model")


# A CIFAR ResNet's spellings: BCU reference (fc, shortcut), kuangliu (linear, shortcut), torchvision-derived
# with a 3x3 stem (fc, downsample) and the remaining mix.
_CIFAR_STYLES: tuple[tuple[tuple[str, Any], ...], ...] = (
    (),
    (("head", "linear"),),
    (("shortcut", "downsample"),),
    (("head", "linear"), ("shortcut", "downsample")),
)


def _cifar(name: str, title: str, blocks: list[int]) -> ArchSpec:
    return ArchSpec(name, title, partial(cifar_resnet, blocks), "fc.weight", "conv1.weight",
                    styles=_CIFAR_STYLES)


REGISTRY: dict[str, ArchSpec] = {
    spec.name: spec
    for spec in [
        _cifar("resnet18_cifar", "ResNet-18 (CIFAR-style)", [2, 2, 2, 2]),
        _cifar("resnet34_cifar", "ResNet-34 (CIFAR-style)", [3, 4, 6, 3]),
        ArchSpec("preactresnet18", "PreAct-ResNet-18 (BackdoorBench)", partial(PreActResNet, [2, 2, 2, 2]),
                 "linear.weight", "conv1.weight", init="pytorch_default"),
        ArchSpec("vgg19_bn", "VGG-19-BN (BackdoorBench)", partial(VGG, VGG_CONFIGS["vgg19"]),
                 "classifier.6.weight", init="torchvision's VGG initialisation: convolutions Kaiming-normal "
                 "(fan_out, ReLU), linear layers normal(0, 0.01), biases 0"),
        _tv("resnet18", "ResNet-18 (torchvision)", "fc.weight"),
        _tv("resnet34", "ResNet-34 (torchvision)", "fc.weight"),
        _tv("resnet50", "ResNet-50 (torchvision)", "fc.weight"),
        ArchSpec("vgg16_bn", "VGG-16-BN (torchvision layout)", partial(VGG, VGG_CONFIGS["vgg16"]),
                 "classifier.6.weight", None, 224, "imagenet",
                 init="torchvision's VGG initialisation: convolutions Kaiming-normal (fan_out, ReLU), linear "
                      "layers normal(0, 0.01), biases 0"),
        _tv("mobilenet_v3_large", "MobileNet-V3-Large (torchvision)", "classifier.3.weight"),
        _tv("efficientnet_b0", "EfficientNet-B0 (torchvision)", "classifier.1.weight"),
        _tv("convnext_tiny", "ConvNeXt-Tiny (torchvision)", "classifier.2.weight"),
    ]
}

# Names other tools give the same networks (BackdoorBench's model_name values, common spellings).
ALIASES = {
    "preactresnet18": "preactresnet18",
    "preact_resnet18": "preactresnet18",
    "vgg19_bn": "vgg19_bn",
    "vgg19": "vgg19_bn",
    "cifar_resnet18": "resnet18_cifar",
    "cifar_resnet34": "resnet34_cifar",
}


def get_spec(name: str) -> ArchSpec:
    """The spec for a registry name, or a clear error listing the known names."""
    key = name.strip().lower().replace("-", "_")
    if key in REGISTRY:
        return REGISTRY[key]
    if key in ALIASES:
        return REGISTRY[ALIASES[key]]
    raise ArchitectureError(f"unknown architecture '{name}'; known: {', '.join(REGISTRY)}")


@lru_cache(maxsize=None)
def _key_signature(name: str, style: tuple = ()) -> frozenset[str]:
    """A spec's state_dict key names in one spelling (they depend on neither classes nor width)."""
    return frozenset(k for k in _meta_state(REGISTRY[name], 10, 8, dict(style))
                     if not k.endswith("num_batches_tracked"))


def _meta_state(spec: ArchSpec, num_classes: int, width: int | None,
                style: dict | None = None) -> dict[str, torch.Size]:
    """Shapes of a spec's state_dict without allocating its weights."""
    with torch.device("meta"):
        model = spec.build(num_classes, width, style)
    return {k: v.shape for k, v in model.state_dict().items()}


# What a checkpoint may claim before anything is built from it. ImageNet-21k has 21,841 classes; the widest
# CIFAR networks in the literature use a few hundred base channels.
MAX_CLASSES = 100_000
MAX_WIDTH = 4096


@dataclass
class Inference:
    """The architecture a state_dict matched, with the hyper-parameters read off its shapes."""

    spec: ArchSpec
    num_classes: int
    width: int | None
    notes: list[str] = field(default_factory=list)
    style: dict = field(default_factory=dict)  # the key spelling that matched (build keywords)


def strip_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop wrapper prefixes (DataParallel ``module.``, Lightning ``model.``) shared by every key."""
    out = dict(state)
    changed = True
    while changed and out:
        changed = False
        for prefix in ("module.", "model.", "_orig_mod.", "net."):
            if all(k.startswith(prefix) for k in out):
                out = {k[len(prefix):]: v for k, v in out.items()}
                changed = True
    return out


def _candidates(available_only: bool) -> list[ArchSpec]:
    specs = list(REGISTRY.values())
    if available_only:
        specs = [s for s in specs if not s.needs_torchvision or torchvision_available()]
    return specs


def torchvision_available() -> bool:
    """Whether torchvision's model zoo can be used in this build."""
    try:
        import torchvision  # noqa: F401
    except Exception:
        return False
    return True


def split_prefix(state: Mapping[str, torch.Tensor]) -> tuple[str, dict[str, torch.Tensor]]:
    """Like :func:`strip_prefixes`, also returning the prefix removed (``"module."``, ``"model."``, ...) so the
    weights can be written back under the same names."""
    stripped = strip_prefixes(state)
    if not state or not stripped:
        return "", stripped
    first_old, first_new = next(iter(state)), next(iter(stripped))
    return first_old[: len(first_old) - len(first_new)], stripped


def infer_architecture(state: Mapping[str, torch.Tensor], name: str | None = None) -> Inference:
    """Find the registered architecture a state_dict belongs to (or check the one the user named).

    Every spelling of every candidate is compared by key names; a candidate whose names match exactly but
    whose shapes do not (torchvision's 7x7 stem against a 3x3 one) gives way to the next, and its shape
    error is reported only when nothing fits.
    """
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    keys = set(state)
    specs = [get_spec(name)] if name else _candidates(available_only=True)
    best: tuple[float, ArchSpec, set[str], set[str]] | None = None
    shape_error: ArchitectureError | None = None
    for spec in specs:
        for style in spec.styles:
            try:
                expected = _key_signature(spec.name, style)
            except BcuError:
                break
            missing, unexpected = expected - keys, keys - expected
            if not missing and not unexpected:
                try:
                    return _check_shapes(spec, state, dict(style))
                except ArchitectureError as exc:
                    if isinstance(exc, ClaimError):
                        raise
                    shape_error = shape_error or exc
                    continue
            score = len(expected & keys) / max(1, len(expected | keys))
            if best is None or score > best[0]:
                best = (score, spec, missing, unexpected)
    if shape_error is not None:
        raise shape_error
    if best is None:
        raise ArchitectureError("no architecture could be checked (torchvision unavailable?)")
    _, spec, missing, unexpected = best
    if name:  # the user named it: advising "name the architecture" would send them round in a circle
        raise ArchitectureError(
            f"the weights do not fit {spec.name} ({spec.title}): {len(missing)} missing key(s) {_few(missing)} "
            f"and {len(unexpected)} unexpected key(s) {_few(unexpected)}; leave the architecture out to let "
            "BCU Studio infer it, or name another one (see `bcu archs`)"
        )
    raise ArchitectureError(
        f"the weights match no known architecture; closest is {spec.name} ({spec.title}) with "
        f"{len(missing)} missing key(s) {_few(missing)} and {len(unexpected)} unexpected key(s) "
        f"{_few(unexpected)}; name the architecture with --arch, or load a whole-model file"
    )


class ClaimError(ArchitectureError):
    """The weights claim a size no real model has (classes, width): refused before anything is allocated."""


def _few(keys: set[str], n: int = 4) -> str:
    items = sorted(keys)
    shown = ", ".join(items[:n])
    return f"[{shown}{', ...' if len(items) > n else ''}]"


def _check_shapes(spec: ArchSpec, state: Mapping[str, torch.Tensor], style: dict | None = None) -> Inference:
    head = state[spec.head_key] if spec.head_key in state else _renamed_head(spec, state, style)
    num_classes = int(head.shape[0])
    width = int(state[spec.width_key].shape[0]) if spec.width_key else None
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ClaimError(f"the weights claim {num_classes:,} classes; at most {MAX_CLASSES:,} are supported")
    if width is not None and not 1 <= width <= MAX_WIDTH:
        raise ClaimError(f"the weights claim a base width of {width:,} channels; at most {MAX_WIDTH:,} are "
                         "supported")
    expected = _meta_state(spec, num_classes, width, style)
    wrong = [k for k, shape in expected.items() if k in state and tuple(state[k].shape) != tuple(shape)]
    if wrong:
        k = wrong[0]
        raise ArchitectureError(
            f"the weights have {spec.name}'s key names but {len(wrong)} tensor(s) of another shape, e.g. "
            f"{k}: {tuple(state[k].shape)} where {tuple(expected[k])} is expected"
        )
    notes = []
    spelled = spec.describe_style(style)
    if spelled:
        notes.append(f"key spelling: {spelled}")
    return Inference(spec, num_classes, width, notes, dict(style or {}))


def _renamed_head(spec: ArchSpec, state: Mapping[str, torch.Tensor], style: dict | None) -> torch.Tensor:
    """The head weight under a spelling's own name (``linear.weight`` for head ``linear``)."""
    head = (style or {}).get("head")
    key = f"{head}.{spec.head_key.split('.', 1)[1]}" if head else spec.head_key
    return state[key]
