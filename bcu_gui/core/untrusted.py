"""Reading a file from a folder the user did not just make: a run folder, a sweep, a cache, a shared drive.

Such a folder arrives the way a checkpoint does (a colleague's copy, a synced or downloaded folder), so
its files are hostile input, not our own records. Every reader of a run folder goes through this module,
which promises, for a file ``name`` below a folder ``base`` the user named:

* no symbolic link is followed below ``base``: neither the file nor any folder between ``base`` and it
  (a link to ``~/.ssh`` or to another JSON file is refused, with one line naming the link). ``base`` itself
  is the user's own choice and may be a link. On POSIX the walk opens each component relative to its parent
  with ``O_NOFOLLOW``, so a link swapped in during the walk is refused too;
* only a regular file is read: a FIFO, a device or ``/dev/zero`` is refused after a non-blocking open and an
  ``fstat``, before one byte is read (a FIFO never blocks, a device never fills memory);
* the size is capped before reading, and checked again while reading (a file that grows is cut off);
* JSON is parsed strictly: the expected top-level type, finite numbers only (``1e999`` and ``NaN`` are
  refused), whole numbers within 64 bits; nesting too deep, numbers too long and bytes that are not UTF-8
  become the same error as a missing brace;
* an NPZ file is read with ``allow_pickle=False`` after each member's header (shape and dtype) and its zip
  entry are checked against a byte cap, so a small compressed file cannot inflate into gigabytes.

Every failure is one :class:`UntrustedFileError` (a ``ConfigError``: the CLI prints it and exits 2, the app
shows it, the library lists a "damaged" row, the report adds it to its problems) whose message is one line
naming the file. Writing into a run folder (a resumed run) uses :func:`check_write_target`: a target or a
folder above it (below the run folder) that is a link is refused, so a run never writes through a link.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import stat
import zipfile
from pathlib import Path, PurePath
from typing import Any, Iterator

from .errors import ConfigError

MAX_JSON_BYTES = 16 * 1024**2  # a run's config, summary, heartbeat, scan record: kilobytes in practice
MAX_JSONL_BYTES = 64 * 1024**2  # metrics.jsonl of a very long run
MAX_NPZ_BYTES = 512 * 1024**2  # decoded size of all members of an .npz together
MAX_INT = 2**63  # whole numbers in a run's JSON: pids, epochs, seeds, byte counts
MAX_WALK_ENTRIES = 100_000  # names looked at when checking a run folder for links

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)
_DIR_FD = os.open in os.supports_dir_fd and bool(_O_NOFOLLOW) and bool(_O_DIRECTORY)


class UntrustedFileError(ConfigError):
    """A file from a folder we did not make cannot be used; ``str()`` is one line naming it."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = " ".join(str(reason).split())[:300]  # one line, whatever the reason held
        super().__init__(f"{self.path} {self.reason}")  # reasons read on from the name: "... is a symbolic link"


def _parts(name: str | PurePath) -> list[str]:
    parts = [p for p in PurePath(name).parts if p not in ("", ".")]
    if not parts or PurePath(name).is_absolute() or ".." in parts:
        raise ValueError(f"not a plain name below a folder: {name!r}")
    return parts


def _describe_link(path: Path) -> str:
    try:
        return f"is a symbolic link (to {os.readlink(path)}); links in a run folder are not followed"
    except OSError:
        return "is a symbolic link; links in a run folder are not followed"


@contextlib.contextmanager
def _open_fd(base: Path, name: str | PurePath) -> Iterator[tuple[int, os.stat_result, Path]]:
    """An fd for the regular file ``base/name`` opened without following links below ``base``."""
    parts = _parts(name)
    path = base.joinpath(*parts)
    fds: list[int] = []
    try:
        if _DIR_FD:
            try:
                fds.append(os.open(base, os.O_RDONLY | _O_DIRECTORY))
            except FileNotFoundError:
                raise
            except OSError as exc:
                raise UntrustedFileError(base, f"cannot be opened ({exc.strerror or exc})") from None
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                flags = os.O_RDONLY | _O_NOFOLLOW | (_O_NONBLOCK if last else _O_DIRECTORY)
                here = base.joinpath(*parts[:i + 1])
                try:
                    fds.append(os.open(part, flags, dir_fd=fds[-1]))
                except FileNotFoundError:
                    raise
                except OSError as exc:
                    if os.path.islink(here):
                        raise UntrustedFileError(here, _describe_link(here)) from None
                    raise UntrustedFileError(here, f"cannot be opened ({exc.strerror or exc})") from None
            fd = fds[-1]
        else:  # no openat (Windows): check every component, then open
            for i in range(len(parts)):
                here = base.joinpath(*parts[:i + 1])
                if os.path.islink(here):
                    raise UntrustedFileError(here, _describe_link(here))
            fd = os.open(path, os.O_RDONLY | _O_BINARY | _O_NOFOLLOW | _O_NONBLOCK)
            fds.append(fd)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UntrustedFileError(path, "is not a regular file (a pipe, a device or a folder); not read")
        if _O_NONBLOCK:  # a regular file does not block; reads below are ordinary ones
            with contextlib.suppress(OSError):
                os.set_blocking(fd, True)
        yield fd, st, path
    finally:
        for fd in reversed(fds):
            with contextlib.suppress(OSError):
                os.close(fd)


def check_file(base: str | Path, name: str | PurePath) -> Path:
    """``base/name`` when it is a regular file reached without links (else ``UntrustedFileError``,
    or ``FileNotFoundError`` when it does not exist)."""
    with _open_fd(Path(base), name) as (_, _, path):
        return path


def exists(base: str | Path, name: str | PurePath) -> bool:
    """Whether ``base/name`` exists at all (a link counts: reading it will say why it is refused)."""
    return os.path.lexists(Path(base).joinpath(*_parts(name)))


def read_bytes(base: str | Path, name: str | PurePath, max_bytes: int = MAX_JSON_BYTES) -> bytes:
    """The bytes of ``base/name`` (see the module doc); ``FileNotFoundError`` when it does not exist."""
    with _open_fd(Path(base), name) as (fd, st, path):
        if st.st_size > max_bytes:
            raise UntrustedFileError(path, f"is {st.st_size:,} bytes, more than the {max_bytes:,} this file may "
                                           "hold; not read")
        chunks, total = [], 0
        try:
            while True:
                chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
                if total > max_bytes:
                    raise UntrustedFileError(path, f"grew past {max_bytes:,} bytes while read; not read")
        except OSError as exc:
            raise UntrustedFileError(path, f"cannot be read ({exc.strerror or exc})") from None
        return b"".join(chunks)


def read_text(base: str | Path, name: str | PurePath, max_bytes: int = MAX_JSON_BYTES) -> str:
    data = read_bytes(base, name, max_bytes)
    try:
        return data.decode("utf-8-sig")
    except UnicodeError:
        raise UntrustedFileError(Path(base).joinpath(*_parts(name)), "is not UTF-8 text") from None


# ------------------------------------------------------------------------------------------------- JSON


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is too large")
    return value


def _bounded_int(text: str) -> int:
    if len(text) > 20:
        raise ValueError(f"the whole number {text[:40]}... is too long")
    value = int(text)
    if not -MAX_INT <= value < MAX_INT:
        raise ValueError(f"the whole number {text} is too large")
    return value


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not a number")


def parse_json(text: str, where: str | Path, expect: type | tuple[type, ...] | None = dict) -> Any:
    """Strict JSON (see the module doc) of ``text``; ``where`` names the file in the error."""
    try:
        value = json.loads(text, parse_float=_finite_float, parse_int=_bounded_int, parse_constant=_no_constant)
    except (ValueError, RecursionError, OverflowError, MemoryError, UnicodeError, TypeError) as exc:
        why = "is nested too deeply" if isinstance(exc, RecursionError) else \
            "is too large to read" if isinstance(exc, MemoryError) else f"is not valid JSON ({exc})"
        raise UntrustedFileError(where, why) from None
    if expect is not None and not isinstance(value, expect):
        names = expect.__name__ if isinstance(expect, type) else " or ".join(t.__name__ for t in expect)
        kind = {"dict": "a JSON object", "list": "a JSON list"}.get(names, names)
        raise UntrustedFileError(where, f"does not hold {kind}")
    return value


def read_json(base: str | Path, name: str | PurePath, expect: type | tuple[type, ...] | None = dict,
              max_bytes: int = MAX_JSON_BYTES) -> Any:
    """The JSON value in ``base/name``, of type ``expect``; ``FileNotFoundError`` when it does not exist."""
    return parse_json(read_text(base, name, max_bytes), Path(base).joinpath(*_parts(name)), expect)


def read_json_or_none(base: str | Path, name: str | PurePath, expect: type | tuple[type, ...] | None = dict,
                      problems: list[str] | None = None, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Like :func:`read_json`, but None when absent or unusable (the reason appended to ``problems``)."""
    try:
        return read_json(base, name, expect, max_bytes)
    except FileNotFoundError:
        return None
    except UntrustedFileError as exc:
        if problems is not None:
            problems.append(f"{PurePath(name).as_posix()} {exc.reason}")
        return None
    except OSError as exc:
        if problems is not None:
            problems.append(f"{PurePath(name).as_posix()} cannot be read: {exc.strerror or exc}")
        return None


def read_jsonl(base: str | Path, name: str | PurePath, max_bytes: int = MAX_JSONL_BYTES
               ) -> tuple[list[Any], int]:
    """The readable lines of a JSON-lines file and how many lines were not JSON (skipped)."""
    text = read_text(base, name, max_bytes)
    where = Path(base).joinpath(*_parts(name))
    rows, bad = [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            rows.append(parse_json(line, where, expect=None))
        except UntrustedFileError:
            bad += 1
    return rows, bad


# -------------------------------------------------------------------------------------------------- NPZ


def load_npz(base: str | Path, name: str | PurePath, max_bytes: int = MAX_NPZ_BYTES,
             max_file_bytes: int = MAX_NPZ_BYTES) -> dict[str, Any]:
    """Every array of an ``.npz`` file, read without pickles and within ``max_bytes`` decoded bytes."""
    import numpy as np
    from numpy.lib import format as npformat

    where = Path(base).joinpath(*_parts(name))
    raw = read_bytes(base, name, max_file_bytes)
    arrays: dict[str, Any] = {}
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            infos = zf.infolist()
            if sum(i.file_size for i in infos) > max_bytes:
                raise UntrustedFileError(where, f"would decompress to more than {max_bytes:,} bytes; not read")
            for info in infos:
                with zf.open(info) as fh:
                    version = npformat.read_magic(fh)
                    if version == (1, 0):
                        shape, fortran, dtype = npformat.read_array_header_1_0(fh)
                    elif version == (2, 0):
                        shape, fortran, dtype = npformat.read_array_header_2_0(fh)
                    else:
                        raise UntrustedFileError(where, f"member {info.filename} has an unknown array format")
                    if dtype.hasobject:
                        raise UntrustedFileError(where, f"member {info.filename} holds Python objects; not read")
                    count = math.prod(int(d) for d in shape)
                    if count * dtype.itemsize > max_bytes or count * dtype.itemsize > info.file_size:
                        raise UntrustedFileError(where, f"member {info.filename} claims {count * dtype.itemsize:,} "
                                                        "bytes it does not hold; not read")
            for info in infos:
                key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                with zf.open(info) as fh:
                    arrays[key] = npformat.read_array(fh, allow_pickle=False)
    except UntrustedFileError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, RuntimeError, KeyError,
            RecursionError, OverflowError, MemoryError, UnicodeError, TypeError, SyntaxError) as exc:
        raise UntrustedFileError(where, f"is not a readable .npz file ({type(exc).__name__})") from None
    return arrays


# ---------------------------------------------------------------------------------------------- writing


def check_write_target(base: str | Path, target: str | Path) -> None:
    """Refuse to write ``target`` (below the run folder ``base``) when it or a folder between ``base`` and it
    is a symbolic link: a write through it would land outside the run folder."""
    base_path, target_path = Path(base), Path(target)
    try:
        rel = target_path.relative_to(base_path)
    except ValueError:
        raise UntrustedFileError(target_path, f"is not inside the run folder {base_path}; not written") from None
    here = base_path
    for part in rel.parts:
        here = here / part
        if os.path.islink(here):
            raise UntrustedFileError(here, _describe_link(here) + "; nothing is written through it")


def find_link(folder: str | Path, max_entries: int = MAX_WALK_ENTRIES) -> Path | None:
    """The first symbolic link anywhere below ``folder`` (not following links), None when there is none."""
    seen = 0
    stack = [Path(folder)]
    while stack:
        here = stack.pop()
        try:
            with os.scandir(here) as it:
                entries = list(it)
        except OSError:
            continue
        for entry in entries:
            seen += 1
            if seen > max_entries:
                return None
            if entry.is_symlink():
                return Path(entry.path)
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
    return None


def refuse_links(folder: str | Path) -> None:
    """``UntrustedFileError`` naming the first link below ``folder`` (a run folder about to be written)."""
    link = find_link(folder)
    if link is not None:
        raise UntrustedFileError(link, _describe_link(link) + "; remove it before using this run folder")
