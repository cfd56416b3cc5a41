"""How many images an optimiser step sees when the user does not say: enough steps an epoch, sound batch norm.

The paper distils 2,500-5,000 images at batch 256, i.e. 10-20 optimiser steps an epoch. A defender with a
folder of 400 images at batch 256 gets 2 steps an epoch, and 100 such epochs leave the student untrained
(measured: WaNet kept 14.5% ASR at batch 256, a few % at batch 64; see shared notes). So the default batch is
the largest that still gives about ``MIN_STEPS`` steps an epoch, capped at the paper's 256 and never below a
floor at which batch-norm statistics of a batch stay meaningful.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_BATCH = 256  # the paper's batch size
MIN_BATCH = 16  # below this, per-batch batch-norm statistics get too noisy to train on
MIN_STEPS = 10  # optimiser steps an epoch we aim for


@dataclass(frozen=True)
class BatchChoice:
    """The batch size a run uses and a sentence saying why, for the log, the app and config.json."""

    size: int
    automatic: bool
    reason: str


def steps_per_epoch(images: int, batch: int) -> int:
    """Full batches plus a last partial one of at least 2 images (a batch of 1 breaks batch norm)."""
    batch = min(batch, images)
    return images // batch + (1 if images % batch >= 2 else 0)


def choose_batch_size(images: int, requested: int | None = None) -> BatchChoice:
    """The batch size for ``images`` unlabelled images; ``requested`` (the user's explicit choice) wins."""
    if images < 2:
        raise ValueError(f"at least 2 images are needed to train, got {images}")
    if requested is not None:
        size = min(requested, images)
        steps = steps_per_epoch(images, size)
        note = f" (the set has only {images} images)" if requested > images else ""
        return BatchChoice(size, False, f"batch size {size} as requested{note}: {steps} steps an epoch")
    size = max(MIN_BATCH, min(MAX_BATCH, images // MIN_STEPS))
    size = min(size, images)
    steps = steps_per_epoch(images, size)
    if size == MAX_BATCH:
        why = f"the paper's {MAX_BATCH}, which gives {steps} steps an epoch on {images:,} images"
    elif size == MIN_BATCH or size == images:
        why = (f"the smallest batch that keeps batch norm sound; {images:,} images give only {steps} steps "
               "an epoch, so consider more epochs or more images")
    else:
        why = f"{images:,} images // {MIN_STEPS} steps an epoch (batch 256 would give only " \
              f"{steps_per_epoch(images, MAX_BATCH)})"
    return BatchChoice(size, True, f"batch size {size} chosen automatically: {why}")
