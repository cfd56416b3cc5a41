"""The run library's records and the follower of a run written elsewhere, on real small runs of the demo.

Runs are made by the real job (in-process, 2 epochs on 32 demo images) or by a real `bcu cleanse` in a
subprocess (followed live, and killed); damaged folders are made by breaking copies of a real run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bcu_gui.cli import main
from bcu_gui.core import heartbeat
from bcu_gui.core.events import Failed, Finished
from bcu_gui.core.job import CleanseConfig, CleanseJob
from bcu_gui.core.resume import check_out_folder, folder_state
from bcu_gui.core.run_library import find_run_folders, read_curves, read_record, scan_runs
from bcu_gui.core.errors import ConfigError
from bcu_gui.core.watch import RunFollower
from bcu_gui.demo import demo_dir
from bcu_gui.core.outcome import EXIT_RUINED

IMAGES = 32


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory) -> Path:
    """The demo model with 32 unlabelled images and 3 clean/triggered images per class."""
    src, dst = demo_dir(), tmp_path_factory.mktemp("demo")
    shutil.copy2(src / "model.pt", dst / "model.pt")
    shutil.copy2(src / "model.json", dst / "model.json")
    (dst / "unlabeled").mkdir()
    for f in sorted((src / "unlabeled").iterdir())[:IMAGES]:
        shutil.copy2(f, dst / "unlabeled" / f.name)
    for folder in ("clean", "triggered"):
        for class_dir in sorted(p for p in (src / folder).iterdir() if p.is_dir()):
            (dst / folder / class_dir.name).mkdir(parents=True)
            for f in sorted(class_dir.iterdir())[:3]:
                shutil.copy2(f, dst / folder / class_dir.name / f.name)
    return dst


def _config(demo: Path, out: Path, epochs: int = 2, **kw) -> CleanseConfig:
    return CleanseConfig(checkpoint=str(demo / "model.pt"), unlabeled=str(demo / "unlabeled"),
                         eval_clean=str(demo / "clean"), eval_poisoned=str(demo / "triggered"), target_class=0,
                         preset="strong", epochs=epochs, batch_size=16, device="cpu", precision="fp32",
                         out=str(out), **kw)


def _run(cfg: CleanseConfig, stop_after: int | None = None):
    job = CleanseJob(cfg, step_rate=0)
    last = None
    for event in job.events():
        last = event
        if stop_after is not None and getattr(event, "epoch", None) == stop_after and type(event).__name__ == "EpochEnd":
            job.cancel("test")
    return last


@pytest.fixture(scope="module")
def finished_run(small_demo, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "20260101-120000-done"
    assert isinstance(_run(_config(small_demo, out, ratios={"layer4": 0.5})), Finished)
    return out


def test_a_finished_run_reads_into_a_record_without_touching_models(finished_run, monkeypatch):
    import torch

    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("the library never loads a tensor file"))
    r = read_record(finished_run)
    summary = json.loads((finished_run / "summary.json").read_text())
    assert r.status == "finished" and r.epochs_done == 2 and r.epochs_planned == 2 and not r.resumable
    assert r.checkpoint == "model.pt" and r.arch == "resnet18_cifar" and r.ratios_text == "strong, layer4=0.5"
    assert r.acc == summary["cleansed"]["acc"] and r.asr == summary["cleansed"]["asr"]
    assert r.teacher_asr == summary["teacher"]["asr"] and r.proxy_asr is None
    assert time.strftime("%Y%m%d-%H%M%S", time.localtime(r.started)) == "20260101-120000"
    assert not (finished_run / heartbeat.HEARTBEAT_FILE).exists()  # the heartbeat is gone once it ended
    curves = read_curves(finished_run)
    assert curves.epochs == (1, 2) and curves.has("acc") and curves.has("loss") and not curves.has("proxy_asr")


def test_stopped_unfinished_failed_damaged_and_foreign(finished_run, small_demo, tmp_path):
    stopped = tmp_path / "stopped"
    assert _run(_config(small_demo, stopped, epochs=5), stop_after=1).cancelled
    r = read_record(stopped)
    assert r.status == "stopped" and r.resumable and r.epochs_done == 1 and r.epochs_text == "1/5"

    killed = tmp_path / "killed"  # a run killed after epoch 1: no summary, a resume point, a dead writer
    shutil.copytree(stopped, killed)
    (killed / "summary.json").unlink()
    (killed / heartbeat.HEARTBEAT_FILE).write_text(json.dumps(
        {"pid": 2 ** 22 + 12345, "host": heartbeat.this_host(), "started": time.time(), "beat": time.time(),
         "beats": 3, "interval": 5}))
    r = read_record(killed)
    assert r.status == "unfinished" and "stopped writing" in r.note and r.acc is not None and r.epochs_done == 1
    assert folder_state(killed).status == "unfinished"  # still resumable: the heartbeat file is the run's own

    failed = tmp_path / "failed"
    shutil.copytree(killed, failed)
    (failed / heartbeat.FAILED_FILE).write_text(json.dumps({"message": "the device ran out of memory", "kind": "memory"}))
    r = read_record(failed)
    assert r.status == "failed" and "out of memory" in r.note

    damaged = tmp_path / "damaged"
    shutil.copytree(finished_run, damaged)
    (damaged / "summary.json").write_text("{not json")
    (damaged / "metrics.jsonl").write_text('{"epoch": 1, "acc": 0.5}\nnot json\n')
    r = read_record(damaged)
    assert r.status == "damaged" and "summary.json" in r.note and r.epochs_done == 1
    broken = tmp_path / "broken"
    shutil.copytree(finished_run, broken)
    (broken / "config.json").write_bytes(b"\xff\xfe garbage")
    assert read_record(broken).status == "damaged"
    wrong_types = tmp_path / "types"
    shutil.copytree(finished_run, wrong_types)
    cfg = json.loads((wrong_types / "config.json").read_text())
    (wrong_types / "config.json").write_text(json.dumps({**cfg, "epochs": "many", "ratios": {"x": "y"}}))
    assert read_record(wrong_types).status == "damaged"

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"theme": "dark"}')
    assert read_record(foreign) is None and read_record(tmp_path / "absent") is None


def test_finding_runs_under_roots(finished_run, tmp_path):
    root = tmp_path / "lib"
    (root / "sweep" / "a").mkdir(parents=True)
    (root / "notes").mkdir()
    (root / "notes" / "x.txt").write_text("hi")
    shutil.copytree(finished_run, root / "20260102-000000-run")
    shutil.copytree(finished_run, root / "sweep" / "a" / "run1")  # two levels down
    os.symlink(root, root / "sweep" / "loop")  # a loop is not followed forever
    found = list(find_run_folders([root, root / "sweep"]))
    assert sorted(p.name for p in found) == ["20260102-000000-run", "run1"]
    assert not any("original_form" in str(p) for p in found)
    batches = list(scan_runs([root], batch=1))
    assert [len(b) for b in batches] == [1, 1]


def test_a_live_writer_is_running_and_its_folder_is_not_reused(finished_run, tmp_path):
    run = tmp_path / "live"
    shutil.copytree(finished_run, run)
    (run / "summary.json").unlink()
    beat = heartbeat.Heartbeat(run, epochs=2, interval=0.05)
    beat.start()
    try:
        r = read_record(run)
        assert r.status == "running" and str(os.getpid()) in r.note
        with pytest.raises(ConfigError, match="being written right now"):
            check_out_folder(run, json.loads((run / "config.json").read_text()))
        first = heartbeat.read_heartbeat(run).beats
        time.sleep(0.3)
        assert heartbeat.read_heartbeat(run).beats > first  # it beats by itself between epochs
    finally:
        beat.stop()
    assert not (run / heartbeat.HEARTBEAT_FILE).exists()


def test_a_remote_writer_is_judged_by_its_beat_and_its_epoch_time():
    info = heartbeat.HeartbeatInfo(pid=1, host="elsewhere", started=0, beat=1000.0, beats=5, interval=5,
                                   epoch_seconds=600.0)
    assert info.stale_after == 1800.0  # three of its own epochs
    assert heartbeat.writer_alive(info, now=1000.0 + 1700) and not heartbeat.writer_alive(info, now=1000.0 + 1900)
    quick = heartbeat.HeartbeatInfo(pid=1, host="elsewhere", started=0, beat=0, beats=1, interval=5)
    assert quick.stale_after == heartbeat.MIN_STALE_SECONDS


def test_follower_with_a_fake_clock_sees_rows_a_resume_and_a_silent_remote_writer(finished_run, tmp_path):
    run = tmp_path / "remote"
    shutil.copytree(finished_run, run)
    (run / "summary.json").unlink()
    rows = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text(rows[0] + "\n")
    now = [0.0]
    follower = RunFollower(run, clock=lambda: now[0])
    beat = {"pid": 1, "host": "a-server", "started": 0, "beat": 0, "beats": 1, "interval": 5, "epoch_seconds": 1}
    (run / heartbeat.HEARTBEAT_FILE).write_text(json.dumps(beat))
    u = follower.poll()
    assert u.state == "running" and [r["epoch"] for r in u.new_rows] == [1] and u.epochs == 2
    (run / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    os.utime(run / "metrics.jsonl", ns=(1, 10 ** 18))
    now[0] = 10
    assert [r["epoch"] for r in follower.poll().new_rows] == [2]
    (run / "metrics.jsonl").write_text(rows[0] + "\n")  # resumed from epoch 1: the file shrank
    u = follower.poll()
    assert u.restarted and [r["epoch"] for r in u.new_rows] == [1]
    now[0] = 10 + heartbeat.MIN_STALE_SECONDS + 1  # the same beat for too long, by our clock
    u = follower.poll()
    assert u.state == "died" and "a-server" in u.message and follower.poll().ended


def _bcu(args: list[str], stdout=subprocess.DEVNULL) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.Popen([sys.executable, "-m", "bcu_gui.cli", *args], stdout=stdout,
                            stderr=subprocess.PIPE, text=True, env=env)


def _cleanse_args(demo: Path, out: Path, epochs: int) -> list[str]:
    return ["cleanse", str(demo / "model.pt"), "--unlabeled", str(demo / "unlabeled"), "--eval-clean",
            str(demo / "clean"), "--eval-poisoned", str(demo / "triggered"), "--target-class", "0", "--preset",
            "strong", "--epochs", str(epochs), "--batch-size", "16", "--device", "cpu", "--precision", "fp32",
            "--out", str(out)]


@pytest.mark.slow
def test_follow_a_live_bcu_cleanse_to_its_end(small_demo, tmp_path):
    run = tmp_path / "live"
    proc = _bcu(_cleanse_args(small_demo, run, 12))
    watch = _bcu(["watch", str(run), "--json", "--interval", "0.1"], stdout=subprocess.PIPE)  # `bcu watch` too
    try:
        follower = RunFollower(run)
        updates = list(follower.follow(interval=0.05, timeout=120))
    finally:
        _, err = proc.communicate(timeout=60)
        watched, _ = watch.communicate(timeout=60)
    assert proc.returncode in (0, EXIT_RUINED), err  # a short run (or a random tiny teacher) may be judged ruined: exit 3
    lines = [json.loads(line) for line in watched.splitlines()]
    assert watch.returncode == 0 and lines[-1]["state"] == "finished"
    assert [r["epoch"] for r in lines if r["event"] == "epoch"] == list(range(1, 13))
    assert updates[-1].state == "finished" and updates[-1].summary.epochs_completed == 12
    assert "running" in [u.state for u in updates]
    with_rows = [u for u in updates if u.new_rows]
    assert len(with_rows) >= 2  # seen epoch by epoch, not all at once at the end
    assert [r["epoch"] for r in follower.rows] == list(range(1, 13))
    assert read_record(run).status == "finished"


@pytest.mark.slow
def test_a_killed_bcu_cleanse_is_noticed_as_dead(small_demo, tmp_path, capsys):
    run = tmp_path / "killed"
    proc = _bcu(_cleanse_args(small_demo, run, 2000))
    follower = RunFollower(run)
    try:
        for update in follower.follow(interval=0.05, timeout=120):
            if update.new_rows:
                break
        assert read_record(run).status == "running"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    update = follower.poll()
    assert update.state == "died" and str(proc.pid) in update.message
    record = read_record(run)
    assert record.status == "unfinished" and record.resumable and record.epochs_done >= 1
    assert main(["watch", str(run)]) == 1 and "is gone" in capsys.readouterr().out
    assert main(["watch", str(tmp_path / "no" / "such")]) == 2


def test_a_run_that_fails_records_why(small_demo, tmp_path):
    run = tmp_path / "diverged"
    event = _run(_config(small_demo, run, epochs=3, lr=1e30))
    assert isinstance(event, Failed) and event.kind == "diverged"
    assert heartbeat.read_failure(run).kind == "diverged" and not (run / heartbeat.HEARTBEAT_FILE).exists()
    r = read_record(run)
    assert r.status == "failed" and "diverged" in r.note
