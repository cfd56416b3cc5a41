"""Reading suspicious checkpoints safely in every form users have them, and refusing bad files clearly."""

from __future__ import annotations

import importlib
import json
import os
import random
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from bcu_gui.core.checkpoints import RawCheckpoint, read_checkpoint, read_sidecar, write_sidecar
from bcu_gui.core.errors import CheckpointError, UntrustedCheckpointError
from bcu_gui.core.nets import CifarResNet, PreActResNet

sys.path.insert(0, str(Path(__file__).parent))  # the helper module must import under any pytest import mode
from checkpoint_helpers import VICTIM_TEXT, WrappedClassifier, write_file_writing_torchscript  # noqa: E402


@pytest.fixture
def model() -> CifarResNet:
    torch.manual_seed(0)
    return CifarResNet([2, 2, 2, 2], num_classes=10, width=4).eval()


@pytest.fixture
def state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same_tensors(got: dict[str, torch.Tensor] | None, want: dict[str, torch.Tensor]) -> None:
    assert got is not None
    assert sorted(got) == sorted(want)  # safetensors stores keys sorted
    for key, value in want.items():
        assert got[key].dtype == value.dtype, key
        assert torch.equal(got[key], value), key
        assert got[key].device.type == "cpu"


def prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state.items()}


def assert_one_line_naming(exc: pytest.ExceptionInfo, name: str) -> None:
    message = str(exc.value)
    assert name in message, message
    assert "\n" not in message and "Traceback" not in message


# ------------------------------------------------------------------------------------------- plain torch.save


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".ckpt"])
def test_plain_state_dict_round_trips(tmp_path, state, suffix):
    path = tmp_path / f"model{suffix}"
    torch.save(state, path)
    raw = read_checkpoint(path)
    assert isinstance(raw, RawCheckpoint)
    assert (raw.format, raw.module, raw.trusted_load, raw.metadata) == ("state_dict", None, False, {})
    assert raw.path == path
    assert_same_tensors(raw.state_dict, state)


def test_string_path_and_legacy_serialisation(tmp_path, state):
    path = tmp_path / "old.pth"
    torch.save(state, path, _use_new_zipfile_serialization=False)  # pre-1.6 format, still common in repos
    assert_same_tensors(read_checkpoint(str(path)).state_dict, state)


@pytest.mark.parametrize("key", ["state_dict", "model", "model_state_dict", "net"])
@pytest.mark.parametrize("prefix", ["", "module.", "model."])
def test_wrapped_and_prefixed_state_dicts(tmp_path, state, key, prefix):
    path = tmp_path / "wrapped.pth"
    torch.save({key: prefixed(state, prefix), "epoch": 7, "best_acc": 93.1}, path)
    raw = read_checkpoint(path)
    assert raw.format == "state_dict"
    assert_same_tensors(raw.state_dict, state)


def test_dataparallel_prefix_is_stripped_from_a_bare_state_dict(tmp_path, state):
    path = tmp_path / "dp.pt"
    torch.save(prefixed(state, "module."), path)
    assert_same_tensors(read_checkpoint(path).state_dict, state)


def test_lightning_checkpoint(tmp_path, model, state):
    params = list(model.parameters())
    optimizer_state = {  # SGD's layout; its momentum buffers are tensors the loader must not mistake for weights
        "state": {i: {"momentum_buffer": torch.randn_like(p)} for i, p in enumerate(params)},
        "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": list(range(len(params)))}],
    }
    path = tmp_path / "epoch=3-step=120.ckpt"
    torch.save({
        "epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.4.0",
        "state_dict": prefixed(state, "model."),
        "optimizer_states": [optimizer_state], "lr_schedulers": [], "callbacks": {},
        "hyper_parameters": {"num_classes": 10, "arch": "resnet18_cifar", "lr": 0.1, "width": 4},
    }, path)
    raw = read_checkpoint(path)
    assert raw.format == "state_dict" and not raw.trusted_load
    assert_same_tensors(raw.state_dict, state)
    assert raw.metadata == {"num_classes": 10, "arch": "resnet18_cifar", "width": 4}


def test_non_tensor_entries_of_a_state_dict_are_dropped(tmp_path, state):
    path = tmp_path / "mixed.pt"
    torch.save({"state_dict": {**state, "note": "trained on cifar"}}, path)
    assert_same_tensors(read_checkpoint(path).state_dict, state)


# ------------------------------------------------------------------------------------------------ BackdoorBench


def backdoorbench_result(img_size=(32, 32, 3)) -> tuple[dict, dict[str, torch.Tensor]]:
    torch.manual_seed(1)
    state = PreActResNet([2, 2, 2, 2], num_classes=10, width=4).state_dict()
    rng = np.random.default_rng(0)
    result = {
        "model_name": "preactresnet18",
        "num_classes": 10,
        "model": state,
        "data_path": "./data/cifar10",
        "img_size": img_size,
        "clean_data": "cifar10",
        "bd_train": {
            "poison_indicator": np.array([0, 1, 0, 1], dtype=np.int8),
            "bd_data_container": {"data_dict": {1: (rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), 0)}},
        },
        "bd_test": {
            "x": rng.random((4, 32, 32, 3), dtype=np.float32),
            "y": [np.int64(0), np.int64(0), 1, 2],
            "original_index_array": np.arange(4),
            "names": np.array(["a.png", "b.png"]),
            "flags": np.array([True, False]),
        },
    }
    return result, state


def test_backdoorbench_result_with_numpy_loads_without_trust(tmp_path):
    result, state = backdoorbench_result()
    path = tmp_path / "attack_result.pt"
    torch.save(result, path)
    raw = read_checkpoint(path)
    assert (raw.format, raw.trusted_load, raw.module) == ("backdoorbench", False, None)
    assert raw.metadata == {"arch": "preactresnet18", "num_classes": 10, "input_size": 32, "dataset": "cifar10"}
    assert_same_tensors(raw.state_dict, state)


def test_backdoorbench_result_pickled_by_numpy_1_loads(tmp_path):
    """Files from numpy < 2 name ``numpy.core.multiarray`` where numpy 2 writes ``numpy._core.multiarray``."""
    result, state = backdoorbench_result()
    new = tmp_path / "new.pt"
    torch.save(result, new)
    old = tmp_path / "attack_result.pt"
    with zipfile.ZipFile(new) as src, zipfile.ZipFile(old, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            dst.writestr(info.filename, data)
    raw = read_checkpoint(old)
    assert raw.format == "backdoorbench" and not raw.trusted_load
    assert_same_tensors(raw.state_dict, state)


# -------------------------------------------------------------------------------------------------- safetensors


def test_safetensors_with_metadata(tmp_path, state):
    path = tmp_path / "model.safetensors"
    save_file(prefixed(state, "module."), str(path), metadata={
        "format": "pt", "arch": "resnet18_cifar", "num_classes": "10", "width": "4", "input_size": "32",
        "mean": "[0.4914, 0.4822, 0.4465]", "std": "0.247, 0.2435, 0.2616", "normalize": "cifar10",
    })
    raw = read_checkpoint(path)
    assert (raw.format, raw.trusted_load, raw.module) == ("safetensors", False, None)
    assert_same_tensors(raw.state_dict, state)
    assert raw.metadata == {
        "arch": "resnet18_cifar", "num_classes": 10, "width": 4, "input_size": 32,
        "mean": [0.4914, 0.4822, 0.4465], "std": [0.247, 0.2435, 0.2616], "normalize": "cifar10",
    }


def test_safetensors_is_recognised_by_content_and_bad_hints_are_dropped(tmp_path, state):
    path = tmp_path / "weights.bin"  # misnamed: the content decides
    save_file(state, str(path), metadata={"num_classes": "ten", "std": "[0, 1, 1]", "arch": "vgg19_bn"})
    raw = read_checkpoint(path)
    assert raw.format == "safetensors"
    assert raw.metadata == {"arch": "vgg19_bn"}


# ------------------------------------------------------------------------------------- whole modules, TorchScript


def test_pickled_module_is_refused_without_trust(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(WrappedClassifier(), path)
    with pytest.raises(UntrustedCheckpointError) as exc:
        read_checkpoint(path)
    assert_one_line_naming(exc, "whole.pt")
    assert "checkpoint_helpers.WrappedClassifier" in str(exc.value)
    assert "trust" in str(exc.value)


def test_pickled_module_loads_with_trust(tmp_path):
    torch.manual_seed(2)
    net = WrappedClassifier().eval()
    path = tmp_path / "whole.pt"
    torch.save(net, path)
    raw = read_checkpoint(path, trust=True)
    assert (raw.format, raw.trusted_load, raw.state_dict) == ("module", True, None)
    assert isinstance(raw.module, WrappedClassifier) and not raw.module.training
    assert_same_tensors(raw.module.state_dict(), net.state_dict())


def test_trusted_dict_holding_a_module_yields_the_module(tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "model": torch.nn.DataParallel(WrappedClassifier())}, path)
    with pytest.raises(UntrustedCheckpointError):
        read_checkpoint(path)
    raw = read_checkpoint(path, trust=True)
    assert raw.format == "module" and isinstance(raw.module, WrappedClassifier)


def test_trust_is_not_used_when_not_needed(tmp_path, state):
    path = tmp_path / "plain.pt"
    torch.save(state, path)
    raw = read_checkpoint(path, trust=True)
    assert raw.format == "state_dict" and not raw.trusted_load


class _Payload:
    """Unpickling this calls os.mkdir: it stands for any code a malicious checkpoint would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_code_in_a_checkpoint_never_runs_without_trust(tmp_path, state):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": state, "extra": _Payload(marker)}, path)
    with pytest.raises(UntrustedCheckpointError) as exc:
        read_checkpoint(path)
    assert_one_line_naming(exc, "evil.pt")
    assert not marker.exists()


def test_trusted_module_whose_code_is_missing_gives_a_clear_error(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "vanishing_model_mod.py").write_text(
        "import torch\nclass Gone(torch.nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.fc = torch.nn.Linear(3, 2)\n"
    )
    monkeypatch.syspath_prepend(str(pkg))
    module = importlib.import_module("vanishing_model_mod")
    path = tmp_path / "gone.pt"
    torch.save(module.Gone(), path)
    monkeypatch.delitem(sys.modules, "vanishing_model_mod")
    sys.path.remove(str(pkg))
    with pytest.raises(CheckpointError) as exc:
        read_checkpoint(path, trust=True)
    assert not isinstance(exc.value, UntrustedCheckpointError)
    assert_one_line_naming(exc, "gone.pt")
    assert "vanishing_model_mod" in str(exc.value)


def test_torchscript_is_refused_without_trust_and_loads_with_it(tmp_path, model):
    path = tmp_path / "scripted.pt"
    x = torch.rand(1, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices
        torch.jit.save(torch.jit.trace(model, x, check_trace=False), str(path))
    with pytest.raises(UntrustedCheckpointError) as exc:
        read_checkpoint(path)
    assert_one_line_naming(exc, "scripted.pt")
    assert "TorchScript" in str(exc.value) and "--trust-checkpoint" in str(exc.value)
    raw = read_checkpoint(path, trust=True)
    assert (raw.format, raw.trusted_load, raw.state_dict) == ("torchscript", True, None)
    assert isinstance(raw.module, torch.jit.ScriptModule) and not raw.module.training
    assert_same_tensors(raw.module.state_dict(), model.state_dict())


def test_torchscript_code_never_runs_without_trust(tmp_path):
    path, victim = tmp_path / "hostile.pt", tmp_path / "victim.txt"
    write_file_writing_torchscript(path, victim)
    with pytest.raises(UntrustedCheckpointError):
        read_checkpoint(path)
    assert victim.read_text() == VICTIM_TEXT
    # the file really is hostile: trusting it lets its __setstate__ overwrite the victim while loading
    read_checkpoint(path, trust=True)
    assert victim.read_text().startswith("XXXXXXXX")


# ------------------------------------------------------------------------------------------------------ sidecars


def test_sidecar_named_after_the_full_file_name_wins(tmp_path, state):
    path = tmp_path / "model.pt"
    torch.save(state, path)
    (tmp_path / "model.json").write_text(json.dumps({"arch": "preactresnet18"}))
    assert read_checkpoint(path).metadata == {"arch": "preactresnet18"}
    (tmp_path / "model.pt.json").write_text(json.dumps({"arch": "resnet18_cifar", "input_size": [32, 32]}))
    assert read_checkpoint(path).metadata == {"arch": "resnet18_cifar", "input_size": 32}


def test_sidecar_overrides_the_files_own_metadata(tmp_path):
    result, _ = backdoorbench_result()
    path = tmp_path / "attack_result.pt"
    torch.save(result, path)
    (tmp_path / "attack_result.json").write_text(json.dumps({
        "arch": "PreAct-ResNet18", "input_size": 64, "mean": [0.5], "std": [0.25], "normalize": "custom",
        "comment": "unknown keys are ignored",
    }))
    assert read_checkpoint(path).metadata == {
        "arch": "PreAct-ResNet18", "num_classes": 10, "input_size": 64, "mean": [0.5], "std": [0.25],
        "normalize": "custom", "dataset": "cifar10",
    }


def test_write_sidecar_is_atomic_and_reads_back(tmp_path):
    path = tmp_path / "cleansed.pt"
    meta = {"arch": "resnet18_cifar", "num_classes": 10, "width": 4, "input_size": 32,
            "normalize": "cifar10", "mean": (0.4914, 0.4822, 0.4465), "std": [0.247, 0.2435, 0.2616]}
    write_sidecar(path, meta)
    write_sidecar(path, meta)  # replacing an existing sidecar works too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cleansed.json"]  # no temporary file left behind
    assert read_sidecar(path) == {**meta, "mean": list(meta["mean"])}
    assert read_sidecar(tmp_path / "other.pt") == {}


@pytest.mark.parametrize("text, needle", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"num_classes": "ten"}', "num_classes"),
    ('{"std": [0.2, 0.0, 0.2]}', "std"),
    ('{"normalize": "cifar-ten"}', "normalize"),
])
def test_bad_sidecar_is_a_checkpoint_error_naming_it(tmp_path, state, text, needle):
    path = tmp_path / "model.pt"
    torch.save(state, path)
    (tmp_path / "model.pt.json").write_text(text)
    with pytest.raises(CheckpointError) as exc:
        read_checkpoint(path)
    assert_one_line_naming(exc, "model.pt.json")
    assert needle in str(exc.value)


# ---------------------------------------------------------------------------------------------------- bad input


def _truncated_zip(path: Path, state) -> None:
    torch.save(state, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _truncated_legacy(path: Path, state) -> None:
    torch.save(state, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


BAD_INPUTS = {
    "empty": lambda p, s: p.write_bytes(b""),
    "random_bytes": lambda p, s: p.write_bytes(b"\x13\x37" + random.Random(0).randbytes(4096)),
    "text_file": lambda p, s: p.write_text("epoch,loss\n1,0.5\n2,0.4\n"),
    "truncated_zip": _truncated_zip,
    "truncated_legacy": _truncated_legacy,
    "no_tensors": lambda p, s: torch.save({"epoch": 3, "acc": 0.9, "args": {"lr": 0.1}}, p),
    "non_tensor_state_dict": lambda p, s: torch.save({"state_dict": {"conv1.weight": [1.0, 2.0], "fc": "x"}}, p),
    "empty_dict": lambda p, s: torch.save({}, p),
    "bare_tensor": lambda p, s: torch.save(torch.zeros(3), p),
    "list": lambda p, s: torch.save([torch.zeros(3)], p),
    "other_zip": lambda p, s: zipfile.ZipFile(p, "w").writestr("readme.txt", "hello"),
    "broken_safetensors": lambda p, s: p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": "),
    "empty_safetensors": lambda p, s: save_file({}, str(p)),
    "backdoorbench_without_weights": lambda p, s: torch.save(
        {"model_name": "preactresnet18", "num_classes": 10, "model": {}, "img_size": (32, 32, 3)}, p),
}


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_bad_files_give_a_one_line_checkpoint_error(tmp_path, state, kind):
    suffix = ".safetensors" if "safetensors" in kind else ".pt"
    path = tmp_path / f"{kind}_input{suffix}"
    BAD_INPUTS[kind](path, state)
    with pytest.raises(CheckpointError) as exc:
        read_checkpoint(path)
    assert not isinstance(exc.value, UntrustedCheckpointError)
    assert_one_line_naming(exc, path.name)


@pytest.mark.parametrize("kind", ["random_bytes", "text_file"])
def test_unknown_content_is_named_as_such(tmp_path, state, kind):
    path = tmp_path / "notes.pt"
    BAD_INPUTS[kind](path, state)
    with pytest.raises(CheckpointError, match="not a PyTorch, safetensors or TorchScript checkpoint"):
        read_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError) as exc:
        read_checkpoint(tmp_path / "nowhere.pt")
    assert_one_line_naming(exc, "nowhere.pt")
    assert "does not exist" in str(exc.value)


def test_directory(tmp_path, state):
    folder = tmp_path / "run_folder"
    folder.mkdir()
    torch.save(state, folder / "attack_result.pt")
    with pytest.raises(CheckpointError) as exc:
        read_checkpoint(folder)
    assert_one_line_naming(exc, "run_folder")
    assert "attack_result.pt" in str(exc.value)  # points at the file to choose instead


def test_empty_file_says_so(tmp_path):
    path = tmp_path / "zero.pth"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"zero\.pth is empty"):
        read_checkpoint(path)
