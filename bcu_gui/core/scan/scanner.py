"""The scan: three probes give every class a score, and a calibrated test says whether one class stands out.

Needs only the model and unlabelled images. The probes:

- ``margin`` (margin.py, MM-BD): the largest logit margin an input in the pixel box reaches for each class;
  sees any trigger form, the whole-image ones (blend, signal, warp) included;
- ``mask`` and ``perturbation`` (probes.py, Neural-Cleanse style): the smallest trigger that flips the
  images to each class; they also RECOVER a trigger picture, which the cleanse's proxy ASR, the app and the
  report use, so they stay even where the margin probe decides.

Each probe's per-class scores go through the same test (calibration.py): the top class's p-value against a
gamma fitted to the other classes, calibrated by simulation; the probes' p-values are combined by Bonferroni,
and the verdict is "backdoor" when that p-value is below the chosen false-alarm rate (default 1%). The
suspected class is the deciding probe's top class; only that class is the verdict, because the test asks
whether the MOST extreme class is too extreme for K ordinary classes (a second class past the line is judged
against a null that still contains the first, so it says nothing on its own).

The images are split once (seeded): triggers and margins are fitted on one part and the triggers' flip
rates measured on the other, so a trigger that merely memorised its fitting images does not look stronger
than it is.

The scan is a generator of typed events (:class:`ScanStarted`, :class:`ScanProgress`, then
:class:`ScanFinished` carrying the frozen :class:`ScanResult`), so the CLI prints them and the app's worker
relays them; a consumer cancels by no longer iterating (``close()``), which stops within one step.
:func:`run_scan` wraps it with a progress callback and a cancel flag for callers that want a plain call.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Union

import torch
from torch import nn

from ..data import to_model_input
from ..devices import ComputePlan, plan_compute
from ..errors import BcuError, ConfigError
from ..normalization import Normalization
from .anomaly import STATISTICS, filled
from .calibration import DEFAULT_FALSE_ALARM, bonferroni, top_class_test
from .margin import MarginOutcome, MarginSettings, MarginStep, run_margin_probe
from .probes import ProbeOutcome, ProbeSettings, ProbeStep, run_probe
from .trigger import Trigger, proxy_asr

VERDICTS = ("backdoor", "clean")
PROBE_KINDS = ("margin", "mask", "perturbation")


@dataclass(frozen=True)
class ScanConfig:
    """Everything that decides a scan's result. Defaults measured on digits models (README)."""

    # the margin probe (MM-BD) is opt-in: measured on digits it ranks a naturally easy class first on clean and
    # backdoored models alike (README, "How the verdict was chosen"), and it costs a third more time
    probes: tuple[str, ...] = ("mask", "perturbation")
    fit_images: int = 200  # at most this many unlabelled images fit the triggers
    measure_images: int = 200  # at most this many others measure their flip rates
    settings: ProbeSettings = field(default_factory=ProbeSettings)
    margin: MarginSettings = field(default_factory=MarginSettings)
    # the anomaly index reported beside the p-value (how many times past the median class); the verdict
    # itself is the calibrated p-value against ``false_alarm``
    statistic: str = "median_ratio"
    false_alarm: float = DEFAULT_FALSE_ALARM  # the rate at which clean models may be called backdoored
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [p for p in self.probes if p not in PROBE_KINDS]
        if unknown or not self.probes or len(set(self.probes)) != len(self.probes):
            raise ConfigError(f"unknown or repeated scan probe(s) {unknown or self.probes}; "
                              f"use some of {', '.join(PROBE_KINDS)}")
        if self.statistic not in STATISTICS:
            raise ConfigError(f"unknown anomaly statistic '{self.statistic}'; use one of {', '.join(STATISTICS)}")
        if not 0 < self.false_alarm < 1:
            raise ConfigError(f"the false-alarm rate must lie between 0 and 1 (exclusive), got {self.false_alarm}")
        if self.fit_images < 2 or self.measure_images < 1:
            raise ConfigError("a scan needs at least 2 images to fit triggers and 1 to measure them")


@dataclass(frozen=True)
class ClassScore:
    """One class's row of the scan table. Sizes are None where the probe never met the target flip rate."""

    cls: int
    mask_l1: float | None  # pixels: sum of the mask
    mask_flip: float | None  # held-out flip rate of that mask trigger
    perturbation: float | None  # L-inf budget in [0, 1] pixel units
    perturbation_flip: float | None
    margin: float | None = None  # largest logit margin reached, in units of the model's typical clean margin


@dataclass(frozen=True)
class ProbeReport:
    """One probe's verdict: per-class scores, its top class's p-value, and every recovered trigger.

    ``scores`` are per class, larger = more suspicious, divided by their median (the mask and perturbation
    probes score a class by how many times smaller than the median its trigger is; the margin probe by how
    many times larger its margin is). ``anomaly_index`` is the top class's score; ``threshold`` the score
    it needed to stand out at the scan's false-alarm rate (after the Bonferroni share across probes).
    """

    kind: str
    anomaly_index: float
    threshold: float
    smallest_class: int  # the probe's top class (for trigger probes: the smallest trigger)
    flagged: bool
    sizes: tuple[float | None, ...]  # trigger probes: sizes; margin probe: normalised margins
    flips: tuple[float | None, ...]
    triggers: tuple[Trigger | None, ...] = field(repr=False)
    steps: int = 0
    forwarded: int = 0  # stamped images through the model, forward and backward
    p_value: float = 1.0  # the top class's calibrated p-value (this probe alone)
    scores: tuple[float, ...] = ()

    @property
    def top_class(self) -> int:
        return self.smallest_class


@dataclass(frozen=True)
class ScanResult:
    """The scan's outcome: typed, frozen, and turned into JSON by :meth:`to_dict`."""

    verdict: str  # "backdoor" or "clean"
    suspected_class: int | None
    anomaly_index: float  # the deciding probe's top score (times the median class)
    probe: str  # the deciding probe: the one with the smallest p-value
    statistic: str
    threshold: float  # the score the deciding probe's top class needed at the false-alarm rate
    classes: tuple[ClassScore, ...]
    probes: tuple[ProbeReport, ...]
    fit_images: int
    measure_images: int
    seconds: float
    device: str
    p_value: float = 1.0  # the smallest probe p-value times the number of probes (Bonferroni), capped at 1
    false_alarm: float = DEFAULT_FALSE_ALARM
    top_class: int | None = None  # the deciding probe's top class, flagged or not

    @property
    def candidate(self) -> Trigger | None:
        """A recovered trigger of the most anomalous class (whether or not it stands out).

        The deciding probe's own trigger when it recovers triggers; when the margin probe decides (it
        recovers none), the trigger probe's trigger for that class with the higher held-out flip rate.
        """
        report = next(r for r in self.probes if r.kind == self.probe)
        k = report.smallest_class
        if report.kind != "margin":
            return report.triggers[k]
        found = [(r.flips[k] or 0.0, r.triggers[k]) for r in self.probes
                 if r.kind != "margin" and r.triggers[k] is not None]
        return max(found, key=lambda f: f[0])[1] if found else None

    @property
    def trigger(self) -> Trigger | None:
        """The recovered trigger of the suspected class; None when no class stands out."""
        return self.candidate if self.suspected_class is not None else None

    def verdict_line(self) -> str:
        """One sentence: 'backdoor suspected: class 0, anomaly 6.1 (mask probe; p 0.0003, below the 1% false-alarm
        rate)'
        or 'no class stands out at a 1% false-alarm rate (p 0.41; top class 3, anomaly 1.3)'."""
        rate = format_rate(self.false_alarm)
        if self.suspected_class is not None:
            return (f"backdoor suspected: class {self.suspected_class}, anomaly {self.anomaly_index:.1f} "
                    f"({self.probe} probe; p {format_p(self.p_value)}, below the {rate} false-alarm rate)")
        return (f"no class stands out at a {rate} false-alarm rate (p {format_p(self.p_value)}; top class "
                f"{self.top_class}, anomaly {self.anomaly_index:.1f}, {self.probe} probe)")

    def to_dict(self) -> dict:
        """JSON-ready: plain numbers, None for missing values (never NaN), no tensors."""
        return {
            "verdict": self.verdict,
            "suspected_class": self.suspected_class,
            "anomaly_index": _num(self.anomaly_index),
            "probe": self.probe,
            "statistic": self.statistic,
            "threshold": _num(self.threshold),
            "p_value": _num(self.p_value),
            "false_alarm": self.false_alarm,
            "top_class": self.top_class,
            "classes": [{"class": c.cls, "mask_l1": _num(c.mask_l1), "mask_flip": _num(c.mask_flip),
                         "perturbation": _num(c.perturbation), "perturbation_flip": _num(c.perturbation_flip),
                         "margin": _num(c.margin)}
                        for c in self.classes],
            "probes": [{"kind": r.kind, "anomaly_index": _num(r.anomaly_index), "threshold": _num(r.threshold),
                        "smallest_class": r.smallest_class, "p_value": _num(r.p_value),
                        "scores": [_num(v) for v in r.scores],
                        "flagged": r.flagged, "steps": r.steps, "images_forwarded": r.forwarded}
                       for r in self.probes],
            "fit_images": self.fit_images,
            "measure_images": self.measure_images,
            "seconds": round(self.seconds, 2),
            "device": self.device,
        }


def _num(value: float | None) -> float | None:
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return None
    return float(f"{float(value):.6g}") if abs(value) < 1e-3 else round(float(value), 6)


def format_p(p: float | None) -> str:
    """A p-value for people: 0.41, 0.003, 2e-04 (the simulation's floor shows as '<=' that floor)."""
    if p is None:
        return "-"
    return f"{p:.2g}" if p >= 0.01 else f"{p:.1g}"


def format_rate(rate: float) -> str:
    """0.01 -> '1%', 0.005 -> '0.5%'."""
    return f"{rate * 100:g}%"


@dataclass(frozen=True)
class ScanStarted:
    classes: int
    fit_images: int
    measure_images: int
    probes: tuple[str, ...]
    device: str


@dataclass(frozen=True)
class ScanProgress:
    """Reported every few optimiser steps; ``fraction`` runs 0..1 over the whole scan."""

    probe: str
    step: int
    steps: int
    active: int  # classes still optimised by this probe
    fraction: float


@dataclass(frozen=True)
class ScanFinished:
    result: ScanResult


ScanEvent = Union[ScanStarted, ScanProgress, ScanFinished]


class ScanCancelled(BcuError):
    """The user stopped the scan; nothing was produced."""


def split_images(images: torch.Tensor, config: ScanConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit, measure): a seeded, disjoint split of the unlabelled images (about half each, capped)."""
    n = len(images)
    if n < 3:
        raise ConfigError(f"a scan needs at least 3 unlabelled images, got {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed))
    half = max(2, n // 2)
    fit = order[:min(half, config.fit_images)]
    measure = order[half:][:config.measure_images]
    return images[fit], images[measure]


def scan(model: nn.Module, images: torch.Tensor, normalization: Normalization, num_classes: int,
         config: ScanConfig | None = None, plan: ComputePlan | None = None) -> Iterator[ScanEvent]:
    """Scan ``model`` for a backdoor using unlabelled uint8 NCHW ``images``; yields events (see module doc).

    The model is moved to the plan's device and left there, in eval mode; its parameters' ``requires_grad``
    flags are restored afterwards (also on cancel).
    """
    config = config or ScanConfig()
    plan = plan or plan_compute("cpu", "fp32")
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ConfigError(f"expected uint8 [N, 3, H, W] images, got {images.dtype} {tuple(images.shape)}")
    if num_classes < 2:
        raise ConfigError(f"a scan needs a model with at least 2 classes, got {num_classes}")
    t0 = time.perf_counter()
    fit_u8, measure_u8 = split_images(images, config)
    device = plan.device
    mean = torch.tensor(normalization.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(normalization.std, device=device).view(1, -1, 1, 1)
    model = model.to(device).eval()
    flags = [p.requires_grad for p in model.parameters()]
    yield ScanStarted(num_classes, len(fit_u8), len(measure_u8), config.probes, plan.describe())
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        fit = fit_u8.to(device).float() / 255.0
        with torch.no_grad(), plan.autocast():
            x = to_model_input(fit_u8.to(device), mean, std)
            labels = model(x.contiguous(memory_format=torch.channels_last) if plan.channels_last else x).argmax(1)
        outcomes: list[ProbeOutcome | MarginOutcome] = []
        # progress in units of images through the model: a margin step costs K * starts, a trigger probe's
        # step at most K * batch (early stopping makes it less, and the bar then jumps ahead)
        costs = {k: (config.margin.steps * config.margin.starts if k == "margin"
                     else config.settings.steps * config.settings.batch_size) for k in config.probes}
        total = float(sum(costs.values()))
        done = 0.0
        normalize = lambda z: (z - mean) / std  # noqa: E731
        for kind in config.probes:
            with torch.enable_grad():
                if kind == "margin":
                    events = run_margin_probe(model, fit, num_classes, normalize, plan, config.margin)
                else:
                    events = run_probe(kind, model, fit, labels, num_classes, normalize, plan, config.settings)
                for event in events:
                    if isinstance(event, (ProbeStep, MarginStep)):
                        share = costs[kind] * event.step / event.steps
                        active = event.active if isinstance(event, ProbeStep) else num_classes
                        yield ScanProgress(kind, event.step, event.steps, active, min(1.0, (done + share) / total))
                    else:
                        outcomes.append(event)
            done += costs[kind]
            steps = config.margin.steps if kind == "margin" else config.settings.steps
            yield ScanProgress(kind, steps, steps, 0, min(1.0, done / total))
        result = _judge(model, outcomes, measure_u8, normalization, num_classes, config, plan,
                        len(fit_u8), time.perf_counter() - t0)
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
    yield ScanFinished(result)


def _scores(values: list[float]) -> list[float]:
    """Per-class values (larger = more suspicious, positive) divided by their median."""
    med = statistics.median(values)
    return [v / med if med > 0 else v for v in values]


def _judge(model: nn.Module, outcomes: list[ProbeOutcome | MarginOutcome], measure: torch.Tensor,
           normalization: Normalization, num_classes: int, config: ScanConfig, plan: ComputePlan, fit_count: int,
           seconds: float) -> ScanResult:
    alpha = config.false_alarm / len(outcomes)  # each probe's share (Bonferroni)
    reports = []
    for out in outcomes:
        if isinstance(out, MarginOutcome):
            kind, sizes, triggers, flips = "margin", out.margins, (None,) * num_classes, (None,) * num_classes
            values = [max(v, 1e-6) for v in out.margins]
        else:
            kind, sizes, triggers = out.kind, out.sizes, out.triggers
            flips = tuple(None if t is None else proxy_asr(model, measure, t, normalization, plan=plan)
                          for t in out.triggers)
            values = [1.0 / v for v in filled(out.sizes, out.ceiling)]  # smaller trigger = larger value
        scores = _scores(values)
        test = top_class_test(scores, alpha, seed=config.seed)
        reports.append(ProbeReport(kind, scores[test.cls], test.threshold(), test.cls, test.p_value < alpha,
                                   tuple(sizes), flips, tuple(triggers), out.steps, out.forwarded,
                                   test.p_value, tuple(scores)))
    best, p_value = bonferroni([r.p_value for r in reports])
    top = reports[best]
    by_kind = {r.kind: r for r in reports}
    rows = []
    for k in range(num_classes):
        m, p, g = by_kind.get("mask"), by_kind.get("perturbation"), by_kind.get("margin")
        rows.append(ClassScore(k, m.sizes[k] if m else None, m.flips[k] if m else None,
                               p.sizes[k] if p else None, p.flips[k] if p else None,
                               g.sizes[k] if g else None))
    flagged = p_value < config.false_alarm
    return ScanResult(
        verdict="backdoor" if flagged else "clean",
        suspected_class=top.smallest_class if flagged else None,
        anomaly_index=top.anomaly_index,
        probe=top.kind,
        statistic=config.statistic,
        threshold=top.threshold,
        classes=tuple(rows),
        probes=tuple(reports),
        fit_images=fit_count,
        measure_images=len(measure),
        seconds=seconds,
        device=plan.describe(),
        p_value=p_value,
        false_alarm=config.false_alarm,
        top_class=top.smallest_class,
    )


def run_scan(model: nn.Module, images: torch.Tensor, normalization: Normalization, num_classes: int,
             config: ScanConfig | None = None, plan: ComputePlan | None = None, *,
             progress: Callable[[ScanEvent], None] | None = None,
             cancel: Callable[[], bool] | None = None) -> ScanResult:
    """:func:`scan` as one call: ``progress`` sees every event; ``cancel()`` returning True raises
    :class:`ScanCancelled` at the next event (within one window of steps)."""
    events = scan(model, images, normalization, num_classes, config, plan)
    try:
        for event in events:
            if progress is not None:
                progress(event)
            if isinstance(event, ScanFinished):
                return event.result
            if cancel is not None and cancel():
                raise ScanCancelled("scan cancelled")
    finally:
        events.close()
    raise RuntimeError("the scan ended without a result")  # pragma: no cover - scan always finishes
