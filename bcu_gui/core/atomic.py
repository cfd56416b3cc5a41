"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half of one.

Two more promises sit here because every writer needs them: JSON never holds a bare ``NaN`` (which strict
parsers reject; a non-finite number is written as ``null``), and a full disk is reported as an ``OSError``
with ``errno.ENOSPC`` and the file's name, whichever library was writing. torch.save fails on a full disk
with ``RuntimeError: [enforce fail at inline_container.cc...]`` and safetensors with a ``SafetensorError``;
neither is an ``OSError``, so without the translation the caller's "the disk is full" message never fires.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

# Below this much free space after a failed write we take the failure to be the full disk's doing.
_FULL_DISK_SLACK = 1 << 20


class DiskFullError(OSError):
    """Raised instead of a library's own error when a write failed because the file system is full."""

    def __init__(self, path: str | Path, detail: str = "") -> None:
        super().__init__(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        self.detail = detail


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None, containers rebuilt, anything else as it is."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` that writes ``null`` for NaN and infinities instead of invalid JSON."""
    return json.dumps(json_safe(obj), allow_nan=False, **kwargs)


def free_bytes(folder: str | Path) -> int | None:
    """Free space on the file system holding ``folder`` (or its nearest existing parent), None if unknown."""
    path = Path(folder)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def ensure_free_space(path: str | Path, needed: int) -> None:
    """Raise :class:`DiskFullError` now when ``needed`` bytes (plus slack) cannot fit beside ``path``."""
    free = free_bytes(Path(path).parent)
    if free is not None and free < needed + _FULL_DISK_SLACK:
        raise DiskFullError(path, f"{needed:,} bytes needed, {free:,} free")


def _looks_like_full_disk(exc: BaseException, folder: Path) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc).lower()
    if "no space left" in text or "os error 28" in text or "disk quota" in text:
        return True
    free = free_bytes(folder)
    return free is not None and free < _FULL_DISK_SLACK


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    On any failure the temporary file is removed, so no half-written file is left under any name, and a
    failure caused by a full disk is raised as :class:`DiskFullError`.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o644)  # mkstemp makes it owner-only; a saved model is an ordinary file
        os.replace(tmp_path, target)
    except DiskFullError:
        raise
    except Exception as exc:
        full = _looks_like_full_disk(exc, target.parent)  # before the partial file frees its space
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if full:
            raise DiskFullError(target, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def write_bytes(path: str | Path, data: bytes) -> None:
    ensure_free_space(path, len(data))
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: object) -> None:
    write_text(path, dumps(obj, indent=2, sort_keys=False) + "\n")


def write_with(path: str | Path, writer: Callable[[Path], None], expected_size: int | None = None) -> None:
    """Let a library (torch.save, safetensors) write the temporary file, then swap it in.

    ``expected_size`` (bytes), when known, is checked against the free space before anything is written.
    """
    if expected_size is not None:
        ensure_free_space(path, expected_size)
    with atomic_path(path) as tmp:
        writer(tmp)
