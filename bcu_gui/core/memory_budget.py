"""How much memory the unlabelled set may take, and whether it is held in memory or streamed.

The engine's fast path decodes the whole unlabelled set into one ``uint8 [N, 3, H, W]`` tensor and, on a GPU,
keeps a copy on the device. That is right for the paper's few thousand 32x32 images (a few MB) and wrong for
50,000 ImageNet-size images (7.5 GB, twice over with the device copy). A budget decides, before anything is
decoded, from the file count and the input size:

- ``memory``: the set fits the budget (host RAM, and device memory for the on-device copy): today's path.
- ``stream-ram``: it fits host RAM but not the device's share: keep it on the host, copy batches over.
- ``stream-disk``: it does not fit host RAM: decode once into a memory-mapped cache on disk and stream
  batches from it (``image_cache.py``, ``streaming.py``).

The default budget is a quarter of the machine's RAM (and a quarter of the GPU's memory for the device copy),
leaving room for the model, the evaluation sets, the optimiser and everything else the machine runs.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Literal

import torch

from .errors import ConfigError

DataPath = Literal["memory", "stream-ram", "stream-disk"]
BUDGET_SHARE = 4  # the default budget is 1/BUDGET_SHARE of RAM (or of the GPU's memory)
_ASSUMED_RAM = 8 * 1024**3  # when the platform will not say (Windows without psutil)

_UNITS = {"": None, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4,
          "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4}
_BUDGET_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]i?)?(b)?\s*$", re.IGNORECASE)


def parse_budget(text: str | int | None) -> int | None:
    """``'2GB'``, ``'512 MiB'``, ``'1.5g'`` -> bytes; ``'auto'`` or None -> None (the default budget).

    Decimal units (KB, MB, GB, TB) are powers of 1000 and binary ones (KiB, MiB, GiB, TiB) of 1024, as disk
    and memory tools print them. A bare number is refused: '2' meaning two bytes would be a silent trap.
    Raises ConfigError with one sentence on anything else.
    """
    if text is None:
        return None
    if isinstance(text, bool):
        raise ConfigError(f"memory budget must be a size such as 2GB or 'auto', got {text!r}")
    if isinstance(text, int):
        if text <= 0:
            raise ConfigError(f"memory budget must be positive, got {text}")
        return text
    word = str(text).strip()
    if word.lower() == "auto":
        return None
    match = _BUDGET_RE.match(word)
    if not match:
        raise ConfigError(f"memory budget '{text}' is not a size: use e.g. 2GB, 512MB, 1.5GiB or auto")
    number, unit, byte = match.groups()
    unit = (unit or "").lower()
    if not unit and not byte:
        raise ConfigError(f"memory budget '{text}' needs a unit: e.g. {word}GB, {word}MB or auto")
    value = int(float(number) * (_UNITS[unit] or 1))
    if value <= 0:
        raise ConfigError(f"memory budget must be positive, got '{text}'")
    return value


def format_bytes(n: float) -> str:
    """``7.5 GB``, ``300 MB``: decimal units, as ``parse_budget`` reads them back."""
    for unit, size in (("TB", 1000**4), ("GB", 1000**3), ("MB", 1000**2), ("kB", 1000)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}".replace(".0 ", " ")
    return f"{int(n)} B"


def total_ram() -> tuple[int, str]:
    """``(bytes, where the figure came from)``: psutil when installed, else sysconf, else an assumption."""
    try:
        import psutil  # optional: not a dependency, used when the user has it

        return int(psutil.virtual_memory().total), "psutil"
    except ImportError:
        pass
    try:
        pages, page = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        if pages > 0 and page > 0:
            return int(pages * page), "sysconf"
    except (AttributeError, ValueError, OSError):
        pass
    return _ASSUMED_RAM, "assumed (the platform does not report its RAM)"


def device_memory(device: torch.device) -> int | None:
    """Total memory of a CUDA device in bytes; None for the CPU and devices that do not report it."""
    if device.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(device).total_memory)
    return None


@dataclass(frozen=True)
class MemoryChoice:
    """Where the unlabelled set lives during training, and a sentence saying why (for the log and config)."""

    path: DataPath
    needed: int  # bytes of the decoded set, uint8
    host_budget: int
    device_budget: int | None  # None: the set is trained on where it lies (CPU)
    reason: str

    @property
    def streamed(self) -> bool:
        return self.path != "memory"

    def to_dict(self) -> dict:
        return {"path": self.path, "needed": self.needed, "host_budget": self.host_budget,
                "device_budget": self.device_budget, "reason": self.reason}


def choose_data_path(images: int, size: int, device: torch.device, budget: int | None = None) -> MemoryChoice:
    """In memory, streamed from RAM, or streamed from a disk cache, for ``images`` images of ``size x size``.

    ``budget`` (bytes) caps host RAM and, on a GPU, the on-device copy; None means a quarter of each.
    """
    needed = images * 3 * size * size
    if budget is not None:
        host, host_why = budget, f"the memory budget of {format_bytes(budget)}"
    else:
        ram, source = total_ram()
        host = ram // BUDGET_SHARE
        host_why = f"a quarter of this machine's {format_bytes(ram)} RAM ({format_bytes(host)}; {source})"
    gpu = device_memory(device)
    if gpu is None:
        dev_budget, dev_why = None, ""
    elif budget is not None:
        dev_budget, dev_why = budget, f"the memory budget of {format_bytes(budget)}"
    else:
        dev_budget = gpu // BUDGET_SHARE
        dev_why = f"a quarter of {device}'s {format_bytes(gpu)} ({format_bytes(dev_budget)})"
    what = f"{images:,} images of {size}x{size} take {format_bytes(needed)} as uint8"
    if needed > host:
        return MemoryChoice("stream-disk", needed, host, dev_budget,
                            f"{what}, more than {host_why}: decoded once into a disk cache and streamed in batches")
    if dev_budget is not None and needed > dev_budget:
        return MemoryChoice("stream-ram", needed, host, dev_budget,
                            f"{what}, within {host_why} but more than {dev_why} for a copy on the device: "
                            "kept in RAM and streamed to the device in batches")
    where = f"{host_why}" + (f" and {dev_why}" if dev_why else "")
    return MemoryChoice("memory", needed, host, dev_budget, f"{what}, within {where}: held in memory")
