"""Build the student: the teacher with a seeded, per-element share of each group's weights re-initialised.

For each parameter of group l, an independent Bernoulli(p_l) mask picks the elements that take the value of a
freshly initialised model of the same architecture; the rest, and every normalisation layer, keep the
teacher's values. Same teacher, ratios and seed give the same student, bit for bit.
"""

from __future__ import annotations

import copy
import math
from typing import Mapping

import torch
from torch import nn

from .groups import LayerGroup, is_norm
from .summary import ReinitRecord


DEFAULT_INIT_RULE = ("each layer's own reset_parameters() where it has one (PyTorch's per-layer defaults); bare "
                     "parameters, as in TorchScript, Kaiming-uniform with bound 1/sqrt(fan_in) for weights and "
                     "zeros for 1-D ones; normalisation layers keep the teacher's values")


def default_init(model: nn.Module, seed: int) -> nn.Module:
    """A fresh copy of a model whose class we cannot rebuild (loaded whole): every non-norm layer reset.

    Layers with ``reset_parameters`` use their own rule; bare parameters (TorchScript) get PyTorch's
    default Kaiming-uniform rule for weights and zeros for 1-D parameters.
    """
    fresh = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in fresh.modules():
            if is_norm(module):
                continue
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
                continue
            for p in module.parameters(recurse=False):
                with torch.no_grad():
                    if p.dim() > 1:
                        # kaiming_uniform_(a=sqrt(5)), nn.Linear's and nn.Conv's default: bound = sqrt(1 / fan_in)
                        bound = 1.0 / math.sqrt(max(1, p[0].numel()))
                        p.copy_(torch.empty_like(p).uniform_(-bound, bound, generator=gen))
                    else:
                        p.zero_()
    return fresh


def build_student(teacher: nn.Module, fresh: nn.Module, groups: list[LayerGroup],
                  ratios: Mapping[str, float], seed: int) -> tuple[nn.Module, ReinitRecord]:
    """Mix teacher and fresh weights element-wise by seeded Bernoulli masks, group by group."""
    student = copy.deepcopy(teacher)
    student_params = dict(student.named_parameters())
    fresh_params = dict(fresh.named_parameters())
    gen = torch.Generator().manual_seed(seed)
    counts: dict[str, int] = {}
    with torch.no_grad():
        for group in groups:
            p = float(ratios.get(group.name, 0.0))
            count = 0
            for name in group.params:
                target, source = student_params[name], fresh_params[name].to(student_params[name].device)
                if p <= 0.0:
                    continue
                if p >= 1.0:
                    target.copy_(source)
                    count += target.numel()
                    continue
                mask = torch.rand(target.shape, generator=gen) < p
                target.copy_(torch.where(mask.to(target.device), source, target))
                count += int(mask.sum())
            counts[group.name] = count
    report = ReinitRecord({g.name: float(ratios.get(g.name, 0.0)) for g in groups}, counts,
                          {g.name: g.weight_count for g in groups}, seed)
    return student, report
