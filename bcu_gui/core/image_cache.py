"""A decoded image folder kept on disk as one memory-mapped ``uint8 [N, 3, H, W]`` file, reused across runs.

When the unlabelled set does not fit the memory budget (``memory_budget.py``), decoding it again for every run
would cost minutes of CPU and holding it would cost the RAM we do not have. So it is decoded once, by the same
decoder as the in-memory path (``data._decode_in_order``: same pixels), into a raw file the OS pages in and out
as batches need it.

A cache is found again by a key over what decides its content: the cache format, the input size, the
folder's resolved path, and every file's relative path, size, modification time and a hash of its first and
last 4 KiB (a file edited, added or removed gives a new key; another folder with the same names, sizes and
times gives another key). The cache folder is not trusted either (a synced or shared ``--cache-dir`` may hold
a planted record): a record is used only when it is a plain file naming exactly this folder's files under
this key, its data file has exactly the size those images take, and a few sampled rows equal the images
decoded again now; anything else is treated as absent and the cache is rebuilt. It is
written atomically: rows are decoded into a temporary file, which is renamed to its final name only when
complete, and the small ``.json`` record beside it, written last, is what marks it usable. A decode killed
halfway therefore leaves only a temporary file that no run will ever read (a later build of the same key
removes it once it has been idle for a while).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import atomic
from . import untrusted
from .data import ImageSet, ProgressFn, _decode_in_order, _outside, unlabeled_files
from .errors import DataError
from .memory_budget import format_bytes

CACHE_FORMAT = 1  # bump when the decoder or the layout changes: old caches are then never read
_STALE_TMP_SECONDS = 600  # a temporary file untouched this long belongs to a killed decode
_SLACK = 64 * 1024**2  # free space to leave beside a new cache
_EDGE = 4096  # bytes hashed at each end of every image file for the key
_MAX_RECORD_BYTES = 512 * 1024**2  # a record names every file: ~100 bytes each, millions of files


def default_cache_dir() -> Path:
    """The user's cache directory for decoded image sets (platformdirs: ~/.cache/bcu-studio/images on Linux)."""
    from platformdirs import user_cache_path

    return user_cache_path("bcu-studio", appauthor=False) / "images"


def cache_key(root: Path, files: Sequence[Path], size: int) -> str:
    """A hex digest over the format, the size, the resolved folder and each file's relative path, byte size,
    mtime and a hash of its first and last ``_EDGE`` bytes."""
    h = hashlib.sha256(f"bcu-image-cache {CACHE_FORMAT} {size}\n".encode())
    h.update(str(Path(root).resolve()).encode("utf-8", "surrogateescape") + b"\0\n")
    for path in files:
        h.update(f"{_rel(path, root)}\0{_stamp(path)}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:32]


def _stamp(path: Path) -> str:
    """Size, mtime and a hash of the first and last bytes of ``path``: what a cache key holds of one file."""
    try:  # non-blocking open and a regular-file check: a FIFO named like an image never hangs the key
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with open(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                return "not a file"
            if hasattr(os, "set_blocking"):
                os.set_blocking(fd, True)
            head = fh.read(_EDGE)
            tail = b""
            if st.st_size > _EDGE:
                fh.seek(max(_EDGE, st.st_size - _EDGE))
                tail = fh.read(_EDGE)
    except OSError:
        return "missing"
    return f"{st.st_size} {st.st_mtime_ns} {hashlib.sha256(head + b'|' + tail).hexdigest()[:16]}"


@dataclass(frozen=True)
class CachedSet:
    """An unlabelled set backed by a cache file, and whether this run built it or found it."""

    images: ImageSet
    path: Path
    reused: bool


def load_unlabeled_cached(folder: str | Path, size: int, limit: int | None = None,
                          cache_dir: str | Path | None = None, progress: ProgressFn | None = None) -> CachedSet:
    """Like ``data.load_unlabeled``, but the images tensor maps a cache file instead of living in RAM.

    Same files, same order, same pixels as the in-memory loader. Raises DataError for an empty or unreadable
    folder (as the in-memory loader does) and when the cache cannot fit on its disk.
    """
    size, root, files, outside = unlabeled_files(folder, size, limit)
    where = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    key = cache_key(root, files, size)
    data_path, record_path = where / f"{key}.u8", where / f"{key}.json"
    found = _read_record(where, key, root, files, size)
    if found is not None:
        kept, skipped = found
        images = _map(data_path, len(kept), size)
        return CachedSet(ImageSet(images, None, None, kept, skipped + _outside(outside), root),
                         data_path, reused=True)
    kept_files, skipped = _build(data_path, root, files, size, progress)
    atomic.write_json(record_path, {
        "format": CACHE_FORMAT, "key": key, "size": size, "images": len(kept_files),
        "root": str(Path(root).resolve()), "files": [_rel(p, root) for p in kept_files],
        "skipped": [[_rel(p, root), why] for p, why in skipped]})
    images = _map(data_path, len(kept_files), size)
    return CachedSet(ImageSet(images, None, None, kept_files, skipped + _outside(outside), root),
                     data_path, reused=False)


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _read_record(where: Path, key: str, root: Path, files: Sequence[Path], size: int
                 ) -> tuple[list[Path], list[tuple[Path, str]]] | None:
    """The kept and skipped files of a complete cache of exactly ``files``, or None when there is none we can
    trust (module doc): the record and data file are read as a stranger's (core/untrusted.py)."""
    try:
        record = untrusted.read_json(where, f"{key}.json", dict, max_bytes=_MAX_RECORD_BYTES)
        data_size = os.stat(untrusted.check_file(where, f"{key}.u8")).st_size
    except (OSError, untrusted.UntrustedFileError):
        return None
    by_name = {_rel(p, root): p for p in files}
    names, skipped_raw = record.get("files"), record.get("skipped", [])
    if not (record.get("format") == CACHE_FORMAT and record.get("key") == key and record.get("size") == size
            and record.get("root") == str(Path(root).resolve()) and isinstance(names, list)
            and isinstance(skipped_raw, list) and record.get("images") == len(names) >= 1
            and all(isinstance(n, str) and n in by_name for n in names)
            and all(isinstance(s, list) and len(s) == 2 and s[0] in by_name and isinstance(s[1], str)
                    for s in skipped_raw)):
        return None
    kept = [by_name[n] for n in names]
    skipped = [(by_name[n], why[:200]) for n, why in skipped_raw]
    # exactly this folder's files, each once, in the loader's order, and the data file holds exactly them
    order = {p: i for i, p in enumerate(files)}
    positions = [order[p] for p in kept]
    if sorted(positions + [order[p] for p, _ in skipped]) != list(range(len(files))) \
            or positions != sorted(positions) or data_size != len(kept) * 3 * size * size:
        return None
    if not _rows_match(where / f"{key}.u8", kept, size):
        return None
    return kept, skipped


def _rows_match(data_path: Path, kept: Sequence[Path], size: int) -> bool:
    """A few rows of the cache (first, last and two in between) equal those images decoded again now."""
    n = len(kept)
    picks = sorted({0, n - 1, n // 3, (2 * n) // 3})
    try:
        array = np.memmap(data_path, dtype=np.uint8, mode="r", shape=(n, 3, size, size))
        for i in picks:
            result = next(iter(_decode_in_order([kept[i]], size, None)))[1]
            if isinstance(result, str):
                return False
            rgb = np.broadcast_to(result, (3, size, size)) if result.ndim == 2 else result.transpose(2, 0, 1)
            if not np.array_equal(array[i], rgb):
                return False
    except (OSError, ValueError):
        return False
    return True


def _map(path: Path, n: int, size: int) -> torch.Tensor:
    """A CPU tensor over the file's pages (copy-on-write mapping: nothing we do can change the cache)."""
    array = np.memmap(path, dtype=np.uint8, mode="c", shape=(n, 3, size, size))
    return torch.from_numpy(array)


def _remove_stale_temporaries(data_path: Path) -> None:
    now = time.time()
    for tmp in data_path.parent.glob(f".{data_path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            if now - tmp.stat().st_mtime > _STALE_TMP_SECONDS:
                tmp.unlink()


def _build(data_path: Path, root: Path, files: Sequence[Path], size: int,
           progress: ProgressFn | None) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Decode ``files`` into ``data_path`` (atomically); ``(kept files, skipped)``."""
    needed = len(files) * 3 * size * size
    data_path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(data_path)
    free = atomic.free_bytes(data_path.parent)
    if free is not None and free < needed + _SLACK:
        raise DataError(f"the decoded image cache needs {format_bytes(needed)} in {data_path.parent}, but only "
                        f"{format_bytes(free)} is free there: free some space, choose another cache folder "
                        "(--cache-dir), raise the memory budget, or use fewer images")
    kept: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    with atomic.atomic_path(data_path) as tmp:
        # plain sequential writes, not a writable mapping: written pages stay in the OS cache, not in our RSS
        with open(tmp, "wb") as fh:
            for index, result in _decode_in_order(files, size, progress):
                if isinstance(result, str):
                    skipped.append((files[index], result))
                    continue
                rgb = np.broadcast_to(result, (3, size, size)) if result.ndim == 2 else result.transpose(2, 0, 1)
                fh.write(np.ascontiguousarray(rgb).tobytes())
                kept.append(files[index])
        if not kept:
            path, why = skipped[0]
            raise DataError(f"all {len(files)} image files in {root} are unreadable, e.g. {_rel(path, root)}: {why}")
    return kept, skipped
