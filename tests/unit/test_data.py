"""Image folder loading and device-side batch augmentation (bcu_gui.core.data)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bcu_gui.core.data import (
    IMAGE_EXTENSIONS,
    ImageSet,
    load_labeled,
    load_thumbnails,
    load_triggered,
    load_unlabeled,
    random_crop_flip,
    scan_images,
    to_model_input,
)
from bcu_gui.core.errors import DataError


def _rgb(h: int = 8, w: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(path: Path, array: np.ndarray | None = None, mode: str | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_rgb() if array is None else array, mode).save(path, **kw)
    return path


def _solid(path: Path, value: int, size: int = 8) -> Path:
    """An image whose pixels all equal ``value``: a label we can read back off the decoded tensor."""
    return _save(path, np.full((size, size, 3), value, dtype=np.uint8))


# ------------------------------------------------------------------------------------------- scanning files


def test_scan_is_recursive_sorted_and_filters_extensions(tmp_path: Path) -> None:
    _save(tmp_path / "b.png")
    _save(tmp_path / "a.JPG", format="JPEG")
    _save(tmp_path / "sub/c.jpeg")
    _save(tmp_path / "sub/deeper/d.bmp")
    _save(tmp_path / "e.Tiff", format="TIFF")
    _save(tmp_path / "f.webp")
    _save(tmp_path / "g.tif")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "data.npy").write_bytes(b"\x00" * 10)
    _save(tmp_path / ".hidden.png")
    _save(tmp_path / "._a.png")
    _save(tmp_path / ".ipynb_checkpoints/x.png")

    found = scan_images(tmp_path)
    rel = [p.relative_to(tmp_path).as_posix() for p in found]
    assert rel == ["a.JPG", "b.png", "e.Tiff", "f.webp", "g.tif", "sub/c.jpeg", "sub/deeper/d.bmp"]
    assert scan_images(str(tmp_path)) == found  # str accepted, same stable order
    assert {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"} == set(IMAGE_EXTENSIONS)


def test_scan_follows_folder_links_without_looping(tmp_path: Path) -> None:
    _save(tmp_path / "real/a.png")
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    (tmp_path / "real/loop").symlink_to(tmp_path, target_is_directory=True)
    found = scan_images(tmp_path)
    # each real folder is read once, so the cycle terminates and the image appears once
    assert len(found) == 1 and found[0].name == "a.png"


def test_scan_empty_folder_returns_empty_list(tmp_path: Path) -> None:
    assert scan_images(tmp_path) == []


@pytest.mark.parametrize("loader", ["scan", "unlabeled", "labeled", "triggered"])
def test_missing_folder_and_file_raise_with_folder_name(tmp_path: Path, loader: str) -> None:
    calls = {
        "scan": lambda f: scan_images(f),
        "unlabeled": lambda f: load_unlabeled(f, 8),
        "labeled": lambda f: load_labeled(f, 8),
        "triggered": lambda f: load_triggered(f, 8, target=0),
    }
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match="does not exist") as info:
        calls[loader](missing)
    assert str(missing) in str(info.value)
    a_file = _save(tmp_path / "x.png")
    with pytest.raises(DataError, match="is a file") as info:
        calls[loader](a_file)
    assert str(a_file) in str(info.value)


@pytest.mark.parametrize("loader", ["unlabeled", "labeled", "triggered"])
def test_empty_folder_raises_no_images(tmp_path: Path, loader: str) -> None:
    (tmp_path / "empty_class").mkdir()
    (tmp_path / "readme.txt").write_text("hi")
    fn = {
        "unlabeled": lambda: load_unlabeled(tmp_path, 8),
        "labeled": lambda: load_labeled(tmp_path, 8),
        "triggered": lambda: load_triggered(tmp_path, 8, target=0),
    }[loader]
    with pytest.raises(DataError, match="no images found") as info:
        fn()
    msg = str(info.value)
    assert str(tmp_path) in msg and ".png" in msg and "recursively" in msg


# ----------------------------------------------------------------------------------------- decoding modes


def _mode_images(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (10, 10), dtype=np.uint8)
    rgba = rng.integers(0, 256, (10, 10, 4), dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    paths["L"] = _save(folder / "L.png", grey, "L")
    paths["1"] = folder / "1.png"
    Image.fromarray(grey).convert("1").save(paths["1"])
    paths["P"] = folder / "P.png"
    Image.fromarray(_rgb(10, 10)).convert("P").save(paths["P"])
    paths["LA"] = folder / "LA.png"
    Image.fromarray(grey).convert("LA").save(paths["LA"])
    paths["RGBA"] = _save(folder / "RGBA.png", rgba, "RGBA")
    paths["I;16"] = folder / "I16.png"
    Image.fromarray(grey.astype(np.uint16) * 257).save(paths["I;16"])
    paths["CMYK"] = folder / "CMYK.jpg"
    Image.fromarray(_rgb(10, 10)).convert("CMYK").save(paths["CMYK"], format="JPEG")
    paths["CMYK_tif"] = folder / "CMYK.tiff"
    Image.fromarray(_rgb(10, 10)).convert("CMYK").save(paths["CMYK_tif"])
    paths["F"] = folder / "F.tiff"
    Image.fromarray(grey.astype(np.float32) / 255.0).save(paths["F"])
    paths["RGB_jpg"] = _save(folder / "rgb.jpg", _rgb(10, 10))
    paths["RGB_bmp"] = _save(folder / "rgb.bmp", _rgb(10, 10))
    paths["RGB_webp"] = _save(folder / "rgb.webp", _rgb(10, 10), lossless=True)
    paths["big_jpg"] = _save(folder / "big.jpg", np.full((300, 200, 3), 90, dtype=np.uint8))  # draft path
    return paths


def test_every_mode_and_format_becomes_rgb_of_requested_size(tmp_path: Path) -> None:
    paths = _mode_images(tmp_path)
    ds = load_unlabeled(tmp_path, 6)
    assert ds.skipped == []
    assert len(ds) == len(paths)
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (len(paths), 3, 6, 6)
    assert ds.images.is_contiguous() and ds.images.device.type == "cpu"
    assert ds.labels is None and ds.class_names is None
    big = ds.images[[p.name for p in ds.files].index("big.jpg")].int()
    assert (big - 90).abs().max() <= 3  # JPEG decoded at reduced scale, still the right colour


def test_grey_sixteen_bit_and_float_are_scaled_not_clipped(tmp_path: Path) -> None:
    grey = np.arange(100, dtype=np.uint8).reshape(10, 10) * 2
    _save(tmp_path / "a_L.png", grey, "L")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "b_I16.png")
    Image.fromarray(grey.astype(np.float32) / 255.0).save(tmp_path / "c_F.tiff")
    ds = load_unlabeled(tmp_path, 10)
    for row in ds.images:
        assert torch.equal(row[0], torch.from_numpy(grey))  # not resampled: already 10x10
        assert torch.equal(row[0], row[1]) and torch.equal(row[1], row[2])


def test_alpha_is_composited_on_black(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3] = 200
    rgba[:2, :, 3] = 255  # top half opaque, bottom half fully transparent (its hidden colour is 200)
    _save(tmp_path / "a.png", rgba, "RGBA")
    img = load_unlabeled(tmp_path, 4).images[0]
    assert (img[:, :2] == 200).all() and (img[:, 2:] == 0).all()

    palette = Image.fromarray(np.array([[0, 1], [1, 1]], dtype=np.uint8), "P")
    palette.putpalette([10, 20, 30, 200, 200, 200] + [0] * 762)
    palette.info["transparency"] = 0  # palette entry 0 is transparent
    palette.save(tmp_path / "b_palette.png", transparency=0)
    img = load_unlabeled(tmp_path, 2).images[1]
    assert img[:, 0, 0].tolist() == [0, 0, 0] and (img[:, 1] == 200).all() and (img[:, 0, 1] == 200).all()


def test_right_size_not_resampled_and_non_square_centre_cropped(tmp_path: Path) -> None:
    exact = _rgb(8, 8, seed=3)
    wide = _rgb(8, 14, seed=4)  # shorter side already 8: crop only, columns 3..10
    tall = np.zeros((24, 12, 3), dtype=np.uint8)
    tall[3:21] = 255  # white around the centre square (rows 6..17), black at both ends
    _save(tmp_path / "a.png", exact)
    _save(tmp_path / "b.png", wide)
    _save(tmp_path / "c.png", tall)
    ds = load_unlabeled(tmp_path, 8)
    assert torch.equal(ds.images[0], torch.from_numpy(exact).permute(2, 0, 1))
    assert torch.equal(ds.images[1], torch.from_numpy(wide[:, 3:11]).permute(2, 0, 1))
    small = load_unlabeled(tmp_path, 6).images[2]  # shorter side 12 -> 6, then the centre 6x6
    assert small.shape == (3, 6, 6) and (small == 255).all()


def test_square_downscale_is_antialiased(tmp_path: Path) -> None:
    checker = (np.indices((32, 32)).sum(0) % 2 * 255).astype(np.uint8)
    _save(tmp_path / "a.png", checker, "L")
    img = load_unlabeled(tmp_path, 8).images[0].float()
    # an antialiased 4x reduction of a 1-pixel checkerboard is flat grey, not aliased black/white
    assert (img - 127.5).abs().max() < 10


# ------------------------------------------------------------------------------------ unreadable files


def test_unreadable_files_are_skipped_and_reported(tmp_path: Path) -> None:
    _solid(tmp_path / "a_good.png", 10)
    (tmp_path / "b_empty.png").write_bytes(b"")
    (tmp_path / "c_text.jpg").write_text("this is not a jpeg")
    good_jpeg = _save(tmp_path / "tmp.jpg", _rgb(64, 64), quality=90)
    (tmp_path / "d_truncated.jpg").write_bytes(good_jpeg.read_bytes()[:300])
    good_jpeg.unlink()
    _save(tmp_path / "e_png_named_bmp.bmp", format="PNG")  # wrong extension, readable content: kept
    _solid(tmp_path / "f_good.png", 20)
    progress: list[tuple[int, int]] = []

    ds = load_unlabeled(tmp_path, 8, progress=lambda d, t: progress.append((d, t)))

    assert [p.name for p in ds.files] == ["a_good.png", "e_png_named_bmp.bmp", "f_good.png"]
    assert len(ds) == 3 and ds.images.shape[0] == 3 and ds.images.is_contiguous()
    assert ds.images[0].eq(10).all() and ds.images[2].eq(20).all()
    reasons = {p.name: why for p, why in ds.skipped}
    assert set(reasons) == {"b_empty.png", "c_text.jpg", "d_truncated.jpg"}
    assert reasons["b_empty.png"] == "empty file"
    assert reasons["c_text.jpg"] == "cannot identify image file"
    assert reasons["d_truncated.jpg"] == "truncated"
    assert all(str(tmp_path) not in why for why in reasons.values())

    summary = ds.skipped_summary(limit=2)
    assert summary is not None
    assert summary.startswith(f"skipped 3 unreadable file(s) in {tmp_path}: b_empty.png (empty file), ")
    assert summary.endswith(", and 1 more")
    assert progress[-1] == (6, 6)
    assert "3 skipped" in repr(ds)


def test_all_unreadable_raises_with_example(tmp_path: Path) -> None:
    for i in range(5):
        (tmp_path / f"{i}.png").write_text("garbage")
    with pytest.raises(DataError, match=r"all 5 image files in .* are unreadable, e\.g\. 0\.png: ") as info:
        load_unlabeled(tmp_path, 8)
    assert str(tmp_path) in str(info.value)


def test_no_skipped_summary_is_none(tmp_path: Path) -> None:
    _save(tmp_path / "a.png")
    assert load_unlabeled(tmp_path, 8).skipped_summary() is None


# -------------------------------------------------------------------------------- many files, order, limit


def test_many_files_keep_sorted_order_with_thread_pool_and_limit(tmp_path: Path) -> None:
    n = 150  # enough for several decode chunks and workers
    for i in range(n):
        _solid(tmp_path / f"sub{i % 3}" / f"{i:03d}.png", i)
    (tmp_path / "sub1" / "zzz_bad.png").write_bytes(b"nope")
    calls: list[tuple[int, int]] = []
    ds = load_unlabeled(tmp_path, 4, progress=lambda d, t: calls.append((d, t)))
    expected = sorted(range(n), key=lambda i: (i % 3, i))
    assert [int(p.stem) for p in ds.files] == expected
    assert ds.images[:, 0, 0, 0].tolist() == expected  # each row holds its own file's pixels
    assert len(ds.skipped) == 1
    assert calls[-1] == (n + 1, n + 1) and all(t == n + 1 for _, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and len(calls) <= n // 64 + 3

    first = load_unlabeled(tmp_path, 4, limit=7)
    assert [int(p.stem) for p in first.files] == expected[:7]


def test_progress_exception_cancels_load(tmp_path: Path) -> None:
    for i in range(200):
        _solid(tmp_path / f"{i:03d}.png", i % 256)

    class Cancelled(Exception):
        pass

    def cancel(done: int, total: int) -> None:
        raise Cancelled

    with pytest.raises(Cancelled):
        load_unlabeled(tmp_path, 4, progress=cancel)


# ---------------------------------------------------------------------------------------- labelled sets


def test_integer_class_folders_map_literally_with_gaps(tmp_path: Path) -> None:
    for label in (0, 2, 10):
        for j in range(2):
            _solid(tmp_path / str(label) / "nested" / f"{j}.png", label)
    (tmp_path / "5").mkdir()  # empty class folder: ignored
    _save(tmp_path / "loose.png")  # next to class folders: ignored
    ds = load_labeled(tmp_path, 8, num_classes=11)
    assert ds.labels is not None and ds.labels.dtype == torch.int64
    assert ds.labels.tolist() == [0, 0, 2, 2, 10, 10]
    assert ds.images[:, 0, 0, 0].tolist() == ds.labels.tolist()
    assert ds.class_names is not None and len(ds.class_names) == 11
    assert ds.class_names[2] == "2" and ds.class_names[10] == "10"
    assert all(p.name != "loose.png" for p in ds.files)


def test_named_class_folders_map_to_sorted_indices(tmp_path: Path) -> None:
    for k, name in enumerate(["cat", "dog", "bird"]):
        _solid(tmp_path / name / "x.png", 10 * k)
    ds = load_labeled(tmp_path, 8)
    assert ds.class_names == ["bird", "cat", "dog"]
    assert ds.labels is not None and ds.labels.tolist() == [0, 1, 2]
    assert ds.images[:, 0, 0, 0].tolist() == [20, 0, 10]


def test_labelled_needs_class_folders(tmp_path: Path) -> None:
    _save(tmp_path / "a.png")
    with pytest.raises(DataError, match="one sub-folder per class") as info:
        load_labeled(tmp_path, 8)
    assert str(tmp_path) in str(info.value)


def test_class_beyond_model_classes(tmp_path: Path) -> None:
    _save(tmp_path / "3" / "a.png")
    _save(tmp_path / "12" / "a.png")
    with pytest.raises(DataError, match="class folder '12' .*beyond the model's 10 classes") as info:
        load_labeled(tmp_path, 8, num_classes=10)
    assert str(tmp_path) in str(info.value)
    named = tmp_path / "named"
    for name in ["a", "b", "c"]:
        _save(named / name / "x.png")
    with pytest.raises(DataError, match="class folder 'c' .*beyond the model's 2 classes"):
        load_labeled(named, 8, num_classes=2)


def test_duplicate_integer_classes_raise(tmp_path: Path) -> None:
    _save(tmp_path / "7" / "a.png")
    _save(tmp_path / "07" / "a.png")
    with pytest.raises(DataError, match="both mean class 7"):
        load_labeled(tmp_path, 8)


def test_labelled_skips_unreadable_and_keeps_labels_aligned(tmp_path: Path) -> None:
    _solid(tmp_path / "0" / "a.png", 0)
    (tmp_path / "0" / "b.png").write_bytes(b"bad")
    _solid(tmp_path / "1" / "a.png", 1)
    ds = load_labeled(tmp_path, 8)
    assert ds.labels is not None and ds.labels.tolist() == [0, 1]
    assert ds.images[:, 0, 0, 0].tolist() == [0, 1]
    assert [p.name for p, _ in ds.skipped] == ["b.png"]


# --------------------------------------------------------------------------------------- triggered sets


def test_triggered_labelled_drops_target_class(tmp_path: Path) -> None:
    for label in range(3):
        for j in range(2):
            _solid(tmp_path / str(label) / f"{j}.png", label)
    ds = load_triggered(tmp_path, 8, target=1, num_classes=3)
    assert ds.labels is not None and ds.labels.tolist() == [0, 0, 2, 2]
    assert ds.images[:, 0, 0, 0].tolist() == [0, 0, 2, 2]


def test_triggered_unlabelled_takes_every_image(tmp_path: Path) -> None:
    for j in range(3):
        _save(tmp_path / f"{j}.png")
    ds = load_triggered(tmp_path, 8, target=0, num_classes=10)
    assert len(ds) == 3 and ds.labels is None and ds.class_names is None


def test_triggered_bad_target_and_only_target_images(tmp_path: Path) -> None:
    _save(tmp_path / "4" / "a.png")
    with pytest.raises(DataError, match="target class 10 is outside the model's 10 classes"):
        load_triggered(tmp_path, 8, target=10, num_classes=10)
    with pytest.raises(DataError, match="negative"):
        load_triggered(tmp_path, 8, target=-1)
    with pytest.raises(DataError, match="target class 4") as info:
        load_triggered(tmp_path, 8, target=4, num_classes=10)
    assert str(tmp_path) in str(info.value)


# ------------------------------------------------------------------------------------------- thumbnails


def test_thumbnails_skip_unreadable(tmp_path: Path) -> None:
    a = _save(tmp_path / "a.png", _rgb(20, 30))
    b = tmp_path / "b.png"
    b.write_bytes(b"junk")
    c = _save(tmp_path / "c.png", np.zeros((5, 5), dtype=np.uint8), "L")
    thumbs = load_thumbnails([a, b, c], size=12)
    assert len(thumbs) == 2
    assert all(t.shape == (12, 12, 3) and t.dtype == np.uint8 for t in thumbs)


# ------------------------------------------------------------------------------------ batch operations


def test_to_model_input_values() -> None:
    batch = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 2, 2).contiguous()
    mean = torch.tensor([0.5, 0.2, 0.0]).view(1, 3, 1, 1)
    std = torch.tensor([0.5, 0.1, 2.0]).view(1, 3, 1, 1)
    out = to_model_input(batch, mean, std)
    assert out.dtype == torch.float32 and out.shape == batch.shape
    expected = torch.tensor([-1.0, 0.0, 0.5]).view(1, 3, 1, 1).expand_as(out)
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.equal(out, (batch.float() / 255 - mean) / std)  # exactly the documented formula
    with pytest.raises(TypeError):
        to_model_input(batch.float(), mean, std)


def _hand_crop_flip(img: torch.Tensor, padding: int, dy: int, dx: int, flipped: bool) -> torch.Tensor:
    c, h, w = img.shape
    padded = torch.zeros((c, h + 2 * padding, w + 2 * padding), dtype=img.dtype)
    padded[:, padding : padding + h, padding : padding + w] = img
    crop = padded[:, dy : dy + h, dx : dx + w]
    return crop.flip(-1) if flipped else crop


def test_random_crop_flip_matches_hand_computed_crops() -> None:
    torch.manual_seed(0)
    batch = torch.randint(1, 256, (64, 3, 8, 10), dtype=torch.uint8)  # no zeros: padding is detectable
    out = random_crop_flip(batch, padding=3, generator=torch.Generator().manual_seed(7))
    assert out.shape == batch.shape and out.dtype == torch.uint8 and out.device == batch.device

    seen_flip = seen_plain = seen_shift = False
    for i in range(batch.shape[0]):
        matches = [
            (dy, dx, fl)
            for dy in range(7)
            for dx in range(7)
            for fl in (False, True)
            if torch.equal(out[i], _hand_crop_flip(batch[i], 3, dy, dx, fl))
        ]
        assert len(matches) == 1, f"sample {i} is not a padded crop (+flip) of its input"
        dy, dx, fl = matches[0]
        seen_flip |= fl
        seen_plain |= not fl
        seen_shift |= (dy, dx) != (3, 3)
        # the padding region reads as zero, and only there
        zero_rows = list(range(max(0, 3 - dy))) + list(range(8 - max(0, dy - 3), 8))
        for r in zero_rows:
            assert (out[i, :, r] == 0).all()
    assert seen_flip and seen_plain and seen_shift


def test_random_crop_flip_first_sample_against_drawn_offsets() -> None:
    batch = torch.randint(0, 256, (5, 3, 6, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(123)
    out = random_crop_flip(batch, padding=2, generator=gen)
    # replay the documented draws: offsets [2, N] (dy, dx) in [0, 2p], then one flip bit per sample
    replay = torch.Generator().manual_seed(123)
    offsets = torch.randint(0, 5, (2, 5), generator=replay)
    flips = torch.randint(0, 2, (5, 1), generator=replay).bool()
    for i in range(5):
        expected = _hand_crop_flip(batch[i], 2, int(offsets[0, i]), int(offsets[1, i]), bool(flips[i]))
        assert torch.equal(out[i], expected)


def test_random_crop_flip_is_deterministic_per_seed_and_options() -> None:
    batch = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8)
    a = random_crop_flip(batch, generator=torch.Generator().manual_seed(5))
    b = random_crop_flip(batch, generator=torch.Generator().manual_seed(5))
    c = random_crop_flip(batch, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)

    flip_only = random_crop_flip(batch, padding=0, generator=torch.Generator().manual_seed(1))
    flipped = [torch.equal(flip_only[i], batch[i].flip(-1)) for i in range(32)]
    kept = [torch.equal(flip_only[i], batch[i]) for i in range(32)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)

    shift_only = random_crop_flip(batch, padding=2, flip=False, generator=torch.Generator().manual_seed(1))
    assert any(not torch.equal(shift_only[i], batch[i]) for i in range(32))
    for i in range(32):
        assert any(
            torch.equal(shift_only[i], _hand_crop_flip(batch[i], 2, dy, dx, False))
            for dy in range(5)
            for dx in range(5)
        )

    same = random_crop_flip(batch, padding=0, flip=False)
    assert torch.equal(same, batch) and same.data_ptr() != batch.data_ptr()
    empty = random_crop_flip(batch[:0])
    assert empty.shape == (0, 3, 16, 16)
    with pytest.raises(ValueError):
        random_crop_flip(batch[0])
    with pytest.raises(ValueError):
        random_crop_flip(batch, padding=-1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_random_crop_flip_on_cuda_matches_cpu_rules() -> None:
    batch = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8).cuda()
    gen = torch.Generator(device="cuda").manual_seed(3)
    out = random_crop_flip(batch, padding=2, generator=gen)
    assert out.device == batch.device and out.dtype == torch.uint8
    gen2 = torch.Generator(device="cuda").manual_seed(3)
    assert torch.equal(out, random_crop_flip(batch, padding=2, generator=gen2))
    cpu_batch = batch.cpu()
    for i in range(16):
        assert any(
            torch.equal(out[i].cpu(), _hand_crop_flip(cpu_batch[i], 2, dy, dx, fl))
            for dy in range(5)
            for dx in range(5)
            for fl in (False, True)
        )


def _best_ms(batch: torch.Tensor, gen: torch.Generator) -> float:
    for _ in range(3):
        out = random_crop_flip(batch, generator=gen)
    best = float("inf")
    for _ in range(3):  # best of 3 rounds: a shared machine adds noise, never speed
        if batch.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(5):
            out = random_crop_flip(batch, generator=gen)
        if batch.is_cuda:
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - start) / 5 * 1e3)
    assert out.shape == batch.shape
    return best


def test_random_crop_flip_speed_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    """Prints, never asserts, the time (machines differ): a few ms on one CPU core, microseconds on a GPU."""
    lines = []
    batch = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8)
    threads = torch.get_num_threads()
    lines.append(f"{_best_ms(batch, torch.Generator().manual_seed(0)):.2f} ms on cpu ({threads} threads)")
    if threads > 1:  # on a busy machine intra-op threads can oversubscribe; one thread shows the kernel cost
        torch.set_num_threads(1)
        try:
            lines.append(f"{_best_ms(batch, torch.Generator().manual_seed(0)):.2f} ms on cpu (1 thread)")
        finally:
            torch.set_num_threads(threads)
    if torch.cuda.is_available():
        gen = torch.Generator(device="cuda").manual_seed(0)
        lines.append(f"{_best_ms(batch.cuda(), gen):.3f} ms on cuda")
    with capsys.disabled():
        print("\nrandom_crop_flip [256,3,32,32], best of 3x5: " + "; ".join(lines))


def test_imageset_len_and_repr(tmp_path: Path) -> None:
    _save(tmp_path / "a.png")
    ds = load_unlabeled(tmp_path, 8)
    assert isinstance(ds, ImageSet) and len(ds) == 1
    assert "1 unlabelled images" in repr(ds) and str(tmp_path) in repr(ds)


def test_bad_size_or_limit_is_a_caller_error(tmp_path: Path) -> None:
    _save(tmp_path / "a.png")
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError):
            load_unlabeled(tmp_path, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        load_unlabeled(tmp_path, 8, limit=0)
    assert load_unlabeled(tmp_path, np.int64(4)).images.shape == (1, 3, 4, 4)  # type: ignore[arg-type]
