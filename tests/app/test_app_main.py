"""The command line: bad input exits 2 with one line, pre-filling, and the unattended --smoke check."""

from __future__ import annotations

import pytest

from bcu_gui.app.__main__ import _prefill, build_parser, main
from bcu_gui.core.models import load_model


@pytest.mark.parametrize("argv,fragment", [
    (["/no/such/model.pt"], "does not exist"),
    (["--demo", "--unknown-flag"], "unrecognized arguments"),
    (["--eval-poisoned", "."], "needs --target-class"),
    (["--unlabeled", "/no/such/folder"], "is not a folder"),
    (["--target-class", "-3"], "must be 0 or more"),
])
def test_bad_command_lines_exit_2_with_one_line(capsys, argv, fragment):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("bcu-gui: error:") and fragment in err


def test_the_command_line_prefills_the_window(qtbot, window, demo_env):
    args = build_parser().parse_args([str(demo_env / "model.pt"), "--unlabeled", str(demo_env / "unlabeled"),
                                      "--eval-clean", str(demo_env / "clean"), "--eval-poisoned",
                                      str(demo_env / "triggered"), "--target-class", "0"])
    _prefill(window, args)
    assert window.model_panel.model is not None and not window.demo
    assert window.data_panel.target_class() == 0
    qtbot.waitUntil(lambda: not window.data_panel.is_checking() and not window.missing_inputs(), timeout=20_000)

    _prefill(window, build_parser().parse_args(["--demo"]))
    assert window.demo and window.reinit_panel.preset() == "strong"
    assert window.training_panel.epochs_spin.value() == 40 and window.training_panel.values()["batch_size"] is None


def test_smoke_mode_runs_the_demo_to_the_end_and_saves_the_model(qtbot, demo_env, tmp_path, capsys):
    out = tmp_path / "smoke"
    assert main(["--smoke", str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith("bcu-gui smoke ok:") and "ASR 100.0% ->" in printed[0]
    saved = out / "cleansed-demo.pt"
    assert saved.is_file() and saved.with_suffix(".safetensors").is_file()
    assert load_model(saved).arch_name == "resnet18_cifar"
    assert any((out / "runs").iterdir())
