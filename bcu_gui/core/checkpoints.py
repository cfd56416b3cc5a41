"""Read a suspicious checkpoint safely, in whatever form a user is likely to have, and return what it holds.

The files this app receives are, by definition, untrusted: a pickled checkpoint can run arbitrary code while it
is unpickled. So every ``torch.save`` file is first read with ``weights_only=True``, which rebuilds tensors and
plain containers only; numpy arrays (BackdoorBench keeps its poisoned-data bookkeeping in them) are allowed too,
because their reconstruction functions rebuild data and call no user code. Anything that still needs full
unpickling is refused with :class:`UntrustedCheckpointError` unless the caller passes ``trust=True``.
TorchScript archives are refused the same way: ``torch.jit.load`` runs the file's own ``__setstate__`` code
while loading, and its graph can read and write files, so nothing of one is loaded without trust.

The format is sniffed from the first bytes and the zip directory (never from the suffix alone), so each file
is opened for tensor data once. Architecture inference is not done here: :func:`archs.infer_architecture`
reads the ``state_dict`` returned in :class:`RawCheckpoint`.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import re
import struct
import threading
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import atomic
from . import untrusted
from .archs import split_prefix
from .errors import BcuError, CheckpointError, UntrustedCheckpointError
from .normalization import PRESETS, parse_normalization

FORMATS = ("state_dict", "backdoorbench", "safetensors", "module", "torchscript")

# Keys under which training code commonly nests the weights (Lightning: ``state_dict``; many repos: the rest).
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")

# Where a checkpoint's own hyper-parameters may sit (Lightning's ``save_hyperparameters``, config dicts).
_HINT_CONTAINERS = ("hyper_parameters", "hparams", "config")

# Spellings of each metadata key found in checkpoints and sidecars -> the normalised key.
_HINT_ALIASES: dict[str, str] = {
    "arch": "arch", "architecture": "arch", "model_name": "arch", "model_arch": "arch",
    "num_classes": "num_classes", "n_classes": "num_classes", "nb_classes": "num_classes",
    "width": "width",
    "input_size": "input_size", "img_size": "input_size", "image_size": "input_size",
    "mean": "mean", "std": "std",
    "normalize": "normalize", "normalization": "normalize",
    # the dataset a model was trained on: BackdoorBench's ``clean_data``, configs' ``dataset``
    "clean_data": "dataset", "dataset": "dataset", "dataset_name": "dataset", "data_name": "dataset",
}
SIDECAR_KEYS = ("arch", "num_classes", "width", "input_size", "mean", "std", "normalize", "dataset")

_ZIP_MAGIC = b"PK\x03\x04"
_EMPTY_ZIP_MAGIC = b"PK\x05\x06"
_PICKLE_PROTO = 0x80  # every pickle of protocol >= 2 (torch's legacy format) starts with this opcode
_UNSAFE_GLOBAL = re.compile(r"GLOBAL (\S+) (?:was not an allowed global|whose module)")
# torch's safe_globals context edits one process-wide list: two loads in parallel threads would remove each
# other's entries mid-load, so weights-only loads take turns.
_SAFE_LOAD_LOCK = threading.Lock()
_TRUST_ADVICE = ("load it only if you trust where it came from (--trust-checkpoint in the CLI, on the command "
                 "line also with --resume or --config: a run's config.json never grants it; "
                 "'Trust and load' in the app)")


@dataclass
class RawCheckpoint:
    """What a checkpoint file holds, before any architecture is chosen for it."""

    path: Path
    format: str  # one of FORMATS
    # tensors only, wrapper prefixes stripped; None for module/torchscript
    state_dict: dict[str, torch.Tensor] | None = field(repr=False)
    # whole pickled nn.Module or TorchScript module (eval mode; both only ever loaded with trust), else None
    module: nn.Module | None = field(repr=False)
    # normalised hints, keys only when known: arch, num_classes, width, input_size, mean, std, normalize
    metadata: dict = field(default_factory=dict)
    trusted_load: bool = False  # True when full unpickling or TorchScript loading (which run code) was used
    # How the weights sat in the file, so a cleansed model can be written back the same way (core.saveback):
    top: Any = field(default=None, repr=False)  # the whole object torch.load returned (None: safetensors/TS)
    weights_path: tuple = ()  # keys leading from ``top`` to the weights mapping (("net",), ("state_dict",))
    prefix: str = ""  # the prefix stripped from every key ("module.", "model.", ...)
    header: dict = field(default_factory=dict)  # safetensors header metadata, as stored


def read_checkpoint(path: str | Path, trust: bool = False) -> RawCheckpoint:
    """Load a checkpoint without running code from it (unless ``trust``), merging its sidecar metadata.

    Raises :class:`CheckpointError` with a one-line message naming the file for anything unreadable, and
    :class:`UntrustedCheckpointError` when only full unpickling could read it and ``trust`` is False.
    """
    path = Path(path).expanduser()
    size = _check_file(path)
    sidecar = read_sidecar(path)  # before the (possibly large) load, so a typo in it fails fast
    head = _read_head(path)
    if _looks_like_safetensors(head, size):  # checked first: its 8-byte length prefix can start with any byte
        raw = _read_safetensors(path)
    elif head.startswith(_ZIP_MAGIC) or head.startswith(_EMPTY_ZIP_MAGIC):
        raw = _read_zip(path, trust)
    elif head[0] == _PICKLE_PROTO:
        raw = _read_torch_pickle(path, trust, legacy=True)
    elif path.suffix.lower() == ".safetensors":
        raw = _read_safetensors(path)  # a damaged one: let safetensors say what is wrong
    else:
        raise CheckpointError(f"{path.name} is not a PyTorch, safetensors or TorchScript checkpoint")
    raw.metadata.update(sidecar)  # the sidecar is the user's explicit statement: it wins
    return raw


def read_sidecar(path: str | Path) -> dict:
    """Metadata the user wrote beside a checkpoint, from ``model.pt.json`` or else ``model.json``; {} if none.

    Values are checked and normalised like the hints read from the checkpoint, so a mistake in the file
    (bad JSON, ``"num_classes": "ten"``) is reported against the sidecar rather than surfacing later.
    """
    path = Path(path)
    for candidate in (path.with_name(path.name + ".json"), path.with_suffix(".json")):
        if candidate == path or not candidate.is_file():
            continue
        try:  # a regular file, not a link, of a sane size (core/untrusted.py); a BOM (Windows editors) is skipped
            text = untrusted.read_text(candidate.parent, candidate.name, untrusted.MAX_JSON_BYTES)
        except untrusted.UntrustedFileError as exc:
            raise CheckpointError(f"cannot read the metadata file {candidate.name}: it {exc.reason}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"cannot read the metadata file {candidate.name}: {_one_line(exc)}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CheckpointError(
                f"the metadata file {candidate.name} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                f"{exc.msg})"
            ) from exc
        except (RecursionError, ValueError, MemoryError) as exc:  # nesting too deep, a number too long
            raise CheckpointError(f"the metadata file {candidate.name} cannot be read ({type(exc).__name__})") from None
        if not isinstance(data, dict):
            raise CheckpointError(
                f"the metadata file {candidate.name} must hold a JSON object such as "
                f'{{"arch": "resnet18_cifar", "num_classes": 10}}, not a {type(data).__name__}'
            )
        return normalise_metadata(data, source=candidate.name, strict=True)
    return {}


def write_sidecar(path: str | Path, metadata: dict) -> None:
    """Write metadata beside a checkpoint as ``path.with_suffix('.json')``, atomically.

    A temporary file in the same directory is written, fsynced and renamed over the target, so a crash never
    leaves a half-written sidecar that would make the checkpoint unreadable.
    """
    target = Path(path).with_suffix(".json")
    text = json.dumps(metadata, indent=2, default=_json_default) + "\n"
    try:
        atomic.write_text(target, text)  # temp file beside it, fsync, os.replace
    except OSError as exc:
        raise CheckpointError(f"cannot write the metadata file {target}: {_one_line(exc)}") from exc


def normalise_metadata(raw: Mapping[str, Any], source: str = "", strict: bool = False) -> dict:
    """Map the hint spellings checkpoints use onto ``SIDECAR_KEYS`` with checked types.

    ``strict`` (a sidecar the user wrote) turns a bad value into a CheckpointError naming ``source``; otherwise
    (hints embedded by some training code) bad values are dropped, since they are only hints.
    """
    out: dict[str, Any] = {}
    pending_norm: tuple[str, Any] | None = None
    for key, value in raw.items():
        if not isinstance(key, str):
            continue
        name = _HINT_ALIASES.get(key.strip().lower())
        if name is None or value is None or (name in out and not strict):
            continue
        if name == "normalize":  # judged last: a custom name is fine beside explicit mean and std
            pending_norm = pending_norm if pending_norm and not strict else (key, value)
            continue
        try:
            out[name] = _NORMALISERS[name](value)
        except Exception as exc:  # TypeError/ValueError; also e.g. RuntimeError from .item() on odd objects
            if strict:
                raise CheckpointError(f"the metadata file {source} has a bad value for '{key}': {exc}") from exc
    if pending_norm is not None:
        key, value = pending_norm
        try:
            out["normalize"] = _normalize_name(value, has_stats="mean" in out and "std" in out)
        except Exception as exc:
            if strict:
                raise CheckpointError(f"the metadata file {source} has a bad value for '{key}': {exc}") from exc
    return out


# ----------------------------------------------------------------------------------------------- file checks


def _check_file(path: Path) -> int:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise CheckpointError(f"the checkpoint {path} does not exist") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read the checkpoint {path.name}: {_one_line(exc)}") from exc
    if path.is_dir():
        hint = ""
        suffixes = {".pt", ".pth", ".bin", ".ckpt", ".safetensors"}
        inner: list[str] = []
        with contextlib.suppress(OSError):
            inner = [p.name for p in sorted(path.iterdir()) if p.suffix.lower() in suffixes]
        if inner:
            hint = f" (it holds {', '.join(inner[:3])}{', ...' if len(inner) > 3 else ''})"
        raise CheckpointError(f"{path.name} is a folder, not a checkpoint file; choose the file inside it{hint}")
    if not path.is_file():
        raise CheckpointError(f"{path.name} is not a regular file")
    if st.st_size == 0:
        raise CheckpointError(f"{path.name} is empty (0 bytes); it was probably not saved completely")
    return st.st_size


def _read_head(path: Path, n: int = 16) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(n)
    except OSError as exc:
        raise CheckpointError(f"cannot read the checkpoint {path.name}: {_one_line(exc)}") from exc


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    """safetensors: a little-endian u64 header length, then a JSON header; no other format has ``{`` there."""
    if len(head) < 9:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and 2 <= header_len <= size - 8


# ------------------------------------------------------------------------------------------------- readers


def _read_safetensors(path: Path) -> RawCheckpoint:
    try:
        from safetensors import safe_open
    except ImportError as exc:  # a dependency, but say so plainly if a build lacks it
        raise CheckpointError(f"{path.name} is a safetensors file, but the safetensors package is missing") from exc
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            header = fh.metadata() or {}
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}
    except Exception as exc:  # SafetensorError is a plain Exception subclass from a Rust extension
        raise CheckpointError(f"{path.name} is not a valid safetensors file ({_one_line(exc)})") from exc
    if not tensors:
        raise CheckpointError(f"{path.name} holds no tensors")
    hints = {k: _parse_jsonish(v) for k, v in header.items() if isinstance(v, str)}
    prefix, state = split_prefix(tensors)
    return RawCheckpoint(path, "safetensors", state, None, normalise_metadata(hints), prefix=prefix,
                         header=dict(header))


def _read_zip(path: Path, trust: bool) -> RawCheckpoint:
    """A zip is a ``torch.save`` file (``data.pkl``), a TorchScript archive (``constants.pkl``, ``code/``) or
    something else; only its central directory is read here."""
    try:
        with zipfile.ZipFile(path) as zf:
            records = {name.split("/", 1)[-1] for name in zf.namelist()}
    except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError, ValueError, UnicodeError) as exc:
        # NotImplementedError: a damaged header claiming a zip version or compression Python cannot read
        raise CheckpointError(
            f"{path.name} is truncated or damaged (its zip directory cannot be read); copy or save it again"
        ) from exc
    if "constants.pkl" in records or any(r.startswith("code/") for r in records):
        return _read_torchscript(path, trust)
    if "data.pkl" in records:
        return _read_torch_pickle(path, trust, legacy=False)
    if "archive_format" in records or any(r.startswith("models/") for r in records):
        raise CheckpointError(
            f"{path.name} is a torch.export program, which is not supported; save the model's state_dict "
            f"(torch.save(model.state_dict(), ...)) or a TorchScript file instead"
        )
    raise CheckpointError(f"{path.name} is a zip archive but not a PyTorch, safetensors or TorchScript checkpoint")


def _read_torchscript(path: Path, trust: bool) -> RawCheckpoint:
    """A TorchScript archive: its code runs as soon as it is loaded, so only with trust.

    ``torch.jit.load`` executes the file's own ``__setstate__`` methods while it rebuilds the modules, and
    every forward pass runs the file's graph, which may call operators that read and write files
    (``torch.from_file(..., shared=True)`` then an in-place copy). So a TorchScript file is treated like a
    pickle: without trust nothing of it is loaded, only its zip directory has been read.
    """
    if not trust:
        raise UntrustedCheckpointError(
            f"{path.name} is a TorchScript program: loading it runs code stored in the file (its own "
            f"__setstate__ methods while loading, its graph on every call); {_TRUST_ADVICE}"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notices mean nothing to the user
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise CheckpointError(f"{path.name} is a TorchScript file that cannot be loaded ({_one_line(exc)})") from exc
    module.eval()
    return RawCheckpoint(path, "torchscript", None, module, {}, trusted_load=True)


def _read_torch_pickle(path: Path, trust: bool, legacy: bool) -> RawCheckpoint:
    """``torch.save`` output: weights-only first; full unpickling only when trusted."""
    trusted = False
    try:
        with _SAFE_LOAD_LOCK, _numpy_allowed(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notices (pickle protocol, ...) mean nothing to the user
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise _unreadable(path, exc, legacy) from exc
        if not trust:
            raise _untrusted(path, exc) from None
        obj = _load_trusted(path)
        trusted = True
    except Exception as exc:  # RuntimeError from the zip reader, EOFError, bad magic number, ...
        raise _unreadable(path, exc, legacy) from exc
    return _interpret(path, obj, trusted)


def _load_trusted(path: Path) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(str(path), map_location="cpu", weights_only=False)
    except (ImportError, AttributeError) as exc:
        raise CheckpointError(
            f"{path.name} is a pickled model whose Python code is not available here ({_one_line(exc)}); "
            f"re-save it as a state_dict (torch.save(model.state_dict(), ...)) or as TorchScript"
        ) from exc
    except Exception as exc:
        raise CheckpointError(f"{path.name} could not be unpickled ({_one_line(exc)})") from exc


def _interpret(path: Path, obj: Any, trusted: bool) -> RawCheckpoint:
    """Find the weights (or a whole module) inside whatever object the file held."""
    if isinstance(obj, Mapping) and _is_backdoorbench(obj):
        hints = normalise_metadata({k: obj.get(k) for k in ("model_name", "num_classes", "img_size", "clean_data")})
        found, where = _find_weights(obj["model"])
        where = ("model", *where)
        if found is None:
            raise CheckpointError(f"{path.name} is a BackdoorBench result whose 'model' entry holds no tensors")
        fmt = "backdoorbench"
    else:
        hints = _collect_hints(obj) if isinstance(obj, Mapping) else {}
        found, where = _find_weights(obj)
        fmt = "state_dict"
    if isinstance(found, nn.Module):
        found.eval()
        fmt = "torchscript" if isinstance(found, torch.jit.ScriptModule) else "module"
        return RawCheckpoint(path, fmt, None, found, hints, trusted, top=obj, weights_path=where)
    if found is None:
        raise CheckpointError(f"{path.name} {_describe_no_weights(obj)}")
    check_real_storage(path, found)
    prefix, state = split_prefix(found)
    return RawCheckpoint(path, fmt, state, None, hints, trusted, top=obj, weights_path=where, prefix=prefix)


def check_real_storage(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    """Refuse tensors that claim more elements than the file stores for them, before anything is sized by
    them: a zero-stride (expanded) tensor of a few bytes can claim a 10^8-class head, and building a model
    to fit it would allocate tens of gigabytes."""
    for key, t in tensors.items():
        claimed = t.numel() * t.element_size()
        try:
            stored = t.untyped_storage().nbytes() - t.storage_offset() * t.element_size()
        except (RuntimeError, NotImplementedError):
            continue  # tensors without a plain storage (none come out of a weights-only load)
        if claimed > stored:
            shape = "x".join(str(d) for d in t.shape)
            raise CheckpointError(
                f"{path.name}: tensor '{key}' claims shape {shape} ({_bytes(claimed)}) but the file stores only "
                f"{_bytes(stored)} for it (a zero-stride or overlapping tensor); the file is damaged or hostile"
            )


def _bytes(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n} bytes"


def _is_backdoorbench(obj: Mapping) -> bool:
    return "model" in obj and "model_name" in obj and ("num_classes" in obj or "bd_test" in obj)


def _find_weights(obj: Any, depth: int = 0) -> tuple[nn.Module | dict[str, torch.Tensor] | None, tuple]:
    """A module, or the str->tensor mapping holding the weights, with the keys that lead to it from ``obj``;
    wrappers searched a few levels deep."""
    if isinstance(obj, nn.Module):
        return _unwrap_module(obj), ()
    if not isinstance(obj, Mapping) or depth > 3:
        return None, ()
    wrapped = [(k, obj[k]) for k in WRAPPER_KEYS if k in obj]
    for key, value in wrapped:  # a whole module is the most complete answer
        if isinstance(value, nn.Module):
            return _unwrap_module(value), (key,)
    for key, value in wrapped:
        found, where = _find_weights(value, depth + 1)
        if found is not None:
            return found, (key, *where)
    tensors = _tensors_of(obj)
    if tensors:
        return tensors, ()
    # an unconventional wrapper key: accept it only when exactly one value is a tensor mapping
    nested = [(k, t) for k, t in ((k, _tensors_of(v)) for k, v in obj.items() if isinstance(v, Mapping)) if t]
    return (nested[0][1], (nested[0][0],)) if len(nested) == 1 else (None, ())


def _tensors_of(mapping: Mapping) -> dict[str, torch.Tensor]:
    return {
        k: (v.detach() if isinstance(v, nn.Parameter) else v)
        for k, v in mapping.items()
        if isinstance(k, str) and isinstance(v, torch.Tensor)
    }


def _unwrap_module(module: nn.Module) -> nn.Module:
    """DataParallel / DistributedDataParallel / torch.compile wrappers -> the model inside."""
    for _ in range(4):
        inner = getattr(module, "module", None) if isinstance(
            module, (nn.DataParallel, nn.parallel.DistributedDataParallel)
        ) else getattr(module, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            break
        module = inner
    return module


def _collect_hints(obj: Mapping) -> dict:
    hints: dict[str, Any] = {}
    for key in _HINT_CONTAINERS:
        if isinstance(obj.get(key), Mapping):
            hints.update({k: v for k, v in normalise_metadata(obj[key]).items() if k not in hints})
    hints.update(normalise_metadata(obj))  # top-level keys are the most direct statement
    return hints


def _describe_no_weights(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = [str(k) for k in list(obj)[:5]]
        shown = ", ".join(keys) + (", ..." if len(obj) > 5 else "")
        return f"holds no tensors (a dict with keys: {shown}); it is not a model's weights" if obj else (
            "holds an empty dict; it is not a model's weights")
    if isinstance(obj, torch.Tensor):
        return "holds a single tensor, not a model's weights (a dict of named tensors)"
    return f"holds a {type(obj).__name__}, not a model's weights (a dict of named tensors)"


# ------------------------------------------------------------------------------------------------- safety


class PickledImage:
    """What a pickled PIL image holds (``[info, mode, size, palette, raw bytes]``), kept as plain data.

    The safe loader maps the pickle's ``PIL.Image.Image`` onto this class, so none of Pillow's code runs while
    the file is read (Pillow's own ``__setstate__`` would allocate whatever size the file claims). The pixels
    are decoded later by :meth:`to_array`, after their size has been checked against the bytes present.
    """

    MAX_SIDE = 4096

    def __setstate__(self, state: Any) -> None:
        self.state = state

    @property
    def mode(self) -> str | None:
        state = getattr(self, "state", None)
        return state[1] if isinstance(state, (list, tuple)) and len(state) >= 5 else None

    def shape(self) -> tuple[int, int, int] | None:
        """``(height, width, channels stored)`` when the record is an image :meth:`to_array` can decode, else
        None; checks the claimed size against the bytes present without decoding anything."""
        state = getattr(self, "state", None)
        if not isinstance(state, (list, tuple)) or len(state) < 5:
            return None
        _, mode, size, _, data = state[:5]
        channels = {"RGB": 3, "RGBA": 4, "RGBX": 4, "L": 1, "P": 1}.get(mode) if isinstance(mode, str) else None
        if (channels is None or not isinstance(data, (bytes, bytearray)) or not isinstance(size, (list, tuple))
                or len(size) != 2 or not all(isinstance(v, int) and 0 < v <= self.MAX_SIDE for v in size)):
            return None
        width, height = size
        return (height, width, channels) if len(data) == width * height * channels else None

    def to_array(self):
        """uint8 ``[H, W, 3]`` numpy pixels, or None when the record is not an image we can read safely."""
        import numpy as np

        shape = self.shape()
        if shape is None:
            return None
        height, width, channels = shape
        mode, palette, data = self.state[1], self.state[3], self.state[4]
        pixels = np.frombuffer(bytes(data), dtype=np.uint8).reshape(height, width, channels)
        if mode == "P":
            if not isinstance(palette, (list, tuple)) or len(palette) < 3:
                return None
            table = np.zeros((256, 3), dtype=np.uint8)
            values = np.asarray(palette[: 768 - len(palette) % 3], dtype=np.int64).clip(0, 255)
            table[: len(values) // 3] = values.reshape(-1, 3).astype(np.uint8)
            return table[pixels[..., 0]]
        if channels == 1:
            return np.repeat(pixels, 3, axis=2)
        return np.ascontiguousarray(pixels[..., :3])

    def to_pil(self):
        """The image as Pillow would have rebuilt it (for writing a BackdoorBench file back), checked first."""
        from PIL import Image

        pixels = self.to_array()
        if pixels is None:
            raise CheckpointError("a pickled image in the file cannot be rebuilt")
        state = self.state
        if state[1] in ("RGB", "L"):
            image = Image.frombytes(state[1], tuple(state[2]), bytes(state[4]))
        else:
            image = Image.fromarray(pixels, "RGB")
        if isinstance(state[0], dict):
            image.info.update(state[0])
        return image


@lru_cache(maxsize=1)
def _numpy_safe_globals() -> tuple:
    """numpy's array, scalar and dtype reconstruction: data only, no user code runs through them.

    Each function is registered under both module names numpy has pickled it with (``numpy.core`` before 2.0,
    ``numpy._core`` since), so BackdoorBench files from either numpy load.
    """
    try:
        import numpy as np
    except ImportError:
        return ()
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    items: list[Any] = [np.ndarray, np.dtype]
    with contextlib.suppress(ImportError):
        import numpy.dtypes as np_dtypes  # numpy >= 1.25: each dtype instance's class

        items += [getattr(np_dtypes, n) for n in dir(np_dtypes) if n.endswith("DType")]
    tuples_ok = _torch_at_least(2, 6)  # (object, "qualified.name") entries arrived in torch 2.6
    if tuples_ok:  # BackdoorBench v2 keeps its poisoned test images as pickled PIL images: record, never decode
        items.append((PickledImage, "PIL.Image.Image"))
    for fn_name in ("_reconstruct", "scalar"):
        fn = getattr(multiarray, fn_name, None)
        if fn is None:
            continue
        if tuples_ok:
            items += [(fn, f"{mod}.multiarray.{fn_name}") for mod in ("numpy.core", "numpy._core")]
        else:
            items.append(fn)
    return tuple(items)


def _numpy_allowed() -> contextlib.AbstractContextManager:
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    allowed = _numpy_safe_globals()
    if safe_globals is None or not allowed:  # torch < 2.5: numpy arrays will need trust
        return contextlib.nullcontext()
    return safe_globals(list(allowed))


def _torch_at_least(major: int, minor: int) -> bool:
    match = re.match(r"(\d+)\.(\d+)", torch.__version__)
    return bool(match) and (int(match.group(1)), int(match.group(2))) >= (major, minor)


def _untrusted(path: Path, exc: BaseException) -> UntrustedCheckpointError:
    advice = _TRUST_ADVICE
    match = _UNSAFE_GLOBAL.search(str(exc))
    if match:
        return UntrustedCheckpointError(
            f"{path.name} is a pickled Python object (it names `{match.group(1)}`): loading it runs code from "
            f"the file; {advice}"
        )
    reason = re.search(r"(Unsupported [^\n.]+)", str(exc))
    detail = f" ({reason.group(1).strip()})" if reason else ""
    return UntrustedCheckpointError(
        f"{path.name} cannot be read by the safe weights-only loader{detail}; a full load runs code from the "
        f"file; {advice}"
    )


def _unreadable(path: Path, exc: BaseException, legacy: bool) -> CheckpointError:
    if legacy:
        return CheckpointError(
            f"{path.name} is not a PyTorch, safetensors or TorchScript checkpoint, or it is damaged "
            f"({_one_line(exc)})"
        )
    return CheckpointError(
        f"{path.name} is a PyTorch checkpoint that is damaged or incomplete ({_one_line(exc)}); save or copy it again"
    )


# ------------------------------------------------------------------------------------------ normalisation


def _as_int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError("expected a whole number, got true/false")
    if isinstance(value, str):
        value = value.strip()
        if not re.fullmatch(r"[+-]?\d+(\.0*)?", value):
            raise ValueError(f"expected a whole number, got {value!r}")
        value = float(value)
    if hasattr(value, "item") and not isinstance(value, (list, tuple)):  # numpy / tensor scalars
        value = value.item()
    if not isinstance(value, (int, float)) or int(value) != value:
        raise ValueError(f"expected a whole number, got {value!r}")
    return int(value)


def _positive_int(value: Any) -> int:
    number = _as_int(value)
    if number < 1:
        raise ValueError(f"expected a positive whole number, got {number}")
    return number


def _input_size(value: Any) -> int:
    """An int, or a shape such as BackdoorBench's ``(32, 32, 3)`` / ``[3, 32, 32]``: the image height."""
    if isinstance(value, str):
        value = _parse_jsonish(value)
    if isinstance(value, (list, tuple)):
        dims = [_positive_int(v) for v in value]
        if len(dims) == 3:
            dims = dims[:2] if dims[-1] in (1, 3, 4) else dims[1:] if dims[0] in (1, 3, 4) else dims
        if not dims:
            raise ValueError("expected an image size, got an empty list")
        return dims[0]
    return _positive_int(value)


def _float_list(value: Any, positive: bool = False) -> list[float]:
    if isinstance(value, str):
        value = _parse_jsonish(value)
    if isinstance(value, torch.Tensor) or hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or len(value) not in (1, 3):
        raise ValueError(f"expected a list of 1 or 3 numbers, got {value!r}")
    out = []
    for v in value:
        if hasattr(v, "item") and not isinstance(v, (bool, int, float)):
            v = v.item()  # numpy / tensor scalars
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"expected numbers, got {v!r}")
        if positive and v <= 0:
            raise ValueError(f"expected positive numbers, got {v!r}")
        out.append(float(v))
    return out


def _arch(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected an architecture name, got {value!r}")
    return value.strip()


def _normalize_name(value: Any, has_stats: bool) -> str:
    """A preset name; any label when mean and std are given too (``LoadedModel.metadata`` writes "custom");
    otherwise whatever ``parse_normalization`` accepts (``"0.5,0.25"``)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected one of {', '.join(PRESETS)}, got {value!r}")
    text = value.strip()
    if text.lower() in PRESETS:
        return text.lower()
    if not has_stats:
        try:
            parse_normalization(text)
        except BcuError as exc:
            raise ValueError(str(exc)) from None
    return text


_NORMALISERS = {
    "arch": _arch,
    "dataset": lambda v: _arch(v).lower(),
    "num_classes": _positive_int,
    "width": _positive_int,
    "input_size": _input_size,
    "mean": _float_list,
    "std": lambda v: _float_list(v, positive=True),
}


def _parse_jsonish(text: str) -> Any:
    """safetensors metadata values are strings: ``"10"``, ``"[0.5, 0.5, 0.5]"``, ``"(32, 32, 3)"``, ``"a,b"``."""
    text = text.strip()
    with contextlib.suppress(ValueError):
        return json.loads(text)
    if text[:1] in "([" and text[-1:] in ")]":
        text = text[1:-1]
    if "," in text:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        with contextlib.suppress(ValueError):
            return [json.loads(p) for p in parts]
    return text


# ------------------------------------------------------------------------------------------------ helpers


def _one_line(exc: BaseException, limit: int = 200) -> str:
    """The first meaningful line of an exception's text, for messages that must stay one line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars, tensors
        return value.tolist()
    raise TypeError(f"metadata value of type {type(value).__name__} cannot be written as JSON")
