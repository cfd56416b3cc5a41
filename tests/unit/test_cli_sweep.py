"""`bcu sweep` on a cut-down copy of the shipped demo (its model, fewer of its images; one epoch a run): the table and the Pareto front on stdout, one run folder
per setting and sweep.csv, a re-run that skips finished runs, bad input as one line and exit 2, a stop signal
that saves and continues, and the teacher scanned once for a whole sweep with --scan."""

from __future__ import annotations

import csv
import json
import shutil
import signal

import pytest

from bcu_gui.cli import main
from bcu_gui.demo import demo_dir

QUICK = ["--epochs", "1", "--device", "cpu", "--precision", "fp32", "--no-flip"]


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    """The demo's model with 64 of its unlabelled images and 5 per class of its clean and triggered ones."""
    src, dst = demo_dir(), tmp_path_factory.mktemp("mini_demo")
    for name in ("model.pt", "model.json"):
        shutil.copy2(src / name, dst / name)
    (dst / "unlabeled").mkdir()
    for f in sorted((src / "unlabeled").iterdir())[:64]:
        shutil.copy2(f, dst / "unlabeled" / f.name)
    for folder in ("clean", "triggered"):
        for class_dir in sorted(p for p in (src / folder).iterdir() if p.is_dir()):
            (dst / folder / class_dir.name).mkdir(parents=True)
            for f in sorted(class_dir.iterdir())[:5]:
                shutil.copy2(f, dst / folder / class_dir.name / f.name)
    return dst


def _demo(root, *extra, triggered=True):
    args = ["sweep", str(root / "model.pt"), "--unlabeled", str(root / "unlabeled"), "--eval-clean",
            str(root / "clean")]
    if triggered:
        args += ["--eval-poisoned", str(root / "triggered"), "--target-class", "0"]
    return args + [*QUICK, *extra]


@pytest.mark.slow
def test_a_preset_sweep_on_the_demo_prints_the_table_and_front_and_skips_finished_runs_when_repeated(
        mini, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(_demo(mini, "--presets", "paper,strong", "--out", str(out))) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].split()[:3] == ["setting", "seed", "ACC"]
    assert [ln[2:].split()[0] for ln in lines[1:3]] == ["paper", "strong"]
    assert lines[3].startswith("Pareto front (* ACC high, ASR low): ")
    assert "[1/2] paper" in captured.err and "[2/2] strong" in captured.err and "Traceback" not in captured.err
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [(r["name"], r["status"], r["front_metric"]) for r in rows] == [("paper", "finished", "ASR"),
                                                                          ("strong", "finished", "ASR")]
    # one epoch of the demo: the paper's ratios keep the backdoor (ASR near 100%), full re-initialisation not
    assert float(rows[0]["asr"]) > 0.5 and float(rows[1]["asr"]) < float(rows[0]["asr"])
    assert rows[0]["pareto"] == "yes"  # nothing keeps more accuracy than the paper's light re-initialisation
    assert (out / "paper" / "cleansed.pt").exists() and (out / "strong" / "summary.json").exists()
    # again: nothing re-runs, the same table comes back
    assert main(_demo(mini, "--presets", "paper,strong", "--out", str(out))) == 0
    again = capsys.readouterr()
    assert again.err.count("skipped") == 2 and "epoch" not in again.err
    assert again.out.splitlines()[:4] == lines[:4]


@pytest.mark.parametrize("extra, message", [
    (["--grid", "layer9=0.5"], "no layer group named 'layer9'"),
    (["--grid", "layer4=1.5"], "ratio 1.5 for 'layer4' must lie between 0 and 1"),
    (["--grid", "layer4=0.5,x"], "'x' for 'layer4' is not a number"),
    (["--grid", "layer4"], "needs the form group=ratio"),
    (["--presets", "paper,bogus"], "unknown preset 'bogus'"),
    (["--presets", "paper", "--seeds", "0,a"], "seed 'a' is not a whole number"),
    (["--grid", "head=1", "--base-preset", "bogus"], "unknown base preset 'bogus'"),
    ([], "give --presets LIST or --grid"),
    (["--presets", "paper", "--grid", "head=1"], "not allowed with argument"),
])
def test_bad_input_is_one_line_and_exit_2_and_writes_nothing(mini, tmp_path, capsys, extra, message):
    out = tmp_path / "sweep"
    try:
        code = main(_demo(mini, *extra, "--out", str(out)))
    except SystemExit as exc:  # argparse's own usage errors leave through SystemExit
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_a_different_sweep_into_a_used_folder_is_refused(mini, tmp_path, capsys):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "sweep.json").write_text(json.dumps({"format": 1, "spec": {"presets": ["none"]}, "settings": {}}))
    assert main(_demo(mini, "--presets", "paper", "--out", str(out))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds another sweep" in err[0] and "choose a new folder" in err[0]


def test_sigint_stops_the_run_in_progress_saves_it_and_the_same_command_continues(
        tiny_checkpoint, tmp_path, capsys, monkeypatch):
    from PIL import Image
    import numpy as np

    from bcu_gui.core.events import EpochEnd
    from bcu_gui.core.job import CleanseJob

    unl = tmp_path / "unl"
    unl.mkdir()
    rng = np.random.default_rng(0)
    for i in range(16):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(unl / f"{i}.png")
    args = ["sweep", str(tiny_checkpoint), "--unlabeled", str(unl), "--grid", "head=0.5,1", "--epochs", "2",
            "--batch-size", "8", "--device", "cpu", "--precision", "fp32", "--out", str(tmp_path / "sweep")]
    original = CleanseJob.events

    def events(self):
        for event in original(self):
            yield event
            if isinstance(event, EpochEnd) and event.epoch == 1:
                signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(CleanseJob, "events", events)
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a shell's background job
    assert main(args) == 130
    captured = capsys.readouterr()
    assert "SIGINT: stopping the sweep" in captured.err and "running the same command again" in captured.err
    assert [r["status"] for r in csv.DictReader((tmp_path / "sweep" / "sweep.csv").open())] == ["stopped", "pending"]
    assert (tmp_path / "sweep" / "head-0.5" / "resume.pt").exists()
    assert signal.getsignal(signal.SIGINT) is before  # the sweep gave back the handler it found
    monkeypatch.setattr(CleanseJob, "events", original)
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "head-0.5: head=0.5 (on paper), seed 0 (resuming)" in captured.err
    assert [r["status"] for r in csv.DictReader((tmp_path / "sweep" / "sweep.csv").open())] == ["finished"] * 2


@pytest.mark.slow
def test_with_scan_the_teacher_is_scanned_once_and_every_run_gets_a_proxy_asr(mini, tmp_path, capsys):
    out = tmp_path / "sweep"
    code = main(_demo(mini, "--grid", "head=0.5,1", "--scan", "--scan-steps", "8", "--scan-limit", "60", "--json",
                      "--out", str(out), triggered=False))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err.count("scan of the teacher:") == 1
    result = json.loads(captured.out)
    assert [r["status"] for r in result["runs"]] == ["finished", "finished"]
    proxies = [r["proxy_asr"] for r in result["runs"]]
    # a short scan may name no class (then there is no trigger and no proxy ASR); both runs share its outcome
    assert all(p is None for p in proxies) or all(p is not None for p in proxies)
    assert result["metric"] == ("proxy_asr" if proxies[0] is not None else None)
    assert all(r["asr"] is None for r in result["runs"])


@pytest.mark.parametrize("verb", ["sweep", "cleanse", "demo"])
def test_help_prints_for_the_verbs_sharing_the_training_options(verb, capsys):
    """A '%' in an option's help (the keep rule's '97%') once made argparse fail on --help."""
    with pytest.raises(SystemExit) as exc:
        main([verb, "--help"])
    assert exc.value.code == 0 and "--keep" in capsys.readouterr().out
