"""What a checkpoint claims is bounded before anything is allocated, and every CLI failure is one line."""

from __future__ import annotations

import json

import pytest
import torch

from bcu_gui.cli import main
from bcu_gui.core.errors import ArchitectureError, CheckpointError
from bcu_gui.core.models import load_model
from bcu_gui.core.nets import CifarResNet


def _zero_stride_head(classes: int) -> dict[str, torch.Tensor]:
    """A tiny state_dict whose head claims ``classes`` rows through zero strides (a few KB on disk)."""
    state = CifarResNet([2, 2, 2, 2], num_classes=10, width=8).state_dict()
    state["fc.weight"] = torch.zeros(1, 64).expand(classes, 64)
    state["fc.bias"] = torch.zeros(1).expand(classes)
    return state


def test_zero_stride_tensors_claiming_a_huge_head_are_refused(tmp_path, capsys):
    path = tmp_path / "hostile.pt"
    torch.save(_zero_stride_head(10**8), path)
    assert path.stat().st_size < 2_000_000
    with pytest.raises(CheckpointError, match="claims shape 100000000x64"):
        load_model(path)
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "stores only" in err and "Traceback" not in err


def test_a_real_head_with_absurdly_many_classes_is_refused(tmp_path):
    state = CifarResNet([2, 2, 2, 2], num_classes=10, width=1).state_dict()
    state["fc.weight"] = torch.zeros(200_000, 8)
    state["fc.bias"] = torch.zeros(200_000)
    path = tmp_path / "many.pt"
    torch.save(state, path)
    with pytest.raises(ArchitectureError, match="200,000 classes"):
        load_model(path)


def test_metadata_input_size_is_range_checked(tiny_checkpoint, capsys):
    tiny_checkpoint.with_suffix(".json").write_text(json.dumps({"input_size": 100000}))
    with pytest.raises(CheckpointError, match="100,000 pixels"):
        load_model(tiny_checkpoint)
    assert load_model(tiny_checkpoint, input_size=48).input_size == 48  # the user's setting still wins
    assert main(["inspect", str(tiny_checkpoint)]) == 2
    assert "--input-size" in capsys.readouterr().err


@pytest.mark.parametrize("exc", [MemoryError(), RuntimeError("boom\nsecond line"), OSError(5, "I/O error")])
def test_evaluate_turns_every_failure_into_one_line_and_exit_2(tiny_checkpoint, tmp_path, capsys, monkeypatch,
                                                               exc):
    from PIL import Image

    from bcu_gui.core import evaluation

    folder = tmp_path / "clean" / "0"
    folder.mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(folder / "a.png")

    def fail(self, model):
        raise exc

    monkeypatch.setattr(evaluation.Evaluator, "measure", fail)
    assert main(["evaluate", str(tiny_checkpoint), "--eval-clean", str(tmp_path / "clean"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bcu: error:") and "\n" not in err and "Traceback" not in err
