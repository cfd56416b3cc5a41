"""Make a (trusted) TorchScript model cleansable.

A ScriptModule cannot be cleansed as it is: deep-copying one gives parameters that are not leaves of the
autograd graph, so neither freezing the teacher nor optimising the student works. Two ways out, in order:

1. If its weights are those of a known architecture and our eager model of it computes the same outputs,
   use that eager model: it trains, groups and initialises like any state_dict of that architecture.
2. Otherwise wrap it in :class:`ScriptedModel`, whose copies re-create every parameter as a leaf and whose
   layer groups follow the submodule tree the ScriptModule keeps.

Both run the file's code, so they are only reached once the user has trusted the file.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .archs import Inference, infer_architecture
from .errors import BcuError


def leaf_copy(module: nn.Module) -> nn.Module:
    """A deep copy whose parameters are fresh leaf tensors (ScriptModule copies otherwise are not)."""
    clone = copy.deepcopy(module)
    for sub in clone.modules():
        for name, p in list(sub.named_parameters(recurse=False)):
            if not p.is_leaf:
                setattr(sub, name, nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad))
    return clone


class ScriptedModel(nn.Module):
    """A trusted TorchScript model as an ordinary trainable module.

    The ScriptModule sits in ``script``, so layer groups look through this wrapper to its own submodules, and
    ``copy.deepcopy`` (which the job uses for teacher and student) yields leaf parameters.
    """

    def __init__(self, script: nn.Module) -> None:
        super().__init__()
        self.script = script

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.script(x)

    def __deepcopy__(self, memo: dict) -> "ScriptedModel":
        twin = ScriptedModel(leaf_copy(self.script))
        twin.train(self.training)
        return twin


def eager_equivalent(script: nn.Module, size: int) -> tuple[nn.Module, Inference] | None:
    """Our eager model of the architecture the ScriptModule's weights match, if it computes the same logits.

    The comparison runs both on the same random images (the file is trusted by now); any difference beyond
    float noise (a forward the file changed) keeps the ScriptModule instead.
    """
    state = {k: v.detach() for k, v in script.state_dict().items()}
    try:
        found = infer_architecture(state)
    except BcuError:
        return None
    eager = found.spec.build(found.num_classes, found.width, found.style)
    result = eager.load_state_dict(state, strict=False)
    if [k for k in result.missing_keys if not k.endswith("num_batches_tracked")] or result.unexpected_keys:
        return None
    eager.eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, size, size, generator=gen)
    try:
        with torch.inference_mode():
            want, got = script(x), eager(x)
    except Exception:
        return None
    if not isinstance(want, torch.Tensor) or want.shape != got.shape:
        return None
    if not torch.allclose(want, got, rtol=1e-4, atol=1e-4 * max(1.0, float(want.abs().max()))):
        return None
    return eager, found
