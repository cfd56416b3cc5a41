"""The trigger-inversion scan on tiny synthetic models: stamping, proxy ASR, statistics, events, cancel, JSON."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from bcu_gui.core.devices import plan_compute
from bcu_gui.core.errors import ConfigError
from bcu_gui.core.normalization import PRESETS
from bcu_gui.core.scan import (
    MarginSettings, ProbeSettings, ScanCancelled, ScanConfig, ScanFinished, ScanProgress, ScanStarted, Trigger, mad_index,
    median_ratio, proxy_asr, run_scan, scan, split_images, stamp,
)

NONE = PRESETS["none"]
CPU = plan_compute("cpu", "fp32")


def _prototypes() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    protos = 0.2 + 0.6 * torch.rand(4, 3, 8, 8, generator=gen)
    protos[:, :, 6:8, 6:8] = 0.1  # the corner is dark in every class
    return protos


class Planted(nn.Module):
    """A 4-class nearest-prototype model over 3x8x8 pixels with a planted backdoor: a bright bottom-right 2x2
    corner adds a large logit to class 0. Reaching another class means repainting much of the image."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("protos", _prototypes())
        self.scale = nn.Parameter(torch.tensor(100.0))
        self.bias = nn.Parameter(torch.zeros(4))

    def clean_logits(self, x: torch.Tensor) -> torch.Tensor:
        return -self.scale * ((x.unsqueeze(1) - self.protos) ** 2).mean(dim=(2, 3, 4)) + self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        corner = x[:, :, 6:8, 6:8].mean(dim=(1, 2, 3))
        boost = 30 * torch.sigmoid(10 * (corner - 0.5)).unsqueeze(1)
        return self.clean_logits(x) + torch.nn.functional.pad(boost, (0, 3))


def _images(n: int = 64, seed: int = 0) -> torch.Tensor:
    """uint8 images around the four prototypes (round-robin classes), with noise; the corner stays dark."""
    gen = torch.Generator().manual_seed(seed)
    x = _prototypes()[torch.arange(n) % 4] + 0.1 * (torch.rand(n, 3, 8, 8, generator=gen) * 2 - 1)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def _fast(steps: int = 120, **kw) -> ScanConfig:
    return ScanConfig(settings=ProbeSettings(steps=steps, batch_size=16, window=10, patience=4),
                      margin=MarginSettings(steps=min(steps, 60), starts=4), **kw)


# ---- stamping and proxy ASR -------------------------------------------------------------------------------

def test_stamp_mask_trigger_blends_by_the_mask():
    images = torch.full((2, 3, 4, 4), 100, dtype=torch.uint8)
    mask = torch.zeros(1, 4, 4)
    mask[0, 3, 3] = 1.0
    mask[0, 0, 0] = 0.5
    trigger = Trigger("mask", 0, torch.ones(3, 4, 4), mask)
    out = stamp(images, trigger)
    assert out.dtype == torch.uint8 and torch.equal(images, torch.full((2, 3, 4, 4), 100, dtype=torch.uint8))
    assert (out[:, :, 3, 3] == 255).all() and (out[:, :, 0, 0] == 178).all()  # round(0.5 * 100 + 0.5 * 255)
    assert (out[:, :, 1, 1] == 100).all()
    assert trigger.size == pytest.approx(1.5)


def test_stamp_perturbation_trigger_clamps_to_the_pixel_range():
    images = torch.tensor([0, 128, 250], dtype=torch.uint8).view(1, 1, 1, 3).expand(1, 3, 1, 3).contiguous()
    trigger = Trigger("perturbation", 2, torch.full((3, 1, 3), 10 / 255))
    assert stamp(images, trigger)[0, 0, 0].tolist() == [10, 138, 255]
    assert trigger.size == pytest.approx(10 / 255)


def test_stamp_and_trigger_reject_bad_shapes():
    trigger = Trigger("perturbation", 0, torch.zeros(3, 4, 4))
    with pytest.raises(ValueError):
        stamp(torch.zeros(1, 3, 4, 4), trigger)  # float images
    with pytest.raises(ValueError):
        stamp(torch.zeros(1, 3, 5, 5, dtype=torch.uint8), trigger)
    with pytest.raises(ValueError):
        Trigger("mask", 0, torch.zeros(3, 4, 4))  # a mask trigger without a mask
    with pytest.raises(ValueError):
        Trigger("sticker", 0, torch.zeros(3, 4, 4))


def test_proxy_asr_counts_only_images_not_already_sent_to_the_target():
    model = Planted().eval()
    images = _images(40)
    mask = torch.zeros(1, 8, 8)
    mask[0, 6:8, 6:8] = 1.0
    trigger = Trigger("mask", 0, torch.ones(3, 8, 8), mask)
    with torch.no_grad():
        clean = model(images.float() / 255).argmax(1)
    assert 0 < int((clean == 0).sum()) < 40  # some images are class 0 already: they must not count
    assert proxy_asr(model, images, trigger, NONE) == 1.0
    assert proxy_asr(model, images, trigger, NONE, target=1) < 0.5
    nothing = Trigger("mask", 0, torch.zeros(3, 8, 8), torch.zeros(1, 8, 8))
    assert proxy_asr(model, images, nothing, NONE) == 0.0
    assert proxy_asr(model, images[clean == 0], trigger, NONE) is None  # nobody left to flip


# ---- statistics --------------------------------------------------------------------------------------------

def test_anomaly_statistics():
    sizes = [10.0, 100.0, 110.0, 90.0, 105.0, 95.0]
    assert median_ratio(sizes, 1024) == pytest.approx(97.5 / 10)
    # |deviations| from the median 97.5: 87.5, 2.5, 12.5, 7.5, 7.5, 2.5 -> their median is 7.5
    assert mad_index(sizes, 1024) == pytest.approx((97.5 - 10) / (1.4826 * 7.5))
    logs = [math.log(v) for v in sizes]
    med = sorted(logs)[2] / 2 + sorted(logs)[3] / 2
    dev = sorted(abs(v - med) for v in logs)
    assert mad_index(sizes, 1024, log=True) == pytest.approx((med - min(logs)) / (1.4826 * (dev[2] + dev[3]) / 2))
    assert mad_index([5.0] * 4, 1024) == 0.0
    assert median_ratio([None, None, 2.0], 8.0) == 4.0  # a class that never flipped counts at the ceiling


# ---- the scan ----------------------------------------------------------------------------------------------

def test_scan_names_the_planted_class_and_keeps_its_trigger():
    model = Planted()
    result = run_scan(model, _images(), NONE, 4, _fast(), CPU)
    assert result.verdict == "backdoor" and result.suspected_class == 0, result.to_dict()
    mask_report = next(r for r in result.probes if r.kind == "mask")
    assert mask_report.smallest_class == 0 and mask_report.sizes[0] < 12  # the 4-pixel corner, roughly
    assert result.trigger is not None and result.trigger.target == 0
    assert proxy_asr(model, _images(32, seed=5), result.trigger, NONE) > 0.8
    assert len(result.classes) == 4 and result.fit_images + result.measure_images == 64
    assert result.verdict_line().startswith("backdoor suspected: class 0, anomaly ")


def test_scan_without_a_backdoor_names_nothing():
    class Plain(Planted):
        def forward(self, x):
            return self.clean_logits(x)

    result = run_scan(Plain(), _images(), NONE, 4, _fast(), CPU)
    assert result.verdict == "clean" and result.suspected_class is None and result.trigger is None
    assert result.candidate is not None  # the most anomalous class's trigger is kept for display
    assert result.verdict_line().startswith("no class stands out")


def test_scan_events_and_json_shape():
    model = Planted()
    events = list(scan(model, _images(), NONE, 4, _fast(steps=20), CPU))
    assert isinstance(events[0], ScanStarted) and isinstance(events[-1], ScanFinished)
    progress = [e for e in events if isinstance(e, ScanProgress)]
    assert {e.probe for e in progress} == {"mask", "perturbation"}
    fractions = [e.fraction for e in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    data = events[-1].result.to_dict()
    text = json.dumps(data, allow_nan=False)  # no NaN or infinity anywhere
    back = json.loads(text)
    assert back["verdict"] in ("backdoor", "clean")
    assert back["suspected_class"] is None or isinstance(back["suspected_class"], int)
    assert isinstance(back["anomaly_index"], float)
    assert [c["class"] for c in back["classes"]] == [0, 1, 2, 3]
    assert set(back["classes"][0]) == {"class", "mask_l1", "mask_flip", "perturbation", "perturbation_flip",
                                       "margin"}
    assert 0 < back["p_value"] <= 1 and back["false_alarm"] == 0.01
    assert {p["kind"] for p in back["probes"]} == {"mask", "perturbation"}
    assert back["classes"][0]["margin"] is None  # the margin probe is opt-in


def test_the_margin_probe_names_the_planted_class():
    """MM-BD's statistic on its own: the corner drives class 0's logit 30 past what any prototype reaches."""
    result = run_scan(Planted(), _images(), NONE, 4, _fast(probes=("margin",)), CPU)
    report = result.probes[0]
    assert report.kind == "margin" and report.smallest_class == 0 and report.p_value < 0.01, result.to_dict()
    assert result.suspected_class == 0 and result.candidate is None  # no trigger probe ran: no trigger picture
    assert result.classes[0].margin == max(c.margin for c in result.classes)


def test_the_false_alarm_rate_is_the_users_and_is_reported():
    result = run_scan(Planted(), _images(), NONE, 4, _fast(false_alarm=0.2), CPU)
    assert result.verdict == "backdoor" and result.false_alarm == 0.2 and result.p_value < 0.2
    assert "below the 20% false-alarm rate" in result.verdict_line()
    assert result.to_dict()["false_alarm"] == 0.2


def test_cancel_stops_the_scan_and_restores_the_model():
    model = Planted()
    model.bias.requires_grad_(False)
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) >= 3

    with pytest.raises(ScanCancelled):
        run_scan(model, _images(), NONE, 4, _fast(steps=500), CPU, cancel=cancel)
    assert len(calls) == 3
    assert model.scale.requires_grad and not model.bias.requires_grad
    events = scan(model, _images(), NONE, 4, _fast(steps=500), CPU)
    next(events), next(events)
    events.close()  # a consumer that stops iterating cancels too
    assert model.scale.requires_grad


def test_split_is_disjoint_seeded_and_capped():
    images = torch.arange(50, dtype=torch.uint8).view(50, 1, 1, 1).expand(50, 3, 2, 2).contiguous()
    fit, measure = split_images(images, ScanConfig(fit_images=10, measure_images=7))
    assert len(fit) == 10 and len(measure) == 7
    assert not set(fit[:, 0, 0, 0].tolist()) & set(measure[:, 0, 0, 0].tolist())
    again, _ = split_images(images, ScanConfig(fit_images=10, measure_images=7))
    assert torch.equal(fit, again)
    with pytest.raises(ConfigError):
        split_images(images[:2], ScanConfig())


@pytest.mark.parametrize("kwargs", [dict(probes=("sticker",)), dict(probes=()), dict(statistic="vibes"),
                                    dict(fit_images=1), dict(false_alarm=0.0), dict(false_alarm=1.0),
                                    dict(probes=("mask", "mask"))])
def test_bad_scan_settings_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        ScanConfig(**kwargs)


def test_scan_rejects_float_images():
    with pytest.raises(ConfigError):
        next(scan(Planted(), _images().float(), NONE, 4, _fast(), CPU))
