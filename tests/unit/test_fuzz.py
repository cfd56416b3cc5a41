"""Fuzzing the two readers that take a user's bytes: image folders and checkpoint files.

Random and mutated bytes must end in our own clear errors (``BcuError`` subclasses, one sentence each), or
in a file being skipped with a reason; never in a raw exception from Pillow, torch, zipfile or pickle.
Each test is bounded in examples and time so the default suite stays quick.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from bcu_gui.core.checkpoints import read_checkpoint
from bcu_gui.core.data import load_unlabeled
from bcu_gui.core.errors import BcuError
from bcu_gui.core.models import load_model
from bcu_gui.core.nets import CifarResNet

_FUZZ = settings(max_examples=int(__import__("os").environ.get("BCU_FUZZ_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _checkpoint_bytes() -> bytes:
    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.save({"net": CifarResNet([1, 1, 1, 1], num_classes=10, width=4).state_dict(), "acc": 0.9}, buf)
    return buf.getvalue()


_PNG = _png_bytes()
_CKPT = _checkpoint_bytes()


def _mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    """Seed bytes with a few bytes overwritten, a truncation, or random junk of any length."""

    @st.composite
    def mutate(draw) -> bytes:
        data = bytearray(seed)
        for _ in range(draw(st.integers(1, 8))):
            pos = draw(st.integers(0, len(data) - 1))
            data[pos] = draw(st.integers(0, 255))
        if draw(st.booleans()):
            data = data[: draw(st.integers(0, len(data)))]
        return bytes(data)

    return st.one_of(mutate(), st.binary(max_size=4096))


@_FUZZ
@given(blobs=st.lists(_mutations(_PNG), min_size=1, max_size=4),
       names=st.lists(st.sampled_from(["a.png", "b.jpg", "c.bmp", "d.tif", "e.webp"]), min_size=4, max_size=4))
def test_image_folder_reader_survives_random_bytes(blobs: list[bytes], names: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for blob, name in zip(blobs, names):
            (folder / name).write_bytes(blob)
        try:
            ds = load_unlabeled(folder, 8)
        except BcuError as exc:
            assert str(exc) and "\n" not in str(exc)
            return
        assert ds.images.dtype == torch.uint8 and ds.images.shape[1:] == (3, 8, 8)
        assert len(ds) + len(ds.skipped) == len({*names[: len(blobs)]})
        for _, why in ds.skipped:
            assert why and "\n" not in why


@_FUZZ
@given(blob=_mutations(_CKPT), suffix=st.sampled_from([".pt", ".pth", ".safetensors", ".bin"]))
def test_checkpoint_loader_survives_random_bytes(blob: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"model{suffix}"
        path.write_bytes(blob)
        for load in (read_checkpoint, load_model):
            try:
                load(path)
            except BcuError as exc:
                assert str(exc) and "\n" not in str(exc)
