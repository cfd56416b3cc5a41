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

A file is as hostile as whoever made it, and a pickle can name one object many times: a 22 MB file can hold
100,000 references to one 4096x4096 image, and a 3 MB tensor with zero strides can claim 314 GB. So what the
set *would decode to* is measured first, from the records' claimed sizes (checked against the bytes really
present) and never by decoding: the sum of H x W x 3 over the images read, and N x size x size x 3 kept at the
model's input size. Either above :data:`BUDGET_BYTES` (1 GiB: tens of thousands of images at 64 px, about
7,000 at 224 px; larger test sets belong in folders) and nothing is decoded; the model still opens, the set is
simply not offered, with one line saying why. Images that pass are decoded one at a time and resized straight
into the kept batch, so the peak is the batch plus one image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from PIL import Image

from .checkpoints import PickledImage, RawCheckpoint
from .data import ImageSet
from .evaluation import EvalSets

MAX_BUNDLED_IMAGES = 100_000
BUDGET_BYTES = 1 << 30  # decoded pixels (read, and kept at the input size) a bundled set may amount to
# what reading a file's odd structure can raise; each is a refusal of the bundled set, never of the model
_READ_ERRORS = (TypeError, ValueError, OverflowError, RecursionError, AttributeError, KeyError, IndexError,
                RuntimeError, MemoryError)


@dataclass
class BundledEval:
    """The evaluation data a checkpoint carries, decoded at the model's input size."""

    triggered: ImageSet | None
    clean: ImageSet | None
    target: int | None
    description: str  # one line for the log and the data panel
    refused: bool = False  # test data in the file was not read (too large, or hostile); ``description`` says why

    def as_eval_sets(self) -> EvalSets:
        return EvalSets(self.clean, self.triggered if self.target is not None else None, self.target)


@dataclass(frozen=True)
class BundledInfo:
    """What a checkpoint's bundled test data amounts to, found without decoding an image."""

    description: str | None  # "12 poisoned test images (bd_test), target class 0"; None when refused
    refusal: str | None = None  # why the data is not offered ("... would decode to 314.0 GB; it was not read")


class _Refused(Exception):
    """The bundled set is not read; the message is the user's one line."""


@dataclass(frozen=True)
class _Record:
    index: int
    decode: Callable[[], np.ndarray]  # uint8 [H, W, 3], decoded on demand
    label: int
    original: int | None


@dataclass(frozen=True)
class _Part:
    records: list[_Record]
    decoded_bytes: int  # sum of H x W x 3 over the records: what decoding them all reads out


def inspect_bundled(raw: RawCheckpoint | None, size: int | None = None) -> BundledInfo | None:
    """What evaluation data the file holds and whether it would be read at ``size`` pixels (None: none).

    Cheap whatever the file claims: record sizes are read from the records, no image is decoded.
    """
    if raw is None or raw.format != "backdoorbench" or not isinstance(raw.top, Mapping):
        return None
    try:
        bd, clean = _plan(raw.top, size)
    except _Refused as exc:
        return BundledInfo(None, str(exc))
    parts = []
    if bd is not None:
        targets = {r.label for r in bd.records}
        which = f"target class {next(iter(targets))}" if len(targets) == 1 else "all-to-all, no single target"
        parts.append(f"{len(bd.records)} poisoned test images (bd_test), {which}")
    if clean is not None:
        parts.append("a clean test set (clean_test)")
    return BundledInfo(" and ".join(parts)) if parts else None


def describe_bundled(raw: RawCheckpoint | None, size: int | None = None) -> str | None:
    """What evaluation data the file holds, in a few words ("12 poisoned test images (bd_test), target class
    0"), or None when it holds none or it is refused (:func:`inspect_bundled` says why)."""
    info = inspect_bundled(raw, size)
    return info.description if info is not None else None


def bundled_eval(raw: RawCheckpoint | None, size: int, num_classes: int) -> BundledEval | None:
    """The triggered (and clean) test sets inside a BackdoorBench result at ``size`` pixels, or None.

    A set over the budget, or with tensors claiming more than the file stores, comes back as a refused
    BundledEval (no images, ``refused`` set, the reason in ``description``).
    """
    if raw is None or raw.format != "backdoorbench" or not isinstance(raw.top, Mapping):
        return None
    try:
        return _decode(raw, size, num_classes)
    except _Refused as exc:
        return BundledEval(None, None, None, str(exc), refused=True)
    except MemoryError:
        return BundledEval(None, None, None, "the file's bundled test set did not fit in memory; it was not used",
                           refused=True)


def _decode(raw: RawCheckpoint, size: int, num_classes: int) -> BundledEval | None:
    bd, clean_part = _plan(raw.top, size)
    if bd is None and clean_part is None:
        return None
    origin = Path(raw.path)
    triggered, target, notes = None, None, []
    if bd is not None:
        targets = {r.label for r in bd.records}
        if len(targets) == 1 and 0 <= next(iter(targets)) < num_classes:
            target = next(iter(targets))
            kept = [r for r in bd.records if r.original is None or r.original != target]
            triggered = _image_set(kept, None, size, origin, "bd_test")
            notes.append(f"{len(triggered)} poisoned test images (bd_test), target class {target}")
        elif len(targets) > 1:
            notes.append("bd_test is an all-to-all attack (a different target per image): not used for ASR")
        else:
            notes.append(f"bd_test's target class {next(iter(targets))} is outside the model's classes")
    clean = None
    if clean_part is not None:
        ok = [r for r in clean_part.records if 0 <= r.label < num_classes]
        clean = _image_set(ok, torch.tensor([r.label for r in ok], dtype=torch.int64), size, origin, "clean_test")
        notes.append(f"{len(clean)} clean test images (clean_test)")
    if triggered is None and clean is None:
        return BundledEval(None, None, None, "; ".join(notes) or "no usable evaluation data")
    return BundledEval(triggered, clean, target, f"{raw.path.name}: " + "; ".join(notes))


# ------------------------------------------------------------------------------------------------ reading


def _plan(top: Mapping, size: int | None) -> tuple[_Part | None, _Part | None]:
    """The bd_test and clean_test records, sized and within the budget; raises _Refused otherwise."""
    try:
        bd = _bd_test_part(top.get("bd_test"))
        clean = _xy_part(top.get("clean_test"), "clean_test")
    except _Refused:
        raise
    except _READ_ERRORS as exc:
        raise _Refused(f"the file's bundled test data is not in a form BCU reads ({type(exc).__name__}); "
                       f"it was not used") from None
    parts = [p for p in (bd, clean) if p is not None]
    decoded = sum(p.decoded_bytes for p in parts)
    kept = sum(len(p.records) for p in parts) * (size or 0) ** 2 * 3
    if max(decoded, kept) > BUDGET_BYTES:
        raise _Refused(f"the file's bundled test set would decode to {_bytes(max(decoded, kept))} (over the "
                       f"{_bytes(BUDGET_BYTES)} allowed for it); it was not read: give test image folders instead")
    return bd, clean


def _bd_test_part(bd_test: Any) -> _Part | None:
    """bd_test's poisoned test images as records (index, pixels on demand, backdoor label, original label)."""
    if not isinstance(bd_test, Mapping):
        return None
    container = bd_test.get("bd_data_container")
    if not (isinstance(container, Mapping) and isinstance(container.get("data_dict"), Mapping)):
        return _xy_part(bd_test, "bd_test")
    order = bd_test.get("original_index_array")
    data = container["data_dict"]
    if order is not None:
        keys = [int(k) for k in np.asarray(order).reshape(-1)[:MAX_BUNDLED_IMAGES].tolist()]
    else:
        keys = sorted(int(k) for k in list(data)[:MAX_BUNDLED_IMAGES])
    records, decoded = [], 0
    for key in keys:
        value = data.get(key, data.get(np.int64(key)))
        if not isinstance(value, (list, tuple)) or len(value) < 2 or not isinstance(value[0], PickledImage):
            continue  # images saved on disk (a dict with "path"), or not a sample
        shape, bd_label = value[0].shape(), _int(value[1])
        if shape is None or bd_label is None:
            continue
        decoded += shape[0] * shape[1] * 3
        original = _int(value[2]) if len(value) > 2 else None
        records.append(_Record(key, _checked(value[0].to_array), bd_label, original))
    return _Part(records, decoded) if records else None


def _xy_part(entry: Any, name: str) -> _Part | None:
    """BackdoorBench v1's ``{'x': N x C x H x W floats in 0..255, 'y': labels}`` as records."""
    if not isinstance(entry, Mapping) or not isinstance(entry.get("x"), torch.Tensor):
        return None
    x, y = entry["x"], entry.get("y")
    if x.dim() != 4 or x.shape[0] > MAX_BUNDLED_IMAGES:
        return None
    _check_real(x, name, "x")
    if isinstance(y, torch.Tensor):
        _check_real(y, name, "y")
        labels = y.reshape(-1).tolist() if y.numel() == x.shape[0] else None
    else:
        labels = list(y) if isinstance(y, (list, tuple)) else None
    if labels is None or len(labels) != x.shape[0]:
        return None
    if x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.permute(0, 3, 1, 2)  # NHWC (a view: nothing is copied)
    if x.shape[1] not in (1, 3):
        return None
    ints = [_int(v) for v in labels]
    if any(v is None for v in ints):
        return None
    pixels = _TensorPixels(x)
    records = [_Record(i, (lambda i=i: pixels(i)), ints[i], None) for i in range(len(ints))]  # type: ignore[arg-type]
    return _Part(records, x.shape[0] * x.shape[2] * x.shape[3] * 3) if records else None


class _TensorPixels:
    """One image of an N x C x H x W tensor as uint8 H x W x 3, on demand; 0..1 floats are scaled to 0..255
    (judged once, over the whole tensor, at the first image)."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x, self.scale = x, None

    def __call__(self, i: int) -> np.ndarray:
        if self.scale is None:
            self.scale = 255.0 if float(self.x.max()) <= 1.0 else 1.0
        p = (self.x[i].float() * self.scale).round().clamp(0, 255).to(torch.uint8)
        if p.shape[0] == 1:
            p = p.expand(3, -1, -1)
        return p.permute(1, 2, 0).contiguous().numpy()


def _check_real(t: torch.Tensor, part: str, key: str) -> None:
    """Refuse a tensor that claims more bytes than the file stores for it, or repeats memory (zero or
    overlapping strides), before anything reads it element by element."""
    claimed = t.numel() * t.element_size()
    try:
        stored = t.untyped_storage().nbytes() - t.storage_offset() * t.element_size()
    except (RuntimeError, NotImplementedError):
        raise _Refused(f"the file's bundled test set ({part}) has a tensor without plain storage; "
                       f"it was not read") from None
    repeats = any(stride == 0 and n > 1 for stride, n in zip(t.stride(), t.shape))
    if claimed > stored or repeats or t.is_sparse:
        raise _Refused(f"the file's bundled test set ({part}) would decode to {_bytes(claimed)}, but the file "
                       f"stores only {_bytes(max(0, stored))} for its '{key}' (a zero-stride or overlapping "
                       f"tensor); it was not read")


def _checked(decode: Callable[[], np.ndarray | None]) -> Callable[[], np.ndarray]:
    def run() -> np.ndarray:
        pixels = decode()
        if pixels is None:  # shape() said it would decode: a record that changed its mind is refused
            raise _Refused("an image in the file's bundled test set could not be decoded; it was not used")
        return pixels
    return run


def _bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n} bytes"


def _int(value: Any) -> int | None:
    if hasattr(value, "item") and not isinstance(value, (list, tuple)):
        try:
            value = value.item()
        except (RuntimeError, ValueError, TypeError):
            return None
    return int(value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else None


def _image_set(records: list[_Record], labels: torch.Tensor | None, size: int, origin: Path,
               part: str) -> ImageSet:
    """Decode each image and resize it to ``size`` (bilinear, as BackdoorBench's test transform), one at a
    time, straight into the kept batch."""
    batch = np.empty((len(records), size, size, 3), dtype=np.uint8)
    for i, record in enumerate(records):
        arr = record.decode()
        if arr.shape[0] != size or arr.shape[1] != size:
            arr = np.asarray(Image.fromarray(arr).resize((size, size), Image.BILINEAR))
        batch[i] = arr
    images = torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()
    files = [origin / part / str(r.index) for r in records]  # where each image sits inside the file
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
    if bundle.refused:
        return sets, bundle.description
    if not used:
        return sets, (f"{bundle.description} (not used)" if bundle.description else None)
    return sets, f"evaluating with the test data inside {model.path.name}: " + ", ".join(used)
