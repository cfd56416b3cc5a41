"""A run's sign of life: ``running.json`` in its folder while a process is writing it, and ``failed.json`` if
the run ended in failure.

Why a file and not just "no summary yet": a run folder without a summary is either being written right now
(in another terminal, on a server, under torchrun) or was killed. Only the writer can say which, so while it
runs a small thread rewrites ``running.json`` (pid, host, start time, a beat counter and time, the epochs
done and the last epoch's length) every few seconds, and the job removes it when it ends however it ends. A
reader on the same host asks whether the pid still exists; a reader elsewhere (or one that cannot tell) sees
the beat stop. The bound for "stopped" is derived from the beat interval and the epoch time, so a run whose
epochs take minutes is not called dead between two epochs.

A failure the job reports (``Failed``) also writes ``failed.json`` with the sentence shown to the user, so a
run library can say *failed* and why, long after the process has gone. Every write is atomic and a write
that fails (a full disk) is ignored: a sign of life must never kill the run it describes.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import atomic
from . import untrusted
from .runfolder.layout import FAILED_FILE, HEARTBEAT_FILE

BEAT_SECONDS = 5.0  # how often the writer's thread rewrites running.json
MIN_STALE_SECONDS = 60.0  # never call a run dead sooner than this after its last beat
EPOCHS_OF_SILENCE = 3.0  # ... nor sooner than this many of its own epochs


def this_host() -> str:
    return socket.gethostname()


@dataclass(frozen=True)
class HeartbeatInfo:
    """What ``running.json`` says about the process writing a run."""

    pid: int
    host: str
    started: float  # wall-clock time the writer started
    beat: float  # wall-clock time of the last beat (the writer's clock)
    beats: int  # how many beats so far: a reader on another host compares this, not clocks
    interval: float
    epoch: int = 0
    epochs: int = 0
    epoch_seconds: float | None = None  # the last epoch's length, for the staleness bound

    @property
    def stale_after(self) -> float:
        """Seconds without a beat after which the writer is taken to be gone."""
        return max(MIN_STALE_SECONDS, 6 * self.interval, EPOCHS_OF_SILENCE * (self.epoch_seconds or 0.0))

    @property
    def local(self) -> bool:
        return self.host == this_host()

    def describe(self) -> str:
        return f"process {self.pid} on {self.host}"


def read_heartbeat(run_dir: str | Path) -> HeartbeatInfo | None:
    """``running.json`` of ``run_dir``; None when absent or unreadable (a damaged file is not a sign of life)."""
    try:
        data = untrusted.read_json(run_dir, HEARTBEAT_FILE)
        return HeartbeatInfo(pid=int(data["pid"]), host=str(data["host"]), started=float(data["started"]),
                             beat=float(data["beat"]), beats=int(data.get("beats", 0)),
                             interval=float(data.get("interval", BEAT_SECONDS)), epoch=int(data.get("epoch", 0)),
                             epochs=int(data.get("epochs", 0)),
                             epoch_seconds=(float(data["epoch_seconds"]) if data.get("epoch_seconds") else None))
    except (OSError, ValueError, KeyError, TypeError, OverflowError, untrusted.UntrustedFileError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (one owned by another user counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, OverflowError):  # OverflowError: a pid no process can have (a hostile running.json)
        return False
    return True


def writer_alive(info: HeartbeatInfo, now: float | None = None) -> bool:
    """Is the process behind ``info`` still writing? Same host: its pid exists (and it still beats); another
    host: its last beat is within ``stale_after`` by the wall clock (a follower compares beats over time instead,
    which does not trust two hosts' clocks to agree)."""
    now = time.time() if now is None else now
    if info.local and not pid_alive(info.pid):
        return False
    return now - info.beat <= info.stale_after


@dataclass(frozen=True)
class FailureInfo:
    """What ``failed.json`` records: the user-facing sentence and whose fault it was."""

    message: str
    kind: str
    time: float


def read_failure(run_dir: str | Path) -> FailureInfo | None:
    try:
        data = untrusted.read_json(run_dir, FAILED_FILE)
        return FailureInfo(message=str(data["message"]), kind=str(data.get("kind", "internal")),
                           time=float(data.get("time", 0.0)))
    except (OSError, ValueError, KeyError, TypeError, OverflowError, untrusted.UntrustedFileError):
        return None


class Heartbeat:
    """Keeps ``running.json`` fresh from a daemon thread while a run is written; ``stop`` removes it."""

    def __init__(self, run_dir: str | Path, epochs: int = 0, interval: float = BEAT_SECONDS) -> None:
        self.path = Path(run_dir) / HEARTBEAT_FILE
        self.interval = interval
        self._data = {"pid": os.getpid(), "host": this_host(), "started": time.time(), "beat": time.time(),
                      "beats": 0, "interval": interval, "epoch": 0, "epochs": epochs, "epoch_seconds": None}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, epoch: int = 0) -> None:
        """Write the first beat now (a follower sees the run at once) and keep beating."""
        (self.path.parent / FAILED_FILE).unlink(missing_ok=True)  # a resumed run is no longer the failed one
        self._data["epoch"] = epoch
        self._write()
        self._thread = threading.Thread(target=self._loop, name="bcu-heartbeat", daemon=True)
        self._thread.start()

    def epoch_done(self, epoch: int, seconds: float) -> None:
        with self._lock:
            self._data["epoch"], self._data["epoch_seconds"] = epoch, seconds
        self._write()

    def fail(self, message: str, kind: str) -> None:
        """The run failed: record why (``failed.json``), before the heartbeat stops."""
        try:
            atomic.write_json(self.path.parent / FAILED_FILE, {"message": message, "kind": kind, "time": time.time()})
        except OSError:
            pass

    def stop(self) -> None:
        """The run is over (finished, stopped, failed, or its process is exiting): remove ``running.json``."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        with self._lock:
            try:
                self.path.unlink(missing_ok=True)
            except OSError:
                pass

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._write()

    def _write(self) -> None:
        with self._lock:
            if self._stop.is_set():
                return
            self._data["beat"] = time.time()
            self._data["beats"] += 1
            try:
                atomic.write_json(self.path, self._data)
            except OSError:  # a full or vanished disk: the run reports that itself; the beat just stays old
                pass
