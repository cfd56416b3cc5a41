"""Training batches streamed from a host tensor (in RAM, or memory-mapped from the disk cache), prefetched.

The in-memory path indexes one device tensor with the epoch's order; when the set is over the memory budget
the rows live on the host instead (in RAM, or in the decoded cache file), and a background thread gathers the
next batches a few ahead of the optimiser, into pinned memory on CUDA, and starts their copy to the device on
a side stream, so the device does not wait. Rows of the cache file are read with positioned reads (in file
order) rather than through the mapping: pages read through a mapping count in the process's resident memory
until the OS needs them back, which would make a budgeted run look (and, to an OOM killer, be) as large as
the whole set. Both release the GIL while the disk works.

The batches are the rows the in-memory path would pick, in the same order (the epoch's permutation comes
from the same seeded generator), and augmentation stays on the device, batched, as before: with the same seed
the two paths train on the same pixels.
"""

from __future__ import annotations

import os
import queue
import threading
from pathlib import Path
from typing import Iterator

import torch

from .data import ImageSet, load_unlabeled
from .events import Log
from .memory_budget import MemoryChoice, choose_data_path

PREFETCH = 3  # batches gathered ahead; 3 x 256 images of 224x224 is ~115 MB of pinned memory
_POLL_S = 0.1  # how often a blocked producer looks for a stop


class _Stop(Exception):
    pass


class StreamedImages:
    """A host ``uint8 [N, 3, H, W]`` tensor served to the training loop one batch at a time, ahead of use.

    ``len()`` and slicing (``images[:2048]``, a host tensor) behave like the tensor itself, so code that only
    counts or samples the set does not care which path it is on.
    """

    def __init__(self, images: torch.Tensor, device: torch.device, prefetch: int = PREFETCH,
                 source: str | Path | None = None) -> None:
        if images.device.type != "cpu":
            raise ValueError("streamed images must lie on the host")
        self.images = images
        self.source = Path(source) if source else None  # the cache file holding ``images``' rows, to read from
        self.device = torch.device(device)
        self.prefetch = max(1, prefetch)
        self._pin = self.device.type == "cuda" and torch.cuda.is_available()
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.waits = 0  # batches the loop asked for before they were ready (for benchmarks)

    @property
    def shape(self) -> torch.Size:
        """``[N, C, H, W]`` of the whole set, as the in-memory tensor it stands in for would say."""
        return self.images.shape

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, key) -> torch.Tensor:
        return self.images[key]

    # -- an epoch ---------------------------------------------------------------------------------------
    def start_epoch(self, order: torch.Tensor, batch_size: int, steps: int) -> None:
        """Begin gathering batch ``k`` = rows ``order[k * batch_size : (k + 1) * batch_size]``, ``k < steps``."""
        self.close()
        self._stop = threading.Event()
        self._queue = queue.Queue(maxsize=self.prefetch)
        order = order.to("cpu", torch.int64)
        self._thread = threading.Thread(target=self._produce, args=(order, batch_size, steps, self._queue,
                                                                     self._stop),
                                        name="bcu-prefetch", daemon=True)
        self._thread.start()

    def next_batch(self) -> torch.Tensor:
        """The next batch of the epoch, on the device (raises what the producer met, e.g. a read error)."""
        assert self._queue is not None, "start_epoch() first"
        if self._queue.empty():
            self.waits += 1
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        """Stop the producer (a cancelled epoch leaves batches nobody will take) and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._thread = None
        self._queue = None

    # -- the producer thread ----------------------------------------------------------------------------
    def _produce(self, order: torch.Tensor, bs: int, steps: int, out: queue.Queue, stop: threading.Event) -> None:
        stream = torch.cuda.Stream(self.device) if self._pin else None
        fd = os.open(self.source, os.O_RDONLY | getattr(os, "O_BINARY", 0)) if self.source is not None else None
        try:
            for k in range(steps):
                index = order[k * bs:(k + 1) * bs]
                if self._pin:
                    host = torch.empty((len(index), *self.images.shape[1:]), dtype=torch.uint8, pin_memory=True)
                    self._gather(index, host, fd)
                    with torch.cuda.stream(stream):
                        batch = host.to(self.device, non_blocking=True)
                    stream.synchronize()  # this thread waits, not the optimiser
                    batch.record_stream(torch.cuda.current_stream(self.device))
                else:
                    batch = torch.empty((len(index), *self.images.shape[1:]), dtype=torch.uint8)
                    self._gather(index, batch, fd)
                    if self.device.type != "cpu":
                        batch = batch.to(self.device)
                _put(out, batch, stop)
        except _Stop:
            return
        except BaseException as exc:  # noqa: BLE001 - handed to the training loop, which reports it
            try:
                _put(out, exc, stop)
            except _Stop:
                return
        finally:
            if fd is not None:
                os.close(fd)

    def _gather(self, index: torch.Tensor, out: torch.Tensor, fd: int | None) -> None:
        """Rows ``index`` into ``out``, in that order: from the cache file by offset, else from the tensor."""
        if fd is None:
            torch.index_select(self.images, 0, index, out=out)
            return
        rows = out.numpy().reshape(len(index), -1)
        size = rows.shape[1]
        for j in sorted(range(len(index)), key=lambda j: int(index[j])):  # ascending offsets: kind to the disk
            view = memoryview(rows[j])
            offset, done = int(index[j]) * size, 0
            while done < size:
                got = os.preadv(fd, [view[done:]], offset + done) if hasattr(os, "preadv") else \
                    _pread_into(fd, view[done:], offset + done)
                if got <= 0:
                    raise OSError(f"the image cache {self.source} ended early (row {int(index[j])})")
                done += got


def _pread_into(fd: int, view: memoryview, offset: int) -> int:
    data = os.pread(fd, len(view), offset)
    view[:len(data)] = data
    return len(data)


def _put(out: queue.Queue, item, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise _Stop
        try:
            out.put(item, timeout=_POLL_S)
            return
        except queue.Full:
            continue


def training_images(images: ImageSet, choice: MemoryChoice, device: torch.device,
                    cache: str = "") -> torch.Tensor | StreamedImages:
    """What the training loop indexes: the tensor itself (in memory) or a prefetching stream over it."""
    if not choice.streamed:
        return images.images
    return StreamedImages(images.images, device, source=cache or None)


def load_within_budget(folder: str, size: int, device: torch.device, budget: int | None, limit: int | None = None,
                       cache_dir: str | None = None) -> Iterator[Log | tuple[ImageSet, MemoryChoice, str]]:
    """Read the unlabelled set the way the budget allows; yields log lines, then ``(set, choice, cache)``.

    ``cache`` is the cache file's path on the disk path ('' otherwise).
    """
    from .data import scan_folder
    from .image_cache import load_unlabeled_cached

    count = len(scan_folder(folder)[0])
    if limit is not None:
        count = min(count, limit)
    choice = choose_data_path(max(count, 1), size, device, budget)
    yield Log(message=f"unlabelled images: {choice.reason}")
    if choice.path != "stream-disk":
        yield Log(message=f"reading unlabelled images from {folder}")
        yield load_unlabeled(folder, size, limit=limit), choice, ""
        return
    yield Log(message=f"reading unlabelled images from {folder} through the disk cache")
    cached = load_unlabeled_cached(folder, size, limit=limit, cache_dir=cache_dir)
    verb = "reusing" if cached.reused else "decoded into"
    yield Log(message=f"{verb} the image cache {cached.path} ({len(cached.images):,} images)")
    yield cached.images, choice, str(cached.path)
