"""Atomic writes: no bare NaN in JSON, a full disk reported as such, no half-written file left behind."""

from __future__ import annotations

import contextlib
import errno
import json
import subprocess
import uuid
from pathlib import Path

import pytest
import torch

from bcu_gui.core import atomic


def test_json_never_holds_bare_nan(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    atomic.write_json(path, {"loss": float("nan"), "acc": [0.5, float("inf")], "n": 3, "t": (1.0, -float("inf"))})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"loss": None, "acc": [0.5, None], "n": 3, "t": [1.0, None]}
    assert atomic.dumps({"a": float("nan")}) == '{"a": null}'


def test_failed_writer_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "model.pt"
    target.write_bytes(b"old")

    def broken(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise ValueError("boom")

    with pytest.raises(ValueError):
        atomic.write_with(target, broken)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_library_errors_on_a_full_disk_become_disk_full(tmp_path: Path, monkeypatch) -> None:
    """torch raises RuntimeError(inline_container.cc) on a full disk; we look at the free space to tell."""
    monkeypatch.setattr(atomic, "free_bytes", lambda folder: 1000)

    def torch_like(tmp: Path) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    with pytest.raises(atomic.DiskFullError) as info:
        atomic.write_with(tmp_path / "m.pt", torch_like)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "m.pt")


def test_expected_size_is_checked_before_writing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(atomic, "free_bytes", lambda folder: 10_000)
    called = []
    with pytest.raises(atomic.DiskFullError, match="No space left"):
        atomic.write_with(tmp_path / "m.pt", called.append, expected_size=50_000_000)
    assert called == [] and not any(tmp_path.iterdir())


@contextlib.contextmanager
def _tiny_filesystem(tmp_path: Path, size: str = "256k"):
    mount = tmp_path / f"tiny-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root in a namespace that allows it)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


@pytest.mark.parametrize("library", ["torch", "safetensors"])
def test_a_real_full_disk_is_reported_and_leaves_no_file(tmp_path: Path, library: str) -> None:
    from safetensors.torch import save_file

    state = {"w": torch.zeros(1_000_000)}  # 4 MB into a 256 kB file system
    writers = {"torch": lambda tmp: torch.save(state, tmp), "safetensors": lambda tmp: save_file(state, str(tmp))}
    with _tiny_filesystem(tmp_path) as fs:
        with pytest.raises(atomic.DiskFullError):
            atomic.write_with(fs / "model.bin", writers[library])
        assert list(fs.iterdir()) == []
