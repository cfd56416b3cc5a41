"""The run's verdict (core/outcome.py): a model that no longer classifies is never announced as cleansed."""

from __future__ import annotations

import pytest

from bcu_gui.core.outcome import judge
from bcu_gui.core.summary import ScanRecord, Scores

TEACHER = Scores(acc=0.99, asr=1.0, agreement=1.0)


def test_a_collapsed_model_is_ruined_whatever_its_asr():
    out = judge(TEACHER, Scores(acc=0.116, asr=0.0, agreement=0.12))
    assert out.kind == "ruined" and not out.ok
    assert "no longer classifies" in out.headline and "meaningless" in out.headline


def test_label_free_collapse_is_seen_without_any_test_set():
    out = judge(Scores(acc=None, asr=None, agreement=1.0), Scores(acc=None, asr=None, agreement=0.3))
    assert out.kind == "ruined" and "30.0%" in out.headline


def test_an_acc_collapse_is_ruin_even_when_agreement_was_not_measured():
    assert judge(TEACHER, Scores(acc=0.60, asr=0.01)).kind == "ruined"


@pytest.mark.parametrize("asr, kind", [(0.02, "removed"), (0.10, "removed"), (0.5, "remains")])
def test_asr_decides_between_removed_and_remains(asr, kind):
    assert judge(TEACHER, Scores(acc=0.98, asr=asr, agreement=0.97)).kind == kind


def test_a_rescan_that_still_flags_a_class_is_not_a_removal():
    scan = ScanRecord(verdict="backdoor", suspected_class=3, anomaly_index=9.0)
    out = judge(TEACHER, Scores(acc=0.98, asr=0.01, agreement=0.97), cleansed_scan=scan)
    assert out.kind == "remains" and "class 3" in out.headline
    out = judge(Scores(acc=None, asr=None), Scores(acc=None, asr=None, agreement=0.95), cleansed_scan=scan)
    assert out.kind == "remains"


def test_nothing_to_verify_with_says_so():
    out = judge(Scores(acc=0.9, asr=None), Scores(acc=0.89, asr=None, agreement=0.95))
    assert out.kind == "unverified" and "scan" in out.headline
    clean = ScanRecord(verdict="clean", suspected_class=None, anomaly_index=1.1)
    assert judge(Scores(acc=0.9, asr=None), Scores(acc=0.89, asr=None, agreement=0.95),
                 cleansed_scan=clean).kind == "removed"


def test_a_notable_acc_cost_is_said():
    out = judge(TEACHER, Scores(acc=0.93, asr=0.01, agreement=0.95))
    assert out.kind == "removed" and "6.0 points" in out.headline


def test_a_stopped_run_is_stopped_unless_ruined():
    assert judge(TEACHER, Scores(acc=0.98, asr=0.5, agreement=0.97), cancelled=True).kind == "stopped"
    assert judge(TEACHER, Scores(acc=0.1, asr=0.0, agreement=0.1), cancelled=True).kind == "ruined"
