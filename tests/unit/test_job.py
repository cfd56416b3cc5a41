"""The cleansing job: events, run folder, control (pause / resume / cancel) and failures."""

import json
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from bcu_gui.core.events import EpochEnd, Failed, Finished, Log, Started, Step
from bcu_gui.core.job import CleanseConfig, CleanseJob, distillation_loss, temperature
from bcu_gui.core.models import load_model


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
    events = list(CleanseJob(_config(tiny_checkpoint, folders, tmp_path)).events())
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
                                              "cleansed.safetensors", "cleansed.json", "original_form"}
    assert [p.name for p in (run / "original_form").iterdir()] == [tiny_checkpoint.name]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_completed"] == 2 and summary["cancelled"] is False
    assert summary["reinit"]["counts"]["layer4"] > 0
    config = json.loads((run / "config.json").read_text())
    assert CleanseConfig.from_dict({k: v for k, v in config.items() if k != "resolved"}).epochs == 2
    for name in ("cleansed.pt", "cleansed.safetensors"):
        reloaded = load_model(run / name)
        assert reloaded.arch_name == "resnet18_cifar" and reloaded.width == 8


def test_cancel_takes_effect_within_one_batch_and_keeps_the_run(tiny_checkpoint, folders, tmp_path):
    job = CleanseJob(_config(tiny_checkpoint, folders, tmp_path, epochs=5))
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
    assert summary["cancelled"] and "cancelled after 0 of 5 epochs" in summary["note"]
    assert (tmp_path / "run" / "cleansed.pt").exists()


def test_pause_blocks_at_the_next_batch_until_resumed(tiny_checkpoint, folders, tmp_path):
    job = CleanseJob(_config(tiny_checkpoint, folders, tmp_path, epochs=1))
    stream = job.events()
    while not isinstance(next(stream), Step):
        pass
    job.pause()
    assert isinstance(next(stream), Log) and job.paused  # "paused", then the generator waits
    box = {}
    reader = threading.Thread(target=lambda: box.setdefault("event", next(stream)))
    reader.start()
    reader.join(0.3)
    assert reader.is_alive(), "a paused job must not run the next batch"
    job.resume()
    reader.join(5)
    assert isinstance(box["event"], Log) and box["event"].message == "resumed"
    assert isinstance(next(stream), Step)
    rest = list(stream)
    assert isinstance(rest[-1], Finished)


def test_keep_best_saves_the_lowest_asr_epoch(tiny_checkpoint, folders, tmp_path):
    events = list(CleanseJob(_config(tiny_checkpoint, folders, tmp_path, epochs=3, keep="best")).events())
    summary = events[-1].summary
    epochs = [e for e in events if isinstance(e, EpochEnd)]
    assert summary["kept"].startswith("best")
    assert summary["cleansed"]["asr"] == min(e.asr for e in epochs if e.acc >= summary["teacher"]["acc"] - 0.03)


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
