"""A scan's recovered trigger as PNG files in a run folder, so the run's record (and its report) can show it.

A cleansing run with a scan (``bcu cleanse --scan``, the app's "Scan before and after") writes, per scanned
model, into ``<run>/scan/<teacher|cleansed>/``: the trigger of the most anomalous class (``mask.png`` and
``pattern.png``, or ``perturbation.png`` shown around mid-grey), up to four held-out images stamped with it
(``stamped_<i>.png``) and the scan's numbers (``scan.json``). Each file is written atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import atomic
from ..runfolder.layout import SCAN_FILE
from .scanner import ScanResult
from .trigger import Trigger, stamp

EXAMPLES = 4


def _png_array(chw: torch.Tensor) -> np.ndarray:
    """[C, H, W] float in [0, 1] -> HxW (one channel) or HxWx3 uint8."""
    arr = (chw.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return arr[:, :, 0] if arr.shape[2] == 1 else arr


def trigger_pictures(trigger: Trigger, examples: torch.Tensor) -> list[tuple[str, np.ndarray]]:
    """(file name, uint8 array) for ``trigger`` and ``examples`` (uint8 NCHW) stamped with it."""
    pictures: list[tuple[str, np.ndarray]] = []
    if trigger.kind == "mask":
        assert trigger.mask is not None
        pictures += [("mask.png", _png_array(trigger.mask)), ("pattern.png", _png_array(trigger.pattern))]
    else:  # the signed perturbation around mid-grey, stretched to its own budget so it can be seen
        scale = max(float(trigger.pattern.abs().max()), 1e-6)
        pictures.append(("perturbation.png", _png_array(0.5 + trigger.pattern / (2 * scale))))
    for i, img in enumerate(stamp(examples[:EXAMPLES].cpu(), trigger)):
        pictures.append((f"stamped_{i}.png", _png_array(img.float() / 255)))
    return pictures


def write_scan_pictures(folder: str | Path, result: ScanResult, examples: torch.Tensor) -> list[Path]:
    """Write ``result``'s most anomalous trigger, stamped ``examples`` and ``scan.json`` into ``folder``."""
    from PIL import Image

    folder = Path(folder)
    written: list[Path] = []
    trigger = result.candidate
    if trigger is not None:
        for name, array in trigger_pictures(trigger, examples):
            target = folder / name
            atomic.write_with(target, lambda tmp, a=array: Image.fromarray(a).save(tmp, format="PNG"))
            written.append(target)
    atomic.write_json(folder / SCAN_FILE, result.to_dict())
    written.append(folder / SCAN_FILE)
    return written
