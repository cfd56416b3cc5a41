"""From a checkpoint file to a LoadedModel: architecture, input size and normalisation resolution."""

import json

import pytest
import torch

from bcu_gui.core.devices import plan_compute, resolve_device
from bcu_gui.core.errors import ArchitectureError, ConfigError
from bcu_gui.core.models import load_model
from bcu_gui.core.nets import PreActResNet
from bcu_gui.core.normalization import PRESETS, parse_normalization


def test_bare_state_dict_gets_the_architecture_defaults(tiny_checkpoint):
    model = load_model(tiny_checkpoint)
    assert (model.arch_name, model.num_classes, model.width, model.input_size) == ("resnet18_cifar", 10, 8, 32)
    assert model.normalization == PRESETS["cifar10"]
    assert "inferred" in model.notes[0]
    fresh = model.fresh(seed=3)
    assert type(fresh) is type(model.module)
    assert not torch.equal(fresh.conv1.weight, model.module.conv1.weight)
    assert torch.equal(fresh.conv1.weight, model.fresh(seed=3).conv1.weight)


def test_sidecar_metadata_wins_and_user_overrides_win_over_it(tiny_checkpoint):
    tiny_checkpoint.with_suffix(".json").write_text(json.dumps({"input_size": 48, "normalize": "imagenet"}))
    model = load_model(tiny_checkpoint)
    assert model.input_size == 48 and model.normalization.name == "imagenet"
    model = load_model(tiny_checkpoint, input_size=64, normalize="0.5,0.25")
    assert model.input_size == 64 and model.normalization.mean == (0.5, 0.5, 0.5)


def test_trusted_torchscript_of_a_known_architecture_is_rebuilt_eager(tmp_path, tiny_resnet):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(tiny_resnet), path)
    model = load_model(path, trust=True)
    assert model.source_format == "torchscript" and model.num_classes == 10
    assert model.arch_name == "resnet18_cifar" and not isinstance(model.module, torch.jit.ScriptModule)
    assert "rebuilt" in " ".join(model.notes)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.module(x), tiny_resnet(x), atol=1e-5)
    fresh = model.fresh(seed=1)  # seed 0 would redraw the fixture's own untrained weights
    assert not torch.equal(fresh.fc.weight, model.module.fc.weight)


def test_user_named_architecture_must_fit(tiny_checkpoint):
    with pytest.raises(ArchitectureError, match="do not fit preactresnet18") as info:
        load_model(tiny_checkpoint, arch="preactresnet18")
    # the user already named one: the advice is to leave it out or name another, not "name it with --arch"
    assert "leave the architecture out" in str(info.value) and "with --arch" not in str(info.value)
    state = PreActResNet([2, 2, 2, 2], 10, 8).state_dict()
    path = tiny_checkpoint.parent / "preact.pt"
    torch.save(state, path)
    assert load_model(path, arch="preactresnet18").arch_name == "preactresnet18"


def test_bad_settings_are_config_errors(tiny_checkpoint):
    with pytest.raises(ConfigError, match="input size"):
        load_model(tiny_checkpoint, input_size=3)
    with pytest.raises(ConfigError, match="std must be positive"):
        parse_normalization("0.5,0")
    with pytest.raises(ConfigError, match="2 numbers"):
        parse_normalization("1,2,3")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("quantum")
    with pytest.raises(ConfigError, match="fp16"):
        plan_compute("cpu", "fp16")


def test_cpu_plan_falls_back_to_fp32_without_native_bf16(monkeypatch):
    import bcu_gui.core.devices as devices

    monkeypatch.setattr(devices, "cpu_supports_bf16", lambda: False)
    assert plan_compute("cpu", "auto").amp_dtype is None
    monkeypatch.setattr(devices, "cpu_supports_bf16", lambda: True)
    assert plan_compute("cpu", "auto").amp_dtype is torch.bfloat16
    assert plan_compute("cpu", "fp32", channels_last=False).describe() == "cpu (fp32)"
