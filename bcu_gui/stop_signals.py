"""Stop signals for the CLI's long verbs: the first one stops at the next batch and saves, a second aborts.

Why one module: `bcu cleanse`, `bcu sweep` and the torchrun launcher each caught Ctrl-C, SIGTERM and SIGHUP
with their own copy of the same rule, and `sweep_command` imported the CLI's private exception to do it (the
house's one import circle, issue #20, point 4). Standard library only.
"""

from __future__ import annotations

import signal
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator

# Ctrl-C, ``kill`` / a scheduler / ``timeout`` (SIGTERM) and a closed terminal or logout (SIGHUP)
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Abort(BaseException):  # like KeyboardInterrupt: no "except Exception" in a job may swallow it
    """A second stop signal: give up at once (the run folder keeps its last resume point)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


Handler = Callable[[int, Any], None]


@contextmanager
def handling(handler: Handler) -> Iterator[None]:
    """``handler`` for every stop signal inside the block; the handlers found are given back however it ends
    (SIG_IGN too: a shell's background job ignores SIGINT, and must go on ignoring it)."""
    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


class SaveThenAbort:
    """The rule as a signal handler: the first signal calls ``cancel(name)`` after printing ``announce(name)``
    (None: print nothing); a signal once ``cancelled()`` is true raises ``Abort``, unless ``abortable`` is
    False (torchrun's ranks: it forwards one signal and kills 30 s later, so a save is never aborted).
    ``stopped_by`` holds the signal that stopped the job, for the exit code ``128 + signum``."""

    def __init__(self, cancelled: Callable[[], bool], cancel: Callable[[str], None],
                 announce: Callable[[str], str | None], abortable: bool = True) -> None:
        self.cancelled = cancelled
        self.cancel = cancel
        self.announce = announce
        self.abortable = abortable
        self.stopped_by: list[int] = []

    def __call__(self, signum: int, frame: Any) -> None:
        if self.cancelled():
            if not self.abortable:
                return
            raise Abort(signum)
        self.stopped_by.append(signum)
        name = signal.Signals(signum).name
        text = self.announce(name)
        if text:
            print(text, file=sys.stderr)
        self.cancel(name)
