"""A TorchScript file is a program: none of its code may run (not even loading it) until the user trusts it.

The hostile file built here overwrites a victim file from its ``__setstate__`` (run by ``torch.jit.load``) and
from its forward pass, through ``torch.from_file(..., shared=True)`` and an in-place copy.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bcu_gui.cli import main
from bcu_gui.core.errors import UntrustedCheckpointError
from bcu_gui.core.models import load_model

sys.path.insert(0, str(Path(__file__).parent))
from checkpoint_helpers import VICTIM_TEXT, write_file_writing_torchscript  # noqa: E402


@pytest.fixture
def hostile(tmp_path) -> tuple[Path, Path]:
    path, victim = tmp_path / "hostile.pt", tmp_path / "victim.txt"
    write_file_writing_torchscript(path, victim)
    return path, victim


def test_load_model_refuses_it_and_runs_nothing(hostile):
    path, victim = hostile
    with pytest.raises(UntrustedCheckpointError, match="TorchScript"):
        load_model(path, input_size=8)
    assert victim.read_text() == VICTIM_TEXT


@pytest.mark.parametrize("verb", [["inspect"], ["inspect", "--json"], ["evaluate", "--eval-clean", "."],
                                  ["cleanse", "--unlabeled", ".", "--epochs", "1"]])
def test_cli_refuses_it_with_one_line_and_runs_nothing(hostile, tmp_path, capsys, verb):
    path, victim = hostile
    argv = [verb[0], str(path), *verb[1:]]
    if verb[0] == "cleanse":
        argv += ["--out", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "TorchScript" in err and "--trust-checkpoint" in err, err
    assert victim.read_text() == VICTIM_TEXT


def test_the_file_really_runs_code_once_trusted(hostile):
    """Proof that the test above can fail: with trust, loading alone overwrites the victim."""
    path, victim = hostile
    model = load_model(path, trust=True, input_size=8)
    assert victim.read_text().startswith("XXXXXXXX")
    assert model.source_format == "torchscript" and model.num_classes == 10
