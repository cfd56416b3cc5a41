"""Turn a recovered trigger into a triggered evaluation set: stamped held-out images written as PNGs.

A defender has no triggered images; once a scan has recovered a trigger, stamping it on images the trigger was
not fitted on gives a folder the ordinary ASR measurement reads (flat folder + target class), so the real ASR
curve, the keep-best rule and ``bcu evaluate`` all work with it. Images the model already sends to the target
are left out, as in the proxy ASR. Each PNG is written atomically into a folder that must be new or empty.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..atomic import write_with
from ..errors import ConfigError
from ..normalization import Normalization
from .trigger import Trigger, stamp


@torch.inference_mode()
def write_triggered_set(folder: str | Path, images: torch.Tensor, trigger: Trigger, *,
                        model: nn.Module | None = None, normalization: Normalization | None = None) -> list[Path]:
    """Stamp ``trigger`` on uint8 NCHW ``images`` and write them to ``folder`` (created; must hold nothing).

    With ``model`` (and its ``normalization``), images it already sends to the trigger's class are skipped.
    Returns the files written.
    """
    from PIL import Image

    from ..data import to_model_input

    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError(f"{folder} already exists and is not an empty folder; nothing was written")
    if model is not None:
        if normalization is None:
            raise ValueError("a model needs its normalization to skip target-class images")
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        mean = torch.tensor(normalization.mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(normalization.std, device=device).view(1, -1, 1, 1)
        preds = model.eval()(to_model_input(images.to(device), mean, std)).argmax(1).cpu()
        images = images[preds != trigger.target]
    if len(images) == 0:
        raise ConfigError("every held-out image is already of the target class; no triggered set to write")
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i, img in enumerate(stamp(images.cpu(), trigger)):
        array = img.permute(1, 2, 0).numpy()
        target = folder / f"stamped_{i:04d}.png"
        write_with(target, lambda tmp, a=array: Image.fromarray(a).save(tmp, format="PNG"))
        written.append(target)
    return written
