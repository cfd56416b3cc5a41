"""The CPU thread policy (core/threads.py): threads from the CPUs other programs leave free, a pin kept."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bcu_gui.core import threads
from bcu_gui.core.threads import CpuSample, ThreadGovernor, choose_threads, others_busy, pinned_threads


def test_threads_follow_the_cpus_left_free() -> None:
    assert choose_threads(0.0, cpus=2).threads == 2
    assert choose_threads(0.3, cpus=2).threads == 2  # a little background work keeps both
    assert choose_threads(1.0, cpus=2).threads == 1
    assert choose_threads(5.0, cpus=2).threads == 1  # never fewer than one
    assert choose_threads(2.6, cpus=8).threads == 5
    assert choose_threads(0.0, cpus=8, ceiling=1).threads == 1  # a caller's torch.set_num_threads(1) holds
    assert choose_threads(None, cpus=8, ceiling=3).threads == 3


def test_a_pinned_count_is_kept_whatever_else_runs() -> None:
    choice = choose_threads(1.9, cpus=2, pinned=2)
    assert choice.threads == 2 and choice.pinned
    assert "OMP_NUM_THREADS" in choice.describe(2)


def test_unknown_use_takes_every_cpu_and_says_it_was_not_measured() -> None:
    choice = choose_threads(None, cpus=4)
    assert choice.threads == 4 and not choice.contended
    assert "not measured" in choice.describe(4)


def test_contention_is_named_with_the_numbers() -> None:
    choice = choose_threads(1.2, cpus=2)
    assert choice.contended
    text = choice.describe(2)
    assert "busy" in text and "1.2 of 2" in text and "1 thread " in text


@pytest.mark.parametrize("env, expected", [({}, None), ({"OMP_NUM_THREADS": "3"}, 3),
                                           ({"MKL_NUM_THREADS": "2"}, 2), ({"OMP_NUM_THREADS": "0"}, None),
                                           ({"OMP_NUM_THREADS": "four"}, None),
                                           ({"BCU_FIXED_THREADS": "1"}, torch.get_num_threads()),
                                           ({"BCU_FIXED_THREADS": "0"}, None)])
def test_pinning_comes_from_the_environment(env: dict[str, str], expected: int | None) -> None:
    assert pinned_threads(env) == expected


def test_others_use_is_the_machine_minus_this_process() -> None:
    before = CpuSample(wall=10.0, machine_busy=100.0, own=40.0)
    after = CpuSample(wall=12.0, machine_busy=103.0, own=41.0)  # 3 CPU-s busy in 2 s, 1 of them ours
    assert others_busy(before, after) == pytest.approx(1.0)
    assert others_busy(None, after) is None
    assert others_busy(before, CpuSample(10.01, 100.0, 40.0)) is None  # too short a window


def _fake_proc(root: Path, busy_ticks: int, own_ticks: int) -> Path:
    (root / "self").mkdir(parents=True, exist_ok=True)
    # user nice system idle iowait irq softirq steal: busy = user + system here
    (root / "stat").write_text(f"cpu  {busy_ticks} 0 0 5000 7 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8\n")
    fields = ["S"] + ["0"] * 10 + [str(own_ticks), "0"] + ["0"] * 30  # utime is field 14 of the line
    (root / "self" / "stat").write_text("123 (python (x)) " + " ".join(fields) + "\n")
    return root


def test_proc_files_are_read_as_linux_writes_them(tmp_path: Path) -> None:
    sample = threads.read_sample(_fake_proc(tmp_path, busy_ticks=250, own_ticks=100))
    hz = threads._clock_ticks()
    assert sample is not None
    assert sample.machine_busy == pytest.approx(250 / hz) and sample.own == pytest.approx(100 / hz)
    assert threads.read_sample(tmp_path / "missing") is None


def test_the_governor_sets_torch_threads_and_reports_a_change_once(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "usable_cpus", lambda: 2)
    clock = iter([0.0, 1.0, 2.0, 3.0])
    monkeypatch.setattr(threads.time, "monotonic", lambda: next(clock))
    hz = threads._clock_ticks()
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the ceiling the governor reads when it is made
    try:
        gov = ThreadGovernor(environ={}, proc=_fake_proc(tmp_path, 0, 0))
        gov.start()
        _fake_proc(tmp_path, busy_ticks=2 * hz, own_ticks=hz // 2)  # others kept 1.5 CPUs busy for 1 s
        choice, changed = gov.decide()
        assert (choice.threads, choice.contended, changed) == (1, True, True)
        assert torch.get_num_threads() == 1
        _fake_proc(tmp_path, busy_ticks=3 * hz + hz // 2, own_ticks=hz)  # others: 1.0 more in 1 s
        choice, changed = gov.decide()
        assert (choice.threads, changed) == (1, False)  # still contended: not reported again
        _fake_proc(tmp_path, busy_ticks=4 * hz + hz // 2, own_ticks=2 * hz)  # all the busy time was ours
        choice, changed = gov.decide()
        assert (choice.threads, choice.contended, changed) == (2, False, True)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
