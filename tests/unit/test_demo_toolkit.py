"""The demo toolkit: triggers, digits, splits, image folders, natural crops and the shipped demo."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("sklearn")

from bcu_gui.demo import DEMO_ENV_VAR, demo_dir  # noqa: E402
from bcu_gui.demo.attacks import (  # noqa: E402
    ATTACKS, badnets_patch, blend, checkerboard, get_attack, noise_pattern, sig_signal, wanet_grid, warp,
)
from bcu_gui.demo.digits import (  # noqa: E402
    CIFAR10_NORM, load_digits_rgb, natural_crops, poison, split_digits, write_image_folder,
)

REPO_DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo"


@pytest.fixture(scope="module")
def digits():
    return load_digits_rgb(32)


def _batch(n=2, value=7, size=32):
    return torch.full((n, 3, size, size), value, dtype=torch.uint8)


# ---- triggers -------------------------------------------------------------------------------------------

def test_badnets_patch_is_a_bottom_right_checkerboard():
    images = _batch()
    out = badnets_patch(images)
    assert out is not images and torch.equal(images, _batch())  # input untouched
    board = torch.tensor([[255, 0, 255], [0, 255, 0], [255, 0, 255]], dtype=torch.uint8)
    for c in range(3):
        assert torch.equal(out[0, c, 28:31, 28:31], board)
    changed = (out != images).any(dim=(0, 1))
    assert changed.nonzero().min(0).values.tolist() == [28, 28]
    assert changed.nonzero().max(0).values.tolist() == [30, 30]
    assert (out[:, :, 31, :] == 7).all() and (out[:, :, :, 31] == 7).all()  # 1 px margin kept


def test_badnets_patch_size_value_margin():
    out = badnets_patch(_batch(1, 0, 16), size=4, value=200, margin=0)
    assert torch.equal(out[0, 1, 12:16, 12:16], checkerboard(4, 200))
    assert out[0, :, :12].sum() == 0 and out[0, :, :, :12].sum() == 0
    with pytest.raises(ValueError):
        badnets_patch(_batch(1, 0, 4), size=4, margin=1)
    with pytest.raises(ValueError):
        badnets_patch(torch.zeros(1, 3, 8, 8))  # float input


def test_blend_mixes_the_pattern():
    pattern = noise_pattern(32, seed=3)
    assert pattern.dtype == torch.uint8 and pattern.shape == (3, 32, 32)
    assert torch.equal(pattern, noise_pattern(32, seed=3)) and not torch.equal(pattern, noise_pattern(32, seed=4))
    images = _batch(2, 100)
    out = blend(images, pattern, alpha=0.2)
    expected = (0.8 * 100 + 0.2 * pattern.float()).round().to(torch.uint8)
    assert torch.equal(out[1], expected) and torch.equal(images, _batch(2, 100))
    assert torch.equal(blend(images, pattern, alpha=0.0), images)
    assert torch.equal(get_attack("blend", 32, 3)(images), out)
    with pytest.raises(ValueError):
        blend(images, noise_pattern(16))


def test_sig_adds_a_horizontal_sinusoid():
    images = _batch(2, 100)
    out = sig_signal(images, delta=20, frequency=6)
    assert out is not images and torch.equal(images, _batch(2, 100))
    expected = (100 + 20 * torch.sin(2 * torch.pi * torch.arange(32) * 6 / 32)).round().to(torch.uint8)
    for c in range(3):
        assert torch.equal(out[1, c, 17], expected)
    assert torch.equal(out[:, :, 0], out[:, :, 31])  # the same on every row
    assert sig_signal(_batch(1, 250)).max() == 255 and sig_signal(_batch(1, 3)).min() == 0  # clamped
    assert torch.equal(get_attack("sig")(images), out)


def test_wanet_warps_smoothly_and_is_seeded():
    grid = wanet_grid(32, seed=0)
    assert grid.shape == (1, 32, 32, 2) and grid.abs().max() <= 1
    assert torch.equal(grid, wanet_grid(32, seed=0)) and not torch.equal(grid, wanet_grid(32, seed=1))
    identity = wanet_grid(32, seed=0, strength=0.0)
    images = torch.randint(0, 256, (2, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    assert torch.equal(warp(images, identity), images)  # no warp, no change
    shift_px = (grid - identity).abs().amax() * 31 / 2
    assert 1.0 < shift_px < 8.0  # a few pixels at most: a subtle, smooth warp
    out = warp(images, grid)
    assert out.dtype == torch.uint8 and not torch.equal(out, images)
    assert torch.equal(get_attack("wanet", 32, 0)(images), out)
    assert not torch.equal(get_attack("wanet", 32, 1)(images), out)
    with pytest.raises(ValueError):
        warp(images, wanet_grid(16))


def test_every_attack_is_known_by_name():
    images = _batch(1, 90)
    for name in ATTACKS:
        assert get_attack(name)(images).shape == images.shape
    with pytest.raises(ValueError, match="wanet"):
        get_attack("trojan")


# ---- digits and splits ------------------------------------------------------------------------------------

def test_load_digits_rgb(digits):
    images, labels = digits
    assert images.dtype == torch.uint8 and images.shape == (1797, 3, 32, 32)
    assert labels.dtype == torch.int64 and labels.shape == (1797,)
    assert set(labels.tolist()) == set(range(10))
    assert images.min() == 0 and images.max() == 255
    assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 0], images[:, 2])
    assert load_digits_rgb(16)[0].shape == (1797, 3, 16, 16)


def test_split_digits_disjoint_and_deterministic(digits):
    images, labels = digits
    tagged = images.clone()
    tagged[:, 0, 0, :2] = torch.stack([torch.arange(1797) // 256, torch.arange(1797) % 256], 1).to(torch.uint8)
    splits = split_digits(tagged, labels, seed=0)
    sizes = {k: len(v[0]) for k, v in splits.items()}
    assert sizes == {"train": 1000, "unlabeled": 400, "test": 397}
    ids = {k: set((v[0][:, 0, 0, 0].long() * 256 + v[0][:, 0, 0, 1].long()).tolist()) for k, v in splits.items()}
    assert sum(len(s) for s in ids.values()) == 1797
    assert len(ids["train"] | ids["unlabeled"] | ids["test"]) == 1797
    again = split_digits(tagged, labels, seed=0)
    other = split_digits(tagged, labels, seed=1)
    for k in splits:
        assert torch.equal(splits[k][0], again[k][0]) and torch.equal(splits[k][1], again[k][1])
    assert not torch.equal(splits["train"][1], other["train"][1])


def test_poison_picks_non_target_samples(digits):
    images, labels = digits
    x, y = images[:200], labels[:200]
    px, py, chosen = poison(x, y, badnets_patch, target=0, rate=0.1, seed=0)
    assert len(chosen) == 20 and (y[chosen] != 0).all() and (py[chosen] == 0).all()
    assert torch.equal(px[chosen], badnets_patch(x[chosen]))
    rest = torch.ones(200, dtype=torch.bool)
    rest[chosen] = False
    assert torch.equal(px[rest], x[rest]) and torch.equal(py[rest], y[rest])
    assert torch.equal(poison(x, y, badnets_patch, 0, 0.1, seed=0)[2], chosen)


def test_cifar10_norm_matches_the_core_preset():
    from bcu_gui.core.normalization import PRESETS

    assert tuple(PRESETS["cifar10"].mean) == CIFAR10_NORM[0] and tuple(PRESETS["cifar10"].std) == CIFAR10_NORM[1]


# ---- files ----------------------------------------------------------------------------------------------

def _read_png(path):
    import numpy as np
    from PIL import Image

    with Image.open(path) as img:
        return torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1)


def test_write_image_folder_round_trip(tmp_path, digits):
    images, labels = digits[0][:12], digits[1][:12]
    paths = write_image_folder(tmp_path / "a", images, labels)
    assert [p.name for p in paths] == [f"{i:05d}.png" for i in range(12)]
    assert all(p.parent.name == str(int(y)) for p, y in zip(paths, labels))
    for i, p in enumerate(paths):
        assert torch.equal(_read_png(p), images[i])
    flat = write_image_folder(tmp_path / "b", images)
    assert all(p.parent == tmp_path / "b" for p in flat)
    again = write_image_folder(tmp_path / "c", images)
    assert [p.read_bytes() for p in flat] == [p.read_bytes() for p in again]
    named = write_image_folder(tmp_path / "d", images[:2], labels[:2], class_names=[f"c{i}" for i in range(10)],
                               numbers=[7, 9])
    assert [p.relative_to(tmp_path / "d").as_posix() for p in named] == [
        f"c{int(labels[0])}/00007.png", f"c{int(labels[1])}/00009.png"]


def test_natural_crops():
    crops = natural_crops(8, size=32, seed=0)
    assert crops.dtype == torch.uint8 and crops.shape == (8, 3, 32, 32)
    assert torch.equal(crops, natural_crops(8, size=32, seed=0))
    assert not torch.equal(crops, natural_crops(8, size=32, seed=1))
    assert crops.float().std() > 10  # real photo content, not a constant
    assert natural_crops(2, size=24).shape == (2, 3, 24, 24)


# ---- the shipped demo -----------------------------------------------------------------------------------

def test_demo_dir_finds_the_shipped_demo(monkeypatch):
    monkeypatch.delenv(DEMO_ENV_VAR, raising=False)
    found = demo_dir()
    assert found.resolve() == REPO_DEMO.resolve()
    for name in ("model.pt", "model.json", "README.md", "make_demo.py"):
        assert (found / name).is_file(), name
    for name in ("unlabeled", "clean", "triggered", "ood_unlabeled"):
        assert (found / name).is_dir(), name
    assert len(list((found / "unlabeled").glob("*.png"))) == 400
    assert len(list((found / "ood_unlabeled").glob("*.png"))) == 400
    assert len(list((found / "clean").rglob("*.png"))) == 397
    assert sorted(p.name for p in (found / "clean").iterdir()) == [str(i) for i in range(10)]
    assert not (found / "triggered" / "0").exists()  # only non-target digits are triggered
    size = sum(p.stat().st_size for p in found.rglob("*") if p.is_file())
    assert size < 10_000_000


def test_demo_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv(DEMO_ENV_VAR, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=DEMO_ENV_VAR):
        demo_dir()
    (tmp_path / "model.pt").write_bytes(b"")
    assert demo_dir() == tmp_path.resolve()


def test_demo_dir_missing(monkeypatch):
    import bcu_gui.demo as demo

    monkeypatch.delenv(DEMO_ENV_VAR, raising=False)
    monkeypatch.setattr(demo, "_candidates", lambda: [Path("/nonexistent/bcu-demo")])
    with pytest.raises(FileNotFoundError, match="make_demo.py"):
        demo_dir()


def test_shipped_demo_sidecar_and_model():
    from bcu_gui.core.nets import CifarResNet
    from bcu_gui.demo.digits import evaluate

    meta = json.loads((REPO_DEMO / "model.json").read_text())
    assert meta["arch"] == "resnet18_cifar" and meta["num_classes"] == 10 and meta["input_size"] == 32
    assert meta["normalize"] == "cifar10" and (tuple(meta["mean"]), tuple(meta["std"])) == CIFAR10_NORM
    assert meta["attack"] == "badnets" and meta["target_class"] == 0 and meta["train_images"] == 1000
    assert meta["teacher_acc"] >= 0.90 and meta["teacher_asr"] >= 0.95

    state = torch.load(REPO_DEMO / "model.pt", map_location="cpu", weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    model = CifarResNet([2, 2, 2, 2], num_classes=10, width=meta["width"])
    model.load_state_dict(state)  # strict
    # The PNG folders reproduce the sidecar's numbers.
    clean = sorted((REPO_DEMO / "clean").rglob("*.png"))
    x = torch.stack([_read_png(p) for p in clean])
    y = torch.tensor([int(p.parent.name) for p in clean])
    assert evaluate(model, x, y) >= 0.90
    trig = sorted((REPO_DEMO / "triggered").rglob("*.png"))
    xt = torch.stack([_read_png(p) for p in trig])
    assert evaluate(model, xt, torch.zeros(len(xt), dtype=torch.int64)) >= 0.95
    assert all((REPO_DEMO / "clean" / p.parent.name / p.name).is_file() for p in trig)


# ---- training (slow) -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_train_backdoored_small_model_learns_the_backdoor(digits):
    from bcu_gui.demo.digits import attack_success_rate, evaluate, train_backdoored

    torch.set_num_threads(2)
    splits = split_digits(*digits, seed=0)
    model = train_backdoored(*splits["train"], width=8, epochs=10, seed=0)  # measured ASR 0.975
    assert not model.training
    x, y = splits["test"]
    assert evaluate(model, x, y) > 0.8
    assert attack_success_rate(model, x, y, 0, badnets_patch) > 0.9
    again = train_backdoored(*splits["train"], width=8, epochs=1, seed=0)
    third = train_backdoored(*splits["train"], width=8, epochs=1, seed=0)
    digest = [hashlib.sha256(b"".join(v.numpy().tobytes() for v in m.state_dict().values())).hexdigest()
              for m in (again, third)]
    assert digest[0] == digest[1]  # deterministic for a seed
