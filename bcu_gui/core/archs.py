"""Registry of the architectures backdoor research uses, and inference of one from a bare state_dict.

A state_dict carries no architecture, so we match its key names against every registered architecture and
read the number of classes and the channel width off tensor shapes. torchvision is imported only when one of
its models is built, so a CPU build that ships without torchvision still handles the in-house networks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Callable, Mapping

import torch
from torch import nn

from .errors import ArchitectureError, BcuError
from .nets import VGG, VGG_CONFIGS, CifarResNet, PreActResNet


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

    def build(self, num_classes: int, width: int | None = None) -> nn.Module:
        """A freshly initialised model (uses the global RNG: seed around it for reproducibility)."""
        if self.width_key is not None:
            return self.build_fn(num_classes=num_classes, width=width or self.default_width)
        return self.build_fn(num_classes=num_classes)


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
    return ArchSpec(name, title, partial(_torchvision_model, name), head_key, None, 224, "imagenet", True)


REGISTRY: dict[str, ArchSpec] = {
    spec.name: spec
    for spec in [
        ArchSpec("resnet18_cifar", "ResNet-18 (CIFAR-style)", partial(CifarResNet, [2, 2, 2, 2]),
                 "fc.weight", "conv1.weight"),
        ArchSpec("resnet34_cifar", "ResNet-34 (CIFAR-style)", partial(CifarResNet, [3, 4, 6, 3]),
                 "fc.weight", "conv1.weight"),
        ArchSpec("preactresnet18", "PreAct-ResNet-18 (BackdoorBench)", partial(PreActResNet, [2, 2, 2, 2]),
                 "linear.weight", "conv1.weight"),
        ArchSpec("vgg19_bn", "VGG-19-BN (BackdoorBench)", partial(VGG, VGG_CONFIGS["vgg19"]),
                 "classifier.6.weight"),
        _tv("resnet18", "ResNet-18 (torchvision)", "fc.weight"),
        _tv("resnet34", "ResNet-34 (torchvision)", "fc.weight"),
        _tv("resnet50", "ResNet-50 (torchvision)", "fc.weight"),
        ArchSpec("vgg16_bn", "VGG-16-BN (torchvision layout)", partial(VGG, VGG_CONFIGS["vgg16"]),
                 "classifier.6.weight", None, 224, "imagenet"),
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
def _key_signature(name: str) -> frozenset[str]:
    """A spec's state_dict key names (they depend on neither classes nor width)."""
    return frozenset(k for k in _meta_state(REGISTRY[name], 10, 8) if not k.endswith("num_batches_tracked"))


def _meta_state(spec: ArchSpec, num_classes: int, width: int | None) -> dict[str, torch.Size]:
    """Shapes of a spec's state_dict without allocating its weights."""
    with torch.device("meta"):
        model = spec.build(num_classes, width)
    return {k: v.shape for k, v in model.state_dict().items()}


@dataclass
class Inference:
    """The architecture a state_dict matched, with the hyper-parameters read off its shapes."""

    spec: ArchSpec
    num_classes: int
    width: int | None
    notes: list[str] = field(default_factory=list)


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


def infer_architecture(state: Mapping[str, torch.Tensor], name: str | None = None) -> Inference:
    """Find the registered architecture a state_dict belongs to (or check the one the user named)."""
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    keys = set(state)
    specs = [get_spec(name)] if name else _candidates(available_only=True)
    best: tuple[float, ArchSpec, set[str], set[str]] | None = None
    for spec in specs:
        try:
            expected = _key_signature(spec.name)
        except BcuError:
            continue
        missing, unexpected = expected - keys, keys - expected
        if not missing and not unexpected:
            return _check_shapes(spec, state)
        score = len(expected & keys) / max(1, len(expected | keys))
        if best is None or score > best[0]:
            best = (score, spec, missing, unexpected)
    if best is None:
        raise ArchitectureError("no architecture could be checked (torchvision unavailable?)")
    _, spec, missing, unexpected = best
    raise ArchitectureError(
        f"the weights match no known architecture; closest is {spec.name} ({spec.title}) with "
        f"{len(missing)} missing key(s) {_few(missing)} and {len(unexpected)} unexpected key(s) "
        f"{_few(unexpected)}; name the architecture with --arch, or load a whole-model file"
    )


def _few(keys: set[str], n: int = 4) -> str:
    items = sorted(keys)
    shown = ", ".join(items[:n])
    return f"[{shown}{', ...' if len(items) > n else ''}]"


def _check_shapes(spec: ArchSpec, state: Mapping[str, torch.Tensor]) -> Inference:
    num_classes = int(state[spec.head_key].shape[0])
    width = int(state[spec.width_key].shape[0]) if spec.width_key else None
    expected = _meta_state(spec, num_classes, width)
    wrong = [k for k, shape in expected.items() if k in state and tuple(state[k].shape) != tuple(shape)]
    if wrong:
        k = wrong[0]
        raise ArchitectureError(
            f"the weights have {spec.name}'s key names but {len(wrong)} tensor(s) of another shape, e.g. "
            f"{k}: {tuple(state[k].shape)} where {tuple(expected[k])} is expected"
        )
    return Inference(spec, num_classes, width)
