"""Which compute devices exist, and which fast paths (mixed precision, channels-last) each one gets.

The training step reads one ``ComputePlan``; switching a fast path on or off is a field here, not a change in
the loop.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class DeviceChoice:
    """One entry of the device list a front end offers."""

    id: str  # what --device takes: "cpu", "cuda:0", "mps"
    label: str  # what a person reads: "NVIDIA H100 (cuda:0, 80 GB)"


def available_devices() -> list[DeviceChoice]:
    """CPU, each CUDA GPU by name, and Apple's MPS when present."""
    devices = [DeviceChoice("cpu", f"CPU ({torch.get_num_threads()} threads)")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            devices.append(DeviceChoice(f"cuda:{i}", f"{props.name} (cuda:{i}, {props.total_memory / 2**30:.0f} GB)"))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append(DeviceChoice("mps", "Apple GPU (mps)"))
    return devices


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; a named device must exist."""
    key = (name or "auto").strip().lower()
    if key == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda:0")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(key)
    except RuntimeError:
        raise ConfigError(f"unknown device '{name}': use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' was asked for, but this machine has no usable CUDA GPU")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device '{name}' does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
        return torch.device("cuda", index)
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device 'mps' was asked for, but Apple's Metal backend is not available here")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unsupported device '{name}'")
    return device


def cpu_supports_bf16() -> bool:
    """Native bfloat16 on this CPU (AVX-512 BF16 or AMX); without it bf16 is emulated and slower than fp32."""
    cpu = torch.cpu
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(cpu, probe, None)
        if fn is not None:
            with contextlib.suppress(Exception):
                if fn():
                    return True
    return False


@dataclass(frozen=True)
class ComputePlan:
    """Where and how the training step runs."""

    device: torch.device
    amp_dtype: torch.dtype | None  # None: plain fp32
    channels_last: bool

    @property
    def precision(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def describe(self) -> str:
        layout = ", channels-last" if self.channels_last else ""
        return f"{self.device} ({self.precision}{layout})"


def plan_compute(device: str = "auto", precision: str = "auto", channels_last: bool | None = None) -> ComputePlan:
    """Pick mixed precision and memory layout for a device: fast where the hardware supports it."""
    dev = resolve_device(device)
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{precision}': use one of {', '.join(PRECISIONS)}")
    amp: torch.dtype | None
    if precision == "auto":
        if dev.type == "cuda":
            amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        elif dev.type == "cpu":
            amp = torch.bfloat16 if cpu_supports_bf16() else None
        else:
            amp = None
    else:
        amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if amp is torch.float16 and dev.type == "cpu":
        raise ConfigError("fp16 mixed precision is for GPUs; use bf16 or fp32 on the CPU")
    if channels_last is None:
        channels_last = dev.type in ("cuda", "cpu")
    return ComputePlan(dev, amp, bool(channels_last))
