"""The adversarial consistency term (core/unlearning.py): in budget, finite, resumable, and off means off."""

import json

import pytest
import torch

from bcu_gui.core.errors import ConfigError
from bcu_gui.core.events import EpochEnd, Finished
from bcu_gui.core.job import CleanseConfig, CleanseJob
from bcu_gui.core.unlearning import AdversarialConsistency, AdversarialSettings

from test_job import _config, folders  # noqa: E402,F401 (the fixture and config of the job tests)
from test_resume import _kill_after_epoch, _weights  # noqa: E402


def _term(mode: str, eps: float = 0.1) -> AdversarialConsistency:
    return AdversarialConsistency(AdversarialSettings(weight=1.0, eps=eps, mode=mode, step=0.5), 10, (3, 32, 32),
                                  torch.device("cpu"), seed=0)


@pytest.mark.parametrize("mode", ["targeted", "untargeted", "focused"])
def test_the_perturbations_stay_in_budget_and_the_loss_is_finite(tiny_resnet, mode):
    adv = _term(mode, eps=0.1)
    assert adv.delta.shape == ((1 if mode == "untargeted" else 10), 3, 32, 32)
    model = tiny_resnet.train()
    pixels = torch.rand(6, 3, 32, 32)
    with torch.no_grad():
        teacher = model.eval()(pixels).clone()
    model.train()
    start = adv.delta.clone()
    for _ in range(12):
        loss, after = adv.loss(model, pixels, lambda p: (p - 0.5) / 0.25, teacher,
                               lambda logits: logits.float().pow(2).mean())
        assert torch.isfinite(loss)
        model.zero_grad()
        loss.backward()
        after()
        assert float(adv.delta.abs().max()) <= 0.1 + 1e-6
    assert adv.turn == 12 and not torch.equal(adv.delta, start)  # the ascent moved them


def test_a_restart_comes_every_k_epochs_and_only_then():
    adv = AdversarialConsistency(AdversarialSettings(restart_every=3), 10, (3, 8, 8), torch.device("cpu"), 0)
    first = adv.delta.clone()
    for epoch in (0, 1, 2):
        adv.maybe_restart(epoch)
    assert torch.equal(adv.delta, first)
    adv.maybe_restart(3)
    assert adv.restarts == 1 and not torch.equal(adv.delta, first)


def test_the_term_covers_the_first_share_of_the_epochs_only():
    adv = AdversarialConsistency(AdversarialSettings(until=0.5), 10, (3, 8, 8), torch.device("cpu"), 0)
    assert [adv.active(e, 5) for e in range(5)] == [True, True, True, False, False]  # ceil(2.5) = 3 epochs
    assert [adv.active(e, 4) for e in range(4)] == [True, True, False, False]
    whole = AdversarialConsistency(AdversarialSettings(), 10, (3, 8, 8), torch.device("cpu"), 0)
    assert all(whole.active(e, 7) for e in range(7))


def test_settings_out_of_range_are_a_config_error():
    for bad in (dict(adversarial=-1.0), dict(adv_eps=0.0), dict(adv_mode="sideways"), dict(adv_step=2.0),
                dict(adv_restart=0), dict(adv_until=0.0), dict(adv_until=1.5)):
        with pytest.raises(ConfigError):
            CleanseConfig(checkpoint="x", unlabeled="y", **bad).validate()


def test_the_term_off_leaves_the_step_as_it_was(tiny_checkpoint, folders, tmp_path):
    """Weight 0 builds no term: the run's weights equal those of a run that never heard of it."""
    plain = _config(tiny_checkpoint, folders, tmp_path, out=str(tmp_path / "plain"), preset="paper")
    off = _config(tiny_checkpoint, folders, tmp_path, out=str(tmp_path / "off"), adversarial=0.0, adv_eps=0.3)
    for cfg in (plain, off):
        assert isinstance(list(CleanseJob(cfg, step_rate=0).events())[-1], Finished)
    a, b = _weights(tmp_path / "plain"), _weights(tmp_path / "off")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_term_on_changes_training_and_is_recorded(tiny_checkpoint, folders, tmp_path):
    plain = _config(tiny_checkpoint, folders, tmp_path, out=str(tmp_path / "plain"), adversarial=0.0)
    on = _config(tiny_checkpoint, folders, tmp_path, out=str(tmp_path / "on"), adversarial=1.0)
    for cfg in (plain, on):
        events = list(CleanseJob(cfg, step_rate=0).events())
        assert isinstance(events[-1], Finished), events[-1]
        assert all(e.loss == e.loss for e in events if isinstance(e, EpochEnd))  # finite
    a, b = _weights(tmp_path / "plain"), _weights(tmp_path / "on")
    assert any(not torch.equal(a[k], b[k]) for k in a)
    saved = json.loads((tmp_path / "on" / "config.json").read_text())
    assert saved["adversarial"] == 1.0 and saved["adv_mode"] == "focused"
    assert CleanseConfig.from_dict(saved).adversarial_settings().weight == 1.0


@pytest.mark.parametrize("mode", ["targeted", "untargeted", "focused"])
def test_a_resumed_run_with_the_term_reaches_the_same_weights_bit_for_bit(tiny_checkpoint, folders, tmp_path,
                                                                            mode):
    """The perturbations (and their restart generator) travel in resume.pt: a cut run ends where a whole one does."""
    kw = dict(epochs=3, adversarial=1.0, adv_mode=mode, adv_restart=2)
    whole = _config(tiny_checkpoint, folders, tmp_path, out=str(tmp_path / "whole"), **kw)
    assert isinstance(list(CleanseJob(whole, step_rate=0).events())[-1], Finished)
    cut = _config(tiny_checkpoint, folders, tmp_path, out=str(tmp_path / "cut"), **kw)
    _kill_after_epoch(cut, 1)
    point = torch.load(tmp_path / "cut" / "resume.pt", weights_only=True)
    assert point["tensors"]["adversarial"]["delta"].shape[0] == (1 if mode == "untargeted" else 10)
    assert isinstance(list(CleanseJob(cut, step_rate=0, resume=True).events())[-1], Finished)
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bf16_channels_last_runs_with_the_term(tiny_checkpoint, folders, tmp_path):
    cfg = _config(tiny_checkpoint, folders, tmp_path, precision="bf16", channels_last=True, adversarial=1.0,
                  epochs=1)
    events = list(CleanseJob(cfg, step_rate=0).events())
    assert isinstance(events[-1], Finished), events[-1]


def test_the_cli_flags_reach_the_config_and_a_resume_refuses_to_change_them(tmp_path):
    from bcu_gui import cli

    parser = cli.build_parser()
    args = parser.parse_args(["cleanse", "m.pt", "--unlabeled", "u", "--adversarial", "0.5", "--adv-eps", "0.1",
                              "--adv-mode", "untargeted", "--adv-step", "0.5", "--adv-restart", "0"])
    cfg = cli._config(args)
    assert (cfg.adversarial, cfg.adv_eps, cfg.adv_mode, cfg.adv_step, cfg.adv_restart) == (
        0.5, 0.1, "untargeted", 0.5, None)
    resumed = parser.parse_args(["cleanse", "--resume", str(tmp_path), "--adversarial", "1"])
    (tmp_path / "config.json").write_text(json.dumps({"checkpoint": str(tmp_path / "m.pt"),  # absolute, as written
                                                      "unlabeled": str(tmp_path / "u"), "resolved": {}}))
    with pytest.raises(ConfigError, match="--adversarial"):
        cli._config(resumed)


def test_the_top_form_weighs_only_the_leading_class_by_its_lead_over_the_runner_up():
    from bcu_gui.core.unlearning import AdversarialConsistency, AdversarialSettings

    adv = AdversarialConsistency(AdversarialSettings(mode="top"), 4, (1, 2, 2), torch.device("cpu"), 0)
    adv.success.copy_(torch.tensor([0.5, 0.98, 0.8, 0.9]))
    which = torch.tensor([0, 1, 2, 3])
    teacher = torch.zeros(4, 4)
    teacher[:, 0] = 5  # the teacher says class 0 for every image: class 0's own images are not counted
    student = torch.full((4, 4), -5.0)
    student[torch.arange(4), which] = 5  # every perturbation reaches its class this step
    weights = adv.class_weights(student, teacher, which)
    lead = (adv.success[1] - adv.success[3]) / (1 - adv.success[3])
    assert weights[1] == pytest.approx(4 * float(lead))
    assert weights[0] == weights[2] == weights[3] == 0
