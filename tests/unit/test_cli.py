"""The `bcu` command line: output, exit codes, one-line errors, Ctrl-C."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from bcu_gui.cli import main
from bcu_gui.core.outcome import EXIT_RUINED


@pytest.fixture
def unlabeled(tmp_path):
    folder = tmp_path / "unl"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(16):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_inspect_prints_architecture_and_groups(tiny_checkpoint, capsys):
    assert main(["inspect", str(tiny_checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "ResNet-18 (CIFAR-style), width 8" in out and "classes        10" in out
    for group in ("stem", "layer1", "layer4", "head", "total"):
        assert f"  {group}" in out


def test_inspect_json(tiny_checkpoint, capsys):
    assert main(["inspect", str(tiny_checkpoint), "--json", "--preset", "strong"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["arch"] == "resnet18_cifar" and info["width"] == 8
    assert [g["name"] for g in info["groups"]][-1] == "head"
    assert all(g["ratio"] == 1.0 and g["reinitialised"] == g["weights"] for g in info["groups"])


@pytest.mark.parametrize("argv, fragment", [
    (["inspect", "/no/such/model.pt"], "model.pt"),
    (["cleanse", "{ckpt}", "--unlabeled", "/no/such/dir"], "/no/such/dir"),
    (["cleanse", "{ckpt}", "--unlabeled", "{unl}", "--ratios", "layer9=0.5"], "layer9"),
    (["cleanse", "{ckpt}", "--unlabeled", "{unl}", "--eval-poisoned", "{unl}"], "--target-class"),
    (["evaluate", "{ckpt}"], "--eval-clean"),
    (["cleanse", "{ckpt}"], "--unlabeled"),
    (["inspect", "{ckpt}", "--normalize", "purple"], "unknown normalisation"),
])
def test_bad_input_is_one_line_on_stderr_and_exit_2(tiny_checkpoint, unlabeled, capsys, argv, fragment):
    argv = [a.format(ckpt=tiny_checkpoint, unl=unlabeled) for a in argv]
    with _nothing() as exit_info:  # --unlabeled is optional for --resume/--config: the job says it is missing
        code = main(argv)
    if exit_info is not None and hasattr(exit_info, "value"):
        code = exit_info.value.code
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "error" in lines[0] and fragment in lines[0], err
    assert "Traceback" not in err


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_cleanse_json_prints_one_object_per_epoch_and_a_summary(tiny_checkpoint, unlabeled, tmp_path, capsys):
    code = main(["cleanse", str(tiny_checkpoint), "--unlabeled", str(unlabeled), "--epochs", "2",
                 "--batch-size", "8", "--device", "cpu", "--json", "--out", str(tmp_path / "run")])
    assert code in (0, EXIT_RUINED)  # a short run (or a random tiny teacher) may be judged ruined: exit 3
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["event"] for r in records] == ["started", "epochend", "epochend", "finished"]
    assert records[-1]["summary"]["epochs_completed"] == 2
    assert (tmp_path / "run" / "cleansed.safetensors").exists()


def test_ctrl_c_stops_cleanly_exits_130_and_keeps_the_run(tiny_checkpoint, unlabeled, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bcu_gui.cli", "cleanse", str(tiny_checkpoint), "--unlabeled", str(unlabeled),
         "--epochs", "500", "--batch-size", "8", "--device", "cpu", "--json", "--out", str(run)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    first = proc.stdout.readline()
    assert json.loads(first)["event"] == "started"
    json.loads(proc.stdout.readline())  # one epoch done
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["cancelled"] is True and summary["epochs_completed"] >= 1
    assert (run / "cleansed.pt").exists() and "Traceback" not in err


def test_cleanse_console_summary_says_what_it_kept_and_the_speed(tiny_checkpoint, unlabeled, tmp_path, capsys):
    code = main(["cleanse", str(tiny_checkpoint), "--unlabeled", str(unlabeled), "--epochs", "2",
                 "--batch-size", "8", "--device", "cpu", "--out", str(tmp_path / "run")])
    assert code in (0, EXIT_RUINED)  # a 2-epoch student of a random tiny teacher may be judged ruined: exit 3
    captured = capsys.readouterr()
    done = next(line for line in captured.out.splitlines() if line.startswith("done in "))
    assert "kept the last epoch (2)" in done and "None" not in done
    assert float(done.split("(")[1].split(" images/s")[0]) > 0
    assert "teacher   ACC    n/a  ASR    n/a" in captured.out  # no labelled folders: said, not None
    assert captured.err.count("model: resnet18_cifar") == 1  # the model is described once
