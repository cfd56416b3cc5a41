"""Input normalisation presets and the parser for a user's ``--normalize`` value."""

from __future__ import annotations

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


def _triple(values: list[float], what: str) -> tuple[float, float, float]:
    if len(values) == 1:
        return (values[0],) * 3  # type: ignore[return-value]
    if len(values) == 3:
        return tuple(values)  # type: ignore[return-value]
    raise ConfigError(f"normalisation {what} needs 1 or 3 numbers, got {len(values)}")


def make_normalization(mean: list[float], std: list[float], name: str = "custom") -> Normalization:
    """Validate custom statistics: three (or one, broadcast) means and strictly positive stds."""
    m, s = _triple([float(v) for v in mean], "mean"), _triple([float(v) for v in std], "std")
    if any(v <= 0 for v in s):
        raise ConfigError(f"normalisation std must be positive, got {list(s)}")
    for preset in PRESETS.values():
        if preset.mean == m and preset.std == s:
            return preset
    return Normalization(name, m, s)


def parse_normalization(text: str) -> Normalization:
    """``cifar10`` / ``imagenet`` / ``gtsrb`` / ``none``, or ``mean,std`` / ``m1,m2,m3,s1,s2,s3``."""
    key = text.strip().lower().replace("-", "")
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
