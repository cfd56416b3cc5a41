"""The cleansing job: events, run folder, control (pause / resume / cancel) and failures."""

import json
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from bcu_gui.core.devices import plan_compute
from bcu_gui.core.evaluation import Evaluator, load_eval_sets
from bcu_gui.core.events import EpochEnd, Failed, Finished, Paused, Resumed, Started, Step
from bcu_gui.core.job import CleanseConfig, CleanseJob, distillation_loss, temperature
from bcu_gui.core.models import load_model
from bcu_gui.core.summary import RunSummary
from bcu_gui.core.training import RunHook, RunState, StepThrottle


@pytest.fixture
def folders(tmp_path):
    """Random 32x32 images: 24 unlabelled, 10 clean in two classes, 6 triggered."""
    rng = np.random.default_rng(0)
    paths = {"unlabeled": tmp_path / "unl", "clean": tmp_path / "clean", "triggered": tmp_path / "trig"}
    for name, count in (("unlabeled", 24), ("triggered", 6)):
        paths[name].mkdir()
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(paths[name] / f"{i}.png")
    for i in range(10):
        d = paths["clean"] / str(i % 2 * 3)
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return paths


def _config(ckpt, folders, tmp_path, **kw):
    settings = dict(checkpoint=str(ckpt), unlabeled=str(folders["unlabeled"]), eval_clean=str(folders["clean"]),
                    eval_poisoned=str(folders["triggered"]), target_class=0, epochs=2, batch_size=8,
                    device="cpu", precision="fp32", out=str(tmp_path / "run"))
    settings.update(kw)
    return CleanseConfig(**settings)


def test_temperature_rises_to_four_and_loss_is_kl():
    cfg = CleanseConfig(checkpoint="x", unlabeled="y", epochs=4)
    assert [temperature(cfg, e) for e in range(4)] == [1.75, 2.5, 3.25, 4.0]
    logits = torch.randn(5, 10)
    probs = torch.softmax(logits / 2, 1)
    assert distillation_loss(logits, probs, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_loss(torch.zeros(5, 10), probs, 2.0).item() > 0


def test_a_run_emits_the_event_sequence_and_writes_its_folder(tiny_checkpoint, folders, tmp_path):
    events = list(CleanseJob(_config(tiny_checkpoint, folders, tmp_path), step_rate=0).events())
    kinds = [type(e) for e in events]
    assert Failed not in kinds, [e for e in events if isinstance(e, Failed)]
    started = next(e for e in events if isinstance(e, Started))
    assert started.steps_per_epoch == 3 and started.epochs == 2 and started.teacher_acc is not None
    steps = [e for e in events if isinstance(e, Step)]
    assert [s.step for s in steps] == list(range(1, 7))
    assert steps[0].temperature == 2.5 and steps[-1].temperature == 4.0
    epochs = [e for e in events if isinstance(e, EpochEnd)]
    assert [e.epoch for e in epochs] == [1, 2] and all(e.acc is not None and e.asr is not None for e in epochs)
    assert isinstance(events[-1], Finished) and not events[-1].cancelled

    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} == {"config.json", "metrics.jsonl", "summary.json", "cleansed.pt",
                                              "cleansed.safetensors", "cleansed.json", "original_form", "ema.pt",
                                              "ema.safetensors", "ema.json", "environment.json"}
    assert [p.name for p in (run / "original_form").iterdir()] == [tiny_checkpoint.name]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_completed"] == 2 and summary["cancelled"] is False
    assert summary["reinit"]["counts"]["layer4"] > 0
    assert RunSummary.from_dict(summary) == events[-1].summary  # summary.json reads back as the record
    config = json.loads((run / "config.json").read_text())
    assert "resolved" in config and CleanseConfig.from_dict(config).epochs == 2  # a run's own config.json
    again = CleanseConfig.from_run(run, out=str(tmp_path / "again"))
    assert again == CleanseConfig(**{**_config(tiny_checkpoint, folders, tmp_path).to_dict(),
                                     "out": str(tmp_path / "again")})
    for name in ("cleansed.pt", "cleansed.safetensors"):
        reloaded = load_model(run / name)
        assert reloaded.arch_name == "resnet18_cifar" and reloaded.width == 8


def test_cancel_takes_effect_within_one_batch_and_keeps_the_run(tiny_checkpoint, folders, tmp_path):
    job = CleanseJob(_config(tiny_checkpoint, folders, tmp_path, epochs=5), step_rate=0)
    after_cancel = []
    for event in job.events():
        if job.cancelled:
            after_cancel.append(event)
        if isinstance(event, Step) and event.step == 2:
            job.cancel()
    assert not any(isinstance(e, Step) for e in after_cancel)
    finished = after_cancel[-1]
    assert isinstance(finished, Finished) and finished.cancelled
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["cancelled"] and "cancelled after 0 of 5 epochs (2 steps)" in summary["note"]
    assert (tmp_path / "run" / "cleansed.pt").exists()


def test_pause_blocks_at_the_next_batch_until_resumed(tiny_checkpoint, folders, tmp_path):
    job = CleanseJob(_config(tiny_checkpoint, folders, tmp_path, epochs=1), step_rate=0)
    stream = job.events()
    while not isinstance(next(stream), Step):
        pass
    job.pause()
    paused = next(stream)
    assert isinstance(paused, Paused) and paused.step == 1 and job.paused  # then the generator waits
    box = {}
    reader = threading.Thread(target=lambda: box.setdefault("event", next(stream)))
    reader.start()
    reader.join(0.3)
    assert reader.is_alive(), "a paused job must not run the next batch"
    job.resume()
    reader.join(5)
    assert box["event"] == Resumed(step=1)
    assert isinstance(next(stream), Step)
    rest = list(stream)
    assert isinstance(rest[-1], Finished)


def test_keep_best_saves_the_lowest_asr_epoch(tiny_checkpoint, folders, tmp_path):
    events = list(CleanseJob(_config(tiny_checkpoint, folders, tmp_path, epochs=3, keep="best")).events())
    summary = events[-1].summary
    epochs = [e for e in events if isinstance(e, EpochEnd)]
    assert summary.kept == "best" and summary.best == summary.cleansed
    assert summary.cleansed.asr == min(e.asr for e in epochs if e.acc >= summary.teacher.acc - 0.03)
    assert summary.kept_text() == f"the best epoch ({summary.cleansed.epoch})"


@pytest.mark.parametrize("change, message", [
    ({"unlabeled": "/nonexistent/folder"}, "nonexistent"),
    ({"epochs": 0}, "epochs must be at least 1"),
    ({"target_class": 12}, "target class 12 is outside"),
    ({"target_class": None}, "needs the attack's target class"),
    ({"preset": "bogus"}, "unknown preset"),
    ({"ratios": {"layer9": 0.5}}, "no layer group named 'layer9'"),
    ({"device": "cuda:7"} if not torch.cuda.is_available() else {"device": "tpu"}, "device"),
])
def test_bad_input_ends_in_one_failed_event(tiny_checkpoint, folders, tmp_path, change, message):
    events = list(CleanseJob(_config(tiny_checkpoint, folders, tmp_path, **change)).events())
    assert isinstance(events[-1], Failed)
    assert events[-1].kind == "input" and message in events[-1].message
    assert not any(isinstance(e, Step) for e in events)


def test_a_bad_checkpoint_fails_cleanly(tmp_path, folders):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    events = list(CleanseJob(_config(bad, folders, tmp_path)).events())
    assert isinstance(events[-1], Failed) and "bad.pt" in events[-1].message


def _measure(path, folders):
    model = load_model(path)
    sets = load_eval_sets(str(folders["clean"]), str(folders["triggered"]), 0, 32, 10)
    return Evaluator(sets, model.normalization, plan_compute("cpu", "fp32")).measure(model.module)


def test_a_stop_in_the_first_epoch_describes_the_student_it_saved(tiny_checkpoint, folders, tmp_path):
    job = CleanseJob(_config(tiny_checkpoint, folders, tmp_path, epochs=3), step_rate=0)
    events = []
    for event in job.events():
        events.append(event)
        if isinstance(event, Step) and event.step == 2:
            job.cancel()
    summary = events[-1].summary
    assert summary.cancelled and summary.epochs_completed == 0 and summary.steps == 2
    c = summary.cleansed
    assert c.partial and c.acc is not None and c.asr is not None and c.loss is not None
    measured = _measure(tmp_path / "run" / "cleansed.pt", folders)
    assert (c.acc, c.asr) == (pytest.approx(measured["acc"]), pytest.approx(measured["asr"]))
    assert "when stopped" in summary.kept_text() and "after 2 steps" in summary.kept_text()
    assert summary.images_per_second > 0


def test_step_events_are_throttled_but_carry_every_loss(tiny_checkpoint, folders, tmp_path):
    # A rate of one event an hour: only the first step and each epoch's last step are sent.
    events = list(CleanseJob(_config(tiny_checkpoint, folders, tmp_path, epochs=2), step_rate=1 / 3600).events())
    steps = [e for e in events if isinstance(e, Step)]
    assert [s.step for s in steps] == [1, 3, 6]
    assert [len(s.losses) for s in steps] == [1, 2, 3] and all(s.loss == s.losses[-1] for s in steps)
    assert sum(len(s.losses) for s in steps) == 6  # every step's loss reaches the plot


def test_the_throttle_sends_at_most_one_event_per_interval_and_always_the_epochs_last():
    now = [0.0]
    t = StepThrottle(rate=8, clock=lambda: now[0])
    sent = []
    for i in range(100):  # 100 steps, 1/64 s apart (exact in binary): one event every 8 steps
        now[0] = i / 64
        t.add(float(i))
        if t.due(end_of_epoch=i == 99):
            sent.append(t.take())
    assert [s[0] for s in sent] == [0.0, 1.0, 9.0, 17.0, 25.0, 33.0, 41.0, 49.0, 57.0, 65.0, 73.0, 81.0, 89.0, 97.0]
    assert sent[-1][-1] == 99.0 and sum(len(s) for s in sent) == 100


class RecordingHook(RunHook):
    def __init__(self):
        self.calls = []

    def on_start(self, run):
        self.calls.append(("start", run.state.epoch))

    def on_step_end(self, run):
        self.calls.append(("step", run.state.step))

    def on_epoch_end(self, run):
        self.calls.append(("epoch", run.state.epoch))
        return {"proxy_asr": 0.25 * (run.state.epoch + 1)}

    def on_finish(self, run):
        self.calls.append(("finish", run.state.epoch))


def test_hooks_run_at_start_each_epoch_end_and_finish_and_their_numbers_are_recorded(tiny_checkpoint, folders,
                                                                                       tmp_path):
    hook = RecordingHook()
    events = list(CleanseJob(_config(tiny_checkpoint, folders, tmp_path, ema_decay=None), hooks=[hook]).events())
    assert hook.calls == [("start", 0), ("step", 1), ("step", 2), ("step", 3), ("epoch", 0),
                          ("step", 4), ("step", 5), ("step", 6), ("epoch", 1), ("finish", 2)]
    epochs = [e for e in events if isinstance(e, EpochEnd)]
    assert [e.extra for e in epochs] == [{"proxy_asr": 0.25}, {"proxy_asr": 0.5}]
    assert all(e.acc is not None for e in epochs)  # the built-in evaluation still ran
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["extra"]["proxy_asr"] for r in lines] == [0.25, 0.5]


def test_the_run_state_round_trips_through_plain_data(tiny_checkpoint, folders, tmp_path):
    """What a resume file will hold: the state after a run, through JSON and back, unchanged."""
    states = []

    class Grab(RunHook):
        def on_finish(self, run):
            states.append(run.state)

    list(CleanseJob(_config(tiny_checkpoint, folders, tmp_path), hooks=[Grab()]).events())
    state = states[0]
    assert state.epoch == 2 and state.step == 6 and state.last is not None and state.teacher is not None
    assert RunState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


def test_custom_ratios_are_recorded_as_custom_and_must_name_every_group(tiny_checkpoint, folders, tmp_path):
    ratios = {"stem": 0.5, "layer1": 0.5, "layer2": 0.5, "layer3": 0.5, "layer4": 1.0, "head": 1.0}
    events = list(CleanseJob(_config(tiny_checkpoint, folders, tmp_path, epochs=1, preset="custom",
                                     ratios=ratios)).events())
    assert isinstance(events[-1], Finished) and events[-1].summary.preset == "custom"
    assert events[-1].summary.reinit.ratios == ratios
    partial = {k: v for k, v in ratios.items() if k != "head"}
    events = list(CleanseJob(_config(tiny_checkpoint, folders, tmp_path / "b", epochs=1, preset="custom",
                                     ratios=partial)).events())
    assert isinstance(events[-1], Failed) and "missing: head" in events[-1].message


def test_a_cpu_run_says_how_many_threads_it_uses_and_gives_the_count_back(tiny_checkpoint, folders, tmp_path,
                                                                          monkeypatch):
    from bcu_gui.core import threads
    from bcu_gui.core.events import CpuShare

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.delenv("BCU_FIXED_THREADS", raising=False)
    monkeypatch.setattr(threads, "others_busy", lambda before, after: 1.4)  # another program holds 1.4 CPUs
    monkeypatch.setattr(threads, "usable_cpus", lambda: 2)
    before = torch.get_num_threads()
    events = list(CleanseJob(_config(tiny_checkpoint, folders, tmp_path), step_rate=0).events())
    assert isinstance(events[-1], Finished)
    shares = [e for e in events if isinstance(e, CpuShare)]
    assert len(shares) == 1  # said at the start; contention did not change, so not again every epoch
    share = shares[0]
    assert (share.threads, share.cpus, share.contended, share.level) == (1, 2, True, "warning")
    assert "1.4 of 2 CPUs" in share.message
    assert events.index(share) < next(i for i, e in enumerate(events) if isinstance(e, Started))
    assert torch.get_num_threads() == before
