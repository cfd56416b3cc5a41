"""Every checkpoint form a user really has, written the way its project writes it (tests/unit/forms_helpers):
architecture, classes, width, input size and normalisation as read, a 1-epoch cleanse, and the cleansed model
saved back in the same form and loading back the same way."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bcu_gui.core.bundled import bundled_eval, describe_bundled
from bcu_gui.core.checkpoints import read_checkpoint
from bcu_gui.core.events import EpochEnd, Failed, Finished, Log
from bcu_gui.core.groups import layer_groups
from bcu_gui.core.job import CleanseConfig, CleanseJob
from bcu_gui.core.models import load_model
from bcu_gui.core.nets import PreActResNet
from bcu_gui.core.normalization import PRESETS
from bcu_gui.core.scripted import ScriptedModel

sys.path.insert(0, str(Path(__file__).parent))
import forms_helpers as fh  # noqa: E402


@pytest.fixture
def unlabeled(tmp_path) -> Path:
    folder = tmp_path / "unlabeled"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def cleanse_once(path: Path, unlabeled: Path, out: Path, trust: bool = False) -> list:
    """One tiny epoch of the real job; returns its events (asserting it finished)."""
    cfg = CleanseConfig(checkpoint=str(path), unlabeled=str(unlabeled), epochs=1, batch_size=4, preset="paper",
                        trust_checkpoint=trust, device="cpu", precision="fp32", out=str(out))
    events = list(CleanseJob(cfg).events())
    failed = [e for e in events if isinstance(e, Failed)]
    assert not failed, failed[0].message
    assert isinstance(events[-1], Finished)
    return events


def assert_same_outputs(a: torch.nn.Module, b: torch.nn.Module, size: int = 32) -> None:
    x = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(a.eval()(x), b.eval()(x), atol=1e-5, rtol=1e-4)


def assert_round_trip(original: Path, run: Path, trust: bool = False) -> None:
    """original_form/<name> is read exactly as the original was and holds the cleansed weights."""
    back = run / "original_form" / original.name
    a, b = read_checkpoint(original, trust=trust), read_checkpoint(back, trust=trust)
    assert (b.format, b.weights_path, b.prefix, b.metadata) == (a.format, a.weights_path, a.prefix, a.metadata)
    if isinstance(a.top, Mapping):
        assert list(b.top) == list(a.top)  # the wrapper's other entries are all still there, in order
        inner_a, inner_b = a.top, b.top
        for key in a.weights_path:
            inner_a, inner_b = inner_a[key], inner_b[key]
        assert list(inner_b) == list(inner_a)  # same key names, prefix and order
    ma, mb = load_model(original, trust=trust), load_model(back, trust=trust)
    assert (mb.arch_name, mb.num_classes, mb.width, mb.input_size, mb.normalization, mb.source_format) == (
        ma.arch_name, ma.num_classes, ma.width, ma.input_size, ma.normalization, ma.source_format)
    student = torch.load(run / "cleansed.pt", weights_only=True)
    got = mb.module.state_dict()
    if isinstance(mb.module, ScriptedModel):
        student = {f"script.{k}" if not k.startswith("script.") else k: v for k, v in student.items()}
    for key, value in student.items():
        assert torch.equal(got[key].float(), value.float()), key
    assert not all(torch.equal(ma.module.state_dict()[k].float(), v.float()) for k, v in student.items())


# ----------------------------------------------------------------------------------------- the forms


def test_kuangliu_pytorch_cifar_checkpoint(tmp_path, unlabeled):
    torch.manual_seed(0)
    net = fh.KuangliuResNet18(width=8).eval()
    path = tmp_path / "ckpt.pth"
    fh.write_kuangliu(path, net)
    model = load_model(path)
    assert (model.arch_name, model.num_classes, model.width, model.input_size) == ("resnet18_cifar", 10, 8, 32)
    assert model.style == {"head": "linear"} and model.normalization == PRESETS["cifar10"]
    assert "PyTorch's per-layer defaults" in model.init_rule  # kuangliu sets no initialisation of its own
    assert_same_outputs(model.module, net)
    cleanse_once(path, unlabeled, tmp_path / "run")
    assert_round_trip(path, tmp_path / "run")
    saved = torch.load(tmp_path / "run" / "original_form" / path.name, weights_only=True)
    assert saved["acc"] == 93.2 and saved["epoch"] == 7 and next(iter(saved["net"])).startswith("module.")
    fh.KuangliuResNet18(width=8).load_state_dict({k[7:]: v for k, v in saved["net"].items()})  # drops back in


def test_lightning_cifar_tutorial_checkpoint(tmp_path, unlabeled):
    pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = fh.lightning_tutorial_resnet18().eval()
    path = tmp_path / "epoch=29-step=5880.ckpt"
    fh.write_lightning_ckpt(path, net)
    model = load_model(path)
    assert (model.arch_name, model.num_classes, model.width, model.input_size) == ("resnet18_cifar", 10, 64, 32)
    assert model.style == {"shortcut": "downsample"} and "Kaiming-normal" in model.init_rule
    assert_same_outputs(model.module, net)
    cleanse_once(path, unlabeled, tmp_path / "run")
    assert_round_trip(path, tmp_path / "run")
    saved = torch.load(tmp_path / "run" / "original_form" / path.name, weights_only=True)
    assert saved["hyper_parameters"] == {"lr": 0.05} and saved["optimizer_states"][0]["param_groups"]
    fresh = fh.lightning_tutorial_resnet18()
    fresh.load_state_dict({k[len("model."):]: v for k, v in saved["state_dict"].items()})  # drops back in


def test_bcu_authors_resnet18comp_state_dict(tmp_path, unlabeled):
    torch.manual_seed(0)
    net = fh.BcuResNet18Comp(width=8).eval()
    path = tmp_path / "resnet18comp.pt"
    torch.save(net.state_dict(), path)
    model = load_model(path)
    assert (model.arch_name, model.num_classes, model.width, model.style) == (
        "resnet18_cifar", 10, 8, {"shortcut": "downsample"})
    assert (model.input_size, model.normalization) == (32, PRESETS["cifar10"])
    assert "Kaiming-normal" in model.init_rule
    assert_same_outputs(model.module, net)
    cleanse_once(path, unlabeled, tmp_path / "run")
    assert_round_trip(path, tmp_path / "run")


def test_in_house_shortcut_spelling_keeps_pytorch_default_init(tiny_checkpoint):
    assert "PyTorch's per-layer defaults" in load_model(tiny_checkpoint).init_rule


def test_backdoorbench_v2_attack_result(tmp_path, unlabeled):
    torch.manual_seed(0)
    net = PreActResNet([2, 2, 2, 2], num_classes=10, width=8).eval()
    path = tmp_path / "attack_result.pt"
    fh.write_backdoorbench(path, "preactresnet18", net, "cifar10", 10)
    raw = read_checkpoint(path)  # PIL images in bd_test: still no trust needed
    assert (raw.format, raw.trusted_load) == ("backdoorbench", False)
    model = load_model(path)
    assert (model.arch_name, model.num_classes, model.width, model.input_size) == ("preactresnet18", 10, 8, 32)
    assert model.normalization.std == (0.247, 0.243, 0.261)  # BackdoorBench's cifar10 statistics
    assert "cifar10" in model.sources["normalisation"] and model.sources["input size"] == "the checkpoint's metadata"
    bundle = bundled_eval(model.raw, model.input_size, model.num_classes)
    assert bundle.target == 0 and len(bundle.triggered) == 11  # the sample already in class 0 is left out
    assert describe_bundled(model.raw) == "12 poisoned test images (bd_test), target class 0"
    events = cleanse_once(path, unlabeled, tmp_path / "run")
    assert any(isinstance(e, Log) and "bd_test" in e.message for e in events)
    epoch = next(e for e in events if isinstance(e, EpochEnd))
    assert epoch.asr is not None
    assert_round_trip(path, tmp_path / "run")
    back = torch.load(tmp_path / "run" / "original_form" / path.name, weights_only=False)  # our own file
    image, bd_label, original = back["bd_test"]["bd_data_container"]["data_dict"][3]
    assert isinstance(image, Image.Image) and image.size == (32, 32) and (bd_label, original) == (0, 4)
    assert back["clean_data"] == "cifar10" and back["img_size"] == [32, 32, 3]


def test_backdoorbench_torchvision_resnet18_on_gtsrb(tmp_path):
    pytest.importorskip("torchvision")
    from torchvision.models import resnet18

    path = tmp_path / "attack_result.pt"
    fh.write_backdoorbench(path, "resnet18", resnet18(num_classes=43), "gtsrb", 43, bd_test={})
    model = load_model(path)
    assert (model.arch_name, model.num_classes, model.input_size) == ("resnet18", 43, 32)
    assert model.normalization == PRESETS["none"]  # BackdoorBench does not normalise GTSRB


def test_bcu_authors_imagenet10_attack_result_gets_imagenet_statistics(tmp_path):
    """The BCU authors' ImageNet-10 files (resnet18comp, clean_data 'imagenet10') were read with CIFAR-10
    statistics; their code gives every name containing 'imagenet' ImageNet's (issue 22.9)."""
    torch.manual_seed(0)
    net = fh.BcuResNet18Comp(width=8).eval()
    path = tmp_path / "attack_result.pt"
    fh.write_backdoorbench(path, "resnet18comp", net, "imagenet10", 10, img_size=(224, 224, 3), bd_test={})
    model = load_model(path)
    assert model.normalization == PRESETS["imagenet"]
    assert "imagenet10" in model.sources["normalisation"] and "containing 'imagenet'" in model.sources["normalisation"]


@pytest.mark.parametrize("name, preset, size", [("ImageNet10", "imagenet", 224), ("imagenet-subset", "imagenet", 224),
                                                ("tiny_imagenet200", "tiny-imagenet", 64), ("CIFAR-10", None, 32),
                                                ("mnist", "mnist", 28)])
def test_every_dataset_name_the_two_producers_write_is_mapped(name, preset, size):
    from bcu_gui.core.normalization import dataset_rule

    norm, got_size, rule = dataset_rule(name)
    assert got_size == size and rule
    if preset is not None:
        assert norm.name == preset or norm == PRESETS.get(preset)
    assert dataset_rule("svhn") is None


def test_dataset_named_in_lightning_hyper_parameters_sets_normalisation(tmp_path):
    net = fh.KuangliuResNet18(num_classes=100, width=8)
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": net.state_dict(), "hyper_parameters": {"dataset": "CIFAR100"}}, path)
    model = load_model(path)
    assert model.num_classes == 100 and model.normalization.name == "cifar100"
    assert "dataset it names" in model.sources["normalisation"]


def test_safetensors_round_trip_keeps_prefix_and_header(tmp_path, unlabeled):
    from safetensors.torch import save_file

    net = fh.KuangliuResNet18(width=8)
    path = tmp_path / "model.safetensors"
    save_file({f"module.{k}": v.contiguous() for k, v in net.state_dict().items()}, str(path),
              metadata={"dataset": "cifar10", "note": "kept"})
    cleanse_once(path, unlabeled, tmp_path / "run")
    assert_round_trip(path, tmp_path / "run")
    assert read_checkpoint(tmp_path / "run" / "original_form" / path.name).header["note"] == "kept"


def test_traced_torchscript_of_a_known_network_is_rebuilt_and_given_back_as_torchscript(tmp_path, unlabeled):
    net = fh.KuangliuResNet18(width=8).eval()
    path = tmp_path / "traced.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(net, torch.rand(1, 3, 32, 32)), str(path))
    model = load_model(path, trust=True)
    assert (model.source_format, model.arch_name, model.style) == ("torchscript", "resnet18_cifar",
                                                                   {"head": "linear"})
    cleanse_once(path, unlabeled, tmp_path / "run", trust=True)
    assert_round_trip(path, tmp_path / "run", trust=True)


def test_scripted_network_of_no_known_architecture_cleanses(tmp_path, unlabeled):
    """Before: 'RuntimeError: you can only change requires_grad flags of leaf variables'."""
    net = fh.SmallNet().eval()
    path = tmp_path / "scripted.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(net), str(path))
    model = load_model(path, trust=True)
    assert isinstance(model.module, ScriptedModel) and model.arch is None and model.num_classes == 10
    assert "reset_parameters" in model.init_rule
    assert [g.name for g in layer_groups(model.module)] == [g.name for g in layer_groups(net)]
    cleanse_once(path, unlabeled, tmp_path / "run", trust=True)
    assert_round_trip(path, tmp_path / "run", trust=True)


def test_scripted_mobilenet_keeps_its_eager_layer_groups():
    pytest.importorskip("torchvision")
    from torchvision.models import mobilenet_v3_large

    eager = mobilenet_v3_large(num_classes=10).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = ScriptedModel(torch.jit.script(eager))
    want = [g.name for g in layer_groups(eager)]
    assert len(want) == 7 and [g.name for g in layer_groups(scripted)] == want


def test_pickled_whole_module_is_given_back_as_the_same_object_kind(tmp_path, unlabeled):
    from checkpoint_helpers import WrappedClassifier

    torch.manual_seed(0)
    path = tmp_path / "whole.pt"
    torch.save(WrappedClassifier(width=8), path)
    cleanse_once(path, unlabeled, tmp_path / "run", trust=True)
    back = torch.load(tmp_path / "run" / "original_form" / path.name, weights_only=False)
    assert type(back).__name__ == "WrappedClassifier"
    student = torch.load(tmp_path / "run" / "cleansed.pt", weights_only=True)
    assert all(torch.equal(back.state_dict()[k], v) for k, v in student.items())


# ------------------------------------------------------------------------------------ initialisation


def test_fresh_cifar_resnet_uses_kaiming_normal_fan_out(tmp_path):
    net = fh.BcuResNet18Comp(width=16)
    path = tmp_path / "m.pt"
    torch.save(net.state_dict(), path)
    fresh = load_model(path).fresh(seed=0)
    for name in ("conv1.weight", "layer4.1.conv2.weight"):
        w = fresh.state_dict()[name]
        fan_out = w.shape[0] * w.shape[2] * w.shape[3]
        assert abs(float(w.std()) / (2.0 / fan_out) ** 0.5 - 1) < 0.15, name
    assert torch.equal(fresh.bn1.weight, torch.ones_like(fresh.bn1.weight))
