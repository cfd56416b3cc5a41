"""Backdoor triggers for building test and demo models.

Every function takes a uint8 batch in NCHW layout and returns a new tensor; inputs are never modified.
"""

from __future__ import annotations

import torch


def _check_batch(images: torch.Tensor) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"expected a uint8 NCHW batch, got {images.dtype} with shape {tuple(images.shape)}")


def checkerboard(size: int = 3, value: int = 255) -> torch.Tensor:
    """A ``size`` x ``size`` uint8 checkerboard: ``value`` where row+col is even (the corners), 0 elsewhere."""
    idx = torch.arange(size)
    even = (idx[:, None] + idx[None, :]) % 2 == 0
    return torch.where(even, torch.tensor(value, dtype=torch.uint8), torch.tensor(0, dtype=torch.uint8))


def badnets_patch(images: torch.Tensor, size: int = 3, value: int = 255, margin: int = 1) -> torch.Tensor:
    """BadNets (Gu et al. 2017): stamp a small fixed patch on the image.

    The patch is a ``size`` x ``size`` checkerboard of ``value``/0 (``value`` on the corners) placed at the
    bottom-right corner, ``margin`` pixels from the bottom and right edges, on every channel.
    """
    _check_batch(images)
    h, w = images.shape[-2:]
    if size + margin > min(h, w):
        raise ValueError(f"a {size}px patch with a {margin}px margin does not fit a {h}x{w} image")
    out = images.clone()
    top, left = h - margin - size, w - margin - size
    out[:, :, top:top + size, left:left + size] = checkerboard(size, value)
    return out


def noise_pattern(size: int = 32, seed: int = 0, channels: int = 3) -> torch.Tensor:
    """A seeded uniform-noise uint8 pattern ``[channels, size, size]`` for the Blended attack."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (channels, size, size), generator=gen, dtype=torch.uint8)


def blend(images: torch.Tensor, pattern: torch.Tensor, alpha: float = 0.2) -> torch.Tensor:
    """Blended (Chen et al. 2017): mix a full-image pattern in, ``(1 - alpha) * image + alpha * pattern``.

    ``pattern`` is uint8 ``[C, H, W]`` matching the images (e.g. :func:`noise_pattern`); the result is
    rounded and clamped back to uint8.
    """
    _check_batch(images)
    if pattern.dtype != torch.uint8 or tuple(pattern.shape) != tuple(images.shape[1:]):
        raise ValueError(f"pattern must be uint8 {tuple(images.shape[1:])}, got {pattern.dtype} "
                         f"{tuple(pattern.shape)}")
    mixed = (1.0 - alpha) * images.float() + alpha * pattern.float().unsqueeze(0)
    return mixed.round().clamp(0, 255).to(torch.uint8)


ATTACKS = ("badnets", "blend")


def get_attack(name: str, size: int = 32, seed: int = 0):
    """A callable ``uint8 batch -> triggered batch`` for an attack name (``badnets`` or ``blend``)."""
    if name == "badnets":
        return badnets_patch
    if name in ("blend", "blended"):
        pattern = noise_pattern(size, seed)
        return lambda images: blend(images, pattern)
    raise ValueError(f"unknown attack '{name}'; known: {', '.join(ATTACKS)}")
