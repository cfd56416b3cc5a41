"""The built-in demo, headless: `bcu demo` removes the shipped model's backdoor with the demo's settings."""

from __future__ import annotations

import json

import pytest

from bcu_gui.cli import main
from bcu_gui.demo.config import DEMO_EPOCHS

pytestmark = pytest.mark.slow


def test_bcu_demo_cuts_asr_below_10_percent_within_3_points_of_acc(tmp_path, capsys):
    assert main(["demo", "--json", "--device", "cpu", "--out", str(tmp_path / "run")]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    epochs = [r for r in records if r["event"] == "epochend"]
    summary = records[-1]["summary"]
    teacher, cleansed = summary["teacher"], summary["cleansed"]
    print(f"demo: teacher ACC {teacher['acc']:.3f} ASR {teacher['asr']:.3f} -> cleansed ACC {cleansed['acc']:.3f} "
          f"ASR {cleansed['asr']:.3f} in {summary['seconds']} s ({summary['images_per_second']} img/s)")
    assert len(epochs) == DEMO_EPOCHS
    assert teacher["asr"] >= 0.95 and teacher["acc"] >= 0.90
    assert cleansed["asr"] < 0.10
    assert cleansed["acc"] >= teacher["acc"] - 0.03
    assert (tmp_path / "run" / "cleansed.safetensors").exists()
