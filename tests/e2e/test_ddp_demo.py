"""Two CPU processes with gloo on the shipped demo, started as `bcu demo --nproc 2` (torchrun underneath).

What must hold: the run completes; rank 0 alone wrote a run folder and printed the run; the cleansed model
scores like a one-process run of the same settings (the batch is global, so the optimisation is the same
apart from which images share a step and per-process batch-norm statistics); a SIGTERM to the launcher
stops both processes at the same step and leaves a folder that resumes with as many processes; a process
killed outright ends the other within seconds, with a sentence saying so, and the folder stays resumable.

Tolerance, measured (20 epochs, seeds 0 and 1, `bcu demo --epochs 20 --seed S [--nproc 2]`): one process ACC
94.7% / 96.5%, ASR 0.3% / 0.3%; two processes ACC 95.5% / 97.0%, ASR 0.0% / 0.3%. Changing the seed moves ACC
by about 2 points at this length (the run is still converging), so the two runs must agree within 5 points of
ACC and of ASR (a broken shard, batch or gradient sync costs tens of points), and both must have removed the
backdoor.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bcu_gui.core.outcome import EXIT_RUINED
from bcu_gui.core.resume import RESUME_FILE, folder_state
from bcu_gui.launcher import torchrun_env

pytestmark = pytest.mark.slow

EPOCHS = 20
TOLERANCE = 0.05


def _bcu(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    environ = torchrun_env(2, {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    return subprocess.Popen([sys.executable, "-m", "bcu_gui.cli", *args], env=environ, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_two_gloo_processes_cleanse_the_demo_like_one_process(tmp_path):
    quick = ["--device", "cpu", "--epochs", str(EPOCHS), "--ema-decay", "0"]  # no EMA: half the evaluation, same model
    single = _bcu("demo", "--json", *quick, "--out", str(tmp_path / "one"))  # one thread, like each of the two
    out, err = single.communicate(timeout=600)
    assert single.returncode == 0, err[-2000:]
    one = [json.loads(line) for line in out.splitlines()][-1]["summary"]

    data = tmp_path / "data"  # no --out: the run folder's name is chosen, by rank 0 alone
    proc = _bcu("demo", "--nproc", "2", "--json", *quick, env={"XDG_DATA_HOME": str(data)})
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    records = [json.loads(line) for line in out.splitlines()]
    kinds = [r["event"] for r in records]
    assert kinds == ["started"] + ["epochend"] * EPOCHS + ["finished"]  # one process speaks, once
    two = records[-1]["summary"]
    runs = list((data / "bcu-studio" / "runs").iterdir())
    assert [str(r) for r in runs] == [two["run_dir"]]  # one folder: the other rank made none of its own
    run = runs[0]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == EPOCHS
    assert not (run / RESUME_FILE).exists() and (run / "cleansed.safetensors").is_file()
    resolved = json.loads((run / "config.json").read_text())["resolved"]
    assert resolved["world_size"] == 2 and resolved["batch_size"] == one["batch_size"] == 40
    assert two["batch_size"] == 40 and two["steps"] == one["steps"]  # the batch is global: same steps
    assert err.count("2 processes (gloo); this is rank 0") == 1  # rank 0's log, once
    assert "each process takes 20 images a step (global batch 40)" in err

    print(f"one process: ACC {one['cleansed']['acc']:.3f} ASR {one['cleansed']['asr']:.3f} "
          f"({one['seconds']} s); two: ACC {two['cleansed']['acc']:.3f} ASR {two['cleansed']['asr']:.3f} "
          f"({two['seconds']} s)")
    for s in (one, two):
        assert s["cleansed"]["asr"] < 0.10 and s["cleansed"]["acc"] >= 0.85
    assert abs(one["cleansed"]["acc"] - two["cleansed"]["acc"]) <= TOLERANCE
    assert abs(one["cleansed"]["asr"] - two["cleansed"]["asr"]) <= TOLERANCE
    assert two["teacher"] == one["teacher"]  # rank 0 measures the same teacher on the same sets


def test_sigterm_to_the_launcher_stops_both_processes_and_leaves_a_resumable_folder(tmp_path):
    run = tmp_path / "run"
    epochs = 4
    proc = _bcu("demo", "--nproc", "2", "--device", "cpu", "--epochs", str(epochs), "--ema-decay", "0", "--out",
                str(run))
    deadline = time.monotonic() + 300
    while not (run / "metrics.jsonl").exists():  # rank 0 finished its first epoch
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    _, err = proc.communicate(timeout=120)
    assert time.monotonic() - stopped < 30  # stopped by agreement, not by torchrun's SIGKILL 30 s later
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert f"continue with `bcu cleanse --resume {run} --nproc 2`" in err
    assert "Traceback" not in err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["cancelled"] and summary["epochs_completed"] < epochs
    assert folder_state(run).status == "unfinished" and (run / RESUME_FILE).is_file()

    again = _bcu("cleanse", "--resume", str(run))  # one process cannot continue a two-process run
    _, err = again.communicate(timeout=120)
    assert again.returncode == 2 and "resume it with --nproc 2" in err

    resumed = _bcu("cleanse", "--resume", str(run), "--nproc", "2", "--json")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode in (0, EXIT_RUINED), err[-2000:]  # 4 epochs of the demo may be judged ruined: exit 3
    final = [json.loads(line) for line in out.splitlines()][-1]["summary"]
    assert not final["cancelled"] and final["epochs_completed"] == epochs
    assert len((run / "metrics.jsonl").read_text().splitlines()) == epochs
    assert not (run / RESUME_FILE).exists()


def _rank_of(pid: int) -> int | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return next((int(e[5:]) for e in environ if e.startswith(b"RANK=")), None)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank-1 process through /proc")
def test_a_process_that_dies_ends_the_other_with_a_clear_message_not_a_hang(tmp_path):
    run = tmp_path / "run"
    proc = _bcu("demo", "--nproc", "2", "--device", "cpu", "--epochs", "6", "--ema-decay", "0", "--out", str(run))
    deadline = time.monotonic() + 300
    while not (run / "metrics.jsonl").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    workers = subprocess.run(["pgrep", "-f", f"bcu_gui.cli demo .*--out {run}"], capture_output=True,
                             text=True).stdout.split()
    victim = [int(pid) for pid in workers if _rank_of(int(pid)) == 1]
    assert len(victim) == 1
    os.kill(victim[0], signal.SIGKILL)
    killed = time.monotonic()
    _, err = proc.communicate(timeout=120)
    assert time.monotonic() - killed < 60  # torchrun's failure detection and gloo's, not the 30-minute timeout
    assert proc.returncode == 1
    assert "bcu: error: another process of this run failed or was stopped" in err
    assert "process 1 (exit code -9)" in err and "Traceback" not in err
    assert folder_state(run).status == "unfinished" and (run / RESUME_FILE).is_file()  # resumable
