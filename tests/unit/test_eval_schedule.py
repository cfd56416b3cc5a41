"""Evaluation pacing: the automatic plan, the user's overrides, and a run that measures subsets, then in full."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from bcu_gui.console import ConsoleReporter
from bcu_gui.core.devices import plan_compute
from bcu_gui.core.errors import ConfigError
from bcu_gui.core.eval_schedule import (MIN_EVAL_IMAGES, EvalPlan, choose_eval_plan, describe_scope,
                                        parse_eval_subset)
from bcu_gui.core.evaluation import Evaluator, load_eval_sets
from bcu_gui.core.events import EpochEnd, Failed, Finished
from bcu_gui.core.job import CleanseConfig, CleanseJob
from bcu_gui.core.models import load_model


def test_small_sets_are_measured_in_full_every_epoch():
    plan = choose_eval_plan(397, 363, 400, 40, measures=2)  # the demo
    assert plan == EvalPlan(1, None, None, plan.reason) and not plan.subset and "full sets" in plan.reason


def test_the_authors_sets_get_a_fixed_subset_within_the_budget():
    plan = choose_eval_plan(10_000, 9_000, 2_500, 100)
    assert plan.subset and plan.every == 1
    assert plan.clean + plan.triggered <= MIN_EVAL_IMAGES + 2  # ~20% of an epoch of 2,500 images
    assert plan.clean / plan.triggered == pytest.approx(10 / 9, rel=0.01)  # sampled in proportion
    assert "subset" in plan.reason and "full sets" in plan.reason


def test_each_set_keeps_a_floor_and_small_sets_stay_whole():
    plan = choose_eval_plan(100_000, 200, 1_000, 10)
    assert plan.triggered is None  # 200 images: the whole set
    assert 1_500 <= plan.clean <= 2_000


def test_full_sets_on_request_are_spread_over_epochs():
    plan = choose_eval_plan(10_000, 9_000, 2_500, 100, subset="all")
    assert not plan.subset and plan.every == math.ceil(19_000 / 2_000)


@pytest.mark.parametrize("kwargs, every, clean, triggered", [
    (dict(subset=500), 1, 500, 500),
    (dict(subset=5_000), 1, None, None),  # larger than both sets: the whole sets
    (dict(every=3), 3, None, None),
    (dict(every=2, subset=100), 2, 100, 100),
])
def test_the_users_choice_wins(kwargs, every, clean, triggered):
    small = choose_eval_plan(1_000, 900, 400, 10, **kwargs)
    assert (small.every, small.clean, small.triggered) == (every, clean, triggered)


def test_which_epochs_are_measured_and_how():
    plan = EvalPlan(every=3, clean=50, triggered=None)
    assert [e for e in range(1, 11) if plan.due(e, 10)] == [3, 6, 9, 10]
    assert [e for e in range(1, 11) if plan.full_at(e, 10)] == [10]
    assert EvalPlan().full_at(4, 10)


@pytest.mark.parametrize("bad", ["x", "0", "-3", "1.5"])
def test_bad_subsets_are_refused(bad):
    with pytest.raises(ConfigError):
        parse_eval_subset(bad)
    assert parse_eval_subset("ALL") == "all" and parse_eval_subset("250") == 250 and parse_eval_subset(None) == "auto"


def test_scope_descriptions():
    assert describe_scope("full", 10, 10) == ""
    assert describe_scope("subset", 1_000, 950) == "estimate on 1,000 clean + 950 triggered images"
    assert describe_scope("none", 0, 0) == "not evaluated this epoch"


# ------------------------------------------------------------------------------------------------ a run
@pytest.fixture
def folders(tmp_path):
    rng = np.random.default_rng(1)
    paths = {"unlabeled": tmp_path / "unl", "clean": tmp_path / "clean", "triggered": tmp_path / "trig"}
    for name, count in (("unlabeled", 32), ("triggered", 10)):
        paths[name].mkdir()
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(paths[name] / f"{i}.png")
    for i in range(12):
        d = paths["clean"] / str(i % 3)
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return paths


def _config(ckpt, folders, out, **kw):
    return CleanseConfig(checkpoint=str(ckpt), unlabeled=str(folders["unlabeled"]), eval_clean=str(folders["clean"]),
                         eval_poisoned=str(folders["triggered"]), target_class=0, epochs=3, batch_size=16,
                         device="cpu", precision="fp32", out=str(out), eval_every=2, eval_subset=4, **kw)


def _full_scores(model_file, folders):
    model = load_model(model_file)
    sets = load_eval_sets(str(folders["clean"]), str(folders["triggered"]), 0, 32, 10)
    return Evaluator(sets, model.normalization, plan_compute("cpu", "fp32")).measure(model.module)


def test_a_run_estimates_between_epochs_and_measures_in_full_at_the_end(tiny_checkpoint, folders, tmp_path, capsys):
    # keep best: epochs are compared on estimates; the saved model (best or last) must be measured in full
    events = list(CleanseJob(_config(tiny_checkpoint, folders, tmp_path / "run", keep="best"), step_rate=0).events())
    assert not [e for e in events if isinstance(e, Failed)]
    epochs = [e for e in events if isinstance(e, EpochEnd)]
    assert [(e.eval_scope, e.eval_clean, e.eval_triggered) for e in epochs] == \
        [("none", 0, 0), ("subset", 4, 4), ("full", 12, 10)]
    assert epochs[0].acc is None and epochs[1].acc is not None
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["eval_scope"] for r in records] == ["none", "subset", "full"] and records[1]["eval_clean"] == 4
    summary = next(e for e in events if isinstance(e, Finished)).summary
    assert summary.cleansed.eval_scope == "full" and "subset" in summary.eval_reason
    if summary.best is not None:
        assert summary.best.eval_scope == "full"
    measured = _full_scores(summary.model_files[0], folders)  # the saved model, on the full sets
    assert (summary.cleansed.acc, summary.cleansed.asr) == pytest.approx((measured["acc"], measured["asr"]))
    reporter = ConsoleReporter()
    for event in events:
        reporter.handle(event)
    err = capsys.readouterr().err
    assert "(not evaluated this epoch)" in err and "(estimate on 4 clean + 4 triggered images)" in err


def test_a_run_stopped_after_an_unmeasured_epoch_measures_its_model_in_full(tiny_checkpoint, folders, tmp_path):
    job = CleanseJob(_config(tiny_checkpoint, folders, tmp_path / "run"), step_rate=0)
    events = []
    for event in job.events():
        events.append(event)
        if isinstance(event, EpochEnd):
            job.cancel()
    epochs = [e for e in events if isinstance(e, EpochEnd)]
    assert [e.eval_scope for e in epochs] == ["none"]
    summary = next(e for e in events if isinstance(e, Finished)).summary
    assert summary.cancelled and summary.cleansed.eval_scope == "full" and summary.cleansed.acc is not None
    measured = _full_scores(summary.model_files[0], folders)
    assert (summary.cleansed.acc, summary.cleansed.asr) == pytest.approx((measured["acc"], measured["asr"]))


def test_keep_best_lets_the_fully_measured_last_epoch_beat_an_estimated_best(tiny_resnet, folders):
    import copy

    import torch

    from bcu_gui.core.eval_schedule import ScheduledEvaluator
    from bcu_gui.core.normalization import Normalization
    from bcu_gui.core.summary import Scores
    from bcu_gui.core.training import Distiller, RunState

    plan = plan_compute("cpu", "fp32")
    norm = Normalization("test", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    sets = load_eval_sets(str(folders["clean"]), str(folders["triggered"]), 0, 32, 10)
    evaluator = ScheduledEvaluator(Evaluator(sets, norm, plan), EvalPlan(1, 4, 4), norm, plan)
    d = Distiller(teacher=tiny_resnet, student=copy.deepcopy(tiny_resnet), images=torch.zeros(8, 3, 32, 32,
                  dtype=torch.uint8), evaluator=evaluator, plan=plan, state=RunState(epochs=2, steps_per_epoch=1,
                  batch_size=8), lr=0.01, momentum=0.9, weight_decay=0.0, crop_padding=0, flip=False, seed=0,
                  temperature_start=1.0, temperature_rise=3.0, keep="best", ema_decay=None)
    evaluator.set_reference(d.teacher)
    s = d.state
    s.epoch, s.epoch_step = 2, 0
    d.best_weights = {k: v.clone() + (0.1 if v.is_floating_point() else 0) for k, v in d.student.state_dict().items()}
    last_weights = {k: v.clone() for k, v in d.student.state_dict().items()}
    s.best = Scores(acc=None, asr=0.0, epoch=1, eval_scope="subset")  # looked perfect on the subset
    s.last = Scores(acc=None, asr=-1.0, epoch=2, eval_scope="full")  # better than anything measurable
    chosen = d.finish()
    assert chosen.epoch == 2 and chosen.eval_scope == "full" and s.best == s.last
    assert all(torch.equal(v, last_weights[k]) for k, v in d.student.state_dict().items())
    s.best = Scores(acc=None, asr=2.0, epoch=1, eval_scope="subset")  # re-measured in full: an ASR <= 1 wins
    s.last = Scores(acc=None, asr=2.0, epoch=2, eval_scope="full")
    chosen = d.finish()
    assert chosen.epoch == 1 and chosen.eval_scope == "full" and chosen.asr <= 1.0
    assert all(torch.equal(v, d.best_weights[k]) for k, v in d.student.state_dict().items())
