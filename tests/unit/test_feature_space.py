"""Feature space, live: the head layer found generically, the fixed projection, the sample's fallbacks (no
labels, no triggered folder), the recorded frames, and the job and CLI paths that turn it on."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from bcu_gui.core.data import ImageSet
from bcu_gui.core.devices import plan_compute
from bcu_gui.core.errors import ConfigError
from bcu_gui.core.evaluation import EvalSets
from bcu_gui.core.events import EpochEnd, Failed, FeatureFrame, to_record
from bcu_gui.core.feature_space import (FEATURES_FILE, FeatureSpaceHook, Projection, extract_features,
                                        head_layer_name, load_frames, share_at_target)
from bcu_gui.core.job import CleanseConfig, CleanseJob
from bcu_gui.core.scan.trigger import Trigger
from bcu_gui.core.training import RunState

from test_job import _config, folders  # noqa: F401 (fixture)

CPU = plan_compute("cpu", "fp32")
ZERO, ONE = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)


def _uint8(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _set(images: torch.Tensor, labels: torch.Tensor | None) -> ImageSet:
    return ImageSet(images, labels, None, [], [], root=__import__("pathlib").Path("."))


def _run(teacher: nn.Module, *, clean: ImageSet | None, triggered: ImageSet | None, target: int | None,
         hooks=(), epoch: int = 0):
    """The parts of a Distiller the hook reads."""
    evaluator = SimpleNamespace(sets=EvalSets(clean, triggered, target), mean=ZERO, std=ONE)
    run = SimpleNamespace(teacher=teacher, student=copy.deepcopy(teacher).train(), plan=CPU, evaluator=evaluator,
                          data=_uint8(24, seed=9), state=RunState(epochs=3, steps_per_epoch=1, batch_size=8,
                                                                  epoch=epoch), hooks=list(hooks))
    run.hooks.append(None)  # the hook itself goes here in a real run; replaced below
    return run


def _attach(run, hook: FeatureSpaceHook) -> None:
    run.hooks[-1] = hook


# ---- the head layer, for ours, torchvision's, a wrapper and TorchScript ------------------------------------

def test_the_head_layer_is_the_owner_of_the_last_group_s_last_weight(tiny_resnet):
    import torchvision

    assert head_layer_name(tiny_resnet) == "fc"
    x = _uint8(5)
    feats = extract_features(tiny_resnet, x, ZERO, ONE, CPU, "fc")
    assert feats.shape == (5, tiny_resnet.fc.in_features)
    # the features are exactly what the final layer receives: feeding them to it gives the model's logits
    with torch.no_grad():
        assert torch.allclose(tiny_resnet.fc(feats), tiny_resnet(x.float() / 255), atol=1e-5)
    mobile = torchvision.models.mobilenet_v3_small(num_classes=10).eval()
    assert head_layer_name(mobile) == "classifier.3"
    assert extract_features(mobile, x, ZERO, ONE, CPU, "classifier.3").shape == (5, 1024)

    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = tiny_resnet

        def forward(self, x):
            return self.backbone(x)

    assert head_layer_name(Wrapper()) == "backbone.fc"
    assert tiny_resnet.training is False  # measured in eval mode, left as it was


def test_a_torchscript_model_falls_back_to_its_logits(tiny_resnet):
    from bcu_gui.core.scripted import ScriptedModel

    with pytest.warns(FutureWarning):
        scripted = ScriptedModel(torch.jit.script(tiny_resnet))
    layer = head_layer_name(scripted)
    assert layer == "script.fc"
    assert extract_features(scripted, _uint8(4), ZERO, ONE, CPU, layer).shape == (4, 10)


# ---- the projection and the metric ------------------------------------------------------------------------

def test_the_projection_standardises_with_the_teacher_and_keeps_its_signs():
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(50, 6, generator=gen) * torch.tensor([10.0, 1, 1, 1, 1, 0.1]) + 3
    a, b = Projection.fit(feats), Projection.fit(feats.clone())
    assert torch.equal(a.axes, b.axes)  # the same picture every time
    out = a(feats)
    assert out.shape == (50, 2) and abs(float(out.mean())) < 1e-4
    assert torch.allclose(a.axes.T @ a.axes, torch.eye(2), atol=1e-5)


def test_share_at_target_counts_triggered_rows_nearest_the_target_centroid():
    clean = torch.tensor([[0.0, 0], [0.2, 0], [10, 0], [10.2, 0]])
    classes = torch.tensor([0, 0, 1, 1])
    assert share_at_target(clean, classes, torch.tensor([[1.0, 0], [9.0, 0], [0.5, 1]]), 0) == pytest.approx(2 / 3)
    assert share_at_target(clean, classes, torch.zeros(0, 2), 0) is None
    assert share_at_target(clean, classes, clean, None) is None


# ---- the hook -----------------------------------------------------------------------------------------------

def test_frames_have_the_sample_s_shape_and_a_fixed_projection(tiny_resnet, tmp_path):
    clean = _set(_uint8(30, 1), torch.arange(30) % 3)
    run = _run(tiny_resnet, clean=clean, triggered=_set(_uint8(12, 2), None), target=0)
    hook = FeatureSpaceHook(tmp_path, sample_size=20)
    _attach(run, hook)
    hook.on_start(run)
    log, teacher = hook.take_events()
    assert log.message.startswith("feature space: 20 clean images (coloured by labels) and 12 triggered images "
                                  "from the triggered folder, features from the input of 'fc'; frames in ")
    assert isinstance(teacher, FeatureFrame) and teacher.epoch == 0 and teacher.epochs == 3
    assert teacher.clean.shape == (20, 2) and teacher.triggered.shape == (12, 2)
    assert teacher.classes.tolist() == (torch.arange(30) % 3)[_rows(30, 20)].tolist()  # the labels, not preds
    assert teacher.class_source == "labels" and teacher.triggered_source == "folder" and teacher.target == 0
    axes = hook.projection.axes.clone()
    # a student identical to the teacher is drawn exactly where the teacher was: one projection for all
    hook.on_epoch_end(run)
    (same,) = hook.take_events()
    assert same.epoch == 1 and np.allclose(same.clean, teacher.clean, atol=1e-4)
    assert np.allclose(same.triggered, teacher.triggered, atol=1e-4)
    # a changed student moves; the projection itself never changes
    with torch.no_grad():
        for p in run.student.parameters():
            p.add_(0.5 * torch.randn_like(p))
    run.state.epoch = 1
    hook.on_epoch_end(run)
    (moved,) = hook.take_events()
    assert moved.epoch == 2 and not np.allclose(moved.clean, teacher.clean, atol=1e-2)
    assert torch.equal(hook.projection.axes, axes)
    assert run.student.training  # measured in eval mode, handed back in training mode
    assert len(hook.seconds) == 2


def test_without_labels_the_teacher_s_predictions_colour_the_points(tiny_resnet):
    run = _run(tiny_resnet, clean=None, triggered=None, target=None)
    hook = FeatureSpaceHook(None, sample_size=10)
    _attach(run, hook)
    hook.on_start(run)
    _log, frame = hook.take_events()
    preds = tiny_resnet(run.data[_rows(len(run.data), 10)].float() / 255).argmax(1)
    assert frame.class_source == "teacher" and frame.classes.tolist() == preds.tolist()
    assert frame.clean.shape == (10, 2) and frame.triggered.shape == (0, 2) and frame.triggered_source == ""
    assert frame.at_target is None


def _rows(n: int, k: int) -> torch.Tensor:
    """The rows the hook samples (seed 0): the same draw, to check the colours against the teacher's."""
    gen = torch.Generator().manual_seed(0)
    return torch.arange(n) if n <= k else torch.randperm(n, generator=gen)[:k].sort().values


def test_without_a_triggered_folder_the_scan_s_recovered_trigger_is_stamped(tiny_resnet):
    mask = torch.zeros(1, 32, 32)
    mask[:, -4:, -4:] = 1
    trigger = Trigger("mask", target=2, pattern=torch.ones(3, 32, 32), mask=mask)
    scan = SimpleNamespace(trigger=trigger)  # what ScanHook offers
    clean = _set(_uint8(16, 3), torch.arange(16) % 4)
    run = _run(tiny_resnet, clean=clean, triggered=None, target=None, hooks=[scan])
    hook = FeatureSpaceHook(None, sample_size=16)
    _attach(run, hook)
    hook.on_start(run)
    _log, frame = hook.take_events()
    preds = tiny_resnet(clean.images.float() / 255).argmax(1)
    assert frame.triggered_source == "recovered trigger" and frame.target == 2
    assert frame.triggered.shape == (int((preds != 2).sum()), 2)
    stamped = hook.sample.triggered
    assert (stamped[:, :, -4:, -4:] == 255).all()  # the trigger's patch is on every triggered image


def test_recorded_frames_round_trip_and_a_damaged_file_is_a_clear_error(tiny_resnet, tmp_path):
    run = _run(tiny_resnet, clean=_set(_uint8(12, 1), torch.arange(12) % 2), triggered=_set(_uint8(5, 2), None),
               target=1)
    hook = FeatureSpaceHook(tmp_path, sample_size=12)
    _attach(run, hook)
    hook.on_start(run)
    hook.on_epoch_end(run)
    sent = hook.take_events()
    record = load_frames(tmp_path)
    assert record.epochs == [0, 1] and record.meta["layer"] == "fc" and record.meta["target"] == 1
    for frame, back in zip(sent[1:], record.frames()):
        assert back.epoch == frame.epoch and back.at_target == pytest.approx(frame.at_target)
        assert np.array_equal(back.clean, frame.clean) and np.array_equal(back.triggered, frame.triggered)
        assert np.array_equal(back.classes, frame.classes) and back.class_source == "labels"
    assert load_frames(tmp_path / "nowhere") is None
    whole = (tmp_path / FEATURES_FILE).read_bytes()
    for damaged in (b"not a zip", whole[: len(whole) // 2]):  # garbage, and a file cut short
        (tmp_path / FEATURES_FILE).write_bytes(damaged)
        with pytest.raises(ConfigError, match="cannot read the feature frames"):
            load_frames(tmp_path)
    assert to_record(sent[1])["event"] == "featureframe"  # JSON-ready, for --json consumers


def test_a_resumed_run_keeps_the_frames_of_its_completed_epochs(tiny_resnet, tmp_path):
    run = _run(tiny_resnet, clean=_set(_uint8(12, 1), torch.arange(12) % 2), triggered=None, target=None)
    first = FeatureSpaceHook(tmp_path, sample_size=12)
    _attach(run, first)
    first.on_start(run)
    for e in range(2):
        run.state.epoch = e
        first.on_epoch_end(run)
    run.state.epoch = 1  # the resume point was written after epoch 1; epoch 2's frame is dropped
    again = FeatureSpaceHook(tmp_path, sample_size=12)
    _attach(run, again)
    again.on_start(run)
    assert [f.epoch for f in again.take_events()[1:]] == [0, 1]
    assert load_frames(tmp_path).epochs == [0, 1]


# ---- the job and the CLI ------------------------------------------------------------------------------------

def test_a_job_with_feature_space_yields_a_frame_per_epoch_and_records_them(tiny_checkpoint, folders, tmp_path):  # noqa: F811
    cfg = _config(tiny_checkpoint, folders, tmp_path, feature_space=True, feature_sample=8)
    events = list(CleanseJob(cfg).events())
    assert not [e for e in events if isinstance(e, Failed)]
    kinds = [type(e).__name__ for e in events if isinstance(e, (FeatureFrame, EpochEnd))]
    assert kinds == ["FeatureFrame", "EpochEnd", "FeatureFrame", "EpochEnd", "FeatureFrame"]
    frames = [e for e in events if isinstance(e, FeatureFrame)]
    assert [f.epoch for f in frames] == [0, 1, 2] and frames[0].clean.shape == (8, 2)
    assert frames[0].triggered.shape == (6, 2)  # every triggered image (fewer than the sample size)
    assert load_frames(tmp_path / "run").epochs == [0, 1, 2]
    with pytest.raises(ConfigError, match="at least 3 images"):
        CleanseConfig(checkpoint="x", unlabeled="y", feature_sample=2).validate()


def test_cli_cleanse_feature_space_writes_the_frames(tiny_checkpoint, folders, tmp_path, capsys):  # noqa: F811
    from bcu_gui.cli import main

    out = tmp_path / "cli-run"
    code = main(["cleanse", str(tiny_checkpoint), "--unlabeled", str(folders["unlabeled"]), "--epochs", "1",
                 "--batch-size", "8", "--device", "cpu", "--precision", "fp32", "--out", str(out),
                 "--feature-space", "--feature-sample", "5"])
    assert code == 0, capsys.readouterr().err
    record = load_frames(out)
    assert record.epochs == [0, 1] and record.clean[0].shape == (5, 2)
    assert record.meta["class_source"] == "teacher"  # no clean folder given: the teacher's predictions
    code = main(["cleanse", "--resume", str(out), "--feature-space"])
    assert code == 2 and "--feature-space cannot change" in capsys.readouterr().err
