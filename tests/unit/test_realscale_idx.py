"""The real-scale benchmark's idx reader (benchmarks/realscale/fmnist.py) on tiny synthetic gzipped files."""

from __future__ import annotations

import gzip
import importlib.util
import struct
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _fmnist():
    spec = importlib.util.spec_from_file_location("realscale_fmnist", ROOT / "benchmarks" / "realscale" / "fmnist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_idx(path: Path, array: np.ndarray, code: int) -> None:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(array.dtype.newbyteorder(">")).tobytes())


def test_read_idx_images_and_labels(tmp_path):
    fm = _fmnist()
    images = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    labels = np.array([9, 0, 3], dtype=np.uint8)
    _write_idx(tmp_path / "x-images-idx3-ubyte.gz", images, 0x08)
    _write_idx(tmp_path / "x-labels-idx1-ubyte.gz", labels, 0x08)
    assert np.array_equal(fm.read_idx(tmp_path / "x-images-idx3-ubyte.gz"), images)
    assert np.array_equal(fm.read_idx(tmp_path / "x-labels-idx1-ubyte.gz"), labels)
    wide = np.array([[1, -2], [300, 4]], dtype=np.int32)
    _write_idx(tmp_path / "w.gz", wide, 0x0C)
    assert np.array_equal(fm.read_idx(tmp_path / "w.gz"), wide)


def test_read_idx_rejects_bad_files(tmp_path):
    fm = _fmnist()
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as fh:
        fh.write(b"\x01\x02\x08\x01" + struct.pack(">I", 2) + b"\x00\x00")
    with pytest.raises(ValueError, match="magic"):
        fm.read_idx(bad)
    short = tmp_path / "short.gz"
    with gzip.open(short, "wb") as fh:
        fh.write(b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"\x00\x00")
    with pytest.raises(ValueError, match="expected 5 bytes"):
        fm.read_idx(short)


def test_missing_data_exits_2_with_the_install_hint(tmp_path, monkeypatch, capsys):
    fm = _fmnist()
    monkeypatch.setattr(fm, "DATA_DIR", tmp_path)
    with pytest.raises(SystemExit) as exc:
        fm.load_split("t10k")
    assert exc.value.code == 2
    assert "apt-get install dataset-fashion-mnist" in capsys.readouterr().err
