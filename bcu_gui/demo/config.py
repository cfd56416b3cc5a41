"""The built-in demo's run settings, shared by `bcu demo` and the app's "Open the demo".

Chosen by measurement on 2 CPU cores (README, "Choosing the ratios"): the paper's ratios leave this small
model's backdoor in place, so the demo uses the measured ``strong`` preset. Its batch is the engine's automatic
one, the rule every user gets (40 on the demo's 400 images: 10 steps an epoch); measured against the fixed
batch of 64 it replaced: the same ACC 98.0% / ASR 0.0% (README, "The command line").
"""

from __future__ import annotations

from ..core.job import CleanseConfig

DEMO_PRESET = "strong"
DEMO_EPOCHS = 40
DEMO_BATCH_SIZE: int | None = None  # automatic (core/batching.py)
DEMO_TARGET_CLASS = 0
DEMO_FLIP = False  # a mirrored digit is another symbol (or none): flips are wrong for digits, as --help says


def demo_config(ood: bool = False, **overrides) -> CleanseConfig:
    """A ready-to-run config over the shipped demo files (``ood``: distil on natural-photo crops)."""
    from . import demo_dir

    root = demo_dir()
    settings = dict(
        checkpoint=str(root / "model.pt"),
        unlabeled=str(root / ("ood_unlabeled" if ood else "unlabeled")),
        eval_clean=str(root / "clean"),
        eval_poisoned=str(root / "triggered"),
        target_class=DEMO_TARGET_CLASS,
        preset=DEMO_PRESET,
        epochs=DEMO_EPOCHS,
        batch_size=DEMO_BATCH_SIZE,
        flip=DEMO_FLIP,
    )
    settings.update(overrides)
    return CleanseConfig(**settings)
