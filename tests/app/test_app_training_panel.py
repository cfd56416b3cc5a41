"""The training panel: batch size auto by default (and what auto chooses), the keep choices, the ablations."""

from __future__ import annotations

from bcu_gui.app.panels.training_panel import AUTO_BATCH, TrainingPanel
from bcu_gui.app.settings import AppSettings
from bcu_gui.core.job import CleanseConfig


def _panel(qtbot) -> TrainingPanel:
    panel = TrainingPanel(AppSettings())
    qtbot.addWidget(panel)
    return panel


def test_the_batch_is_auto_by_default_and_says_what_it_will_be(qtbot):
    p = _panel(qtbot)
    assert p.batch_spin.value() == AUTO_BATCH and p.batch_spin.text() == "auto"
    assert p.values()["batch_size"] is None
    p.set_image_count(400)
    assert p.batch_note.text().startswith("batch size 40 chosen automatically")
    p.batch_spin.setValue(64)
    assert p.values()["batch_size"] == 64 and "64 as requested: 7 steps an epoch" in p.batch_note.text()
    p.show_batch_choice(40, "batch size 40 chosen automatically: because")
    assert p.batch_note.text() == "batch size 40 chosen automatically: because"


def test_keep_choices_follow_what_the_run_can_measure(qtbot):
    p = _panel(qtbot)
    # the scan is on by default while there is no triggered folder, and it brings the proxy ASR
    assert p.scan_enabled() and p.can_keep("ema") and not p.can_keep("best") and p.can_keep("proxy")
    p.scan_check.click()  # the user turns the scan off: no proxy ASR to rank epochs by
    assert not p.scan_enabled() and not p.can_keep("proxy")
    p.keep_combo.setCurrentIndex(p.keep_combo.findData("ema"))
    assert p.values()["keep"] == "ema"
    p.set_asr_available(True)
    p.keep_combo.setCurrentIndex(p.keep_combo.findData("best"))
    assert p.values()["keep"] == "best"
    p.set_asr_available(False)  # the triggered folder went away: back to last
    assert p.values()["keep"] == "last"
    p.scan_check.click()
    p.keep_combo.setCurrentIndex(p.keep_combo.findData("proxy"))
    assert p.values()["keep"] == "proxy"


def test_the_ablations_become_config_fields(qtbot, tmp_path):
    p = _panel(qtbot)
    p.output.set_path(str(tmp_path))
    default = p.config_fields()
    assert (default["hard_labels"], default["flip"], default["cosine_period"], default["temperature_start"],
            default["temperature_rise"]) == (False, True, None, 1.0, 3.0)
    p.hard_labels.setChecked(True)
    p.flip_check.setChecked(False)
    p.cosine_spin.setValue(100)
    p.temp_start.setValue(2.0)
    p.temp_end.setValue(6.5)
    fields = p.config_fields()
    cfg = CleanseConfig(checkpoint="m.pt", unlabeled="u", **fields)
    cfg.validate()
    assert (cfg.hard_labels, cfg.flip, cfg.cosine_period, cfg.temperature_start, cfg.temperature_rise) == (
        True, False, 100, 2.0, 4.5)
    p.temp_start.setValue(8.0)  # the end cannot fall below the start
    assert p.temp_end.value() >= 8.0 and p.values()["temperature_rise"] >= 0


def test_a_remembered_batch_comes_back_and_the_old_fixed_default_does_not(qtbot):
    p = _panel(qtbot)
    p.batch_spin.setValue(32)
    remembered = p.remembered()
    assert remembered["batch"] == 32 and "batch_size" not in remembered
    q = _panel(qtbot)
    q.set_values(remembered)
    assert q.values()["batch_size"] == 32
    q.set_values({"batch": 0})
    assert q.values()["batch_size"] is None
    q.set_values({"batch_size": None})  # a config's automatic batch
    assert q.batch_spin.text() == "auto"


def test_the_result_box_names_the_kept_student_and_shows_the_moving_average(qtbot):
    from bcu_gui.app.panels.run_panel import SummaryBox
    from bcu_gui.core.summary import ReinitRecord, RunSummary, Scores

    box = SummaryBox()
    qtbot.addWidget(box)
    common = dict(teacher=Scores(acc=0.99, asr=1.0), best=None, preset="strong", epochs=3, epochs_completed=3,
                  steps=30, cancelled=False, seconds=12.0, images_per_second=100.0, device="cpu",
                  reinit=ReinitRecord(ratios={}, counts={}, totals={}, seed=0), model_files=(), run_dir="/tmp/r")
    proxy = Scores(acc=0.98, asr=0.01, agreement=0.985, epoch=2)
    box.show_finished(RunSummary(cleansed=proxy, kept="proxy", proxy=proxy, ema=Scores(acc=0.975, asr=0.02, epoch=3),
                                 kept_reason="the lowest proxy ASR (1.5%) among epochs agreeing", **common), "Strong")
    text = box.text()
    assert "saved the lowest-proxy-ASR epoch (2): the lowest proxy ASR (1.5%)" in text
    assert "moving average: 97.5% / 2.0%" in text
    last = Scores(acc=0.98, asr=0.0, epoch=3)
    box.show_finished(RunSummary(cleansed=last, kept="last", kept_reason="the student as the last epoch left it",
                                 **common), "Strong")
    assert "saved the last epoch (3)." in box.text() and "moving average" not in box.text()
