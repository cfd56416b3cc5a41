"""The demo's feature space: the triggered cluster leaves the target class as the backdoor is removed.

The teacher (epoch 0) sends the triggered digits to class 0, and in its penultimate layer they sit nearest the
class-0 centre; after a short cleansing run (the demo's strong preset, 10 epochs) they sit nearest other
classes' centres, both in the model's own feature space (``at_target``) and in the drawn 2-D frame, even
while the student's ASR has not yet reached zero.
"""

from __future__ import annotations

import numpy as np
import pytest

from bcu_gui.core.events import Failed, Finished
from bcu_gui.core.feature_space import load_frames
from bcu_gui.core.job import CleanseJob
from bcu_gui.demo.config import DEMO_TARGET_CLASS, demo_config

pytestmark = pytest.mark.slow


def _in_2d(clean: np.ndarray, classes: np.ndarray, triggered: np.ndarray, target: int) -> tuple[float, float]:
    """(share of triggered points nearest the target's centre, their mean distance to it) in a 2-D frame."""
    present = np.unique(classes)
    centres = np.stack([clean[classes == k].mean(0) for k in present])
    nearest = present[np.linalg.norm(triggered[:, None] - centres[None], axis=2).argmin(1)]
    target_centre = centres[list(present).index(target)]
    return float((nearest == target).mean()), float(np.linalg.norm(triggered - target_centre, axis=1).mean())


def test_the_triggered_cluster_leaves_the_target_class_during_the_demo(tmp_path):
    cfg = demo_config(epochs=10, device="cpu", out=str(tmp_path / "run"), feature_space=True)
    events = list(CleanseJob(cfg).events())
    assert not [e for e in events if isinstance(e, Failed)]
    summary = next(e for e in events if isinstance(e, Finished)).summary
    record = load_frames(tmp_path / "run")
    assert record.epochs == list(range(11))
    first, last = record.frame(0), record.frame(10)
    near0, dist0 = _in_2d(first.clean, first.classes, first.triggered, DEMO_TARGET_CLASS)
    near1, dist1 = _in_2d(last.clean, last.classes, last.triggered, DEMO_TARGET_CLASS)
    print(f"teacher: ASR {summary.teacher.asr:.3f}, triggered nearest class 0: {first.at_target:.2f} (features), "
          f"{near0:.2f} (2-D), mean 2-D distance {dist0:.2f}; epoch 10: ASR {summary.cleansed.asr:.3f}, "
          f"{last.at_target:.2f}, {near1:.2f}, {dist1:.2f}")
    # measured (one run, 2 CPU cores): 1.00 / 1.00 at the teacher, 0.04 / 0.01 after epoch 10 (ASR still 0.27);
    # the 2-D distance grew too (6.8 -> 7.4), but by a margin too small to assert across seeds
    assert first.at_target >= 0.9 and near0 >= 0.9
    assert last.at_target <= 0.2 and near1 <= 0.2
