"""Ratio sweeps (core/sweep.py): parsing, expansion into named settings, the Pareto front, sweep.csv, and the
job itself on a tiny model: folders and table, skip on re-run, resume of a stopped run, refusals."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_job import _config, folders  # noqa: E402,F401 (the job tests' fixture and config)

from bcu_gui.core.errors import ConfigError  # noqa: E402
from bcu_gui.core.events import EpochEnd, Failed, Started  # noqa: E402
from bcu_gui.core.resume import RESUME_FILE  # noqa: E402
from bcu_gui.core.sweep import (RunBegins, RunEnds, SweepFinished, SweepJob, SweepRow, SweepSpec,  # noqa: E402
                                SweepStarted, front_metric, load_sweep, pareto_front, parse_grid, parse_presets,
                                parse_seeds, table_csv)


# ------------------------------------------------------------------------------------------- parsing


def test_grid_parses_groups_in_order_from_words_or_one_string():
    assert parse_grid(["layer4=0.27,0.5,1", "head=0.1,1"]) == (("layer4", (0.27, 0.5, 1.0)), ("head", (0.1, 1.0)))
    assert parse_grid(["layer4=0,1 head=1"]) == (("layer4", (0.0, 1.0)), ("head", (1.0,)))


@pytest.mark.parametrize("items, message", [
    (["layer4"], "needs the form group=ratio"),
    (["=0.5"], "needs the form group=ratio"),
    (["layer4=0.5,x"], "'x' for 'layer4' is not a number"),
    (["layer4=1.5"], "must lie between 0 and 1"),
    (["layer4=-0.1"], "must lie between 0 and 1"),
    (["layer4=nan"], "must lie between 0 and 1"),
    (["layer4="], "has no ratios"),
    (["layer4=0.5,0.5"], "listed twice"),
    (["layer4=0.5", "layer4=1"], "given twice"),
    ([], "the grid is empty"),
])
def test_bad_grids_are_refused_with_a_reason(items, message):
    with pytest.raises(ConfigError, match=message):
        parse_grid(items)


def test_presets_and_seeds_parse_and_refuse_bad_values():
    assert parse_presets("paper, strong") == ("paper", "strong")
    assert parse_seeds("0,1,2") == (0, 1, 2)
    for text, message in (("paper,bogus", "unknown preset 'bogus'"), (",", "at least one preset")):
        with pytest.raises(ConfigError, match=message):
            parse_presets(text)
    for text, message in (("0,x", "'x' is not a whole number"), ("-1", "not be negative"), ("1,1", "twice")):
        with pytest.raises(ConfigError, match=message):
            parse_seeds(text)


def test_a_spec_needs_exactly_one_of_presets_and_grid():
    for spec in (SweepSpec(), SweepSpec(presets=("paper",), grid=(("head", (1.0,)),))):
        with pytest.raises(ConfigError, match="exactly one"):
            spec.validate()


# ----------------------------------------------------------------------------------------- expansion


def test_a_grid_expands_to_its_cartesian_product_with_seeds_innermost_and_readable_names():
    spec = SweepSpec(grid=(("layer4", (0.27, 1.0)), ("head", (0.1, 1.0))), seeds=(0, 1))
    settings = spec.settings()
    assert len(settings) == 8
    assert [s.name for s in settings[:3]] == ["layer4-0.27_head-0.1-seed0", "layer4-0.27_head-0.1-seed1",
                                              "layer4-0.27_head-1-seed0"]
    assert settings[0].preset == "paper" and settings[0].ratios == {"layer4": 0.27, "head": 0.1}
    assert settings[-1].ratios == {"layer4": 1.0, "head": 1.0} and settings[-1].seed == 1
    assert len({s.name for s in settings}) == 8
    assert settings[0].label() == "layer4=0.27 head=0.1 (on paper), seed 0"


def test_presets_expand_to_their_names_and_odd_group_names_make_safe_folders():
    assert [s.name for s in SweepSpec(presets=("paper", "strong")).settings()] == ["paper", "strong"]
    assert [s.name for s in SweepSpec(presets=("none",), seeds=(3, 4)).settings()] == ["none-seed3", "none-seed4"]
    odd = SweepSpec(grid=(("features.0-3/x", (0.5,)),), base_preset="none").settings()[0]
    assert odd.name == "features.0_3_x-0.5" and odd.ratios == {"features.0-3/x": 0.5}


def test_the_spec_survives_its_json_record():
    spec = SweepSpec(grid=(("layer4", (0.27, 1.0)),), seeds=(0, 2), scan=True, scan_steps=8)
    assert SweepSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


# ------------------------------------------------------------------------------------ front and table


def _row(name, acc, asr=None, proxy=None, status="finished"):
    return SweepRow(name=name, label=name, preset="paper", ratios={"head": 0.1}, seed=0, status=status, acc=acc,
                    asr=asr, proxy_asr=proxy, seconds=1.0)


def test_the_pareto_front_keeps_undominated_finished_runs_ordered_by_asr():
    rows = [_row("a", 0.99, 1.0), _row("b", 0.98, 0.2), _row("c", 0.97, 0.3), _row("d", 0.90, 0.0),
            _row("e", 0.98, 0.2), _row("f", 0.999, 0.0, status="stopped"), _row("g", None, None, status="pending")]
    assert front_metric(rows) == "asr"
    assert [r.name for r in pareto_front(rows)] == ["d", "b", "e", "a"]  # c is beaten by b; ties b, e both stay


def test_without_asr_the_front_uses_the_proxy_asr_and_without_either_there_is_none():
    rows = [_row("a", 0.99, proxy=0.9), _row("b", 0.95, proxy=0.1), _row("c", 0.90, proxy=0.5)]
    assert front_metric(rows) == "proxy_asr"
    assert [r.name for r in pareto_front(rows)] == ["b", "a"]
    assert front_metric([_row("a", 0.99)]) is None and pareto_front([_row("a", 0.99)]) == []


def test_the_csv_has_one_row_per_setting_and_says_which_metric_the_front_used():
    rows = [_row("a", 0.99, proxy=0.9), _row("b", 0.95, proxy=0.1), _row("c", 0.90, proxy=0.5),
            _row("d", None, status="pending")]
    parsed = list(csv.DictReader(io.StringIO(table_csv(rows))))
    assert [r["name"] for r in parsed] == ["a", "b", "c", "d"]
    assert {r["front_metric"] for r in parsed} == {"proxy ASR"}
    assert [r["pareto"] for r in parsed] == ["yes", "yes", "no", "no"]
    assert parsed[1]["proxy_asr"] == "0.1000" and parsed[1]["asr"] == "" and parsed[3]["status"] == "pending"
    assert parsed[0]["ratios"] == "head=0.1"


# ------------------------------------------------------------------------------------------ the job


def _base(tiny_checkpoint, folders, tmp_path, **kw):
    return _config(tiny_checkpoint, folders, tmp_path, epochs=1, out=None, **kw)


def _kinds(events):
    return [type(e) for e in events]


def test_a_sweep_writes_one_run_folder_per_setting_and_its_table_then_skips_them_when_run_again(
        tiny_checkpoint, folders, tmp_path):
    spec = SweepSpec(presets=("paper", "strong"))
    out = tmp_path / "sweep"
    events = list(SweepJob(spec, _base(tiny_checkpoint, folders, tmp_path), out, step_rate=0).events())
    assert Failed not in _kinds(events), [e for e in events if isinstance(e, Failed)]
    assert isinstance(events[0], SweepStarted) or SweepStarted in _kinds(events)
    assert [e.name for e in events if isinstance(e, RunBegins)] == ["paper", "strong"]
    finished = events[-1]
    assert isinstance(finished, SweepFinished) and not finished.cancelled and finished.metric == "asr"
    assert [r.status for r in finished.rows] == ["finished", "finished"]
    assert set(finished.front) <= {"paper", "strong"} and finished.front
    for name in ("paper", "strong"):
        assert (out / name / "summary.json").exists() and not (out / name / RESUME_FILE).exists()
        assert json.loads((out / name / "config.json").read_text())["preset"] == name
    table = list(csv.DictReader((out / "sweep.csv").open()))
    assert [r["name"] for r in table] == ["paper", "strong"] and all(r["acc"] for r in table)
    assert json.loads((out / "sweep.json").read_text())["spec"]["presets"] == ["paper", "strong"]
    # the same sweep again: nothing runs, both rows are read back
    again = list(SweepJob(spec, _base(tiny_checkpoint, folders, tmp_path), out, step_rate=0).events())
    assert Started not in _kinds(again) and RunBegins not in _kinds(again)
    assert [e.skipped for e in again if isinstance(e, RunEnds)] == [True, True]
    assert again[-1].rows == finished.rows
    assert load_sweep(out).rows == list(finished.rows)


def test_a_stopped_sweep_keeps_the_runs_resume_point_and_continues_where_it_stopped(
        tiny_checkpoint, folders, tmp_path):
    spec = SweepSpec(grid=(("head", (0.5, 1.0)),))
    base = _config(tiny_checkpoint, folders, tmp_path, epochs=2, out=None)
    out = tmp_path / "sweep"
    job = SweepJob(spec, base, out, step_rate=0)
    events = []
    for event in job.events():
        events.append(event)
        if isinstance(event, EpochEnd):  # after the first run's first epoch
            job.cancel("test")
    finished = events[-1]
    assert isinstance(finished, SweepFinished) and finished.cancelled
    assert [r.status for r in finished.rows] == ["stopped", "pending"]
    assert (out / "head-0.5" / RESUME_FILE).exists() and not (out / "head-1").exists()
    assert [r["status"] for r in csv.DictReader((out / "sweep.csv").open())] == ["stopped", "pending"]
    assert finished.front == ()  # a stopped run's scores are not a result
    # the same sweep again resumes the stopped run from its epoch and runs the other
    again = list(SweepJob(spec, base, out, step_rate=0).events())
    begins = [e for e in again if isinstance(e, RunBegins)]
    assert [(b.name, b.resumed) for b in begins] == [("head-0.5", True), ("head-1", False)]
    assert [e.epoch for e in again if isinstance(e, EpochEnd)] == [2, 1, 2]
    assert [r.status for r in again[-1].rows] == ["finished", "finished"]


@pytest.mark.parametrize("prepare, message", [
    (lambda p: (p / "notes.txt").write_text("mine"), "holds no sweep"),
    (lambda p: (p / "sweep.json").write_text(json.dumps({"format": 1, "spec": SweepSpec(presets=("none",)).to_dict(),
                                                        "settings": {}})), "holds another sweep"),
])
def test_a_folder_of_other_files_or_another_sweep_is_refused_before_anything_runs(
        tiny_checkpoint, folders, tmp_path, prepare, message):
    out = tmp_path / "sweep"
    out.mkdir()
    prepare(out)
    before = sorted(p.name for p in out.iterdir())
    events = list(SweepJob(SweepSpec(presets=("paper",)), _base(tiny_checkpoint, folders, tmp_path), out).events())
    assert len(events) == 1 and isinstance(events[0], Failed) and events[0].kind == "input"
    assert message in events[0].message and "choose a new folder" in events[0].message
    assert sorted(p.name for p in out.iterdir()) == before


def test_an_unknown_group_fails_the_sweep_before_its_first_run(tiny_checkpoint, folders, tmp_path):
    out = tmp_path / "sweep"
    events = list(SweepJob(SweepSpec(grid=(("layer9", (0.5,)),)), _base(tiny_checkpoint, folders, tmp_path),
                           out).events())
    assert isinstance(events[-1], Failed) and "no layer group named 'layer9'" in events[-1].message
    assert Started not in _kinds(events) and not out.exists()


def test_keeping_the_proxy_epoch_without_the_scan_is_refused_up_front(tiny_checkpoint, folders, tmp_path):
    base = _base(tiny_checkpoint, folders, tmp_path, keep="proxy")
    events = list(SweepJob(SweepSpec(presets=("paper", "strong")), base, tmp_path / "sweep").events())
    assert len(events) == 1 and isinstance(events[0], Failed) and "bcu sweep --scan" in events[0].message
    assert not (tmp_path / "sweep").exists()
