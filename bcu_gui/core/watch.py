"""Follow a run folder that another process is writing (``bcu cleanse`` in another terminal, on a server,
under torchrun): new epochs as they land, and the moment the run ends or dies.

The writer replaces ``metrics.jsonl`` whole and atomically at every epoch end (``RunFolder.append_metrics``),
so a poll reads the whole small file when its size or time changed and reports the rows past those already
seen; a file that shrank means the run was resumed from an earlier epoch, and the follower starts over.

The end: ``summary.json`` appears (finished or stopped) or ``failed.json`` does (failed). Death: the writer's
``running.json`` names a pid on this host that no longer exists, or its beat counter has not moved for longer
than its staleness bound by *this* machine's clock (two hosts' clocks need not agree). A folder written by a
version without a heartbeat is called dead when no epoch has landed for ``max(120 s, 3 x the longest epoch)``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Literal

from . import untrusted
from .heartbeat import HeartbeatInfo, read_failure, read_heartbeat, pid_alive
from .runfolder.layout import CONFIG_FILE, METRICS_FILE, SUMMARY_FILE
from .runfolder.reader import read_metrics, read_summary

WatchState = Literal["waiting", "running", "finished", "stopped", "failed", "died"]
ENDED: tuple[WatchState, ...] = ("finished", "stopped", "failed", "died")
NO_HEARTBEAT_SILENCE = 120.0  # seconds without a new epoch before a run with no heartbeat is called dead
POLL_SECONDS = 1.0


@dataclass(frozen=True)
class WatchUpdate:
    """What one poll found: the new metrics rows (dicts of metrics.jsonl), the state, and a sentence."""

    state: WatchState
    new_rows: tuple[dict, ...] = ()
    restarted: bool = False  # metrics.jsonl shrank (a resume): drop what was shown, these rows are all of it
    message: str = ""
    summary: object | None = field(default=None, compare=False)  # RunSummary once finished or stopped
    writer: HeartbeatInfo | None = None
    epochs: int = 0  # the run's planned epochs, when known

    @property
    def ended(self) -> bool:
        return self.state in ENDED


class RunFollower:
    """Polls one run folder; ``poll()`` returns what changed since the last poll. Never raises on bad files."""

    def __init__(self, run_dir: str | Path, clock: Callable[[], float] = time.monotonic,
                 no_heartbeat_silence: float = NO_HEARTBEAT_SILENCE) -> None:
        self.run_dir = Path(run_dir)
        self._clock = clock
        self._silence = no_heartbeat_silence
        self._rows: list[dict] = []
        self._stamp: tuple[int, int] | None = None
        self._beats: int | None = None
        self._beat_seen_at = clock()
        self._epoch_seen_at = clock()
        self._longest_epoch = 0.0
        self._ever_beat = False
        self.state: WatchState = "waiting"

    @property
    def rows(self) -> list[dict]:
        """Every metrics row seen so far."""
        return list(self._rows)

    def poll(self) -> WatchUpdate:
        if self.state in ENDED:
            return WatchUpdate(self.state, message="the run has ended")
        new, restarted = self._read_new_rows()
        now = self._clock()
        if new:
            self._epoch_seen_at = now
            for row in new:
                seconds = row.get("seconds")
                if isinstance(seconds, (int, float)):
                    self._longest_epoch = max(self._longest_epoch, float(seconds))
        epochs = self._planned()
        beat = read_heartbeat(self.run_dir)
        if beat is not None:
            self._ever_beat = True
            if beat.beats != self._beats:
                self._beats, self._beat_seen_at = beat.beats, now
        failure = read_failure(self.run_dir)
        summary, problem = self._summary()
        if problem is not None and beat is None:  # a summary that cannot be read ends the watch with its reason
            return self._end("failed", new, restarted, problem, epochs)
        if failure is not None and beat is None:
            return self._end("failed", new, restarted, failure.message, epochs)
        if summary is not None and beat is None:
            state: WatchState = "stopped" if summary.cancelled else "finished"
            words = "stopped" if summary.cancelled else "finished"
            return self._end(state, new, restarted, f"the run {words} after {summary.epochs_completed} of "
                             f"{summary.epochs} epochs", epochs, summary)
        if beat is not None:
            if beat.local and not pid_alive(beat.pid):
                return self._end("died", new, restarted, f"{beat.describe()} is gone: the run was killed or "
                                 "crashed (resume it with `bcu cleanse --resume`)", epochs, writer=beat)
            if now - self._beat_seen_at > beat.stale_after:
                return self._end("died", new, restarted, f"no sign of life from {beat.describe()} for "
                                 f"{now - self._beat_seen_at:.0f} s: the run was killed or its machine is gone",
                                 epochs, writer=beat)
            self.state = "running"
            return WatchUpdate("running", tuple(new), restarted, f"written by {beat.describe()}", writer=beat,
                               epochs=epochs)
        if self._ever_beat or self._rows:
            # the heartbeat went away without a summary or a failure record; or a run with no heartbeat at all
            bound = max(self._silence, 3 * self._longest_epoch)
            if self._ever_beat or now - self._epoch_seen_at > bound:
                why = ("its writer stopped without a summary" if self._ever_beat
                       else f"no new epoch for {now - self._epoch_seen_at:.0f} s and no heartbeat")
                if not (self.run_dir / SUMMARY_FILE).exists():
                    return self._end("died", new, restarted, f"the run is no longer written: {why}", epochs)
            return WatchUpdate("running", tuple(new), restarted, "no heartbeat (an older version writes it)",
                               epochs=epochs)
        return WatchUpdate("waiting", tuple(new), restarted, "waiting for the run to start", epochs=epochs)

    def follow(self, interval: float = POLL_SECONDS, sleep: Callable[[float], None] = time.sleep,
               timeout: float | None = None) -> Iterator[WatchUpdate]:
        """Poll every ``interval`` seconds, yielding each update with news, until the run ends (or ``timeout``)."""
        start = self._clock()
        last_state = None
        while True:
            update = self.poll()
            if update.new_rows or update.ended or update.state != last_state:
                yield update
            last_state = update.state
            if update.ended or (timeout is not None and self._clock() - start > timeout):
                return
            sleep(interval)

    # -- internals -------------------------------------------------------------------------------------
    def _read_new_rows(self) -> tuple[list[dict], bool]:
        path = self.run_dir / METRICS_FILE
        try:
            st = path.stat()
        except OSError:
            return [], False
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return [], False
        self._stamp = stamp
        rows = read_metrics(self.run_dir)
        if len(rows) < len(self._rows) or rows[:len(self._rows)] != self._rows:
            self._rows = rows
            return rows, True
        new = rows[len(self._rows):]
        self._rows = rows
        return new, False

    def _summary(self) -> tuple[object | None, str | None]:
        """The run's summary (None while it has none) and, when ``summary.json`` is there but cannot be used (a
        link, a pipe, too large, not a summary), the line saying why."""
        if not os.path.lexists(self.run_dir / SUMMARY_FILE):
            return None, None
        problems: list[str] = []
        data = untrusted.read_json_or_none(self.run_dir, SUMMARY_FILE, dict, problems)
        if data is None:
            return None, (f"{self.run_dir / problems[0]}" if problems else None)
        summary = read_summary(self.run_dir)
        if summary is None:
            return None, f"{self.run_dir / SUMMARY_FILE} is not a run summary this version reads"
        return summary, None

    def _planned(self) -> int:
        for row in reversed(self._rows):
            if isinstance(row.get("epochs"), int):
                return row["epochs"]
        config = untrusted.read_json_or_none(self.run_dir, CONFIG_FILE, dict)
        epochs = config.get("epochs") if config is not None else None
        return epochs if isinstance(epochs, int) and 0 <= epochs < 1 << 31 else 0

    def _end(self, state: WatchState, new: list[dict], restarted: bool, message: str, epochs: int,
             summary=None, writer: HeartbeatInfo | None = None) -> WatchUpdate:
        if state in ("finished", "stopped", "failed"):  # the final rows may land with the summary
            more, again = self._read_new_rows()
            new, restarted = (more, True) if again else (new + more, restarted)
        self.state = state
        return WatchUpdate(state, tuple(new), restarted, message, summary=summary, writer=writer, epochs=epochs)
