"""The QThread bridge: events become signals in order, threads are joined and registered, tasks report back."""

from __future__ import annotations

import threading

from bcu_gui.app.worker import JobRunner, live_threads, run_task
from bcu_gui.core.events import EpochEnd, Failed, Finished, Log, Started, Step


class ScriptedJob:
    """Yields a fixed script; ``gate`` holds it after the first step so a test can look at a live thread."""

    def __init__(self, gate: threading.Event | None = None, explode: bool = False) -> None:
        self.gate, self.explode, self.cancelled = gate, explode, False

    def events(self):
        yield Log("hello", "warning")
        yield Started(1, 2, 4, "cpu", 0.9, 1.0, {}, {}, "/tmp/x")
        yield Step(0, 1, 2, 0.5, 0.01, 1.0)
        if self.gate is not None:
            self.gate.wait(10)
        if self.explode:
            raise ZeroDivisionError("boom")
        yield Step(0, 2, 2, 0.4, 0.01, 1.0)
        yield EpochEnd(1, 1, 0.45, 0.8, 0.1, 0.8, 0.01, 1.0, 0.1, 0.1)
        yield Finished({}, "/tmp/x", self.cancelled)

    def pause(self): ...
    def resume(self): ...

    def cancel(self):
        self.cancelled = True
        if self.gate is not None:
            self.gate.set()


def test_the_runner_relays_every_event_in_order_and_joins_its_thread(qtbot):
    runner = JobRunner()
    seen = []
    for name in ("started", "step", "epoch", "finished", "failed"):
        getattr(runner, name).connect(lambda e, n=name: seen.append((n, e)))
    runner.log.connect(lambda m, level: seen.append(("log", (m, level))))
    gate = threading.Event()
    with qtbot.waitSignal(runner.running_changed, timeout=10_000, check_params_cb=lambda r: r is False):
        runner.start(ScriptedJob(gate))
        qtbot.waitUntil(lambda: any(n == "step" for n, _ in seen), timeout=10_000)
        assert runner.is_running and len(live_threads()) == 1  # the registry sees the live thread
        gate.set()
    assert [n for n, _ in seen] == ["log", "started", "step", "step", "epoch", "finished"]
    assert seen[0][1] == ("hello", "warning")
    assert not runner.is_running and live_threads() == []


def test_stop_and_wait_ends_a_blocked_job_and_relays_nothing_more(qtbot):
    runner = JobRunner()
    finished = []
    runner.finished.connect(finished.append)
    steps = []
    runner.step.connect(steps.append)
    runner.start(ScriptedJob(threading.Event()))
    qtbot.waitUntil(lambda: bool(steps), timeout=10_000)
    assert runner.stop_and_wait(10_000)
    assert not runner.is_running and live_threads() == []
    qtbot.wait(50)
    assert finished == []  # quiet: the closing window hears nothing after it asked to stop


def test_an_exception_escaping_a_job_becomes_an_internal_failure(qtbot):
    runner = JobRunner()
    with qtbot.waitSignal(runner.failed, timeout=10_000) as failed:
        runner.start(ScriptedJob(explode=True))
    qtbot.waitUntil(lambda: not runner.is_running, timeout=10_000)
    event = failed.args[0]
    assert isinstance(event, Failed) and event.kind == "internal" and "ZeroDivisionError" in event.detail


def test_background_tasks_report_progress_results_and_errors(qtbot):
    progress = []
    task = run_task(lambda report: (report(1), report(2), "done")[-1])
    task.progress.connect(progress.append)
    with qtbot.waitSignal(task.result, timeout=10_000) as result:
        pass
    assert result.args == ["done"]
    qtbot.waitUntil(lambda: not task.is_running, timeout=10_000)

    failing = run_task(lambda report: 1 / 0)
    with qtbot.waitSignal(failing.error, timeout=10_000) as error:
        pass
    assert isinstance(error.args[0], ZeroDivisionError)
    qtbot.waitUntil(lambda: live_threads() == [], timeout=10_000)
