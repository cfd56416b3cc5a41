"""Step losses read asynchronously: every loss delivered in order, divergence still caught, no host read per step."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from bcu_gui.core.events import Failed, Step
from bcu_gui.core.job import CleanseConfig, CleanseJob
from bcu_gui.core.lossreader import LossReader, first_non_finite
from bcu_gui.core.training import Distiller, RunHook


def test_every_loss_is_delivered_once_in_order_whatever_the_read_points():
    reader = LossReader(torch.device("cpu"))
    rng = np.random.default_rng(0)
    delivered, steps = [], 0
    for epoch in range(4):  # 4 epochs x 100 steps = 400 losses, read at random points
        reader.begin(100, base_step=steps)
        for i in range(100):
            steps += 1
            reader.put(torch.tensor(float(steps)))
            if rng.random() < 0.2:
                got = reader.collect()
                delivered += got
                if got:
                    assert reader.delivered_step == got[-1]  # the step of the last loss handed out
        delivered += reader.collect(wait=True)
        assert reader.pending == 0 and reader.delivered_step == steps
    assert delivered == [float(i) for i in range(1, 401)]


def test_more_steps_than_announced_grow_the_buffer_without_losing_any():
    reader = LossReader(torch.device("cpu"))
    reader.begin(2, base_step=10)
    first = [reader.put(torch.tensor(float(i))) or i for i in range(3)]
    assert reader.collect() == [0.0, 1.0, 2.0]
    for i in range(3, 9):
        reader.put(torch.tensor(float(i)))
    assert reader.collect(wait=True) == [float(i) for i in range(3, 9)] and first == [0, 1, 2]
    assert reader.delivered_step == 19


def test_first_non_finite():
    assert first_non_finite([0.1, 0.2]) is None and first_non_finite([]) is None
    assert first_non_finite([0.1, math.nan, math.inf]) == 1 and first_non_finite([-math.inf]) == 0


@pytest.fixture
def unlabeled(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "unl"
    folder.mkdir()
    for i in range(24):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def _config(ckpt, folder, tmp_path, **kw):
    return CleanseConfig(checkpoint=str(ckpt), unlabeled=str(folder), epochs=kw.pop("epochs", 2), batch_size=4,
                         device="cpu", precision="fp32", out=str(tmp_path / "run"), **kw)


class PoisonAt(RunHook):
    """Makes a weight NaN after global step ``step`` (the next step's loss is NaN); then, after step ``then_at``,
    calls ``then()`` (a cancel or a pause of the job, as a person might between two reads)."""

    def __init__(self, step, then_at=None, then=None):
        self.step, self.then_at, self.then = step, then_at, then

    def on_step_end(self, run):
        if run.state.step == self.step:
            with torch.no_grad():
                next(run.student.parameters()).fill_(float("nan"))
        if run.state.step == self.then_at:
            self.then()


def test_a_nan_loss_between_read_points_is_caught_by_the_epochs_end_with_its_own_step(tiny_checkpoint, unlabeled,
                                                                                      tmp_path):
    # 6 steps an epoch, one read an hour: the reads fall on step 1 and each epoch's last step. A weight turns NaN
    # after step 8, so step 9's loss is the first NaN one, read only at step 12 (the end of the second epoch).
    events = list(CleanseJob(_config(tiny_checkpoint, unlabeled, tmp_path, epochs=3), hooks=[PoisonAt(8)],
                             step_rate=1 / 3600).events())
    failed = events[-1]
    assert isinstance(failed, Failed) and failed.kind == "diverged"
    assert "the loss became nan at step 9" in failed.message and "end of epoch 1" in failed.message
    steps = [e for e in events if isinstance(e, Step)]
    losses = [x for s in steps for x in s.losses]
    assert len(losses) == 8 and all(math.isfinite(x) for x in losses)  # steps 1-8, never a NaN on the plot
    assert steps[-1].step == 8 and steps[-1].step - len(steps[-1].losses) + 1 == 7


@pytest.mark.parametrize("control", ["cancel", "pause"])
def test_a_nan_loss_not_yet_read_when_the_run_stops_or_pauses_is_caught_then(tiny_checkpoint, unlabeled, tmp_path,
                                                                             control):
    # one read an hour: step 1 is read, step 2's loss is NaN, and after step 3 the run is stopped (or paused),
    # long before the epoch's end (step 6): the flush before the stop / pause reads steps 2-3 and fails
    job = CleanseJob(_config(tiny_checkpoint, unlabeled, tmp_path), step_rate=1 / 3600)
    job._hooks = (PoisonAt(1, then_at=3, then=getattr(job, control)),)
    events = list(job.events())
    assert isinstance(events[-1], Failed) and events[-1].kind == "diverged", events[-1]
    assert "the loss became nan at step 2" in events[-1].message
    assert [e.step for e in events if isinstance(e, Step)] == [1]
    assert not (tmp_path / "run" / "resume.pt").exists()


def test_a_step_never_reads_from_the_device(tiny_checkpoint, unlabeled, tmp_path, monkeypatch):
    """The training step must not wait for the device: no .item(), bool(tensor), float(tensor) or .tolist()."""
    original = Distiller.step
    calls = []

    def forbidden(name):
        def read(self, *args, **kwargs):
            raise AssertionError(f"Tensor.{name} called inside the training step")
        return read

    def guarded_step(self):
        with monkeypatch.context() as m:
            for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
                m.setattr(torch.Tensor, name, forbidden(name))
            calls.append(1)
            return original(self)

    monkeypatch.setattr(Distiller, "step", guarded_step)
    events = list(CleanseJob(_config(tiny_checkpoint, unlabeled, tmp_path), step_rate=0).events())
    assert not isinstance(events[-1], Failed), events[-1]
    assert len(calls) == 12
    assert [len(e.losses) for e in events if isinstance(e, Step)] == [1] * 12  # still every loss, at once on CPU


def test_the_guard_above_can_fail(monkeypatch):
    """The monkeypatched reads really are what a step would call."""
    monkeypatch.setattr(torch.Tensor, "item", lambda self: (_ for _ in ()).throw(AssertionError("read")))
    with pytest.raises(AssertionError, match="read"):
        torch.tensor(1.0).item()
