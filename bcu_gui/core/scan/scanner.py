"""The scan: invert a trigger for every class with both probes, then judge whether one class stands out.

Needs only the model and unlabelled images. The images are split once (seeded): triggers are fitted on one
part and their flip rates measured on the other, so a trigger that merely memorised its fitting images
does not look stronger than it is.

The scan is a generator of typed events (:class:`ScanStarted`, :class:`ScanProgress`, then
:class:`ScanFinished` carrying the frozen :class:`ScanResult`), so the CLI prints them and the app's worker
relays them; a consumer cancels by no longer iterating (``close()``), which stops within one step.
:func:`run_scan` wraps it with a progress callback and a cancel flag for callers that want a plain call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Union

import torch
from torch import nn

from ..data import to_model_input
from ..devices import ComputePlan, plan_compute
from ..errors import BcuError, ConfigError
from ..normalization import Normalization
from .anomaly import STATISTICS, smallest
from .probes import ProbeOutcome, ProbeSettings, ProbeStep, run_probe
from .trigger import Trigger, proxy_asr

VERDICTS = ("backdoor", "clean")


@dataclass(frozen=True)
class ScanConfig:
    """Everything that decides a scan's result. Defaults measured on digits models (README)."""

    probes: tuple[str, ...] = ("mask", "perturbation")
    fit_images: int = 200  # at most this many unlabelled images fit the triggers
    measure_images: int = 200  # at most this many others measure their flip rates
    settings: ProbeSettings = field(default_factory=ProbeSettings)
    statistic: str = "median_ratio"
    # anomaly index at or above which a probe flags its smallest class; per probe, because a perturbation
    # budget varies far less from class to class than a mask norm does
    mask_threshold: float = 2.0
    perturbation_threshold: float = 1.5
    seed: int = 0

    def threshold(self, probe: str) -> float:
        return self.mask_threshold if probe == "mask" else self.perturbation_threshold

    def __post_init__(self) -> None:
        unknown = [p for p in self.probes if p not in ("mask", "perturbation")]
        if unknown or not self.probes:
            raise ConfigError(f"unknown scan probe(s) {unknown or self.probes}; use mask and/or perturbation")
        if self.statistic not in STATISTICS:
            raise ConfigError(f"unknown anomaly statistic '{self.statistic}'; use one of {', '.join(STATISTICS)}")
        if min(self.mask_threshold, self.perturbation_threshold) <= 0:
            raise ConfigError("anomaly thresholds must be positive")
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


@dataclass(frozen=True)
class ProbeReport:
    """One probe's verdict: its anomaly index, the class with the smallest trigger, and every trigger."""

    kind: str
    anomaly_index: float
    threshold: float
    smallest_class: int
    flagged: bool
    sizes: tuple[float | None, ...]
    flips: tuple[float | None, ...]
    triggers: tuple[Trigger | None, ...] = field(repr=False)
    steps: int = 0
    forwarded: int = 0  # stamped images through the model, forward and backward


@dataclass(frozen=True)
class ScanResult:
    """The scan's outcome: typed, frozen, and turned into JSON by :meth:`to_dict`."""

    verdict: str  # "backdoor" or "clean"
    suspected_class: int | None
    anomaly_index: float  # the deciding probe's index
    probe: str  # the deciding probe: the one that flagged (the farther past its threshold if both did), else
    # the one nearest to its threshold
    statistic: str
    threshold: float  # the deciding probe's threshold
    classes: tuple[ClassScore, ...]
    probes: tuple[ProbeReport, ...]
    fit_images: int
    measure_images: int
    seconds: float
    device: str

    @property
    def candidate(self) -> Trigger | None:
        """The trigger of the most anomalous class (whether or not it passed the threshold)."""
        report = next(r for r in self.probes if r.kind == self.probe)
        return report.triggers[report.smallest_class]

    @property
    def trigger(self) -> Trigger | None:
        """The recovered trigger of the suspected class; None when no class stands out."""
        return self.candidate if self.suspected_class is not None else None

    def verdict_line(self) -> str:
        """One sentence for a person: 'backdoor suspected: class 0, anomaly 6.1' or 'no class stands out'."""
        if self.suspected_class is not None:
            return (f"backdoor suspected: class {self.suspected_class}, anomaly {self.anomaly_index:.1f} "
                    f"({self.probe} probe)")
        return f"no class stands out (anomaly {self.anomaly_index:.1f} < {self.threshold:g})"

    def to_dict(self) -> dict:
        """JSON-ready: plain numbers, None for missing values (never NaN), no tensors."""
        return {
            "verdict": self.verdict,
            "suspected_class": self.suspected_class,
            "anomaly_index": _num(self.anomaly_index),
            "probe": self.probe,
            "statistic": self.statistic,
            "threshold": self.threshold,
            "classes": [{"class": c.cls, "mask_l1": _num(c.mask_l1), "mask_flip": _num(c.mask_flip),
                         "perturbation": _num(c.perturbation), "perturbation_flip": _num(c.perturbation_flip)}
                        for c in self.classes],
            "probes": [{"kind": r.kind, "anomaly_index": _num(r.anomaly_index), "threshold": r.threshold,
                        "smallest_class": r.smallest_class,
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
    return round(float(value), 6)


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
        outcomes: list[ProbeOutcome] = []
        total = config.settings.steps * len(config.probes)
        for i, kind in enumerate(config.probes):
            with torch.enable_grad():
                for event in run_probe(kind, model, fit, labels, num_classes, lambda z: (z - mean) / std, plan,
                                       config.settings):
                    if isinstance(event, ProbeStep):
                        done = i * config.settings.steps + event.step
                        yield ScanProgress(kind, event.step, event.steps, event.active, min(1.0, done / total))
                    else:
                        outcomes.append(event)
            yield ScanProgress(kind, config.settings.steps, config.settings.steps, 0, (i + 1) / len(config.probes))
        result = _judge(model, outcomes, measure_u8, normalization, num_classes, config, plan,
                        len(fit_u8), time.perf_counter() - t0)
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
    yield ScanFinished(result)


def _judge(model: nn.Module, outcomes: list[ProbeOutcome], measure: torch.Tensor, normalization: Normalization,
           num_classes: int, config: ScanConfig, plan: ComputePlan, fit_count: int, seconds: float) -> ScanResult:
    stat = STATISTICS[config.statistic]
    reports = []
    for out in outcomes:
        flips = tuple(None if t is None else proxy_asr(model, measure, t, normalization, plan=plan)
                      for t in out.triggers)
        index = stat(out.sizes, out.ceiling)
        threshold = config.threshold(out.kind)
        reports.append(ProbeReport(out.kind, index, threshold, smallest(out.sizes, out.ceiling), index >= threshold,
                                   out.sizes, flips, out.triggers, out.steps, out.forwarded))
    top = max(reports, key=lambda r: r.anomaly_index / r.threshold)
    by_kind = {r.kind: r for r in reports}
    rows = []
    for k in range(num_classes):
        m, p = by_kind.get("mask"), by_kind.get("perturbation")
        rows.append(ClassScore(k, m.sizes[k] if m else None, m.flips[k] if m else None,
                               p.sizes[k] if p else None, p.flips[k] if p else None))
    flagged = top.flagged
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
