"""The scan around a cleansing run: teacher scan + proxy ASR at start, per epoch, at the end, and a fresh scan
of the cleansed model, recorded in the run summary (and old summaries still readable)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from bcu_gui.core.events import EpochEnd, Failed, Finished
from bcu_gui.core.job import CleanseJob
from bcu_gui.core.models import load_model
from bcu_gui.core.normalization import PRESETS
from bcu_gui.core.scan import PROXY_KEY, ProbeSettings, ScanConfig, ScanFinished, ScanHook
from bcu_gui.core.summary import RunSummary, ScanRecord

from test_job import _config, folders  # noqa: F401 (fixture)
from test_scan import CPU, NONE, Planted, _fast, _images


class Plain(Planted):
    """The same classifier with the backdoor removed: what a successful cleansing leaves."""

    def forward(self, x):
        return self.clean_logits(x)


def test_the_hook_scans_the_teacher_follows_proxy_asr_and_scans_the_cleansed_model():
    seen = []
    hook = ScanHook(_images(), NONE, 4, _fast(), progress=lambda phase, e: seen.append((phase, type(e))))
    run = SimpleNamespace(teacher=Planted(), student=Planted().train(), plan=CPU)
    hook.on_start(run)
    assert hook.teacher_result.suspected_class == 0 and hook.trigger is not None
    assert hook.teacher_proxy > 0.8
    assert ("teacher", ScanFinished) in seen
    # while the student still carries the backdoor the proxy ASR stays high; once it is gone, it falls
    assert hook.on_epoch_end(run)[PROXY_KEY] > 0.8
    assert run.student.training  # measured in eval mode, handed back in training mode
    run.student = Plain().train()
    assert hook.on_epoch_end(run)[PROXY_KEY] < 0.1
    hook.on_finish(run)
    assert ("cleansed", ScanFinished) in seen
    fields = hook.summary_fields()
    teacher, cleansed = fields["teacher_scan"], fields["cleansed_scan"]
    assert teacher.verdict == "backdoor" and teacher.suspected_class == 0 and teacher.proxy_asr > 0.8
    assert cleansed.verdict == "clean" and cleansed.suspected_class is None and cleansed.proxy_asr < 0.1
    assert teacher.verdict_line().startswith("suspected class 0, anomaly ")
    assert cleansed.verdict_line().startswith("no class stands out, anomaly ")


def test_a_given_teacher_result_is_reused_and_a_stopped_run_skips_the_second_scan():
    first = ScanHook(_images(), NONE, 4, _fast())
    run = SimpleNamespace(teacher=Planted(), student=Plain(), plan=CPU)
    first.on_start(run)
    seen = []
    hook = ScanHook(_images(), NONE, 4, _fast(), teacher_result=first.teacher_result,
                    progress=lambda phase, e: seen.append(phase), cancel=lambda: True)
    hook.on_start(run)
    hook.on_finish(run)
    assert seen == []  # neither model was scanned again
    fields = hook.summary_fields()
    assert fields["teacher_scan"].suspected_class == 0
    assert fields["cleansed_scan"].verdict == "unscanned" and fields["cleansed_scan"].proxy_asr < 0.1
    assert "stopped" in hook.note


def test_cleanse_with_the_hook_records_the_curve_and_both_verdicts(tiny_checkpoint, folders, tmp_path):  # noqa: F811
    model = load_model(tiny_checkpoint)
    from bcu_gui.core.data import load_unlabeled

    images = load_unlabeled(folders["unlabeled"], model.input_size).images
    config = ScanConfig(settings=ProbeSettings(steps=6, batch_size=8, window=3, patience=2))
    hook = ScanHook(images, model.normalization, model.num_classes, config)
    events = list(CleanseJob(_config(tiny_checkpoint, folders, tmp_path), model=model, hooks=[hook]).events())
    assert not [e for e in events if isinstance(e, Failed)]
    assert all(PROXY_KEY in e.extra for e in events if isinstance(e, EpochEnd))
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(PROXY_KEY in r["extra"] for r in lines)
    summary = next(e for e in events if isinstance(e, Finished)).summary
    assert summary.teacher_scan is not None and summary.cleansed_scan is not None
    assert summary.cleansed_scan.verdict in ("backdoor", "clean")
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["teacher_scan"]["verdict"] == summary.teacher_scan.verdict
    assert RunSummary.from_dict(saved) == summary


def test_old_summaries_without_scans_stay_readable(tiny_checkpoint, folders, tmp_path):  # noqa: F811
    events = list(CleanseJob(_config(tiny_checkpoint, folders, tmp_path, epochs=1)).events())
    summary = next(e for e in events if isinstance(e, Finished)).summary
    data = summary.to_dict()
    assert data["teacher_scan"] is None and data["cleansed_scan"] is None
    old = {k: v for k, v in data.items() if k not in ("teacher_scan", "cleansed_scan")}
    assert RunSummary.from_dict(old) == summary
    record = ScanRecord("backdoor", 0, 38.7, "mask", 2.0, 0.97)
    assert ScanRecord.from_dict(json.loads(json.dumps(record.__dict__))) == record
    assert ScanRecord.from_dict({**record.__dict__, "from_the_future": 1}) == record
