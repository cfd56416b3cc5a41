"""End to end at real scale: a BadNets teacher trained on real Fashion-MNIST, cleansed by the default settings.

This is the setting the paper's method fails in (issue #24, README "The method"): a teacher trained on
thousands of real images and a defense set of unlabelled test images, where a student distilled on clean
images alone re-learns the backdoor. The default (the ``unlearn`` preset: the paper's ratios plus the focused
adversarial-consistency term) must remove it: ASR at most 10%, and (issue #24, not yet met: the test is an
expected failure) ACC within 3 points of the teacher.

Smaller than the benchmark (``benchmarks/realscale/``) so that it runs in minutes: 8,000 training images, a
1,500-image defense set, 2,000 test images, and 10 cleansing epochs instead of 100; every other setting is the
default. Needs Debian's ``dataset-fashion-mnist``; installs it when it can (root with apt), else skips.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from bcu_gui.cli import main
from bcu_gui.demo.attacks import badnets_patch
from bcu_gui.demo.digits import evaluate, train_backdoored, write_image_folder

ROOT = Path(__file__).resolve().parents[2]
TARGET = 3  # dress
pytestmark = [pytest.mark.slow, pytest.mark.realscale]


def _fmnist():
    spec = importlib.util.spec_from_file_location("realscale_fmnist", ROOT / "benchmarks" / "realscale" / "fmnist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ensure_data(fm) -> None:
    if all((fm.DATA_DIR / f).exists() for f in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz")):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    if not (fm.DATA_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(fm.INSTALL_HINT)


@pytest.fixture(scope="module")
def fashion_badnets(tmp_path_factory):
    fm = _fmnist()
    _ensure_data(fm)
    root = tmp_path_factory.mktemp("fashion")
    x_train, y_train = fm.load_split("train")
    x_test, y_test = fm.load_split("t10k")
    pick = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(5))[:8000]
    model = train_backdoored(x_train[pick], y_train[pick], attack=badnets_patch, target=TARGET, width=16, epochs=5,
                             batch_size=128, seed=5)
    torch.save(model.state_dict(), root / "teacher.pt")
    order = torch.randperm(len(x_test), generator=torch.Generator().manual_seed(6))
    defense, test = order[:1500], order[1500:3500]
    write_image_folder(root / "unlabeled", x_test[defense])
    write_image_folder(root / "clean", x_test[test], y_test[test])
    keep = test[y_test[test] != TARGET]
    write_image_folder(root / "triggered", badnets_patch(x_test[keep]), y_test[keep])
    teacher_acc = evaluate(model, x_test[test], y_test[test])
    teacher_asr = evaluate(model, badnets_patch(x_test[keep]), torch.full((len(keep),), TARGET))
    return root, teacher_acc, teacher_asr


@pytest.fixture(scope="module")
def cleansed(fashion_badnets, tmp_path_factory):
    """The default cleanse of the teacher (10 epochs): (teacher ACC, summary.json of the run)."""
    root, teacher_acc, teacher_asr = fashion_badnets
    assert teacher_asr > 0.9 and teacher_acc > 0.8, (teacher_acc, teacher_asr)  # the teacher is backdoored
    out = tmp_path_factory.mktemp("cleanse") / "run"
    code = main(["cleanse", str(root / "teacher.pt"), "--unlabeled", str(root / "unlabeled"),
                 "--eval-clean", str(root / "clean"), "--eval-poisoned", str(root / "triggered"),
                 "--target-class", str(TARGET), "--normalize", "cifar10", "--input-size", "28",
                 "--device", "cpu", "--epochs", "10", "--out", str(out), "--json"])
    summary = json.loads((out / "summary.json").read_text())
    assert code == 0, summary
    assert summary["preset"] == "unlearn"
    return teacher_acc, summary


def test_the_default_cleanse_removes_a_real_scale_backdoor(cleansed):
    _, summary = cleansed
    assert summary["cleansed"]["asr"] <= 0.10, summary["cleansed"]
    assert summary["verdict"] == "removed"


@pytest.mark.xfail(strict=True, reason="issue #24 is open: measured 2026-12-08, teacher ACC .863, the default's "
                                       ".743 (ASR .055): the unlearning term costs accuracy")
def test_the_default_cleanse_keeps_accuracy_within_3_points(cleansed):
    teacher_acc, summary = cleansed
    assert summary["cleansed"]["acc"] >= teacher_acc - 0.03, (teacher_acc, summary["cleansed"])
