"""What a run ran on: versions, device, CPU and precision, recorded once as the run folder's ``environment.json``.

A result without its environment cannot be compared with another (bf16 on one CPU is not fp32 on a GPU), and
the report shows it beside the timings. Everything here is read from the running process and the operating
system; nothing is guessed from the config.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # not installed, or a frozen bundle without metadata
        return None


def _bcu_version() -> str:
    from .. import __version__

    return __version__


def cpu_name() -> str:
    """The CPU's model name ('AMD EPYC 9R14 96-Core Processor'), or what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def environment_record(plan: Any | None = None) -> dict[str, Any]:
    """Versions, operating system, CPU and the compute plan (device, precision, channels-last) of this process.

    ``plan`` is the run's ``devices.ComputePlan``; without one only the machine is described.
    """
    record: dict[str, Any] = {
        "bcu": _bcu_version(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),  # read from the metadata: importing it may fail in a CPU build
        "numpy": _version("numpy"),
        "os": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
    }
    if plan is not None:
        record.update(device=str(plan.device), precision=plan.precision, channels_last=bool(plan.channels_last),
                      compute=plan.describe())
        if plan.device.type == "cuda":
            index = plan.device.index if plan.device.index is not None else torch.cuda.current_device()
            record["gpu"] = torch.cuda.get_device_name(index)
    return record
