"""End to end on real data: a backdoored model trained on real handwritten digits, cleansed by `bcu cleanse`.

A CIFAR-style ResNet-18 of small width learns scikit-learn's digits (upscaled to 32x32) with a BadNets patch
on 10% of them relabelled to class 0; `bcu cleanse` then distils it on 400 unlabelled held-out digits with
the measured `strong` preset (the paper's ratios leave the backdoor in place at this scale; README).
"""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("sklearn")

from bcu_gui.cli import main  # noqa: E402
from bcu_gui.demo.attacks import badnets_patch  # noqa: E402
from bcu_gui.demo.digits import load_digits_rgb, split_digits, train_backdoored, write_image_folder  # noqa: E402

TARGET = 0
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def backdoored(tmp_path_factory):
    """Teacher checkpoint plus unlabelled, clean and triggered folders, all from real digits."""
    root = tmp_path_factory.mktemp("digits")
    images, labels = load_digits_rgb(32)
    splits = split_digits(images, labels, seed=0)
    x_train, y_train = splits["train"]
    model = train_backdoored(x_train, y_train, attack="badnets", target=TARGET, width=16, epochs=15, seed=0)
    torch.save(model.state_dict(), root / "teacher.pt")
    x_unl, _ = splits["unlabeled"]
    x_test, y_test = splits["test"]
    write_image_folder(root / "unlabeled", x_unl)
    write_image_folder(root / "clean", x_test, y_test)
    keep = y_test != TARGET
    write_image_folder(root / "triggered", badnets_patch(x_test[keep]), y_test[keep])
    return root


def _cleanse(root, out, capsys, *extra):
    code = main(["cleanse", str(root / "teacher.pt"), "--unlabeled", str(root / "unlabeled"),
                 "--eval-clean", str(root / "clean"), "--eval-poisoned", str(root / "triggered"),
                 "--target-class", str(TARGET), "--normalize", "cifar10", "--device", "cpu",
                 "--out", str(out), "--json", *extra])
    assert code == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return records[-1]["summary"], [r for r in records if r["event"] == "epochend"]


def test_strong_preset_removes_the_backdoor_and_keeps_accuracy(backdoored, tmp_path, capsys):
    summary, epochs = _cleanse(backdoored, tmp_path / "run", capsys,
                               "--preset", "strong", "--epochs", "40", "--batch-size", "64")
    teacher, cleansed = summary["teacher"], summary["cleansed"]
    print(f"teacher ACC {teacher['acc']:.3f} ASR {teacher['asr']:.3f} -> "
          f"cleansed ACC {cleansed['acc']:.3f} ASR {cleansed['asr']:.3f} in {summary['seconds']} s")
    assert teacher["asr"] > 0.90 and teacher["acc"] > 0.90
    assert cleansed["asr"] < 0.10
    assert cleansed["acc"] >= teacher["acc"] - 0.03
    assert len(epochs) == 40
