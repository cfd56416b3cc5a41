"""Resume points, --out protection and divergence: nothing a run did is lost, nothing earlier is overwritten."""

import json

import pytest
import torch

from bcu_gui.core import resume as resume_points
from bcu_gui.core.errors import ConfigError
from bcu_gui.core.events import EpochEnd, Failed, Finished, Log, Started
from bcu_gui.core.job import CleanseJob

from test_job import _config, folders  # noqa: E402,F401 (the fixture and config of the job tests)


def _weights(run):
    return torch.load(run / "cleansed.pt", weights_only=True)


def _kill_after_epoch(cfg, epoch):
    """Drive a job and drop it right after ``epoch`` ends, as kill -9 would: nothing after that runs."""
    job = CleanseJob(cfg, step_rate=0)
    events = job.events()
    for event in events:
        if isinstance(event, EpochEnd) and event.epoch == epoch:
            events.close()  # no save, no summary: only what was on disk at that moment
            return
    raise AssertionError("the run ended before the epoch")


@pytest.mark.parametrize("keep", ["last", "best", "ema"])  # ema: the moving average is restored too
def test_a_resumed_run_reaches_the_same_weights_bit_for_bit(tiny_checkpoint, folders, tmp_path, keep):
    whole = _config(tiny_checkpoint, folders, tmp_path, epochs=3, out=str(tmp_path / "whole"), keep=keep)
    assert isinstance(list(CleanseJob(whole, step_rate=0).events())[-1], Finished)

    cut = _config(tiny_checkpoint, folders, tmp_path, epochs=3, out=str(tmp_path / "cut"), keep=keep)
    _kill_after_epoch(cut, 1)
    run = tmp_path / "cut"
    assert (run / "resume.pt").exists() and not (run / "summary.json").exists()
    assert resume_points.folder_state(run).status == "unfinished"

    events = list(CleanseJob(cut, step_rate=0, resume=True).events())
    assert isinstance(events[-1], Finished), events[-1]
    assert any(isinstance(e, Log) and "resuming" in e.message and "after epoch 1 of 3" in e.message
               for e in events)
    assert [e.epoch for e in events if isinstance(e, EpochEnd)] == [2, 3]
    a, b = _weights(tmp_path / "whole"), _weights(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit for bit on the CPU
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    metrics_whole = [json.loads(x)["loss"] for x in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    metrics_cut = [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics_whole == metrics_cut
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_completed"] == 3 and not summary["cancelled"]
    assert not (run / "resume.pt").exists() and resume_points.folder_state(run).status == "finished"


def test_a_run_killed_before_its_first_epoch_end_resumes_from_the_start(tiny_checkpoint, folders, tmp_path):
    cfg = _config(tiny_checkpoint, folders, tmp_path, epochs=2)
    job = CleanseJob(cfg, step_rate=0)
    events = job.events()
    for event in events:
        if isinstance(event, Started):
            events.close()
            break
    assert (tmp_path / "run" / "resume.pt").exists()
    assert isinstance(list(CleanseJob(cfg, step_rate=0, resume=True).events())[-1], Finished)


def test_the_resume_point_is_read_without_unpickling_code(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": 1, "state": Evil()}, run / "resume.pt")
    with pytest.raises(ConfigError, match="cannot be read"):
        resume_points.read_point(run)


def test_a_stopped_run_stays_resumable_and_a_finished_one_does_not(tiny_checkpoint, folders, tmp_path):
    cfg = _config(tiny_checkpoint, folders, tmp_path, epochs=3)
    job = CleanseJob(cfg, step_rate=0)
    for event in job.events():
        if isinstance(event, EpochEnd):
            job.cancel("SIGTERM")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["cancelled"] and summary["note"].startswith("stopped (SIGTERM)")
    assert resume_points.folder_state(tmp_path / "run").status == "unfinished"
    events = list(CleanseJob(cfg, step_rate=0, resume=True).events())
    assert isinstance(events[-1], Finished) and not events[-1].cancelled
    failed = list(CleanseJob(cfg, step_rate=0, resume=True).events())[-1]
    assert isinstance(failed, Failed) and "finished run" in failed.message


def test_a_run_begun_before_a_setting_existed_still_resumes(tiny_checkpoint, folders, tmp_path):
    """An upgrade that adds a setting must not turn yesterday's stopped run into 'a run with other settings'."""
    cfg = _config(tiny_checkpoint, folders, tmp_path, epochs=2)
    job = CleanseJob(cfg, step_rate=0)
    for event in job.events():
        if isinstance(event, EpochEnd):
            job.cancel("SIGTERM")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    for added_later in ("memory_budget", "eval_every"):  # as written by a version without these settings
        saved.pop(added_later)
    (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
    events = list(CleanseJob(cfg, step_rate=0, resume=True).events())
    assert isinstance(events[-1], Finished) and not events[-1].cancelled


@pytest.mark.parametrize("prepare, fragment", [
    (lambda run: (run.mkdir(), (run / "config.json").write_text('{"mine": 1}')), "not a run folder"),
    (lambda run: (run.mkdir(), (run / "notes.txt").write_text("my notes")), "not a run folder"),
])
def test_out_never_overwrites_a_users_folder(tiny_checkpoint, folders, tmp_path, prepare, fragment):
    run = tmp_path / "run"
    prepare(run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    failed = list(CleanseJob(_config(tiny_checkpoint, folders, tmp_path), step_rate=0).events())[-1]
    assert isinstance(failed, Failed) and failed.kind == "input" and fragment in failed.message
    assert f"--out {tmp_path / 'run-2'}" in failed.message
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_out_refuses_a_finished_run_and_an_unfinished_run_of_other_settings(tiny_checkpoint, folders, tmp_path):
    cfg = _config(tiny_checkpoint, folders, tmp_path, epochs=1)
    list(CleanseJob(cfg, step_rate=0).events())
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run").iterdir() if p.is_file()}
    failed = list(CleanseJob(cfg, step_rate=0).events())[-1]
    assert isinstance(failed, Failed) and "holds a finished run" in failed.message
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run").iterdir() if p.is_file()} == before

    other = _config(tiny_checkpoint, folders, tmp_path, epochs=3, out=str(tmp_path / "other"))
    _kill_after_epoch(other, 1)
    failed = list(CleanseJob(_config(tiny_checkpoint, folders, tmp_path, epochs=4, out=str(tmp_path / "other")),
                             step_rate=0).events())[-1]
    assert isinstance(failed, Failed) and "unfinished run with other settings" in failed.message
    # the same settings continue it
    assert isinstance(list(CleanseJob(other, step_rate=0).events())[-1], Finished)


def test_resume_of_a_folder_that_is_not_a_run_is_refused(tiny_checkpoint, folders, tmp_path):
    failed = list(CleanseJob(_config(tiny_checkpoint, folders, tmp_path), step_rate=0, resume=True).events())[-1]
    assert isinstance(failed, Failed) and "nothing to resume" in failed.message


def test_a_non_finite_loss_stops_the_run_keeping_the_last_finite_epoch(tiny_checkpoint, folders, tmp_path):
    from bcu_gui.core.training import RunHook

    class Poison(RunHook):  # in the second epoch a weight becomes NaN (as a blown-up step would make it)
        def on_epoch_end(self, run):
            if run.state.epoch == 0:
                self.good = {k: v.clone() for k, v in run.student.state_dict().items()}
            return None

        def on_step_end(self, run):
            if run.state.epoch == 1 and run.state.epoch_step == 1:
                with torch.no_grad():
                    next(run.student.parameters()).fill_(float("nan"))

    hook = Poison()
    events = list(CleanseJob(_config(tiny_checkpoint, folders, tmp_path, epochs=3), hooks=[hook],
                             step_rate=0).events())
    failed = events[-1]
    assert isinstance(failed, Failed) and failed.kind == "diverged"
    assert "loss became nan" in failed.message and "lower the learning rate" in failed.message
    assert "end of epoch 1" in failed.message
    saved = _weights(tmp_path / "run")
    assert all(torch.isfinite(t).all() for t in saved.values() if t.is_floating_point())
    assert all(torch.equal(saved[k], hook.good[k].cpu()) for k in saved)
    text = (tmp_path / "run" / "summary.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    summary = json.loads(text)
    assert summary["epochs_completed"] == 1 and "diverged" in summary["note"]
    assert not (tmp_path / "run" / "resume.pt").exists()


def test_a_huge_learning_rate_does_not_end_as_done(tiny_checkpoint, folders, tmp_path):
    events = list(CleanseJob(_config(tiny_checkpoint, folders, tmp_path, epochs=3, lr=1e6), step_rate=0).events())
    assert isinstance(events[-1], Failed) and events[-1].kind == "diverged", events[-1]
    saved = _weights(tmp_path / "run")
    assert all(torch.isfinite(t).all() for t in saved.values() if t.is_floating_point())
    for name in ("summary.json", "metrics.jsonl", "config.json"):
        path = tmp_path / "run" / name
        if path.exists():
            assert "NaN" not in path.read_text() and "Infinity" not in path.read_text()


def test_folder_states(tmp_path):
    run_config = '{"checkpoint": "m.pt", "unlabeled": "u", "resolved": {}}'
    cases = {"absent": None, "empty": {}, "foreign": {"x.txt": "x"}, "users_config": {"config.json": '{"a": 1}'},
             "unfinished": {"config.json": run_config, "resume.pt": "x"},
             "started": {"config.json": run_config},
             "finished": {"config.json": run_config, "summary.json": "{}"},
             "old": {"config.json": run_config, "metrics.jsonl": ""}}
    expected = {"absent": "absent", "empty": "empty", "foreign": "foreign", "users_config": "foreign",
                "unfinished": "unfinished", "started": "unfinished", "finished": "finished", "old": "foreign"}
    for name, files in cases.items():
        folder = tmp_path / name
        if files is not None:
            folder.mkdir()
            for file, text in files.items():
                (folder / file).write_text(text)
        assert resume_points.folder_state(folder).status == expected[name], name
    with pytest.raises(ConfigError, match="earlier run that has no resume point"):
        resume_points.check_out_folder(tmp_path / "old", {"checkpoint": "m.pt"})
    assert resume_points.suggest_name(tmp_path / "old") == tmp_path / "old-2"


def test_a_resumed_keep_proxy_run_keeps_the_epoch_chosen_before_the_kill(monkeypatch, tiny_checkpoint, folders,
                                                                        tmp_path):
    """The lowest-proxy-ASR epoch came before the interruption: its weights must survive the resume."""
    from bcu_gui.core import training
    from test_method import FakeScan

    monkeypatch.setattr(training, "PROXY_AGREEMENT_MARGIN", 1.0)  # the rule ranks by proxy ASR alone here
    whole_scan = FakeScan([0.5, 0.1, 0.3])
    whole = _config(tiny_checkpoint, folders, tmp_path, epochs=3, out=str(tmp_path / "whole"), keep="proxy")
    assert list(CleanseJob(whole, step_rate=0, hooks=[whole_scan]).events())[-1].summary.cleansed.epoch == 2

    cut = _config(tiny_checkpoint, folders, tmp_path, epochs=3, out=str(tmp_path / "cut"), keep="proxy")
    job = CleanseJob(cut, step_rate=0, hooks=[FakeScan([0.5, 0.1, 0.3])])
    events = job.events()
    for event in events:
        if isinstance(event, EpochEnd) and event.epoch == 2:  # epoch 2 is the proxy's choice
            events.close()
            break
    last = list(CleanseJob(cut, step_rate=0, resume=True, hooks=[FakeScan([0.5, 0.1, 0.3])]).events())[-1]
    assert isinstance(last, Finished) and last.summary.kept == "proxy" and last.summary.cleansed.epoch == 2
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
