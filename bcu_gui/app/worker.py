"""The bridge between the core's generators and Qt: the only module of the app that knows QThread.

A cleansing run is ``CleanseJob.events()``, a generator of typed events. ``JobWorker`` drives it in a
``QThread`` and emits each event, unchanged, as one ``event`` signal; it never decides anything, it only
relays, and the run view handles every kind in one ``handle(event)`` (the console reporter's shape).
``JobRunner`` owns the thread's lifetime (start, stop, stop-and-wait), so no widget ever holds the job or the
thread. Short background chores (decode-checking an image folder) go through ``run_task``, the same pattern
for a plain function.

Why this hand-written bridge and not superqt's thread workers (``create_worker`` / ``GeneratorWorker``):
superqt aborts a generator by no longer resuming it at its next ``yield`` and pauses by polling between
yields. A stopped cleansing run must go on to save the student, write its summary and emit ``Finished``, and
its pause must act between two batches even when ``Step`` events are throttled to ~30 a second; both are the
job's own flags (``cancel`` / ``pause``), which superqt's worker would only duplicate around. What is left
for a worker is to iterate and relay, about twenty lines here, fewer than adapting superqt's worker to not
abort, and the thread registry below (never drop a running ``QThread``; tests assert none is left) would be
needed either way.

Every thread started here is kept in a module-level registry until it has ended, both so that Python never
drops the last reference to a running ``QThread`` (which would crash the process) and so that tests can
assert that nothing is left running (``live_threads``).
"""

from __future__ import annotations

import gc
import traceback
from typing import Any, Callable, Protocol

from PySide6.QtCore import QObject, QThread, Qt, Signal, Slot

from ..core.events import Failed

# Every QThread this module started and that has not yet been joined.
_REGISTRY: list[QThread] = []


def live_threads() -> list[QThread]:
    """Threads started by the app that are still running (joined ones are dropped from the registry)."""
    _REGISTRY[:] = [t for t in _REGISTRY if t.isRunning()]
    return list(_REGISTRY)


class EventSource(Protocol):
    """What a worker drives: ``CleanseJob`` or, in tests, a stand-in with the same methods."""

    def events(self): ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def cancel(self) -> None: ...


# ------------------------------------------------------------------------------------------------ the run


class JobWorker(QObject):
    """Runs a job's event stream in its thread and emits every event; control calls are thread-safe."""

    event = Signal(object)  # any core.events event, in the job's order
    done = Signal()  # the stream has ended, whatever the outcome

    def __init__(self, job: EventSource) -> None:
        super().__init__()
        self._job = job

    @Slot()
    def run(self) -> None:
        """Iterate the job to its end. The job turns its own failures into ``Failed``; this catches the rest."""
        try:
            for event in self._job.events():
                self.event.emit(event)
        except Exception as exc:  # a bug in a job: report it as the core would, never kill the thread silently
            self.event.emit(Failed(message=f"unexpected error: {type(exc).__name__}: {exc}", kind="internal",
                                   detail=traceback.format_exc()))
        finally:
            self.done.emit()

    # Called from the GUI thread while ``run`` is busy in this worker's thread: the job's flags are
    # thread-safe and are honoured before the next batch.
    def pause(self) -> None:
        self._job.pause()

    def resume(self) -> None:
        self._job.resume()

    def stop(self) -> None:
        self._job.cancel()


class JobRunner(QObject):
    """Owns at most one running job: its thread, its worker, and the relay of the worker's events.

    ``paused_changed`` follows what the user asked for (the job confirms with ``Paused`` / ``Resumed``
    events); ``running_changed(False)`` is emitted only once the thread has really ended, so a new run can
    start right away and nothing is left behind.
    """

    event = Signal(object)
    running_changed = Signal(bool)
    paused_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread: QThread | None = None
        self._worker: JobWorker | None = None
        self._paused = False

    @property
    def is_running(self) -> bool:
        return self._thread is not None

    @property
    def is_paused(self) -> bool:
        return self._paused

    def start(self, job: EventSource) -> None:
        """Run ``job`` in a new thread; one run at a time."""
        if self._thread is not None:
            raise RuntimeError("a run is already in progress")
        thread = QThread()
        thread.setObjectName("bcu-job")
        worker = JobWorker(job)
        worker.moveToThread(thread)
        worker.event.connect(self.event)
        thread.started.connect(worker.run)
        # Direct: quit must reach the thread even while the GUI thread is blocked in stop_and_wait().
        worker.done.connect(thread.quit, Qt.ConnectionType.DirectConnection)
        thread.finished.connect(self._on_thread_finished)
        self._thread, self._worker, self._paused = thread, worker, False
        _REGISTRY.append(thread)
        # A full collection scans every object (torch, Qt, numpy: hundreds of thousands) with the GIL held,
        # which stalls the GUI thread for 100-300 ms on a busy CPU. Objects alive now are long-lived; freezing
        # them keeps them out of the collector's scans until the run ends.
        gc.freeze()
        thread.start()
        self.running_changed.emit(True)

    def pause(self) -> None:
        if self._worker is not None and not self._paused:
            self._worker.pause()
            self._paused = True
            self.paused_changed.emit(True)

    def resume(self) -> None:
        if self._worker is not None and self._paused:
            self._worker.resume()
            self._paused = False
            self.paused_changed.emit(False)

    def stop(self) -> None:
        """Ask the job to stop before its next batch; it still saves what it has and ends with ``Finished``.

        The thread is never quit under the job: it ends when the job's stream has ended.
        """
        if self._worker is not None:
            self._worker.stop()
            if self._paused:
                self._paused = False
                self.paused_changed.emit(False)

    def stop_and_wait(self, timeout_ms: int = 120_000, quiet: bool = True) -> bool:
        """Stop the run and block until its thread has ended (closing the window). ``quiet``: relay nothing more.

        Returns False if the thread did not end within ``timeout_ms``: it is still saving, stays registered
        (never destroyed while running), and ``running_changed(False)`` follows once it has ended.
        """
        thread, worker = self._thread, self._worker
        if thread is None or worker is None:
            return True
        if quiet:
            try:
                worker.event.disconnect(self.event)
            except (RuntimeError, TypeError):
                pass
        worker.stop()
        if not thread.wait(timeout_ms):
            return False
        self._on_thread_finished()
        return True

    @Slot()
    def _on_thread_finished(self) -> None:
        thread = self._thread
        if thread is None:  # already cleaned up by stop_and_wait
            return
        thread.wait()  # finished is emitted just before the thread returns: join it for good
        if self._worker is not None:
            self._worker.deleteLater()
        self._thread = self._worker = None
        gc.unfreeze()
        if self._paused:
            self._paused = False
            self.paused_changed.emit(False)
        live_threads()  # prune
        self.running_changed.emit(False)


# ------------------------------------------------------------------------------------------- small chores


class TaskCancelled(Exception):
    """Raised inside a task's ``report`` callback once the task has been cancelled."""


class _TaskWorker(QObject):
    progress = Signal(object)
    result = Signal(object)
    error = Signal(object)  # the exception
    done = Signal()

    def __init__(self, fn: Callable[[Callable[[Any], None]], Any]) -> None:
        super().__init__()
        self._fn = fn
        self.cancelled = False

    def _report(self, value: Any) -> None:
        if self.cancelled:
            raise TaskCancelled()
        self.progress.emit(value)

    @Slot()
    def run(self) -> None:
        try:
            value = self._fn(self._report)
            if not self.cancelled:
                self.result.emit(value)
        except TaskCancelled:
            pass
        except Exception as exc:  # delivered to the GUI thread, which decides how to show it
            if not self.cancelled:
                exc.__dict__.setdefault("detail", traceback.format_exc())
                self.error.emit(exc)
        finally:
            self.done.emit()


class BackgroundTask(QObject):
    """Handle on a function running in its own thread: ``progress``, ``result``, ``error``, then ``ended``."""

    progress = Signal(object)
    result = Signal(object)
    error = Signal(object)
    ended = Signal()

    def __init__(self, fn: Callable[[Callable[[Any], None]], Any], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread = QThread()
        self._thread.setObjectName("bcu-task")
        self._worker = _TaskWorker(fn)
        self._worker.moveToThread(self._thread)
        self._worker.progress.connect(self.progress)
        self._worker.result.connect(self.result)
        self._worker.error.connect(self.error)
        self._thread.started.connect(self._worker.run)
        self._worker.done.connect(self._thread.quit, Qt.ConnectionType.DirectConnection)
        self._thread.finished.connect(self._on_finished)
        self._ended = False
        _LIVE_TASKS.append(self)
        _REGISTRY.append(self._thread)
        self._thread.start()

    def cancel(self) -> None:
        """Ask the task to stop at its next report; no result or error will be emitted after this."""
        self._worker.cancelled = True

    @property
    def is_running(self) -> bool:
        return self._thread.isRunning()

    def wait(self, timeout_ms: int = 30_000) -> bool:
        return self._thread.wait(timeout_ms)

    @Slot()
    def _on_finished(self) -> None:
        if self._ended:
            return
        self._ended = True
        self._thread.wait()
        if self in _LIVE_TASKS:
            _LIVE_TASKS.remove(self)
        self._worker.deleteLater()
        live_threads()
        self.ended.emit()


_LIVE_TASKS: list[BackgroundTask] = []  # strong references until each task's thread has ended


def run_task(fn: Callable[[Callable[[Any], None]], Any], parent: QObject | None = None) -> BackgroundTask:
    """Run ``fn(report)`` off the GUI thread; ``report(value)`` emits ``progress`` (and aborts once cancelled)."""
    return BackgroundTask(fn, parent)


def cancel_all_tasks(timeout_ms: int = 30_000) -> bool:
    """Cancel every background task and join its thread (closing the window); True when all ended."""
    tasks = list(_LIVE_TASKS)
    for task in tasks:
        task.cancel()
    ok = all(task.wait(timeout_ms) for task in tasks)
    for task in tasks:
        if not task.is_running:
            task._on_finished()
    return ok
