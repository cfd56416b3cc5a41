"""Backdoor triggers for building test and demo models.

Every function takes a uint8 batch in NCHW layout and returns a new tensor; inputs are never modified.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


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


def sig_signal(images: torch.Tensor, delta: float = 20.0, frequency: float = 6.0) -> torch.Tensor:
    """SIG (Barni et al. 2019): add a horizontal sinusoid ``delta * sin(2 pi j f / W)`` to every pixel.

    The signal varies along the columns ``j`` only, is the same on every row and channel, and spans the
    whole image; the result is rounded and clamped back to uint8. Here it is used as a dirty-label trigger
    (poisoned non-target images are relabelled), like the other triggers of this toolkit.
    """
    _check_batch(images)
    w = images.shape[-1]
    columns = torch.arange(w, dtype=torch.float32)
    signal = delta * torch.sin(2 * math.pi * columns * frequency / w)
    mixed = images.float() + signal.view(1, 1, 1, w)
    return mixed.round().clamp(0, 255).to(torch.uint8)


def wanet_grid(size: int = 32, seed: int = 0, control: int = 4, strength: float = 3.0) -> torch.Tensor:
    """The fixed warping field of WaNet (Nguyen and Tran 2021) as a ``grid_sample`` grid ``[1, H, W, 2]``.

    A ``control`` x ``control`` field of seeded uniform offsets in [-1, 1], normalised by its mean absolute
    value, is upsampled bicubically to ``size`` x ``size``, scaled by ``strength / size`` and added to the
    identity grid, clamped to [-1, 1]: pixels move by up to about ``2 * strength`` pixels. The paper's 0.5
    is for CIFAR photos; on blurry upscaled digits a 15-epoch model (the demo's recipe) learnt warps of
    strength 1, 2 and 3 to an ASR of 0.20, 0.65 and 0.88 (measured, seed 0), so the default is 3.
    """
    gen = torch.Generator().manual_seed(seed)
    noise = torch.rand((1, 2, control, control), generator=gen) * 2 - 1
    noise = noise / noise.abs().mean()
    flow = F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    axis = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    identity = torch.stack((xx, yy), dim=-1).unsqueeze(0)
    return (identity + strength * flow / size).clamp(-1, 1)


def warp(images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """WaNet: resample every image through the fixed smooth ``grid`` (bilinear), back to uint8."""
    _check_batch(images)
    h, w = images.shape[-2:]
    if grid.dim() != 4 or tuple(grid.shape[1:]) != (h, w, 2):
        raise ValueError(f"grid must be [1, {h}, {w}, 2], got {tuple(grid.shape)}")
    warped = F.grid_sample(images.float(), grid.expand(len(images), -1, -1, -1), mode="bilinear",
                           padding_mode="border", align_corners=True)
    return warped.round().clamp(0, 255).to(torch.uint8)


ATTACKS = ("badnets", "blend", "sig", "wanet")


def get_attack(name: str, size: int = 32, seed: int = 0):
    """A callable ``uint8 batch -> triggered batch`` for an attack name (one of :data:`ATTACKS`).

    ``seed`` fixes the random parts (Blended's noise pattern, WaNet's warp field); BadNets and SIG have none.
    """
    if name == "badnets":
        return badnets_patch
    if name in ("blend", "blended"):
        pattern = noise_pattern(size, seed)
        return lambda images: blend(images, pattern)
    if name == "sig":
        return sig_signal
    if name == "wanet":
        grid = wanet_grid(size, seed)
        return lambda images: warp(images, grid)
    raise ValueError(f"unknown attack '{name}'; known: {', '.join(ATTACKS)}")
