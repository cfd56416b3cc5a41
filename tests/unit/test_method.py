"""Issue 13: the automatic batch size as the job uses it, the paper's ablations as options, the EMA candidate
and the keep rules (last / best / ema / proxy)."""

import json

import pytest
import torch
from torch.nn import functional as F

from bcu_gui.cli import build_parser, main
from bcu_gui.cli import _config as cli_config
from bcu_gui.core.keep import KEEP_CHOICES
from bcu_gui.core import training
from bcu_gui.core.events import EpochEnd, Failed, Finished, Log, Started, Step
from bcu_gui.core.job import CleanseConfig, CleanseJob
from bcu_gui.core.summary import RunSummary, Scores
from bcu_gui.core.training import EmaHook, RunHook, hard_label_loss, proxy_better

from test_job import _config, folders  # noqa: F401 (the fixture)


def _run(tiny_checkpoint, folders, tmp_path, hooks=(), **kw):  # noqa: F811
    events = list(CleanseJob(_config(tiny_checkpoint, folders, tmp_path, **kw), hooks=hooks, step_rate=0).events())
    assert not any(isinstance(e, Failed) for e in events), [e for e in events if isinstance(e, Failed)]
    return events


# -- the batch rule, wired in -----------------------------------------------------------------------------------
def test_an_automatic_batch_is_chosen_logged_and_recorded(tiny_checkpoint, folders, tmp_path):  # noqa: F811
    events = _run(tiny_checkpoint, folders, tmp_path, batch_size=None, epochs=1)
    started = next(e for e in events if isinstance(e, Started))
    # 24 images: 24 // 10 = 2 is below the batch-norm floor of 16, so 16: one full batch and one of 8
    assert started.batch_size == 16 and started.steps_per_epoch == 2
    assert "chosen automatically" in started.batch_reason
    assert any(isinstance(e, Log) and e.message == started.batch_reason for e in events)
    resolved = json.loads((tmp_path / "run" / "config.json").read_text())["resolved"]
    assert resolved["batch_size"] == 16 and resolved["batch_automatic"] is True
    assert resolved["batch_reason"] == started.batch_reason
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["batch_size"] == 16 and summary["batch_reason"] == started.batch_reason
    assert json.loads((tmp_path / "run" / "config.json").read_text())["batch_size"] is None


def test_an_explicit_batch_size_wins(tiny_checkpoint, folders, tmp_path):  # noqa: F811
    events = _run(tiny_checkpoint, folders, tmp_path, batch_size=8, epochs=1)
    started = next(e for e in events if isinstance(e, Started))
    assert started.batch_size == 8 and started.steps_per_epoch == 3 and "as requested" in started.batch_reason
    resolved = json.loads((tmp_path / "run" / "config.json").read_text())["resolved"]
    assert resolved["batch_automatic"] is False


def test_the_default_config_asks_for_an_automatic_batch():
    assert CleanseConfig(checkpoint="x", unlabeled="y").batch_size is None
    with pytest.raises(Exception, match="batch size must be at least 2"):
        CleanseConfig(checkpoint="x", unlabeled="y", batch_size=1).validate()


# -- the ablations -----------------------------------------------------------------------------------------------
def test_hard_label_loss_is_cross_entropy_on_the_teachers_argmax():
    logits, teacher = torch.randn(6, 10), torch.softmax(torch.randn(6, 10) * 3, dim=1)
    assert hard_label_loss(logits, teacher).item() == pytest.approx(
        F.cross_entropy(logits, teacher.argmax(1)).item())


def test_hard_labels_change_the_training_signal(tiny_checkpoint, folders, tmp_path):  # noqa: F811
    soft = _run(tiny_checkpoint, folders, tmp_path / "soft", epochs=1)
    hard = _run(tiny_checkpoint, folders, tmp_path / "hard", epochs=1, hard_labels=True)
    soft_losses = [e.loss for e in soft if isinstance(e, Step)]
    hard_losses = [e.loss for e in hard if isinstance(e, Step)]
    # a KL loss is 0 where the student matches; cross-entropy on a fresh student is about log(10)
    assert hard_losses[0] != pytest.approx(soft_losses[0], rel=1e-3)
    assert json.loads((tmp_path / "hard" / "run" / "config.json").read_text())["hard_labels"] is True


@pytest.mark.parametrize("period, expected", [(None, 0.005), (100, 0.005 * (1 + torch.cos(torch.tensor(torch.pi / 100)).item()))])
def test_the_cosine_period_sets_the_schedule(tiny_checkpoint, folders, tmp_path, period, expected):  # noqa: F811
    events = _run(tiny_checkpoint, folders, tmp_path, epochs=2, cosine_period=period)
    epochs = [e for e in events if isinstance(e, EpochEnd)]
    assert epochs[0].lr == pytest.approx(0.01) and epochs[1].lr == pytest.approx(expected)


def test_flips_can_be_turned_off(monkeypatch, tiny_checkpoint, folders, tmp_path):  # noqa: F811
    seen = []
    real = training.random_crop_flip
    monkeypatch.setattr(training, "random_crop_flip",
                        lambda batch, padding, flip, gen: seen.append(flip) or real(batch, padding, flip, gen))
    _run(tiny_checkpoint, folders, tmp_path, epochs=1, flip=False)
    assert seen and not any(seen)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["flip"] is False


def test_the_temperature_range_is_a_setting(tiny_checkpoint, folders, tmp_path):  # noqa: F811
    events = _run(tiny_checkpoint, folders, tmp_path, epochs=2, temperature_start=2.0, temperature_rise=4.0)
    assert [e.temperature for e in events if isinstance(e, EpochEnd)] == [4.0, 6.0]


def test_the_cli_turns_each_option_into_the_config(tmp_path):
    args = build_parser().parse_args(
        ["cleanse", "m.pt", "--unlabeled", "u", "--hard-labels", "--cosine-period", "100", "--no-flip",
         "--temperature-start", "2", "--temperature-end", "6", "--keep", "ema", "--ema-decay", "0.95"])
    cfg = cli_config(args)
    assert (cfg.hard_labels, cfg.cosine_period, cfg.flip, cfg.temperature_start, cfg.temperature_rise,
            cfg.keep, cfg.ema_decay, cfg.batch_size) == (True, 100, False, 2.0, 4.0, "ema", 0.95, None)
    default = cli_config(build_parser().parse_args(["cleanse", "m.pt", "--unlabeled", "u"]))
    assert (default.hard_labels, default.cosine_period, default.flip, default.temperature_rise,
            default.batch_size) == (False, None, True, 3.0, None)
    off = cli_config(build_parser().parse_args(["cleanse", "m.pt", "--unlabeled", "u", "--ema-decay", "0"]))
    assert off.ema_decay is None


def test_the_cli_refuses_an_end_temperature_below_the_start(capsys):
    assert main(["cleanse", "m.pt", "--unlabeled", "u", "--temperature-start", "3", "--temperature-end", "2"]) == 2
    assert "must not be below the start" in capsys.readouterr().err


def test_keep_choices_have_one_definition():
    from bcu_gui.cli import KEEP_CHOICES as cli_choices
    from bcu_gui.core import job

    assert cli_choices is KEEP_CHOICES and job.KEEP_CHOICES is KEEP_CHOICES
    assert KEEP_CHOICES == ("last", "best", "ema", "proxy")


# -- the EMA candidate -------------------------------------------------------------------------------------------
class _Run:
    """Just what EmaHook reads of a Distiller."""

    def __init__(self, student):
        self.student = student


def test_ema_follows_the_weights_with_a_warm_up():
    student = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    hook = EmaHook(decay=0.9)
    run = _Run(student)
    hook.on_start(run)
    start = student[0].weight.detach().clone()
    with torch.no_grad():
        student[0].weight.add_(1.0)
        student[1].num_batches_tracked.fill_(7)
    hook.on_step_end(run)  # first update: decay min(0.9, 1 / 10) = 0.1
    assert torch.allclose(hook.model[0].weight, start + 0.9)
    assert int(hook.model[1].num_batches_tracked) == 7  # counters are copied, not averaged
    for _ in range(200):
        hook.on_step_end(run)
    assert torch.allclose(hook.model[0].weight, student[0].weight, atol=1e-5)
    state = hook.state_dict()
    again = EmaHook()
    again.load_state_dict(state)
    again.on_start(_Run(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))))
    assert again.updates == 201 and again.decay == 0.9
    assert torch.equal(again.model[0].weight, hook.model[0].weight)
    with pytest.raises(ValueError):
        EmaHook(decay=1.0)


def test_the_ema_is_measured_each_epoch_and_saved_as_its_own_file(tiny_checkpoint, folders, tmp_path):  # noqa: F811
    events = _run(tiny_checkpoint, folders, tmp_path, epochs=2)
    epochs = [e for e in events if isinstance(e, EpochEnd)]
    assert all({"ema_acc", "ema_asr", "ema_agreement"} <= set(e.extra) for e in epochs)
    run = tmp_path / "run"
    ema = torch.load(run / "ema.pt", weights_only=True)
    cleansed = torch.load(run / "cleansed.pt", weights_only=True)
    assert set(ema) == set(cleansed) and not all(torch.equal(ema[k], cleansed[k]) for k in ema)
    summary = events[-1].summary
    assert summary.kept == "last" and summary.ema == Scores(acc=epochs[-1].extra["ema_acc"],
                                                            asr=epochs[-1].extra["ema_asr"],
                                                            agreement=epochs[-1].extra["ema_agreement"], epoch=2)
    assert str(run / "ema.pt") in summary.model_files
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["extra"]["ema_acc"] == epochs[-1].extra["ema_acc"]


def test_no_ema_means_no_ema_file(tiny_checkpoint, folders, tmp_path):  # noqa: F811
    events = _run(tiny_checkpoint, folders, tmp_path, epochs=1, ema_decay=None)
    assert not (tmp_path / "run" / "ema.pt").exists() and events[-1].summary.ema is None


def test_the_ema_is_a_resumable_tensor(tiny_checkpoint, folders, tmp_path):  # noqa: F811
    from bcu_gui.core.training import Distiller

    seen = {}

    class Grab(RunHook):
        def on_finish(self, run: Distiller):
            seen.update(run.tensors())

    _run(tiny_checkpoint, folders, tmp_path, epochs=1, hooks=[Grab()])
    assert seen["ema"]["updates"] == 3 and seen["ema"]["weights"] is not None and "proxy_weights" in seen


# -- the keep rules --------------------------------------------------------------------------------------------
def test_keep_ema_saves_the_moving_average(tiny_checkpoint, folders, tmp_path):  # noqa: F811
    events = _run(tiny_checkpoint, folders, tmp_path, epochs=2, keep="ema")
    summary = events[-1].summary
    run = tmp_path / "run"
    ema, cleansed = (torch.load(run / f"{n}.pt", weights_only=True) for n in ("ema", "cleansed"))
    assert all(torch.equal(ema[k], cleansed[k]) for k in ema)
    assert summary.kept == "ema" and summary.cleansed == summary.ema
    assert "moving average" in summary.kept_reason and "moving average" in summary.kept_text()
    assert RunSummary.from_dict(json.loads((run / "summary.json").read_text())) == summary


def test_keep_ema_needs_an_ema():
    with pytest.raises(Exception, match="moving average needs one"):
        CleanseConfig(checkpoint="x", unlabeled="y", keep="ema", ema_decay=None).validate()


def test_keep_proxy_is_refused_without_a_proxy_asr(tiny_checkpoint, folders, tmp_path):  # noqa: F811
    events = list(CleanseJob(_config(tiny_checkpoint, folders, tmp_path, keep="proxy")).events())
    assert isinstance(events[-1], Failed) and events[-1].kind == "input"
    assert "needs a trigger scan's proxy ASR" in events[-1].message
    assert not any(isinstance(e, Step) for e in events)


def test_the_cli_refuses_keep_proxy_with_one_line(tiny_checkpoint, folders, tmp_path, capsys):  # noqa: F811
    code = main(["cleanse", str(tiny_checkpoint), "--unlabeled", str(folders["unlabeled"]), "--keep", "proxy",
                 "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "proxy ASR" in err and "Traceback" not in err


class FakeScan(RunHook):
    """Stands in for the scan's hook: a proxy ASR per epoch, and the student's weights at each epoch's end."""

    provides = ("proxy_asr",)

    def __init__(self, values):
        self.values, self.weights = list(values), []

    def on_epoch_end(self, run):
        self.weights.append({k: v.detach().clone() for k, v in run.student.state_dict().items()})
        return {"proxy_asr": self.values[run.state.epoch]}


def test_keep_proxy_saves_the_lowest_proxy_asr_epoch(monkeypatch, tiny_checkpoint, folders, tmp_path):  # noqa: F811
    monkeypatch.setattr(training, "PROXY_AGREEMENT_MARGIN", 1.0)  # any agreement qualifies: the rule is on proxy
    scan = FakeScan([0.5, 0.1, 0.3])
    events = _run(tiny_checkpoint, folders, tmp_path, epochs=3, keep="proxy", hooks=[scan])
    summary = events[-1].summary
    assert summary.kept == "proxy" and summary.cleansed.epoch == 2 and summary.proxy == summary.cleansed
    assert "lowest proxy ASR (10.0%)" in summary.kept_reason
    saved = torch.load(tmp_path / "run" / "cleansed.pt", weights_only=True)
    assert all(torch.equal(saved[k], scan.weights[1][k].cpu()) for k in saved)
    assert [e.extra["proxy_asr"] for e in events if isinstance(e, EpochEnd)] == [0.5, 0.1, 0.3]


def test_keep_proxy_falls_back_to_the_last_epoch_when_none_agrees(monkeypatch, tiny_checkpoint, folders,  # noqa: F811
                                                                  tmp_path):
    monkeypatch.setattr(training, "PROXY_AGREEMENT_MARGIN", -0.01)  # agreement would have to exceed 100%
    events = _run(tiny_checkpoint, folders, tmp_path, epochs=2, keep="proxy", hooks=[FakeScan([0.2, 0.1])])
    summary = events[-1].summary
    assert summary.kept == "last" and summary.cleansed.epoch == 2 and summary.proxy is None
    assert "no epoch had a proxy ASR" in summary.kept_reason


def test_the_proxy_rule_needs_agreement_and_prefers_lower_proxy_asr():
    first = Scores(acc=None, asr=None, agreement=0.99, epoch=1)
    assert proxy_better({"proxy_asr": 0.2, "agreement": 0.98}, None, None)
    assert not proxy_better({"proxy_asr": 0.0, "agreement": 0.96}, None, None)  # below 97% agreement
    assert not proxy_better({"proxy_asr": None, "agreement": 1.0}, None, None)
    assert not proxy_better({"proxy_asr": 0.2, "agreement": None}, None, None)
    assert proxy_better({"proxy_asr": 0.1, "agreement": 0.98}, first, 0.2)
    assert not proxy_better({"proxy_asr": 0.2, "agreement": 0.98}, first, 0.2)  # ties keep the earlier epoch
    assert proxy_better({"proxy_asr": 0.0, "agreement": 0.90}, None, None, margin=0.1)


def test_keep_last_and_best_say_why(tiny_checkpoint, folders, tmp_path):  # noqa: F811
    last = _run(tiny_checkpoint, folders, tmp_path / "a", epochs=2)[-1].summary
    assert last.kept == "last" and last.kept_reason == "the student as the last epoch left it"
    best = _run(tiny_checkpoint, folders, tmp_path / "b", epochs=2, keep="best")[-1].summary
    assert best.kept == "best" and "lowest ASR" in best.kept_reason


def test_a_summary_without_the_new_fields_still_reads(tiny_checkpoint, folders, tmp_path):  # noqa: F811
    summary = _run(tiny_checkpoint, folders, tmp_path, epochs=1)[-1].summary
    data = summary.to_dict()
    for key in ("kept_reason", "ema", "proxy", "batch_size", "batch_reason"):
        data.pop(key)
    old = RunSummary.from_dict(data)
    assert old.ema is None and old.kept_reason == "" and old.cleansed == summary.cleansed


def test_finished_is_the_last_event(tiny_checkpoint, folders, tmp_path):  # noqa: F811
    assert isinstance(_run(tiny_checkpoint, folders, tmp_path, epochs=1)[-1], Finished)


def test_batch_size_auto_on_the_command_line_overrides_the_demos_own(capsys):
    demo = cli_config(build_parser().parse_args(["demo", "--batch-size", "auto"]))
    assert demo.batch_size is None
    assert cli_config(build_parser().parse_args(["demo", "--batch-size", "32"])).batch_size == 32
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["demo", "--batch-size", "lots"])
    assert exit_info.value.code == 2 and "whole number or 'auto'" in capsys.readouterr().err
