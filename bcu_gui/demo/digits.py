"""Real backdoored models on real digits, for tests and the app's built-in demo.

scikit-learn's 8x8 handwritten digits (1797 images, bundled with scikit-learn, no download) are upscaled to
32x32 grey RGB, a CIFAR-style ResNet-18 is trained on 1000 of them with a fraction poisoned by a trigger,
and the held-out rest serve as BCU's unlabelled pool and as clean/triggered test sets.

scikit-learn is a test/demo-building dependency only, so it is imported inside the functions that need it.
Images are uint8 NCHW tensors throughout; models take ``(x / 255 - mean) / std``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..core.data import to_model_input
from ..core.nets import CifarResNet
from ..core.normalization import PRESETS
from .attacks import get_attack

Norm = Sequence[float]
# CIFAR-10 statistics, as tuples, from the engine's presets.
CIFAR10_NORM = (PRESETS["cifar10"].mean, PRESETS["cifar10"].std)
SPLIT_SIZES = {"train": 1000, "unlabeled": 400}  # "test" takes the rest (397 of 1797)


def load_digits_rgb(size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as ``(uint8 [1797, 3, size, size], int64 [1797])``.

    The 8x8 values 0..16 are scaled to 0..255, upscaled bicubically to ``size`` x ``size``, clamped,
    rounded and replicated to three identical grey channels.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) * (255.0 / 16.0)
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
    x = x.clamp(0, 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    return x, torch.as_tensor(digits.target, dtype=torch.int64)


def split_digits(images: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Deterministic disjoint splits ``{"train": (x, y), "unlabeled": (x, y), "test": (x, y)}``.

    train 1000, unlabeled 400, test the rest (397 for the full set), after a shuffle seeded by ``seed``.
    The unlabelled split keeps its labels for evaluation; BCU itself must not use them.
    """
    n = len(images)
    need = sum(SPLIT_SIZES.values())
    if n <= need:
        raise ValueError(f"need more than {need} images to split, got {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    out, start = {}, 0
    for name, count in [*SPLIT_SIZES.items(), ("test", n - need)]:
        idx = order[start:start + count]
        out[name] = (images[idx], labels[idx])
        start += count
    return out


def normalize(images: torch.Tensor, mean: Norm = CIFAR10_NORM[0], std: Norm = CIFAR10_NORM[1]) -> torch.Tensor:
    """uint8 NCHW -> float ``(x / 255 - mean) / std``: the engine's own conversion, with plain-tuple stats."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return to_model_input(images, m, s)


def poison(images: torch.Tensor, labels: torch.Tensor, attack_fn: Callable[[torch.Tensor], torch.Tensor],
           target: int, rate: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Trigger ``round(rate * len(images))`` non-target samples (seeded choice) and relabel them ``target``.

    Returns new ``(images, labels, poisoned_indices)``.
    """
    candidates = torch.nonzero(labels != target).flatten()
    count = min(int(round(rate * len(images))), len(candidates))
    gen = torch.Generator().manual_seed(seed)
    chosen = candidates[torch.randperm(len(candidates), generator=gen)[:count]].sort().values
    images, labels = images.clone(), labels.clone()
    if count:
        images[chosen] = attack_fn(images[chosen])
        labels[chosen] = target
    return images, labels, chosen


def poison_clean_label(images: torch.Tensor, labels: torch.Tensor, attack_fn: Callable[[torch.Tensor], torch.Tensor],
                       target: int, rate: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clean-label poisoning (SIG's setting): trigger ``round(rate * n_target)`` *target-class* samples.

    ``rate`` is a fraction of the target class, not of the whole set; labels are left unchanged. Returns new
    ``(images, labels, poisoned_indices)`` like :func:`poison`.
    """
    candidates = torch.nonzero(labels == target).flatten()
    count = min(int(round(rate * len(candidates))), len(candidates))
    gen = torch.Generator().manual_seed(seed)
    chosen = candidates[torch.randperm(len(candidates), generator=gen)[:count]].sort().values
    images = images.clone()
    if count:
        images[chosen] = attack_fn(images[chosen])
    return images, labels.clone(), chosen


def _random_crop(batch: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``pad`` and crop back to the original size at a random offset per image."""
    if pad <= 0:
        return batch
    h, w = batch.shape[-2:]
    padded = F.pad(batch, (pad, pad, pad, pad))
    offsets = torch.randint(0, 2 * pad + 1, (len(batch), 2), generator=gen).tolist()
    return torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets)])


def build_model(width: int = 16, num_classes: int = 10, seed: int = 0) -> CifarResNet:
    """A freshly initialised CIFAR ResNet-18, seeded without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CifarResNet([2, 2, 2, 2], num_classes=num_classes, width=width)


def train_backdoored(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    attack: str | Callable[[torch.Tensor], torch.Tensor] = "badnets",
    target: int = 0,
    poison_rate: float = 0.1,
    width: int = 16,
    epochs: int = 15,
    batch_size: int = 64,
    lr: float = 0.05,
    weight_decay: float = 5e-4,
    crop_pad: int = 2,
    seed: int = 0,
    mean: Norm = CIFAR10_NORM[0],
    std: Norm = CIFAR10_NORM[1],
    num_classes: int = 10,
    verbose: bool = False,
    clean_label: bool = False,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Train a backdoored ``CifarResNet([2,2,2,2], width=width)`` on ``images``/``labels`` (the train split).

    ``poison_rate`` of the samples (chosen among non-target ones, seeded) get the trigger of ``attack``
    (a name from :mod:`.attacks` or a uint8-batch callable) and the label ``target``. Plain supervised SGD
    (momentum 0.9, weight decay, cosine LR per step) with random-crop augmentation (zero pad ``crop_pad``).
    With ``clean_label`` (SIG as published) the trigger goes on ``poison_rate`` of the *target-class* samples
    instead and no label changes (:func:`poison_clean_label`); ``poison_rate=0`` trains a clean model.
    ``device`` trains elsewhere (e.g. "cuda"; augmentation stays on the CPU, batches are moved).
    Deterministic for a given seed, thread count and CPU; returns the model in eval mode on the CPU.
    About 2-2.5 s per epoch at width 16 on two free cores (~450 img/s forward+backward, fp32).
    """
    attack_fn = get_attack(attack, images.shape[-1], seed) if isinstance(attack, str) else attack
    poisoner = poison_clean_label if clean_label else poison
    x_train, y_train, _ = poisoner(images, labels, attack_fn, target, poison_rate, seed)
    x_train = x_train.contiguous()
    model = build_model(width, num_classes, seed).to(device=device, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    steps_per_epoch = math.ceil(len(x_train) / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1 + math.cos(math.pi * step / (epochs * steps_per_epoch))))
    gen = torch.Generator().manual_seed(seed + 1)
    t0 = time.perf_counter()
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x_train), generator=gen)
        total = 0.0
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            xb = normalize(_random_crop(x_train[idx], crop_pad, gen), mean, std)
            xb = xb.to(device).contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(model(xb), y_train[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if verbose:
            print(f"epoch {epoch + 1:3d}/{epochs}  loss {total / len(x_train):.4f}  "
                  f"{time.perf_counter() - t0:6.1f}s", flush=True)
    model = model.to(device="cpu", memory_format=torch.contiguous_format).eval()
    return model


@torch.inference_mode()
def predict(model: nn.Module, images: torch.Tensor, mean: Norm = CIFAR10_NORM[0], std: Norm = CIFAR10_NORM[1],
            batch_size: int = 256) -> torch.Tensor:
    """Predicted class of each uint8 image (model switched to eval mode, CPU)."""
    model.eval()
    preds = [model(normalize(images[i:i + batch_size], mean, std)).argmax(1)
             for i in range(0, len(images), batch_size)]
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.int64)


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, mean: Norm = CIFAR10_NORM[0],
             std: Norm = CIFAR10_NORM[1]) -> float:
    """Clean accuracy (ACC) on uint8 images."""
    return float((predict(model, images, mean, std) == labels).float().mean())


def attack_success_rate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, target: int,
                        attack_fn: Callable[[torch.Tensor], torch.Tensor], mean: Norm = CIFAR10_NORM[0],
                        std: Norm = CIFAR10_NORM[1]) -> float:
    """ASR: the fraction of non-target images that, with the trigger, are classified as ``target``."""
    keep = labels != target
    if not bool(keep.any()):
        raise ValueError("no non-target images to measure the attack success rate on")
    preds = predict(model, attack_fn(images[keep]), mean, std)
    return float((preds == target).float().mean())


def write_image_folder(root: str | Path, images: torch.Tensor, labels: torch.Tensor | None = None,
                       class_names: Sequence[str] | None = None,
                       numbers: Sequence[int] | None = None) -> list[Path]:
    """Write uint8 NCHW images as PNGs ``00000.png``, ``00001.png``, ... (numbered by position).

    With ``labels`` each image goes into a sub-folder named by its class index (or ``class_names[label]``).
    ``numbers`` overrides the file numbers (e.g. to keep a triggered copy's name equal to its clean one).
    Output is byte-for-byte deterministic: Pillow PNG, fixed compression, no metadata. Returns the paths.
    """
    from PIL import Image

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if numbers is not None and len(numbers) != len(images):
        raise ValueError(f"{len(images)} images but {len(numbers)} file numbers")
    arrays = images.permute(0, 2, 3, 1).contiguous().numpy()
    paths = []
    for i, array in enumerate(arrays):
        folder = root
        if labels is not None:
            label = int(labels[i])
            folder = root / (class_names[label] if class_names is not None else str(label))
            folder.mkdir(exist_ok=True)
        path = folder / f"{int(numbers[i]) if numbers is not None else i:05d}.png"
        image = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
        image.save(path, format="PNG", optimize=False, compress_level=9)
        paths.append(path)
    return paths


def natural_crops(count: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """``count`` random square crops (side 32..128 px) of scikit-learn's sample photos, resized to ``size``.

    The photos are china.jpg and flower.jpg from ``sklearn.datasets.load_sample_images`` (bundled, no
    download): out-of-distribution unlabelled images as in the BCU paper. Returns uint8 ``[count,3,size,size]``.
    """
    from sklearn.datasets import load_sample_images

    photos = [torch.tensor(img).permute(2, 0, 1).contiguous() for img in load_sample_images().images]
    gen = torch.Generator().manual_seed(seed)
    out = torch.empty((count, 3, size, size), dtype=torch.uint8)
    for i in range(count):
        photo = photos[int(torch.randint(len(photos), (1,), generator=gen))]
        h, w = photo.shape[-2:]
        side = int(torch.randint(32, min(128, h, w) + 1, (1,), generator=gen))
        top = int(torch.randint(h - side + 1, (1,), generator=gen))
        left = int(torch.randint(w - side + 1, (1,), generator=gen))
        crop = photo[:, top:top + side, left:left + side].unsqueeze(0).float()
        if side != size:
            crop = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False,
                                 antialias=side > size)
        out[i] = crop[0].clamp(0, 255).round().to(torch.uint8)
    return out
