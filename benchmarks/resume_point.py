"""Seconds one resume point (resume.pt, written at every epoch end) costs for a full-size CIFAR ResNet-18.

Student and SGD momentum, written atomically with fsync into a temporary folder. Run:
    PYTHONPATH=. python benchmarks/resume_point.py
"""

from __future__ import annotations

import tempfile
import time
import types

import torch

from bcu_gui.core.nets import CifarResNet
from bcu_gui.core import resume
from bcu_gui.core.training import RunState

torch.set_num_threads(1)
m = CifarResNet([2, 2, 2, 2], num_classes=10, width=64)
opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
m(torch.randn(2, 3, 32, 32)).sum().backward(); opt.step()
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 100)
scaler = torch.amp.GradScaler("cpu", enabled=False)
g = torch.Generator().manual_seed(0)
d = types.SimpleNamespace(state=RunState(epochs=100, steps_per_epoch=10, batch_size=256), hooks=[],
    tensors=lambda: {"student": m.state_dict(), "optimizer": opt.state_dict(), "schedule": sched.state_dict(),
                     "scaler": scaler.state_dict(), "order_rng": g.get_state(), "aug_rng": g.get_state(), "best_weights": None})
with tempfile.TemporaryDirectory() as tmp:
    times = []
    for _ in range(3):
        t = time.perf_counter(); p = resume.save_point(tmp, d); times.append(time.perf_counter() - t)
    print(f"params {sum(p.numel() for p in m.parameters()):,}; resume.pt {p.stat().st_size/1e6:.1f} MB; "
          f"save_point {min(times):.2f}-{max(times):.2f} s (3 tries)")
