"""How many CPU threads a job trains with, and whether other programs are competing for the CPUs.

Why: PyTorch starts one OpenMP thread per core and lets idle threads spin-wait between parallel regions. A
desktop user always has something else running; with one other PyTorch process on a 2-core machine, both
processes' spinning threads fight over the same cores and an epoch ran 15-30x slower instead of 2x (issue
#22, point 8; ``benchmarks/contention.py`` measures it). So a CPU job trains with **the CPUs actually free**:
it measures how much CPU time *other* processes used (Linux ``/proc/stat`` minus this process's own
``/proc/self/stat``) and trains with the CPUs left, at least one and never more than the process had; it
measures again at every epoch end and adjusts, and reports when the machine is contended so the front ends can say why a run is slow. With one
thread per job there are no sibling threads to spin against, so the wait policy no longer matters.

Why not a passive OpenMP wait policy as well: under contention it bought no more than one thread per job does
(both 1.6-1.7x a step against 3.2-3.4x for two jobs spinning with two threads each, two runs of the
benchmark), alone it measured 1.2x slower in one run and even in the other, and the user's own OpenMP
settings stay theirs.

A user who sets ``OMP_NUM_THREADS`` (or ``MKL_NUM_THREADS``) has chosen: that number is kept and never changed.
``BCU_FIXED_THREADS=1`` keeps whatever count the process has: runs then repeat bit for bit whatever else the
machine does (a different thread count changes float sums), which the test suite relies on.
Where ``/proc`` does not exist (macOS, Windows) other programs' use is unknown and the job uses every CPU it may
run on, as PyTorch would.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

PINNING_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
FIXED_VARIABLE = "BCU_FIXED_THREADS"  # set (not 0): keep the process's thread count, for repeatable runs
CONTENDED_SHARE = 0.5  # other programs using at least half a CPU make the machine "contended"


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def pinned_threads(environ: dict[str, str] | None = None) -> int | None:
    """The thread count the user fixed through the environment, or None when they left it to us."""
    env = os.environ if environ is None else environ
    if env.get(FIXED_VARIABLE, "").strip() not in ("", "0"):
        return torch.get_num_threads()
    for name in PINNING_VARIABLES:
        value = env.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


@dataclass(frozen=True)
class CpuSample:
    """Cumulative busy CPU seconds of the whole machine and of this process, at one wall-clock moment."""

    wall: float
    machine_busy: float
    own: float


def _clock_ticks() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, ValueError, OSError):
        return 100


def read_sample(proc: Path = Path("/proc")) -> CpuSample | None:
    """Read ``/proc/stat`` (all CPUs) and ``/proc/self/stat`` (this process, all its threads); None off Linux."""
    try:
        first = (proc / "stat").read_text().splitlines()[0].split()
        own_fields = (proc / "self" / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if first[0] != "cpu" or len(first) < 8 or len(own_fields) < 13:
        return None
    try:
        # user nice system idle iowait irq softirq [steal]: busy is everything but idle and iowait
        ticks = [int(v) for v in first[1:]]
        busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + (ticks[7] if len(ticks) > 7 else 0)
        own = int(own_fields[11]) + int(own_fields[12])  # utime, stime (fields 14 and 15 of the whole line)
    except ValueError:
        return None
    hz = _clock_ticks()
    return CpuSample(wall=time.monotonic(), machine_busy=busy / hz, own=own / hz)


def others_busy(before: CpuSample | None, after: CpuSample | None) -> float | None:
    """How many CPUs other processes kept busy between two samples (0 .. CPUs), or None when unknown."""
    if before is None or after is None:
        return None
    span = after.wall - before.wall
    if span < 0.05:  # too short for clock-tick accounting to mean anything
        return None
    other = (after.machine_busy - before.machine_busy) - (after.own - before.own)
    return max(0.0, other / span)


@dataclass(frozen=True)
class ThreadChoice:
    """The thread count a job uses now, and the sentence that says why."""

    threads: int
    others: float | None  # CPUs other programs kept busy, when known
    pinned: bool

    @property
    def contended(self) -> bool:
        return self.others is not None and self.others >= CONTENDED_SHARE

    def describe(self, cpus: int) -> str:
        if self.pinned:
            return f"CPU threads: {self.threads} (fixed by OMP_NUM_THREADS, MKL_NUM_THREADS or BCU_FIXED_THREADS)"
        if self.others is None:
            return f"CPU threads: {self.threads} of {cpus} CPUs (other programs' use is not measured here)"
        if self.contended:
            return (f"the machine is busy: other programs keep {self.others:.1f} of {cpus} CPUs busy, so this run "
                    f"trains with {self.threads} thread{'s' if self.threads != 1 else ''} (slower than alone; "
                    f"close them for speed, or set OMP_NUM_THREADS to choose)")
        return f"CPU threads: {self.threads} of {cpus} CPUs (the machine is otherwise idle)"


def choose_threads(others: float | None, cpus: int | None = None, pinned: int | None = None,
                   ceiling: int | None = None) -> ThreadChoice:
    """Threads for the CPUs left free: ``cpus - round(others)``, at least 1 and at most ``ceiling`` (the count
    the process had when the job began: torch's default, or what its caller set); a pinned count is kept."""
    cpus = usable_cpus() if cpus is None else cpus
    top = cpus if ceiling is None else max(1, min(cpus, ceiling))
    if pinned is not None:
        return ThreadChoice(pinned, others, True)
    if others is None:
        return ThreadChoice(top, None, False)
    return ThreadChoice(max(1, min(top, cpus - int(others + 0.5))), others, False)


class ThreadGovernor:
    """Measures other programs' CPU use between calls and sets torch's thread count from it (CPU jobs only).

    ``start()`` takes the first sample; ``decide()`` (at job start, then at each epoch end) sets
    ``torch.set_num_threads`` and returns the choice, plus whether the contended state changed since the last
    call, so a job reports the change once instead of every epoch.
    """

    def __init__(self, environ: dict[str, str] | None = None, proc: Path = Path("/proc")) -> None:
        self._pinned = pinned_threads(environ)
        self._proc = proc
        self._cpus = usable_cpus()
        # never more threads than the process had: a caller that set torch.set_num_threads(1) (a benchmark, an
        # embedding program) keeps at most that; only contention lowers it
        self._ceiling = torch.get_num_threads()
        self._last: CpuSample | None = None
        self._contended: bool | None = None
        self.choice: ThreadChoice | None = None

    def start(self) -> None:
        self._last = read_sample(self._proc)

    def decide(self) -> tuple[ThreadChoice, bool]:
        now = read_sample(self._proc)
        others = others_busy(self._last, now)
        if now is not None and others is not None:
            self._last = now
        choice = choose_threads(others, self._cpus, self._pinned, self._ceiling)
        if others is None and self.choice is not None:  # a window too short to measure: keep the last choice
            choice = self.choice
        if choice.threads != torch.get_num_threads():
            torch.set_num_threads(choice.threads)
        changed = self._contended is None or choice.contended != self._contended
        self._contended = choice.contended
        self.choice = choice
        return choice, changed

    def describe(self) -> str:
        return self.choice.describe(self._cpus) if self.choice is not None else ""

    @property
    def cpus(self) -> int:
        return self._cpus
