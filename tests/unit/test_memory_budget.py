"""The memory budget: parsing it, choosing a path, the disk cache, the prefetching stream, and a job on each path."""

import json
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from bcu_gui import cli
from bcu_gui.core import atomic, image_cache
from bcu_gui.core.data import load_unlabeled
from bcu_gui.core.errors import ConfigError, DataError
from bcu_gui.core.events import EpochEnd, Failed, Finished
from bcu_gui.core.image_cache import load_unlabeled_cached
from bcu_gui.core.job import CleanseConfig, CleanseJob
from bcu_gui.core.memory_budget import choose_data_path, format_bytes, parse_budget
from bcu_gui.core.streaming import StreamedImages
from bcu_gui.demo import demo_dir

DEMO_UNLABELED = demo_dir() / "unlabeled"


# --------------------------------------------------------------------------------------------- the budget
@pytest.mark.parametrize("text, expected", [
    ("2GB", 2 * 1000**3), ("2 gb", 2 * 1000**3), ("512MB", 512 * 1000**2), ("1.5GiB", int(1.5 * 1024**3)),
    ("64k", 64_000), ("3T", 3 * 1000**4), ("100b", 100), ("auto", None), (" AUTO ", None), (None, None),
    (4096, 4096),
])
def test_budget_sizes_parse(text, expected):
    assert parse_budget(text) == expected


@pytest.mark.parametrize("text, words", [
    ("2", "needs a unit"), ("lots", "is not a size"), ("0GB", "positive"), ("-1GB", "is not a size"),
    ("2 GBs", "is not a size"), ("", "is not a size"),
])
def test_bad_budgets_say_why(text, words):
    with pytest.raises(ConfigError, match=words):
        parse_budget(text)


@pytest.mark.parametrize("flag", ["2", "two gigs", "0MB"])
def test_a_bad_budget_on_the_command_line_is_one_line_and_exit_2(flag, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["demo", "--memory-budget", flag])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--memory-budget" in err and "Traceback" not in err


def test_the_path_follows_the_budget():
    cpu = torch.device("cpu")
    small = choose_data_path(400, 32, cpu, budget=2_000_000)  # 1.2 MB
    assert small.path == "memory" and not small.streamed and small.needed == 400 * 3 * 32 * 32
    big = choose_data_path(20_000, 224, cpu, budget=2 * 1000**3)  # 3.0 GB
    assert big.path == "stream-disk" and "3 GB" in big.reason and "2 GB" in big.reason
    auto = choose_data_path(10, 32, cpu)  # a quarter of RAM is far more than 30 kB
    assert auto.path == "memory" and "quarter" in auto.reason
    assert format_bytes(7.5e9) == "7.5 GB" and format_bytes(2e9) == "2 GB"


def test_on_a_gpu_the_default_budget_is_a_quarter_of_each_memory(monkeypatch):
    from bcu_gui.core import memory_budget

    monkeypatch.setattr(memory_budget, "total_ram", lambda: (64 * 1000**3, "test"))
    monkeypatch.setattr(memory_budget, "device_memory", lambda device: 8 * 1000**3 if device.type == "cuda" else None)
    gpu = torch.device("cuda")
    assert choose_data_path(10_000, 224, gpu).path == "memory"  # 1.5 GB: under 2 GB of the GPU, 16 GB of RAM
    ram = choose_data_path(20_000, 224, gpu)  # 3 GB: over a quarter of the GPU's 8 GB, under 16 GB of RAM
    assert ram.path == "stream-ram" and ram.device_budget == 2 * 1000**3 and "kept in RAM" in ram.reason
    disk = choose_data_path(120_000, 224, gpu)  # 18 GB: over a quarter of RAM
    assert disk.path == "stream-disk" and disk.host_budget == 16 * 1000**3
    assert choose_data_path(20_000, 224, torch.device("cpu")).path == "memory"  # the CPU trains where it lies


# ------------------------------------------------------------------------------------------- the cache
def test_the_cache_holds_the_same_pixels_and_is_reused(tmp_path):
    memory = load_unlabeled(DEMO_UNLABELED, 32, limit=48)
    first = load_unlabeled_cached(DEMO_UNLABELED, 32, limit=48, cache_dir=tmp_path)
    assert not first.reused and first.path.exists() and first.path.parent == tmp_path
    assert first.path.stat().st_size == 48 * 3 * 32 * 32
    assert torch.equal(first.images.images, memory.images) and first.images.files == memory.files
    second = load_unlabeled_cached(DEMO_UNLABELED, 32, limit=48, cache_dir=tmp_path)
    assert second.reused and second.path == first.path
    assert torch.equal(second.images.images, memory.images) and second.images.files == memory.files
    other = load_unlabeled_cached(DEMO_UNLABELED, 32, limit=40, cache_dir=tmp_path)  # another file list
    assert not other.reused and other.path != first.path


def _copy_images(src, dst, n):
    dst.mkdir()
    for path in sorted(src.iterdir())[:n]:
        (dst / path.name).write_bytes(path.read_bytes())
    return dst


def test_a_changed_file_gives_a_new_cache(tmp_path):
    folder = _copy_images(DEMO_UNLABELED, tmp_path / "imgs", 12)
    first = load_unlabeled_cached(folder, 32, cache_dir=tmp_path / "cache")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(sorted(folder.iterdir())[0])
    again = load_unlabeled_cached(folder, 32, cache_dir=tmp_path / "cache")
    assert not again.reused and again.path != first.path
    assert int(again.images.images[0].sum()) == 0


@pytest.mark.parametrize("damage", ["record missing", "data truncated", "temporary only"])
def test_a_half_written_cache_is_never_reused(tmp_path, damage):
    cache = tmp_path / "cache"
    built = load_unlabeled_cached(DEMO_UNLABELED, 32, limit=16, cache_dir=cache)
    record = built.path.with_suffix(".json")
    if damage == "record missing":  # killed between the data's rename and the record's write
        record.unlink()
    elif damage == "data truncated":
        with open(built.path, "r+b") as fh:
            fh.truncate(1000)
    else:  # killed while decoding: only the temporary file exists, under another name
        built.path.rename(cache / f".{built.path.name}.abc.tmp")
        record.unlink()
    again = load_unlabeled_cached(DEMO_UNLABELED, 32, limit=16, cache_dir=cache)
    assert not again.reused
    assert torch.equal(again.images.images, load_unlabeled(DEMO_UNLABELED, 32, limit=16).images)


def test_a_decode_that_fails_halfway_leaves_no_cache(tmp_path, monkeypatch):
    def broken(paths, size, progress):
        yield 0, np.zeros((32, 32, 3), np.uint8)
        raise KeyboardInterrupt  # the user stopped it (or anything else went wrong)

    monkeypatch.setattr(image_cache, "_decode_in_order", broken)
    with pytest.raises(KeyboardInterrupt):
        load_unlabeled_cached(DEMO_UNLABELED, 32, limit=16, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_cache_too_big_for_the_disk_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "free_bytes", lambda folder: 10_000)
    with pytest.raises(DataError, match=r"needs 49.2 kB in .* only 10 kB is free"):
        load_unlabeled_cached(DEMO_UNLABELED, 32, limit=16, cache_dir=tmp_path)


# ------------------------------------------------------------------------------------------ the stream
def test_the_stream_serves_the_rows_of_the_order_and_stops_cleanly():
    images = torch.arange(10 * 3 * 2 * 2, dtype=torch.int64).remainder(251).to(torch.uint8).view(10, 3, 2, 2)
    stream = StreamedImages(images, torch.device("cpu"), prefetch=2)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(1))
    stream.start_epoch(order, 4, 3)  # 4 + 4 + 2
    got = [stream.next_batch() for _ in range(3)]
    assert [len(b) for b in got] == [4, 4, 2]
    assert torch.equal(torch.cat(got), images[order])
    assert len(stream) == 10 and torch.equal(stream[:3], images[:3])
    stream.start_epoch(order, 4, 3)
    stream.next_batch()  # a cancel in the middle of an epoch: the producer must not stay blocked
    stream.close()
    assert not any(t.name == "bcu-prefetch" for t in threading.enumerate())


# --------------------------------------------------------------------------------- a job on each path
@pytest.fixture
def eval_folders(tmp_path):
    rng = np.random.default_rng(0)
    clean, trig = tmp_path / "clean", tmp_path / "trig"
    for i in range(8):
        d = clean / str(i % 2)
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / f"{i}.png")
    trig.mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(trig / f"{i}.png")
    return clean, trig


def _run(ckpt, eval_folders, out, **kw):
    clean, trig = eval_folders
    settings = dict(checkpoint=str(ckpt), unlabeled=str(DEMO_UNLABELED), unlabeled_limit=48, eval_clean=str(clean),
                    eval_poisoned=str(trig), target_class=0, epochs=2, batch_size=16, device="cpu", precision="fp32",
                    out=str(out))
    cfg = CleanseConfig(**{**settings, **kw})
    events = list(CleanseJob(cfg, step_rate=0).events())
    assert not [e for e in events if isinstance(e, Failed)], [e for e in events if isinstance(e, Failed)]
    return events


def test_streaming_from_the_cache_trains_like_the_in_memory_path(tiny_checkpoint, eval_folders, tmp_path):
    cache = tmp_path / "cache"
    memory = _run(tiny_checkpoint, eval_folders, tmp_path / "mem")
    streamed = _run(tiny_checkpoint, eval_folders, tmp_path / "disk", memory_budget=100_000, cache_dir=str(cache))
    assert len(list(cache.glob("*.u8"))) == 1
    losses = [[e.loss for e in run if isinstance(e, EpochEnd)] for run in (memory, streamed)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5, abs=1e-6)  # same seed, same batches, same pixels
    a, b = (next(e for e in run if isinstance(e, Finished)).summary for run in (memory, streamed))
    assert (a.cleansed.acc, a.cleansed.asr) == pytest.approx((b.cleansed.acc, b.cleansed.asr), abs=1e-6)
    assert a.data_path == "memory" and b.data_path == "stream-disk" and "disk cache" in b.data_reason
    resolved = json.loads((tmp_path / "disk" / "config.json").read_text())["resolved"]["memory"]
    assert resolved["path"] == "stream-disk" and resolved["cache"].startswith(str(cache))
    again = _run(tiny_checkpoint, eval_folders, tmp_path / "disk2", memory_budget=100_000, cache_dir=str(cache),
                 epochs=1)
    logs = [e.message for e in again if type(e).__name__ == "Log"]
    assert any(m.startswith("reusing the image cache") for m in logs)
    assert not any(t.name == "bcu-prefetch" for t in threading.enumerate())


def test_the_stream_reads_rows_from_the_cache_file_in_the_epochs_order(tmp_path):
    cached = load_unlabeled_cached(DEMO_UNLABELED, 32, limit=20, cache_dir=tmp_path)
    images = cached.images.images
    stream = StreamedImages(images, torch.device("cpu"), source=cached.path)
    order = torch.randperm(20, generator=torch.Generator().manual_seed(3))
    stream.start_epoch(order, 8, 3)
    assert torch.equal(torch.cat([stream.next_batch() for _ in range(3)]), images[order])
    stream.close()
