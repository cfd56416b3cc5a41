"""Input normalisation presets and the parser for a user's ``--normalize`` value."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ConfigError


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and std applied to [0, 1] pixels before the model sees them."""

    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def to_dict(self) -> dict:
        return {"normalize": self.name, "mean": list(self.mean), "std": list(self.std)}

    def describe(self) -> str:
        def fmt(values: tuple[float, ...]) -> str:
            return ", ".join(f"{v:.4g}" for v in values)

        return f"{self.name} (mean {fmt(self.mean)}; std {fmt(self.std)})"


PRESETS: dict[str, Normalization] = {
    n.name: n
    for n in [
        Normalization("none", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
        Normalization("cifar10", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
        Normalization("gtsrb", (0.3403, 0.3121, 0.3214), (0.2724, 0.2608, 0.2669)),
        Normalization("imagenet", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ]
}


# Dataset names checkpoints carry (BackdoorBench's ``clean_data``, a config's ``dataset``) -> the statistics and
# input size that dataset's code trains with. BackdoorBench's own values (get_dataset_normalization and
# get_input_shape in utils/aggregate_block/dataset_and_transform_generate.py); the BCU authors' files follow the
# same convention. Note BackdoorBench does not normalise GTSRB or CelebA (mean 0, std 1).
DATASETS: dict[str, tuple[Normalization, int]] = {
    "cifar10": (Normalization("cifar10-backdoorbench", (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)), 32),
    "cifar100": (Normalization("cifar100", (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)), 32),
    "gtsrb": (PRESETS["none"], 32),
    "celeba": (PRESETS["none"], 64),
    "tiny": (Normalization("tiny-imagenet", (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)), 64),
    "mnist": (Normalization("mnist", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), 28),
    "imagenet": (PRESETS["imagenet"], 224),
}
_DATASET_ALIASES = {"cifar-10": "cifar10", "cifar_10": "cifar10", "cifar-100": "cifar100", "cifar_100": "cifar100",
                    "tinyimagenet": "tiny", "tiny-imagenet": "tiny", "tiny_imagenet": "tiny",
                    "imagenet1k": "imagenet", "imagenet-1k": "imagenet"}


def dataset_rule(name: str) -> tuple[Normalization, int, str] | None:
    """(normalisation, input size, the rule that chose them, in words) for a dataset name a checkpoint carries,
    or None when it is not known.

    Exact names (and their spellings) first. Then the rule both producers apply to the rest: the BCU authors'
    code (``get_dataset_norm_stats``) gives ImageNet's statistics to *any* name containing "imagenet" and 224
    pixels to names containing "imagenet10" (their ImageNet-10 subset, e.g. ``resnet18comp`` files), so such a
    file is never read with CIFAR-10 statistics.
    """
    key = name.strip().lower()
    canonical = _DATASET_ALIASES.get(key, key)
    if canonical in DATASETS:
        norm, size = DATASETS[canonical]
        how = "its name" if canonical == key else f"its name, read as '{canonical}'"
        return norm, size, f"{how}, with BackdoorBench's statistics for it"
    if "tiny" in key and "imagenet" in key:
        norm, size = DATASETS["tiny"]
        return norm, size, "a name containing 'tiny' and 'imagenet' (Tiny-ImageNet's statistics, 64 pixels)"
    if "imagenet" in key:
        return (PRESETS["imagenet"], 224,
                "a name containing 'imagenet' (the BCU authors' and BackdoorBench's rule: ImageNet statistics, "
                "224 pixels)")
    return None


def _triple(values: list[float], what: str) -> tuple[float, float, float]:
    if len(values) == 1:
        return (values[0],) * 3  # type: ignore[return-value]
    if len(values) == 3:
        return tuple(values)  # type: ignore[return-value]
    raise ConfigError(f"normalisation {what} needs 1 or 3 numbers, got {len(values)}")


def make_normalization(mean: list[float], std: list[float], name: str = "custom") -> Normalization:
    """Validate custom statistics: three (or one, broadcast) means and strictly positive stds."""
    m, s = _triple([float(v) for v in mean], "mean"), _triple([float(v) for v in std], "std")
    if not all(math.isfinite(v) for v in (*m, *s)):  # NaN would pass the std > 0 test and poison every input
        raise ConfigError(f"normalisation numbers must be finite, got mean {list(m)} and std {list(s)}")
    if any(v <= 0 for v in s):
        raise ConfigError(f"normalisation std must be positive, got {list(s)}")
    for preset in PRESETS.values():
        if preset.mean == m and preset.std == s:
            return preset
    return Normalization(name, m, s)


def parse_normalization(text: str) -> Normalization:
    """``cifar10`` / ``imagenet`` / ``gtsrb`` / ``none``, or ``mean,std`` / ``m1,m2,m3,s1,s2,s3``."""
    key = text.strip().lower().replace("-", "")
    if not key:
        raise ConfigError(f"the normalisation is empty: use one of {', '.join(PRESETS)} or 'mean,std' numbers")
    if key in PRESETS:
        return PRESETS[key]
    try:
        numbers = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(
            f"unknown normalisation '{text}': use one of {', '.join(PRESETS)} or 'mean,std' numbers"
        ) from None
    if len(numbers) == 2:
        return make_normalization(numbers[:1], numbers[1:])
    if len(numbers) == 6:
        return make_normalization(numbers[:3], numbers[3:])
    raise ConfigError(f"normalisation '{text}' needs 2 numbers (mean,std) or 6 (three means, three stds)")


def from_metadata(meta: dict) -> Normalization | None:
    """The normalisation a checkpoint's metadata states, if any."""
    if "mean" in meta and "std" in meta:
        return make_normalization(list(meta["mean"]), list(meta["std"]), str(meta.get("normalize", "custom")))
    if "normalize" in meta:
        return parse_normalization(str(meta["normalize"]))
    return None
