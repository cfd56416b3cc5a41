"""The QThread bridge: events become signals in order, threads are joined and registered, tasks report back."""

from __future__ import annotations

import threading

from bcu_gui.app.worker import JobRunner, live_threads, run_task
from bcu_gui.core.events import EpochEnd, Failed, Finished, Log, Started, Step
from bcu_gui.core.summary import ReinitRecord, RunSummary, Scores


def fake_summary(cancelled: bool = False, run_dir: str = "/tmp/x") -> RunSummary:
    return RunSummary(teacher=Scores(acc=0.9, asr=1.0), cleansed=Scores(acc=0.8, asr=0.1, epoch=1), best=None,
                      kept="last", preset="strong", epochs=1, epochs_completed=1, steps=2, cancelled=cancelled,
                      seconds=0.1, images_per_second=40.0, device="cpu",
                      reinit=ReinitRecord(ratios={}, counts={}, totals={}, seed=0), model_files=(), run_dir=run_dir)


class ScriptedJob:
    """Yields a fixed script; ``gate`` holds it after the first step so a test can look at a live thread."""

    def __init__(self, gate: threading.Event | None = None, explode: bool = False) -> None:
        self.gate, self.explode, self.cancelled = gate, explode, False

    def events(self):
        yield Log(message="hello", level="warning")
        yield Started(epochs=1, steps_per_epoch=2, images=4, device="cpu", teacher_acc=0.9, teacher_asr=1.0,
                      reinit_counts={}, reinit_totals={}, run_dir="/tmp/x")
        yield Step(epoch=0, step=1, total_steps=2, loss=0.5, lr=0.01, temperature=1.0, losses=(0.5,))
        if self.gate is not None:
            self.gate.wait(10)
        if self.explode:
            raise ZeroDivisionError("boom")
        yield Step(epoch=0, step=2, total_steps=2, loss=0.4, lr=0.01, temperature=1.0, losses=(0.4,))
        yield EpochEnd(epoch=1, epochs=1, loss=0.45, acc=0.8, asr=0.1, agreement=0.8, lr=0.01, temperature=1.0,
                       seconds=0.1, elapsed=0.1)
        yield Finished(summary=fake_summary(self.cancelled))

    def pause(self): ...
    def resume(self): ...

    def cancel(self):
        self.cancelled = True
        if self.gate is not None:
            self.gate.set()


def test_the_runner_relays_every_event_in_order_and_joins_its_thread(qtbot):
    runner = JobRunner()
    seen = []
    runner.event.connect(seen.append)
    gate = threading.Event()
    with qtbot.waitSignal(runner.running_changed, timeout=10_000, check_params_cb=lambda r: r is False):
        runner.start(ScriptedJob(gate))
        qtbot.waitUntil(lambda: any(isinstance(e, Step) for e in seen), timeout=10_000)
        assert runner.is_running and len(live_threads()) == 1  # the registry sees the live thread
        gate.set()
    assert [type(e) for e in seen] == [Log, Started, Step, Step, EpochEnd, Finished]
    assert seen[0] == Log(message="hello", level="warning")
    assert not runner.is_running and live_threads() == []


def test_stop_and_wait_ends_a_blocked_job_and_relays_nothing_more(qtbot):
    runner = JobRunner()
    finished = []
    steps = []
    runner.event.connect(lambda e: (steps if isinstance(e, Step) else finished).append(e))
    runner.start(ScriptedJob(threading.Event()))
    qtbot.waitUntil(lambda: bool(steps), timeout=10_000)
    assert runner.stop_and_wait(10_000)
    assert not runner.is_running and live_threads() == []
    qtbot.wait(50)
    assert not any(isinstance(e, Finished) for e in finished)  # quiet: nothing heard after asking to stop


def test_an_exception_escaping_a_job_becomes_an_internal_failure(qtbot):
    runner = JobRunner()
    with qtbot.waitSignal(runner.event, timeout=10_000, check_params_cb=lambda e: isinstance(e, Failed)) as failed:
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
