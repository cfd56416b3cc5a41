"""Image folders read once into compact uint8 tensors, and batch augmentation done on the device.

A BCU run distils a student for many epochs over the same few thousand unlabelled images, so we decode
every file once into one ``uint8 [N, 3, H, W]`` tensor (a quarter of the memory of float32, and cheap to
move to the GPU) and do the per-epoch augmentation on whole batches on the device: no per-sample Python
and no host-device synchronisation in the training loop.

Folders come from users, so nothing here trusts them: files Pillow cannot read are skipped and reported,
never raised, while a folder that yields nothing usable raises :class:`DataError` with one sentence that
names the folder.
"""

from __future__ import annotations

import operator
import os
import stat
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.nn import functional as F

from .errors import DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageSet",
    "scan_images",
    "scan_folder",
    "load_unlabeled",
    "load_labeled",
    "load_triggered",
    "to_model_input",
    "random_crop_flip",
    "load_thumbnails",
]

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
"""Lower-case suffixes we treat as images; matching ignores case so ``.PNG`` and ``.Jpg`` count too."""

ProgressFn = Callable[[int, int], None]

_PROGRESS_EVERY = 64  # report at most about this often: the GUI repaints on each report
_CHUNK = 16  # files per decode task: keeps executor overhead small next to decoding
_MAX_WORKERS = 8  # Pillow scales poorly past this; the disk usually becomes the limit
_OUTSIDE_LINK = "link leads outside the folder"

# Pillow warns (two lines on stderr) for images between its pixel limit and twice it; we shrink every image
# to the model's input size anyway, and the hard limit (DecompressionBombError) still makes a file be skipped.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

_NUMBER_WORDS = {
    word: i for i, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
}


# --------------------------------------------------------------------------------------------------- ImageSet


@dataclass(eq=False)  # identity equality: comparing tensors with == is ambiguous
class ImageSet:
    """Decoded images with their origin, so a GUI or CLI can say what was loaded and what was skipped."""

    images: torch.Tensor = field(repr=False)  # uint8 [N, 3, H, W], CPU, contiguous
    labels: torch.Tensor | None = field(repr=False)  # int64 [N], or None for unlabelled sets
    class_names: list[str] | None  # folder name of each class index (labelled sets only)
    files: list[Path] = field(repr=False)  # the file each row came from
    skipped: list[tuple[Path, str]] = field(repr=False)  # unreadable files and why
    root: Path
    notes: list[str] = field(default_factory=list)  # how folders were read (class mapping), for the log

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:  # the default would print every path and a slice of the tensor
        shape = "x".join(str(d) for d in self.images.shape)
        kind = "unlabelled" if self.labels is None else "labelled"
        return f"ImageSet({len(self)} {kind} images [{shape}] from {self.root}, {len(self.skipped)} skipped)"

    def skipped_summary(self, limit: int = 3) -> str | None:
        """One line about unreadable files for a log or status bar, or None when nothing was skipped."""
        if not self.skipped:
            return None
        shown = ", ".join(f"{_relative_name(p, self.root)} ({why})" for p, why in self.skipped[:limit])
        more = len(self.skipped) - limit
        tail = f", and {more} more" if more > 0 else ""
        return f"skipped {len(self.skipped)} unreadable file(s) in {self.root}: {shown}{tail}"


# ---------------------------------------------------------------------------------------------- finding files


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _check_folder(folder: str | Path) -> Path:
    """The folder as a Path, or DataError saying why it cannot be an image folder."""
    root = Path(folder).expanduser()
    try:
        st = root.stat()
    except FileNotFoundError:
        raise DataError(f"image folder {root} does not exist") from None
    except OSError as exc:
        raise DataError(f"cannot open image folder {root}: {_os_reason(exc)}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise DataError(f"{root} is a file, not a folder of images")
    return root


def _inside(path: str, top_real: str) -> bool:
    real = os.path.realpath(path)
    return real == top_real or real.startswith(top_real.rstrip(os.sep) + os.sep)


def _walk_images(
    top: Path, follow_outside: bool = False, boundary: Path | None = None
) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    """``(images, outside links)`` under ``top``, as tuples of path parts relative to it, unsorted.

    Symlinks are followed while they stay inside the chosen folder (datasets are often assembled from
    links), and each real folder is visited once, so a link cycle cannot loop. A link that leads out of the
    folder (a link to ``/`` would pull in the whole disk) is not followed unless ``follow_outside``; it is
    returned in the second list so the caller can say so. ``boundary`` is the folder the user chose when
    ``top`` is one of its sub-folders (a class folder), so links between class folders stay inside. Hidden entries (name starting with '.') are
    skipped: they are macOS '._*' metadata, '.ipynb_checkpoints' copies and the like, never intended images.
    Sub-folders we may not read are skipped silently, as ``os.walk`` does.
    """
    found: list[tuple[str, ...]] = []
    outside: list[tuple[str, ...]] = []
    seen: set[tuple[int, int]] = set()
    top_real = os.path.realpath(boundary if boundary is not None else top)
    stack: list[tuple[str, tuple[str, ...]]] = [(str(top), ())]
    while stack:
        path, parts = stack.pop()
        try:
            st = os.stat(path)
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            with os.scandir(path) as it:
                entries = list(it)
        except OSError:
            if not parts:  # the top folder itself: the caller has checked it exists, so this is access
                raise
            continue
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()
                is_image = not is_dir and _is_image_name(name) and entry.is_file()
                if not (is_dir or is_image):
                    continue
                if not follow_outside and entry.is_symlink() and not _inside(entry.path, top_real):
                    outside.append(parts + (name,))
                elif is_dir:
                    stack.append((entry.path, parts + (name,)))
                else:
                    found.append(parts + (name,))
            except OSError:
                continue
    return found, outside


def scan_folder(
    folder: str | Path, follow_outside: bool = False, boundary: Path | None = None
) -> tuple[list[Path], list[Path]]:
    """``(image files, links leading outside)`` under ``folder``, both sorted; see :func:`scan_images`."""
    root = _check_folder(folder)
    try:
        parts, outside = _walk_images(root, follow_outside, boundary)
    except OSError as exc:
        raise DataError(f"cannot read image folder {root}: {_os_reason(exc)}") from None
    parts.sort()
    outside.sort()
    return [root.joinpath(*p) for p in parts], [root.joinpath(*p) for p in outside]


def scan_images(folder: str | Path, follow_outside: bool = False) -> list[Path]:
    """Image files under ``folder``, recursively, in sorted order; fast enough for a GUI to count on edit.

    Only the extension is checked (see :data:`IMAGE_EXTENSIONS`); whether a file decodes is found out when
    it is loaded. Order is sorted by path components, so it is stable across runs and platforms. Links
    leading out of ``folder`` are left out unless ``follow_outside``.
    Raises DataError if ``folder`` is missing or is a file; returns ``[]`` for a folder without images.
    """
    return scan_folder(folder, follow_outside)[0]


def _no_images_error(root: Path, outside: Sequence[Path] = ()) -> DataError:
    exts = ", ".join(sorted(IMAGE_EXTENSIONS))
    links = (f"; {len(outside)} link(s) leading outside the folder were not followed, e.g. "
             f"{_relative_name(outside[0], root)}" if outside else "")
    return DataError(f"no images found in {root} (looked for {exts} recursively){links}")


def _outside(links: Sequence[Path]) -> list[tuple[Path, str]]:
    return [(link, _OUTSIDE_LINK) for link in links]


def _class_folders(
    root: Path, follow_outside: bool = False
) -> tuple[list[tuple[str, list[Path]]], bool, list[Path]]:
    """``([(folder name, its images)], loose, outside links)`` for the non-empty sub-folders of ``root``.

    ``loose`` says whether ``root`` holds images at its own top level. Names are sorted; hidden
    sub-folders are ignored and links leading out of ``root`` are not followed, as in :func:`scan_images`.
    """
    classes: list[tuple[str, list[Path]]] = []
    outside: list[Path] = []
    loose = False
    root_real = os.path.realpath(root)
    try:
        with os.scandir(root) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise DataError(f"cannot read image folder {root}: {_os_reason(exc)}") from None
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            is_dir = entry.is_dir()
            is_image = not is_dir and _is_image_name(entry.name) and entry.is_file()
            leaves = not follow_outside and entry.is_symlink() and not _inside(entry.path, root_real)
        except OSError:
            continue
        if (is_dir or is_image) and leaves:
            outside.append(root / entry.name)
        elif is_image:
            loose = True
        elif is_dir:
            files, links = scan_folder(root / entry.name, follow_outside, boundary=root)
            outside.extend(links)
            if files:
                classes.append((entry.name, files))
    return classes, loose, outside


def _assign_labels(
    root: Path, classes: list[tuple[str, list[Path]]], num_classes: int | None
) -> tuple[list[tuple[int, str, list[Path]]], list[str], list[str]]:
    """Class index for each class folder, the class-name list indexed by class, and notes for the log.

    All-integer folder names are taken literally ("0".."9", gaps allowed), since that is how datasets are
    usually exported and a sorted-name mapping would put "10" before "2"; so are English number words
    ("zero".."twenty"), which a sorted mapping would scramble ("eight" first). Otherwise sorted names map to
    0..K-1, which is torchvision's ImageFolder convention, the one most models were trained with; the notes
    then spell the mapping out, because a wrong mapping silently turns ACC into nonsense.
    """
    names = [name for name, _ in classes]
    notes: list[str] = []
    if all(name.isascii() and name.isdecimal() for name in names):
        numbers = {name: int(name) for name in names}
    elif all(name.lower() in _NUMBER_WORDS for name in names):
        numbers = {name: _NUMBER_WORDS[name.lower()] for name in names}
        notes.append(f"class folders in {root} are number words; each is read as its number "
                     f"({', '.join(f'{n}={numbers[n]}' for n in names)})")
    else:
        numbers = None
    if numbers is not None:
        by_label: dict[int, str] = {}
        labelled: list[tuple[int, str, list[Path]]] = []
        for name, files in classes:
            label = numbers[name]
            if label in by_label:
                raise DataError(
                    f"class folders '{by_label[label]}' and '{name}' in {root} both mean class {label}"
                )
            by_label[label] = name
            labelled.append((label, name, files))
        labelled.sort(key=lambda item: item[0])
        size = max(by_label) + 1 if num_classes is None else max(num_classes, max(by_label) + 1)
        class_names = [by_label.get(i, str(i)) for i in range(size)]
    else:
        labelled = [(i, name, files) for i, (name, files) in enumerate(classes)]
        class_names = names
        shown = ", ".join(f"{name}={i}" for i, name in enumerate(names[:12]))
        more = f", ... ({len(names)} classes)" if len(names) > 12 else ""
        notes.append(f"class folders in {root} mapped to classes in sorted name order: {shown}{more}")
    if num_classes is not None:
        for label, name, _ in labelled:
            if label >= num_classes:
                where = "" if name == str(label) else f" (class {label} in sorted order)"
                raise DataError(
                    f"class folder '{name}' in {root}{where} is beyond the model's {num_classes} classes"
                )
    return labelled, class_names, notes


# ----------------------------------------------------------------------------------------------- decoding


def _os_reason(exc: OSError) -> str:
    return (exc.strerror or type(exc).__name__).lower()


def _failure_reason(exc: BaseException, path: Path) -> str:
    """A short reason without the path (the summary names the file already)."""
    if isinstance(exc, UnidentifiedImageError):
        return "cannot identify image file"
    if isinstance(exc, Image.DecompressionBombError):
        return "too many pixels (decompression bomb guard)"
    if isinstance(exc, MemoryError):
        return "out of memory while decoding"
    text = str(exc).splitlines()[0] if str(exc) else ""
    if "truncated" in text.lower():
        return "truncated"
    if isinstance(exc, OSError) and exc.strerror:  # errno errors: permission denied, vanished file...
        return exc.strerror.lower()
    for form in (repr(str(path)), str(path)):
        text = text.replace(form, "").strip(" :")
    text = text or type(exc).__name__
    return text if len(text) <= 80 else text[:77] + "..."


def _composite_on_black(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    out = Image.new("RGB", rgba.size, (0, 0, 0))
    out.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
    return out


def _to_rgb_or_grey(img: Image.Image) -> Image.Image:
    """The image in mode "RGB" or "L" (grey is widened to RGB later, after the cheaper 1-channel resize)."""
    mode = img.mode
    if mode in ("RGB", "L"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or (mode == "P" and "transparency" in img.info):
        return _composite_on_black(img)
    if mode.startswith("I;16") or mode in ("I", "F"):
        # convert("L") would clip rather than scale; map 16-bit data to 8 bits the way a viewer shows it.
        arr = np.asarray(img)
        if mode.startswith("I;16"):
            grey = (arr.astype(np.uint16) >> 8).astype(np.uint8)
        else:
            val = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
            top = float(val.max()) if val.size else 0.0
            if mode == "F" and top <= 1.0:
                val = val * 255.0
            elif top > 255.0:
                val = val / 257.0  # 16-bit data stored in a 32-bit image
            grey = np.clip(np.rint(val), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L")
    return img.convert("RGB")  # P without transparency, CMYK, YCbCr, HSV...


def _square(img: Image.Image, size: int) -> Image.Image:
    """``size x size``: the centred square of the shorter side, resampled (bilinear, antialiased) in one
    step, which equals resizing the shorter side to ``size`` and centre-cropping without the rounding.
    Images that already have the right shorter side are only cropped, never resampled."""
    w, h = img.size
    if (w, h) == (size, size):
        return img
    side = min(w, h)
    if side == size:
        left, top = (w - size) // 2, (h - size) // 2
        return img.crop((left, top, left + size, top + size))
    left, top = (w - side) / 2, (h - side) / 2
    return img.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))


def _decode(path: Path, size: int) -> np.ndarray | str:
    """``HxWx3`` or ``HxW`` (grey) uint8 array, or the reason the file cannot be used.

    Alpha is composited on black (transparent pixels become black, as the zero padding of the
    augmentation does), so the hidden colour under transparent pixels never leaks in. EXIF orientation is
    not applied, as torchvision's loader does not apply it either: models were trained on pixels as stored.
    """
    try:
        if os.path.getsize(path) == 0:
            return "empty file"
        with Image.open(path) as img:
            if img.format in ("JPEG", "MPO"):
                img.draft(None, (size, size))  # decode at 1/2, 1/4, 1/8 scale while still >= size
            img.load()
            out = _square(_to_rgb_or_grey(img), size)
            arr = np.asarray(out)
        if arr.dtype != np.uint8 or arr.shape[:2] != (size, size):
            return f"unexpected decoded shape {arr.shape} {arr.dtype}"
        return arr
    except Exception as exc:  # noqa: BLE001 - a user's file must never stop the load
        return _failure_reason(exc, path)


def _decode_chunk(paths: Sequence[Path], size: int) -> list[np.ndarray | str]:
    return [_decode(p, size) for p in paths]


def _decode_in_order(
    paths: Sequence[Path], size: int, progress: ProgressFn | None
) -> Iterable[tuple[int, np.ndarray | str]]:
    """``(index, result)`` for every path, in input order, decoded by a small thread pool.

    Pillow releases the GIL while decoding and resampling, so threads scale without the start-up and
    pickling cost of processes. A sliding window of chunks bounds memory; if ``progress`` raises (a
    cancel), the pending chunks are cancelled and the exception propagates.
    """
    total = len(paths)
    reported = 0

    def report(done: int) -> None:
        nonlocal reported
        if progress is not None and (done - reported >= _PROGRESS_EVERY or done == total):
            reported = done
            progress(done, total)

    workers = min(_MAX_WORKERS, os.cpu_count() or 1, max(1, total // _CHUNK))
    if workers <= 1:
        for i, p in enumerate(paths):
            yield i, _decode(p, size)
            report(i + 1)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bcu-decode")
    try:
        window: deque[tuple[int, Future]] = deque()
        starts = iter(range(0, total, _CHUNK))
        for start in starts:
            window.append((start, pool.submit(_decode_chunk, paths[start : start + _CHUNK], size)))
            if len(window) >= 4 * workers:
                break
        while window:
            start, fut = window.popleft()
            for offset, result in enumerate(fut.result()):
                yield start + offset, result
            nxt = next(starts, None)
            if nxt is not None:
                window.append((nxt, pool.submit(_decode_chunk, paths[nxt : nxt + _CHUNK], size)))
            report(min(start + _CHUNK, total))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _check_size(size: int) -> int:
    """The side length as a plain int; a caller's mistake (ValueError), not a data problem."""
    try:
        value = operator.index(size)
    except TypeError:
        value = 0
    if value <= 0 or isinstance(size, bool):
        raise ValueError(f"image size must be a positive int, got {size!r}")
    return value


def _load_files(
    root: Path, files: Sequence[Path], size: int, progress: ProgressFn | None
) -> tuple[torch.Tensor, list[int], list[tuple[Path, str]]]:
    """``(images, indices of the files kept, skipped)``; DataError if every file is unreadable."""
    images = torch.empty((len(files), 3, size, size), dtype=torch.uint8)
    out = images.numpy()  # shares memory: rows are filled in place, no second copy of the set
    kept: list[int] = []
    skipped: list[tuple[Path, str]] = []
    for index, result in _decode_in_order(files, size, progress):
        if isinstance(result, str):
            skipped.append((files[index], result))
            continue
        row = out[len(kept)]
        row[...] = result if result.ndim == 2 else result.transpose(2, 0, 1)  # grey broadcasts to 3 channels
        kept.append(index)
    if not kept:
        path, why = skipped[0]
        raise DataError(
            f"all {len(files)} image files in {root} are unreadable, e.g. {_relative_name(path, root)}: {why}"
        )
    if len(kept) < len(files):
        images = images[: len(kept)]  # a contiguous view of the filled rows
    return images, kept, skipped


def _relative_name(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


# ------------------------------------------------------------------------------------------------- loaders


def unlabeled_files(folder: str | Path, size: int, limit: int | None = None
                    ) -> tuple[int, Path, list[Path], list[Path]]:
    """The checked size, root, files to read (sorted, the first ``limit``) and links left outside, of an
    unlabelled folder; one rule for the in-memory loader and the disk cache (image_cache.py)."""
    size = _check_size(size)
    if limit is not None and limit <= 0:
        raise ValueError(f"limit must be positive or None, got {limit!r}")
    files, outside = scan_folder(folder)
    root = Path(folder).expanduser()
    if not files:
        raise _no_images_error(root, outside)
    if limit is not None:
        files = files[:limit]
    return size, root, files, outside


def load_unlabeled(
    folder: str | Path, size: int, limit: int | None = None, progress: ProgressFn | None = None
) -> ImageSet:
    """All images under ``folder`` (recursively; any sub-folders are ignored as labels), ``size x size``.

    This is the clean, unlabelled set BCU distils on. ``limit`` keeps the first ``limit`` files in sorted
    order, so a smaller budget is a reproducible prefix of a larger one. ``progress(done, total)`` is
    called about every 64 files and once at the end.
    """
    size, root, files, outside = unlabeled_files(folder, size, limit)
    images, kept, skipped = _load_files(root, files, size, progress)
    return ImageSet(images, None, None, [files[i] for i in kept], skipped + _outside(outside), root)


def _labelled_set(
    root: Path,
    labelled: list[tuple[int, str, list[Path]]],
    class_names: list[str],
    size: int,
    progress: ProgressFn | None,
    outside: Sequence[Path] = (),
    notes: Sequence[str] = (),
) -> ImageSet:
    files = [f for _, _, fs in labelled for f in fs]
    labels = [label for label, _, fs in labelled for _ in fs]
    images, kept, skipped = _load_files(root, files, size, progress)
    kept_labels = torch.tensor([labels[i] for i in kept], dtype=torch.int64)
    return ImageSet(images, kept_labels, class_names, [files[i] for i in kept], skipped + _outside(outside),
                    root, list(notes))


def load_labeled(
    folder: str | Path, size: int, num_classes: int | None = None, progress: ProgressFn | None = None
) -> ImageSet:
    """A labelled set in ImageFolder layout: one sub-folder per class, images anywhere inside it.

    Class folders named only by integers keep those integers as labels (gaps allowed); otherwise the
    sorted folder names become classes 0..K-1. Empty class folders are ignored, and so are images lying
    directly in ``folder`` next to class folders. Rows are ordered by class, then by path.
    """
    size = _check_size(size)
    root = _check_folder(folder)
    classes, loose, outside = _class_folders(root)
    if not classes:
        if loose:
            raise DataError(
                f"{root} has images but no class folders; a labelled set needs one sub-folder per class "
                "(e.g. 0/, 1/, ... or cat/, dog/, ...)"
            )
        raise _no_images_error(root, outside)
    labelled, class_names, notes = _assign_labels(root, classes, num_classes)
    return _labelled_set(root, labelled, class_names, size, progress, outside, notes)


def load_triggered(
    folder: str | Path,
    size: int,
    target: int,
    num_classes: int | None = None,
    progress: ProgressFn | None = None,
) -> ImageSet:
    """Images carrying the trigger, to measure the attack success rate (ASR) against ``target``.

    With class sub-folders (ImageFolder layout, labelled as in :func:`load_labeled`), images of the target
    class are dropped, because ASR counts only images that the trigger moves to another class. Without
    class sub-folders, every image (recursively) is taken as a triggered non-target image (labels None).
    """
    size = _check_size(size)
    if target < 0:
        raise DataError(f"target class {target} is negative; classes are numbered from 0")
    if num_classes is not None and target >= num_classes:
        raise DataError(
            f"target class {target} is outside the model's {num_classes} classes (0..{num_classes - 1})"
        )
    root = _check_folder(folder)
    classes, _, outside = _class_folders(root)
    if not classes:
        files, outside = scan_folder(root)
        if not files:
            raise _no_images_error(root, outside)
        images, kept, skipped = _load_files(root, files, size, progress)
        return ImageSet(images, None, None, [files[i] for i in kept], skipped + _outside(outside), root)
    labelled, class_names, notes = _assign_labels(root, classes, num_classes)
    others = [item for item in labelled if item[0] != target]
    if not others:
        raise DataError(
            f"every image in {root} is in the target class {target}'s folder; the attack success rate "
            "needs triggered images from other classes"
        )
    return _labelled_set(root, others, class_names, size, progress, outside, notes)


def load_thumbnails(files: Sequence[Path], size: int = 48) -> list[np.ndarray]:
    """``size x size x 3`` uint8 arrays for a GUI thumbnail strip; unreadable files are left out."""
    size = _check_size(size)
    thumbs: list[np.ndarray] = []
    for _, result in _decode_in_order(list(files), size, None):
        if isinstance(result, str):
            continue
        if result.ndim == 2:  # grey: widen to the 3 channels a thumbnail strip expects
            result = np.repeat(result[:, :, None], 3, axis=2)
        thumbs.append(np.ascontiguousarray(result))
    return thumbs


# ------------------------------------------------------------------------------------ device-side batch ops


def to_model_input(batch: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``uint8 NCHW`` -> float32 ``(x / 255 - mean) / std``, computed where the batch lives.

    Images stay uint8 until the last moment (4x less memory and transfer); ``mean`` and ``std`` are
    ``[1, 3, 1, 1]`` tensors on the batch's device, made once per job rather than per batch.
    """
    if batch.dtype != torch.uint8:
        raise TypeError(f"expected a uint8 batch, got {batch.dtype}")
    return batch.to(torch.float32).div_(255.0).sub_(mean).div_(std)


def random_crop_flip(
    batch: torch.Tensor, padding: int = 4, flip: bool = True, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Per-sample random crop of the zero-padded batch back to ``H x W``, then horizontal flip with p=0.5.

    The standard CIFAR augmentation done for the whole batch in one gather on the batch's device: we draw
    every offset and flip bit as tensors, turn them into one flat source index per output pixel (the flip
    is folded into the column index) and gather from the padded batch once. No per-sample Python and no
    host-device sync. Deterministic for a given ``generator`` state (it must live on the batch's device).
    Works for any dtype; uint8 in gives uint8 out. Draws, in this order: ``[2, N]`` offsets ``(dy, dx)`` in
    ``0..2*padding``, then ``[N, 1]`` flip bits (only if ``flip``); sample ``i`` is the padded image's
    rows ``dy[i] : dy[i] + H`` and columns ``dx[i] : dx[i] + W``, mirrored left-right if its bit is 1.
    """
    if batch.dim() != 4:
        raise ValueError(f"expected an NCHW batch, got shape {tuple(batch.shape)}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    n, c, h, w = batch.shape
    if n == 0 or (padding == 0 and not flip):
        return batch.clone()
    device = batch.device
    p = padding
    padded = F.pad(batch, (p, p, p, p)) if p else batch
    hp, wp = h + 2 * p, w + 2 * p
    offsets = torch.randint(0, 2 * p + 1, (2, n), device=device, generator=generator)  # dy, dx
    cols = torch.arange(w, device=device)
    if flip:
        flipped = torch.randint(0, 2, (n, 1), device=device, generator=generator).bool()
        cols = torch.where(flipped, cols.flip(0), cols)  # [n, w]
    rows = offsets[0, :, None] + torch.arange(h, device=device)  # [n, h]
    cols = offsets[1, :, None] + cols  # [n, w]
    index = (rows[:, :, None] * wp + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return padded.reshape(n, c, hp * wp).gather(2, index).view(n, c, h, w)
