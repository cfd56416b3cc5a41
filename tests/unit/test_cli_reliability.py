"""`bcu` under stops, kills, reruns and closed pipes: signals save the run, kill -9 resumes, nothing overwritten."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from bcu_gui.cli import main
from bcu_gui.core.outcome import EXIT_RUINED


@pytest.fixture
def unlabeled(tmp_path):
    folder = tmp_path / "unl"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(16):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def _start(args, cwd=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "bcu_gui.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)


def _cleanse_args(ckpt, unlabeled, run, epochs):
    return ["cleanse", str(ckpt), "--unlabeled", str(unlabeled), "--epochs", str(epochs), "--batch-size", "8",
            "--device", "cpu", "--precision", "fp32", "--json", "--out", str(run)]


def _until_epoch(proc, epoch):
    while True:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        record = json.loads(line)
        if record["event"] == "epochend" and record["epoch"] == epoch:
            return


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_like_ctrl_c_and_save(tiny_checkpoint, unlabeled, tmp_path, signum):
    run = tmp_path / "run"
    proc = _start(_cleanse_args(tiny_checkpoint, unlabeled, run, 500))
    _until_epoch(proc, 1)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    summary = json.loads((run / "summary.json").read_text())
    name = signal.Signals(signum).name
    assert summary["cancelled"] is True and summary["note"].startswith(f"stopped ({name})")
    assert (run / "cleansed.pt").exists() and (run / "resume.pt").exists() and "Traceback" not in err
    assert f"{name}: stopping after this batch" in err and f"--resume {run}" in err
    assert json.loads(out.splitlines()[-1])["event"] == "finished"


def test_a_second_signal_exits_at_once(tiny_checkpoint, unlabeled, tmp_path, capsys, monkeypatch):
    """Two signals in one run, delivered in-process at a known moment (two real ones sent together coalesce)."""
    from bcu_gui.core.events import Step
    from bcu_gui.core.job import CleanseJob

    original = CleanseJob.events

    def events(self):
        for event in original(self):
            yield event
            if isinstance(event, Step) and event.step == 2:
                signal.raise_signal(signal.SIGTERM)  # first: stop at the next batch
                assert self.cancelled and self.stop_reason == "SIGTERM"
                signal.raise_signal(signal.SIGTERM)  # second: give up now

    monkeypatch.setattr(CleanseJob, "events", events)
    code = main(_cleanse_args(tiny_checkpoint, unlabeled, tmp_path / "run", 50))
    err = capsys.readouterr().err
    assert code == 128 + signal.SIGTERM and "SIGTERM again: aborted without saving" in err
    assert (tmp_path / "run" / "resume.pt").exists() and not (tmp_path / "run" / "summary.json").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are given back


@pytest.mark.slow
def test_kill_9_then_resume_reaches_the_uninterrupted_weights(tiny_checkpoint, unlabeled, tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    full = _start(_cleanse_args(tiny_checkpoint, unlabeled, whole, 4))  # same threads as the runs it is compared to
    assert full.wait(timeout=300) in (0, EXIT_RUINED)  # a short run (or a random tiny teacher) may be judged ruined: exit 3
    proc = _start(_cleanse_args(tiny_checkpoint, unlabeled, cut, 4))
    _until_epoch(proc, 2)
    proc.kill()  # SIGKILL: no handler runs, nothing is saved on the way out
    proc.communicate(timeout=60)
    assert not (cut / "summary.json").exists() and (cut / "resume.pt").exists()

    done = _start(["cleanse", "--resume", str(cut), "--json"])
    out, err = done.communicate(timeout=300)
    assert done.returncode in (0, EXIT_RUINED), err
    assert [json.loads(x)["epoch"] for x in out.splitlines() if json.loads(x)["event"] == "epochend"] in ([3, 4],
                                                                                                          [2, 3, 4])
    a = torch.load(whole / "cleansed.pt", weights_only=True)
    b = torch.load(cut / "cleansed.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (cut / "resume.pt").exists()
    again = _start(["cleanse", "--resume", str(cut)])
    _, err = again.communicate(timeout=120)
    assert again.returncode == 2 and "holds a finished run" in err and len(err.strip().splitlines()) == 1


def test_config_repeats_a_run_into_a_new_folder(tiny_checkpoint, unlabeled, tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(_cleanse_args(tiny_checkpoint, unlabeled, first, 1)) in (0, EXIT_RUINED)  # a short run (or a random tiny teacher) may be judged ruined: exit 3
    assert main(["cleanse", "--config", str(first / "config.json"), "--out", str(second), "--json"]) in (0, EXIT_RUINED)
    a = torch.load(first / "cleansed.pt", weights_only=True)
    b = torch.load(second / "cleansed.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same settings and seed: the same model
    capsys.readouterr()
    assert main(["cleanse", "--config", str(first / "config.json"), "--out", str(first)]) == 2
    err = capsys.readouterr().err
    assert "holds a finished run" in err and f"--out {tmp_path / 'first-2'}" in err
    # a copy of the config under another name, with the batch size left to the rule
    copy = tmp_path / "settings.json"
    copy.write_text((first / "config.json").read_text())
    third = tmp_path / "third"
    assert main(["cleanse", "--config", str(copy), "--batch-size", "auto", "--out", str(third), "--json"]) in (0, EXIT_RUINED)
    resolved = json.loads((third / "config.json").read_text())
    assert resolved["batch_size"] is None and resolved["resolved"]["batch_automatic"] is True


@pytest.mark.parametrize("prepare", ["user_files", "finished_run"])
def test_out_refuses_old_work_in_one_line(tiny_checkpoint, unlabeled, tmp_path, capsys, prepare):
    run = tmp_path / "run"
    if prepare == "user_files":
        run.mkdir()
        (run / "config.json").write_text('{"my": "own"}')
        (run / "summary.json").write_text('{"my": "summary"}')
    else:
        assert main(_cleanse_args(tiny_checkpoint, unlabeled, run, 1)) in (0, EXIT_RUINED)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main(_cleanse_args(tiny_checkpoint, unlabeled, run, 1)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "choose a new folder" in err[0] and "run-2" in err[0]
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("argv, fragment", [
    (["--input-size", "0"], "input size must lie between"),
    (["--normalize="], "normalisation is empty"),
    (["--normalize", "nan,nan"], "must be finite"),
    (["--ratios", "layer4=0.2,layer4=0.3"], "given twice"),
    (["--arch", "vgg19_bn"], "leave the architecture out"),
])
def test_settings_once_ignored_are_one_line_errors(tiny_checkpoint, unlabeled, tmp_path, capsys, argv, fragment):
    assert main(_cleanse_args(tiny_checkpoint, unlabeled, tmp_path / "run", 1) + argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err


def test_resume_and_config_refuse_mixed_options(tmp_path, capsys):
    assert main(["cleanse", "x.pt", "--resume", str(tmp_path)]) == 2
    assert "leave out the checkpoint" in capsys.readouterr().err
    assert main(["cleanse", "--resume", str(tmp_path), "--config", "c.json"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["cleanse", "--resume", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_a_closed_pipe_ends_quietly(tiny_checkpoint):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "bcu_gui.cli", "inspect", str(tiny_checkpoint)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # like `| head -0`: every write finds the reader gone
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode == 141


def test_log_lines_during_training_go_to_stderr(tiny_checkpoint, unlabeled, tmp_path, capsys):
    args = _cleanse_args(tiny_checkpoint, unlabeled, tmp_path / "run", 2)
    args.remove("--json")
    assert main(args) in (0, EXIT_RUINED)  # a short run (or a random tiny teacher) may be judged ruined: exit 3
    out, err = capsys.readouterr()
    assert "epoch   1/2" in err and "epoch   1/2" not in out
    assert out.splitlines()[0].startswith("done in ")  # stdout holds the result only


def test_json_output_never_holds_a_bare_nan(tiny_checkpoint, unlabeled, tmp_path, capsys):
    assert main(_cleanse_args(tiny_checkpoint, unlabeled, tmp_path / "run", 4) + ["--lr", "1e6"]) == 1
    captured = capsys.readouterr()
    for line in captured.out.splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c} in --json output"))
    assert "training diverged" in captured.err and "lower the learning rate" in captured.err
