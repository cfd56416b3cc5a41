"""Step losses kept on the device and read by the host only at chosen points, without stalling the device.

Reading a loss with ``.item()`` after every step makes the host wait for the device to finish that step: on a
GPU, the host can no longer queue the next steps while the current one runs, and a small model spends much
of its time idle. So the training step only *writes* its loss into a device buffer (one tiny device-side
copy, no wait); at the read points the job chooses (``StepThrottle``: ~30 a second, and every epoch's end)
``collect`` starts an asynchronous copy of the losses written since into pinned host memory and hands back
those whose earlier copy has completed. On a GPU the plot therefore lags the device by at most about one
read interval; at the end of an epoch (and before a pause or a stop) ``collect(wait=True)`` waits for
everything, so every step's loss is still delivered, in order, and checked for divergence by then.

On the CPU a step has finished when its call returns, so every read delivers everything at once.
"""

from __future__ import annotations

import torch


class LossReader:
    """One epoch's step losses: written on the device by the step, collected by the host at read points."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._cuda = device.type == "cuda"
        self._dev = torch.empty(0, device=device)
        self._host = self._dev
        self._base = 0  # global steps taken before this epoch's first
        self._written = 0  # losses put this epoch
        self._requested = 0  # losses whose copy to the host has been started
        self._delivered = 0  # losses handed out by ``collect``
        self._copies: list[tuple[int, object]] = []  # (end index, its completion event) of copies in flight

    def begin(self, capacity: int, base_step: int) -> None:
        """Start an epoch of (about) ``capacity`` steps, the first of which is global step ``base_step + 1``."""
        capacity = max(1, capacity)
        if self._dev.numel() < capacity:
            self._dev = torch.empty(capacity, dtype=torch.float32, device=self.device)
            if self.device.type == "cpu":
                self._host = self._dev  # already host memory: nothing to copy
            else:
                self._host = torch.empty(capacity, dtype=torch.float32, pin_memory=self._cuda)
        self._base = base_step
        self._written = self._requested = self._delivered = 0
        self._copies = []

    def put(self, loss: torch.Tensor) -> None:
        """Record one step's (scalar) loss; a device-side copy, the host never waits for it."""
        if self._written >= self._dev.numel():  # more steps than announced: grow (rare; costs one wait)
            self._grow()
        self._dev[self._written].copy_(loss.detach().reshape(()))
        self._written += 1

    def collect(self, wait: bool = False) -> list[float]:
        """The losses, in step order, that reached the host since the last call; starts copying the rest.

        ``wait=True`` returns every loss written so far (it waits for the device once): use it at an epoch's
        end, before a pause and before a stop.
        """
        if self._requested < self._written:
            a, b = self._requested, self._written
            event = None
            if self._host is not self._dev:
                self._host[a:b].copy_(self._dev[a:b], non_blocking=self._cuda)
                if self._cuda:
                    event = torch.cuda.Event()
                    event.record()
            self._copies.append((b, event))
            self._requested = b
        ready = self._delivered
        while self._copies:
            end, event = self._copies[0]
            if event is not None:
                if wait:
                    event.synchronize()
                elif not event.query():
                    break
            ready = end
            self._copies.pop(0)
        losses = self._host[self._delivered:ready].tolist()
        self._delivered = ready
        return losses

    @property
    def delivered_step(self) -> int:
        """The global step whose loss ``collect`` handed out last."""
        return self._base + self._delivered

    @property
    def pending(self) -> int:
        """Losses written but not yet handed out."""
        return self._written - self._delivered

    def _grow(self) -> None:
        dev = torch.empty(max(2 * self._dev.numel(), 1), dtype=torch.float32, device=self.device)
        dev[:self._written].copy_(self._dev[:self._written])
        if self._host is self._dev:
            self._dev = self._host = dev
            return
        if self._cuda:
            for _, event in self._copies:
                event.synchronize()  # copies in flight still read the old buffers
        host = torch.empty(dev.numel(), dtype=torch.float32, pin_memory=self._cuda)
        host[:self._requested].copy_(self._host[:self._requested])
        self._dev, self._host = dev, host


def first_non_finite(losses: list[float]) -> int | None:
    """Index of the first NaN or infinite loss, or None."""
    for i, value in enumerate(losses):
        if value != value or value in (float("inf"), float("-inf")):
            return i
    return None
