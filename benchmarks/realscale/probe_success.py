"""Diagnostic: how often a universal targeted L_inf perturbation sends a cached teacher's images to each class.

    python benchmarks/realscale/probe_success.py badnets-s0-t3 0.2      # teacher name, budget (0..1 pixels)

Runs the unlearning term's own perturbation search (bcu_gui/core/unlearning.py, focused form) on the teacher
alone, no training: 150 ascent steps over batches of 250 of the first 1,000 defense images, and prints each
class's moving success rate. It says whether, at a budget, the backdoor's class stands out on the teacher.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bcu_gui.core.unlearning import AdversarialConsistency, AdversarialSettings
from bcu_gui.demo.digits import CIFAR10_NORM, build_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fmnist  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    name, eps = argv[0], float(argv[1])
    model = build_model(16, 10)
    model.load_state_dict(torch.load(fmnist.CACHE / "teachers" / f"{name}.pt", weights_only=True))
    model.eval().requires_grad_(False)
    files = sorted((fmnist.CACHE / "defense-2500").glob("*.png"))[:1000]
    x = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1)
                     for f in files]).float() / 255
    mean, std = (torch.tensor(v)[:, None, None] for v in CIFAR10_NORM)  # the teachers' normalisation
    adv = AdversarialConsistency(AdversarialSettings(eps=eps, mode="focused"), 10, tuple(x.shape[1:]),
                                 torch.device("cpu"), 0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(150):
        px = x[torch.randint(0, len(x), (250,), generator=gen)]
        with torch.no_grad():
            teacher = model((px - mean) / std)
        moved, d, which = adv.perturb(px)
        logits = model((moved - mean) / std)
        adv.class_weights(logits, teacher, which)
        adv.ascend(adv.targeted_gradient(logits, d, which))
    print(name, eps, "success per class", [round(float(v), 2) for v in adv.success])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
