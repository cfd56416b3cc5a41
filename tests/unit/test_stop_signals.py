"""The CLI's stop rule (bcu_gui/stop_signals.py): the first signal saves, a second aborts; handlers given back."""

from __future__ import annotations

import signal

import pytest

from bcu_gui.stop_signals import STOP_SIGNALS, Abort, SaveThenAbort, handling


def _rule(abortable: bool = True) -> tuple[SaveThenAbort, list[str]]:
    cancelled: list[str] = []
    rule = SaveThenAbort(lambda: bool(cancelled), cancelled.append, lambda name: f"bcu: {name}: stopping",
                         abortable=abortable)
    return rule, cancelled


def test_the_first_signal_stops_and_saves_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    rule, cancelled = _rule()
    rule(signal.SIGTERM, None)
    assert cancelled == ["SIGTERM"] and rule.stopped_by == [signal.SIGTERM]
    assert capsys.readouterr().err.strip() == "bcu: SIGTERM: stopping"


def test_a_second_signal_aborts_unless_aborting_is_not_allowed() -> None:
    rule, _ = _rule()
    rule(signal.SIGINT, None)
    with pytest.raises(Abort) as stop:
        rule(signal.SIGINT, None)
    assert stop.value.signum == signal.SIGINT and not isinstance(stop.value, Exception)
    patient, cancelled = _rule(abortable=False)  # a torchrun rank: never abort a save
    patient(signal.SIGTERM, None)
    patient(signal.SIGTERM, None)
    assert cancelled == ["SIGTERM"] and patient.stopped_by == [signal.SIGTERM]


def test_the_handlers_found_are_given_back_however_the_block_ends() -> None:
    found = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a shell's background job
    try:
        rule, _ = _rule()
        with pytest.raises(RuntimeError):
            with handling(rule):
                assert all(signal.getsignal(s) is rule for s in STOP_SIGNALS)
                raise RuntimeError("the job failed")
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        for s, handler in found.items():
            signal.signal(s, handler)
