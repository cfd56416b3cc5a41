"""What an image folder may pull in: links out of the chosen folder, class-folder names, Pillow's noise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bcu_gui.core.data import load_labeled, load_triggered, load_unlabeled, scan_folder, scan_images
from bcu_gui.core.errors import DataError


def _solid(path: Path, value: int, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder of 3 images that lies outside the folder the user picks."""
    for i in range(3):
        _solid(tmp_path / "elsewhere" / f"o{i}.png", 200)
    return tmp_path / "elsewhere"


def test_links_leading_out_of_the_folder_are_not_followed(tmp_path: Path, outside: Path) -> None:
    chosen = tmp_path / "chosen"
    _solid(chosen / "a.png", 1)
    (chosen / "disk").symlink_to(outside, target_is_directory=True)
    (chosen / "one.png").symlink_to(outside / "o0.png")
    files, links = scan_folder(chosen)
    assert [p.name for p in files] == ["a.png"]
    assert sorted(p.name for p in links) == ["disk", "one.png"]
    assert scan_images(chosen, follow_outside=True) != files  # asked for: followed
    assert len(scan_images(chosen, follow_outside=True)) == 5

    ds = load_unlabeled(chosen, 8)
    assert len(ds) == 1
    summary = ds.skipped_summary()
    assert summary is not None and "link leads outside the folder" in summary and "disk" in summary


def test_links_inside_the_folder_are_still_followed(tmp_path: Path) -> None:
    chosen = tmp_path / "chosen"
    _solid(chosen / "real" / "a.png", 1)
    (chosen / "alias").symlink_to(chosen / "real", target_is_directory=True)
    (chosen / "b.png").symlink_to(chosen / "real" / "a.png")
    files, links = scan_folder(chosen)
    assert links == []
    assert sorted(p.name for p in files) == ["a.png", "b.png"]


def test_only_outside_links_say_so_when_nothing_is_left(tmp_path: Path, outside: Path) -> None:
    chosen = tmp_path / "chosen"
    chosen.mkdir()
    (chosen / "root").symlink_to(outside, target_is_directory=True)
    with pytest.raises(DataError, match="link.*outside the folder were not followed"):
        load_unlabeled(chosen, 8)


def test_labelled_sets_do_not_leave_the_folder_either(tmp_path: Path, outside: Path) -> None:
    chosen = tmp_path / "clean"
    _solid(chosen / "0" / "a.png", 0)
    _solid(chosen / "1" / "b.png", 1)
    (chosen / "1" / "more").symlink_to(outside, target_is_directory=True)
    (chosen / "2").symlink_to(outside, target_is_directory=True)  # a whole class folder outside
    ds = load_labeled(chosen, 8, num_classes=10)
    assert ds.labels is not None and ds.labels.tolist() == [0, 1]
    assert sum(why == "link leads outside the folder" for _, why in ds.skipped) == 2
    trig = load_triggered(chosen, 8, target=0, num_classes=10)
    assert len(trig) == 1


def test_number_word_class_folders_keep_their_numbers(tmp_path: Path) -> None:
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    for k, name in enumerate(words):
        _solid(tmp_path / name / "x.png", k)
    ds = load_labeled(tmp_path, 8, num_classes=10)
    assert ds.labels is not None
    assert ds.labels.tolist() == list(range(10))
    assert ds.images[:, 0, 0, 0].tolist() == list(range(10))  # each folder's pixels carry its number
    assert ds.notes and "number words" in ds.notes[0] and "eight=8" in ds.notes[0]


def test_named_class_folders_say_how_they_were_mapped(tmp_path: Path) -> None:
    for k, name in enumerate(["cat", "dog", "bird"]):
        _solid(tmp_path / name / "x.png", 10 * k)
    ds = load_labeled(tmp_path, 8)
    assert ds.notes == [f"class folders in {tmp_path} mapped to classes in sorted name order: "
                        "bird=0, cat=1, dog=2"]
    assert load_labeled(tmp_path.parent / tmp_path.name, 8).class_names == ["bird", "cat", "dog"]


def test_integer_class_folders_need_no_note(tmp_path: Path) -> None:
    _solid(tmp_path / "0" / "x.png", 0)
    _solid(tmp_path / "3" / "x.png", 3)
    assert load_labeled(tmp_path, 8).notes == []


def test_large_images_do_not_print_pillows_warning(tmp_path: Path) -> None:
    """Between Pillow's pixel limit and twice it, Pillow warns on stderr; we shrink every image anyway."""
    _solid(tmp_path / "big.png", 7, size=64)
    code = (
        "import sys; from PIL import Image; Image.MAX_IMAGE_PIXELS = 64 * 64 - 1\n"
        "from bcu_gui.core.data import load_unlabeled\n"
        f"ds = load_unlabeled({str(tmp_path)!r}, 8); print(len(ds))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"
    assert "DecompressionBomb" not in out.stderr and out.stderr.strip() == ""
