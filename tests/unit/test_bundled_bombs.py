"""Bundled test data built as a memory bomb: small on disk, enormous once decoded (issue 19, point 3).

Each file is a BackdoorBench ``attack_result.pt`` whose model is fine and whose test set is hostile: one image
referenced thousands of times (the pickle stores it once), or a zero-stride tensor (the file stores one image
and claims a hundred thousand). The bomb cases run ``bcu evaluate`` in a child process whose address space is
capped at what its imports mapped plus 2 GiB, so a regression fails with a MemoryError instead of eating the
machine. The model must still open; only the bundled set is refused, with one line saying why.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bcu_gui.core.bundled import BUDGET_BYTES, bundled_eval, inspect_bundled
from bcu_gui.core.models import load_model
from bcu_gui.core.nets import PreActResNet

sys.path.insert(0, str(Path(__file__).parent))
import forms_helpers as fh  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

# The child imports everything first, then caps its address space 2 GiB above what it maps at that point (CUDA
# libraries alone map gigabytes of address space they never touch), then runs the real command.
_CHILD = textwrap.dedent("""
    import resource, sys
    import torch, numpy, PIL.Image
    import bcu_gui.cli, bcu_gui.core.bundled, bcu_gui.core.models, bcu_gui.core.evaluation
    mapped = int(open('/proc/self/status').read().split('VmSize:')[1].split()[0]) * 1024
    limit = mapped + 2 * 1024**3
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if sys.argv[1] != "saveback":
        sys.exit(bcu_gui.cli.main(sys.argv[1:]))
    from PIL.Image import Image
    from bcu_gui.core.saveback import _plain  # what save_original_form writes back
    data = _plain(bcu_gui.core.models.load_model(sys.argv[2]).raw.top)["bd_test"]["bd_data_container"]["data_dict"]
    print("shared" if isinstance(data[0][0], Image) and all(data[i] is data[0] for i in data) else "copied")
""")


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return PreActResNet([2, 2, 2, 2], num_classes=10, width=8).eval()


def _bd_test_of_one_image(count: int, side: int) -> dict:
    """BackdoorBench v2's bd_test holding ``count`` references to one ``side`` x ``side`` grey image."""
    image = Image.fromarray(np.full((side, side), 77, dtype=np.uint8), "L")
    sample = (image, 0, 3)  # one tuple, pickled once, referenced by every key
    return {"bd_data_container": {"save_folder_path": None, "data_dict": {i: sample for i in range(count)},
                                  "save_file_format": ".png"},
            "original_index_array": np.arange(count), "poison_indicator": np.ones(count), "save_folder_path": None}


def _write(path: Path, bd_test: dict, clean_test: dict | None = None) -> Path:
    fh.write_backdoorbench(path, "preactresnet18", _model(), "cifar10", 10, bd_test=bd_test)
    if clean_test is not None:
        top = torch.load(path, weights_only=False)
        top["clean_test"] = clean_test
        torch.save(top, path)
    return path


@pytest.fixture
def repeated_image_bomb(tmp_path) -> Path:
    """4 MB on disk; 3,000 x 2048 x 2048 x 3 = 35 GB of pixels once decoded."""
    return _write(tmp_path / "attack_result.pt", _bd_test_of_one_image(3000, 2048))


@pytest.fixture
def zero_stride_bomb(tmp_path) -> Path:
    """One 224 x 224 float image stored, 100,000 claimed by strides of zero: 56 GB."""
    x = torch.rand(1, 3, 224, 224).mul(255).expand(100_000, 3, 224, 224)
    y = torch.randint(0, 10, (100_000,))
    return _write(tmp_path / "attack_result.pt", {}, {"x": x, "y": y})


def _run_capped(*argv: str) -> subprocess.CompletedProcess:
    env = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, "-c", _CHILD, *argv], capture_output=True, text=True, timeout=240,
                          env=env, cwd=ROOT)


def test_repeated_image_bomb_is_refused_within_bounded_memory(repeated_image_bomb):
    assert repeated_image_bomb.stat().st_size < 8 * 1024**2
    proc = _run_capped("evaluate", str(repeated_image_bomb), "--device", "cpu")
    assert "MemoryError" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert any("bundled test set would decode to 35.2 GB" in line and "it was not read" in line
               for line in lines), proc.stderr
    assert proc.returncode == 2 and "--eval-clean" in lines[-1]  # nothing else to evaluate on: one clear error


def test_zero_stride_tensor_bomb_is_refused_within_bounded_memory(zero_stride_bomb):
    assert zero_stride_bomb.stat().st_size < 8 * 1024**2
    proc = _run_capped("evaluate", str(zero_stride_bomb), "--device", "cpu")
    assert "MemoryError" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "bundled test set (clean_test) would decode to 56.1 GB" in proc.stderr, proc.stderr
    assert "zero-stride" in proc.stderr and proc.returncode == 2


def test_model_still_opens_and_the_refusal_says_why(repeated_image_bomb, zero_stride_bomb):
    for path in (repeated_image_bomb, zero_stride_bomb):
        model = load_model(path)  # the weights are fine: the model opens
        assert model.arch_name == "preactresnet18"
        info = inspect_bundled(model.raw, model.input_size)
        assert info.description is None and "it was not read" in info.refusal
        bundle = bundled_eval(model.raw, model.input_size, model.num_classes)
        assert bundle.refused and bundle.triggered is None and bundle.clean is None


def test_kept_size_counts_too(tmp_path):
    """Small images kept at a large input size: 3,000 x 32 px is nothing, at 400 px it is 1.3 GiB."""
    path = _write(tmp_path / "attack_result.pt", _bd_test_of_one_image(3000, 32))
    model = load_model(path)
    assert inspect_bundled(model.raw, 32).description == "3000 poisoned test images (bd_test), target class 0"
    refused = inspect_bundled(model.raw, 400)
    assert refused.description is None and "would decode to 1.3 GB" in refused.refusal
    assert 3000 * 400 * 400 * 3 > BUDGET_BYTES


def test_a_set_within_the_budget_decodes_one_image_at_a_time(tmp_path):
    path = _write(tmp_path / "attack_result.pt", fh.backdoorbench_bd_test(n=12, size=48))
    model = load_model(path)
    bundle = bundled_eval(model.raw, model.input_size, model.num_classes)
    assert not bundle.refused and bundle.target == 0 and tuple(bundle.triggered.images.shape) == (11, 3, 32, 32)


def test_odd_structures_are_refused_not_raised(tmp_path):
    path = _write(tmp_path / "attack_result.pt", {"bd_data_container": {"data_dict": {"x": 1}},
                                                   "original_index_array": np.array(["not", "ints"])})
    model = load_model(path)
    info = inspect_bundled(model.raw, model.input_size)
    assert info.description is None and "not in a form BCU reads" in info.refusal


def test_a_repeated_image_is_written_back_once_not_decoded_for_every_reference(repeated_image_bomb):
    """Saving the cleansed model in its original form converts the pickled images back to PIL: an image the
    file referenced 3,000 times is converted once and stays shared (before: 3,000 x 4 MB = 12 GB)."""
    proc = _run_capped("saveback", str(repeated_image_bomb))
    assert proc.returncode == 0 and proc.stdout.strip() == "shared", proc.stderr[-2000:]
