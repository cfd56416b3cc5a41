"""Evaluation sets that travel inside a checkpoint: BackdoorBench's poisoned test set (and clean test set).

BackdoorBench's ``attack_result.pt`` keeps the attack's own poisoned test data under ``bd_test``, in one of
two layouts its ``save_attack_result`` has written:

* v2 (``prepro_cls_DatasetBD_v2.retrieve_state()``): ``bd_data_container.data_dict`` maps each sample's index to
  ``(PIL image, backdoor label, original label)``, with ``original_index_array`` and ``poison_indicator``
  numpy arrays beside it (images kept on disk instead, ``save_folder_path`` set, are not in the file);
* v1: ``{'x': float tensor N x C x H x W in 0..255, 'y': labels}``, and some files also hold ``clean_test``.

Everything was read by the weights-only loader (PIL images as :class:`checkpoints.PickledImage` records), so
no code from the file runs here either. All-to-one attacks give one target class; all-to-all attacks (labels
that differ per image) have none, and their triggered set is not offered, since ASR here counts one target.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from PIL import Image

from .checkpoints import PickledImage, RawCheckpoint
from .data import ImageSet
from .evaluation import EvalSets

MAX_BUNDLED_IMAGES = 100_000


@dataclass
class BundledEval:
    """The evaluation data a checkpoint carries, decoded at the model's input size."""

    triggered: ImageSet | None
    clean: ImageSet | None
    target: int | None
    description: str  # one line for the log and the data panel

    def as_eval_sets(self) -> EvalSets:
        return EvalSets(self.clean, self.triggered if self.target is not None else None, self.target)


def describe_bundled(raw: RawCheckpoint | None) -> str | None:
    """What evaluation data the file holds, in a few words ("12 poisoned test images (bd_test), target class
    0"), or None when it holds none."""
    if raw is None or raw.format != "backdoorbench" or not isinstance(raw.top, Mapping):
        return None
    parts = []
    samples = _bd_test_samples(raw.top.get("bd_test"))
    if samples:
        targets = {bd for _, _, bd, _ in samples}
        which = f"target class {next(iter(targets))}" if len(targets) == 1 else "all-to-all, no single target"
        parts.append(f"{len(samples)} poisoned test images (bd_test), {which}")
    if _xy(raw.top.get("clean_test")) is not None:
        parts.append("a clean test set (clean_test)")
    return " and ".join(parts) if parts else None


def bundled_eval(raw: RawCheckpoint | None, size: int, num_classes: int) -> BundledEval | None:
    """The triggered (and clean) test sets inside a BackdoorBench result at ``size`` pixels, or None."""
    if raw is None or raw.format != "backdoorbench" or not isinstance(raw.top, Mapping):
        return None
    samples = _bd_test_samples(raw.top.get("bd_test"))
    clean_xy = _xy(raw.top.get("clean_test"))
    if not samples and clean_xy is None:
        return None
    origin = Path(raw.path)
    triggered, target, notes = None, None, []
    if samples:
        targets = {bd for _, _, bd, _ in samples}
        if len(targets) == 1 and 0 <= next(iter(targets)) < num_classes:
            target = next(iter(targets))
            kept = [s for s in samples if s[3] is None or s[3] != target]
            triggered = _image_set([s[1] for s in kept], None, size, origin, "bd_test", [s[0] for s in kept])
            notes.append(f"{len(triggered)} poisoned test images (bd_test), target class {target}")
        elif len(targets) > 1:
            notes.append("bd_test is an all-to-all attack (a different target per image): not used for ASR")
        else:
            notes.append(f"bd_test's target class {next(iter(targets))} is outside the model's classes")
    clean = None
    if clean_xy is not None:
        images, labels = clean_xy
        ok = [i for i, y in enumerate(labels) if 0 <= y < num_classes]
        clean = _image_set([images[i] for i in ok], torch.tensor([labels[i] for i in ok], dtype=torch.int64),
                           size, origin, "clean_test", ok)
        notes.append(f"{len(clean)} clean test images (clean_test)")
    if triggered is None and clean is None:
        return BundledEval(None, None, None, "; ".join(notes) or "no usable evaluation data")
    return BundledEval(triggered, clean, target, f"{raw.path.name}: " + "; ".join(notes))


# ------------------------------------------------------------------------------------------------ reading


def _bd_test_samples(bd_test: Any) -> list[tuple[int, np.ndarray, int, int | None]]:
    """(index, HxWx3 uint8 pixels, backdoor label, original label or None) for each poisoned test image."""
    if not isinstance(bd_test, Mapping):
        return []
    container = bd_test.get("bd_data_container")
    if isinstance(container, Mapping) and isinstance(container.get("data_dict"), Mapping):
        order = bd_test.get("original_index_array")
        data = container["data_dict"]
        keys = [int(k) for k in np.asarray(order).tolist()] if order is not None else sorted(int(k) for k in data)
        out = []
        for key in keys[:MAX_BUNDLED_IMAGES]:
            value = data.get(key, data.get(np.int64(key)))
            if not isinstance(value, (list, tuple)) or len(value) < 2 or not isinstance(value[0], PickledImage):
                continue  # images saved on disk (a dict with "path"), or not a sample
            pixels = value[0].to_array()
            bd_label = _int(value[1])
            if pixels is None or bd_label is None:
                continue
            original = _int(value[2]) if len(value) > 2 else None
            out.append((key, pixels, bd_label, original))
        return out
    xy = _xy(bd_test)
    if xy is None:
        return []
    images, labels = xy
    return [(i, images[i], labels[i], None) for i in range(len(labels))]


def _xy(entry: Any) -> tuple[list[np.ndarray], list[int]] | None:
    """BackdoorBench v1's ``{'x': N x C x H x W floats in 0..255, 'y': labels}`` as pixels and labels."""
    if not isinstance(entry, Mapping) or not isinstance(entry.get("x"), torch.Tensor):
        return None
    x, y = entry["x"], entry.get("y")
    labels = y.tolist() if isinstance(y, torch.Tensor) else (list(y) if isinstance(y, (list, tuple)) else None)
    if x.dim() != 4 or labels is None or len(labels) != x.shape[0] or x.shape[0] > MAX_BUNDLED_IMAGES:
        return None
    if x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.permute(0, 3, 1, 2)  # NHWC
    if x.shape[1] not in (1, 3):
        return None
    scale = 255.0 if float(x.max()) <= 1.0 else 1.0
    pixels = (x.float() * scale).round().clamp(0, 255).to(torch.uint8)
    if pixels.shape[1] == 1:
        pixels = pixels.expand(-1, 3, -1, -1)
    arrays = [p.permute(1, 2, 0).contiguous().numpy() for p in pixels]
    ints = [_int(v) for v in labels]
    if any(v is None for v in ints):
        return None
    return arrays, ints  # type: ignore[return-value]


def _int(value: Any) -> int | None:
    if hasattr(value, "item") and not isinstance(value, (list, tuple)):
        value = value.item()
    return int(value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else None


def _image_set(pixels: list[np.ndarray], labels: torch.Tensor | None, size: int, origin: Path, part: str,
               indices: list[int]) -> ImageSet:
    """Resize each image to ``size`` (bilinear, as BackdoorBench's test transform) into an ImageSet."""
    batch = np.empty((len(pixels), size, size, 3), dtype=np.uint8)
    for i, arr in enumerate(pixels):
        if arr.shape[0] != size or arr.shape[1] != size:
            arr = np.asarray(Image.fromarray(arr).resize((size, size), Image.BILINEAR))
        batch[i] = arr
    images = torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()
    files = [origin / part / str(i) for i in indices]  # where each image sits inside the file
    return ImageSet(images, labels, None, files, [], origin)


def resolve_eval_sets(clean_dir: str | None, triggered_dir: str | None, target: int | None, model,
                      use_bundled: bool = True) -> tuple[EvalSets, str | None]:
    """The user's evaluation folders, with the checkpoint's own test sets filling the parts they left out.

    Returns the sets and a line saying what came from the file (None when nothing did). ``model`` is a
    :class:`models.LoadedModel`.
    """
    from .evaluation import load_eval_sets

    bundle = None
    if use_bundled and (not triggered_dir or not clean_dir):
        bundle = bundled_eval(model.raw, model.input_size, model.num_classes)
    use_triggered = bundle is not None and not triggered_dir and bundle.triggered is not None and (
        target is None or target == bundle.target)
    sets = load_eval_sets(clean_dir, triggered_dir, target if not use_triggered else None, model.input_size,
                          model.num_classes)
    if bundle is None:
        return sets, None
    used = []
    if use_triggered:
        sets = EvalSets(sets.clean, bundle.triggered, bundle.target)
        used.append(f"{len(bundle.triggered)} poisoned test images (bd_test), target class {bundle.target}")
    if not clean_dir and bundle.clean is not None:
        sets = EvalSets(bundle.clean, sets.triggered, sets.target)
        used.append(f"{len(bundle.clean)} clean test images (clean_test)")
    if not used:
        return sets, (f"{bundle.description} (not used)" if bundle.description else None)
    return sets, f"evaluating with the test data inside {model.path.name}: " + ", ".join(used)
