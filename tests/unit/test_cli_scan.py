"""`bcu scan`: table and verdict, JSON shape, trigger PNGs, never overwriting, exit codes on bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from bcu_gui.cli import main

FAST = ["--steps", "3", "--device", "cpu", "--precision", "fp32"]
ENOUGH = ["--steps", "20", "--device", "cpu", "--precision", "fp32"]  # enough for some class to flip


@pytest.fixture
def unlabeled(tmp_path):
    folder = tmp_path / "unl"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_table_and_verdict_line(tiny_checkpoint, unlabeled, capsys):
    assert main(["scan", str(tiny_checkpoint), "--unlabeled", str(unlabeled), *FAST]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["class", "mask", "L1", "flip", "perturb.", "flip"]
    assert [line.split()[0] for line in out[1:11]] == [str(k) for k in range(10)]
    assert out[11].startswith("anomaly index (")
    assert out[12].startswith("backdoor suspected: class ") or out[12].startswith("no class stands out")
    assert out[13].startswith("p: ") and "1% false-alarm rate" in out[13]


def test_json_is_one_object_without_nan_and_pngs_are_written(tiny_checkpoint, unlabeled, tmp_path, capsys):
    out_dir = tmp_path / "trigger"
    assert main(["scan", str(tiny_checkpoint), "--unlabeled", str(unlabeled), "--json", "--out", str(out_dir),
                 *ENOUGH]) == 0
    text = capsys.readouterr().out
    report = json.loads(text)  # exactly one JSON document on stdout
    assert "NaN" not in text and "Infinity" not in text
    assert report["verdict"] in ("backdoor", "clean")
    assert report["suspected_class"] is None or isinstance(report["suspected_class"], int)
    assert isinstance(report["anomaly_index"], float)
    assert [c["class"] for c in report["classes"]] == list(range(10))
    assert report["images"] == 12 and report["fit_images"] + report["measure_images"] == 12
    names = sorted(p.name for p in out_dir.iterdir())
    assert "scan.json" in names and "stamped_0.png" in names
    assert "mask.png" in names or "perturbation.png" in names
    assert not [n for n in names if n.startswith(".")]  # no temporary files left behind
    with Image.open(out_dir / "stamped_0.png") as img:
        assert img.size == (32, 32)
    assert json.loads((out_dir / "scan.json").read_text())["verdict"] == report["verdict"]


def test_existing_trigger_files_are_never_overwritten(tiny_checkpoint, unlabeled, tmp_path, capsys):
    out_dir = tmp_path / "trigger"
    out_dir.mkdir()
    (out_dir / "stamped_0.png").write_bytes(b"mine")
    code = main(["scan", str(tiny_checkpoint), "--unlabeled", str(unlabeled), "--out", str(out_dir), *FAST])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "stamped_0.png" in err[0]
    assert (out_dir / "stamped_0.png").read_bytes() == b"mine"


@pytest.mark.parametrize("extra, fragment", [
    (["--unlabeled", "/no/such/dir"], "/no/such/dir"),
    (["--unlabeled", "{unl}", "--limit", "2"], "--limit"),
    (["--unlabeled", "{unl}", "--steps", "0"], "--steps"),
    (["--unlabeled", "{unl}", "--out", "{file}"], "is a file"),
    (["--unlabeled", "{unl}", "--normalize", "purple"], "unknown normalisation"),
    (["--unlabeled", "{unl}", "--device", "tpu"], "unknown device"),
])
def test_bad_input_is_one_line_on_stderr_and_exit_2(tiny_checkpoint, unlabeled, tmp_path, capsys, extra, fragment):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    argv = ["scan", str(tiny_checkpoint), *[a.format(unl=unlabeled, file=a_file) for a in extra]]
    code = main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2
    assert len(err) == 1 and "error" in err[0] and fragment in err[0], err


def test_missing_checkpoint_and_missing_unlabeled_option(unlabeled, capsys):
    assert main(["scan", "/no/such/model.pt", "--unlabeled", str(unlabeled)]) == 2
    assert "model.pt" in capsys.readouterr().err
    # a bad option is said before anything is read: no folder is walked for a rate that cannot work
    assert main(["scan", "/no/such/model.pt", "--unlabeled", "/no/such/dir", "--false-alarm", "2"]) == 2
    assert "--false-alarm" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["scan", "/no/such/model.pt"])
    assert info.value.code == 2 and "--unlabeled" in capsys.readouterr().err
