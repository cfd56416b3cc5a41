"""Scanning around a cleansing run: the teacher before, proxy ASR every epoch, a fresh scan of the result.

``ScanHook`` is a ``training.RunHook``, so the job's loop does not know scans exist:

- ``on_start``: the teacher's scan (or one already made, e.g. by the app's Scan action on the same model
  and images) gives the suspected class and its recovered trigger; the teacher's proxy ASR is measured;
- ``on_epoch_end``: the student's proxy ASR under that trigger, returned as ``{"proxy_asr": ...}`` so it joins
  the epoch's record, ``metrics.jsonl`` and ``state.metrics`` (a keep rule may read it);
- ``on_finish``: the saved model's proxy ASR, then a FRESH scan of it (a cleansed model may keep a different
  shortcut than the teacher's, which only a new inversion finds);
- ``summary_fields``: both verdicts as ``ScanRecord`` for the ``RunSummary``.

Proxy ASR is measured on the scan's measure split (images the trigger was not fitted on). A scan is long
(tens of seconds) and a hook cannot yield events, so progress goes to a ``progress(phase, event)`` callback
("teacher" or "cleansed", with the scan's own events) and ``cancel()`` is polled between the scan's steps: a
stopped run skips (or abandons) the scan of the cleansed model rather than failing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from ..normalization import Normalization
from ..summary import ScanRecord
from ..training import RunHook
from .scanner import ScanCancelled, ScanConfig, ScanEvent, ScanResult, run_scan, split_images
from .trigger import Trigger, proxy_asr

if TYPE_CHECKING:
    from ..training import Distiller

UNSCANNED = "unscanned"  # a cleansed model whose own scan did not run (the run was stopped)
PROXY_KEY = "proxy_asr"  # the EpochEnd / metrics.jsonl / state.metrics key
Progress = Callable[[str, ScanEvent], None]


def record(result: ScanResult, proxy: float | None) -> ScanRecord:
    """The summary's view of a scan result, with a model's proxy ASR under the teacher's trigger."""
    return ScanRecord(verdict=result.verdict, suspected_class=result.suspected_class,
                      anomaly_index=_finite(result.anomaly_index), probe=result.probe,
                      threshold=_finite(result.threshold), proxy_asr=proxy, p_value=result.p_value,
                      false_alarm=result.false_alarm)


def _finite(value: float) -> float | None:
    return float(value) if value == value and abs(value) != float("inf") else None


class ScanHook(RunHook):
    """Scan the teacher, follow the student's proxy ASR per epoch, scan the cleansed model (module doc)."""

    provides = ("proxy_asr",)  # keep=proxy ranks epochs by it

    def __init__(self, images: torch.Tensor | Callable[[], torch.Tensor], normalization: Normalization, num_classes: int,
                 config: ScanConfig | None = None, *, teacher_result: ScanResult | None = None,
                 rescan: bool = True, progress: Progress | None = None,
                 cancel: Callable[[], bool] | None = None) -> None:
        self.config = config or ScanConfig()
        self._images = images  # or a function reading them, called in the run's thread (the app's worker)
        self.normalization = normalization
        self.num_classes = num_classes
        self.rescan = rescan
        self.progress = progress
        self.cancel = cancel  # settable after construction: a job is built after its hooks
        self._measure: torch.Tensor | None = None
        self.teacher_result = teacher_result
        self.cleansed_result: ScanResult | None = None
        self.teacher_proxy: float | None = None
        self.cleansed_proxy: float | None = None
        self.note = ""  # why the cleansed model was not scanned, if it was not

    @property
    def images(self) -> torch.Tensor:
        if callable(self._images):
            self._images = self._images()
        return self._images

    @property
    def measure(self) -> torch.Tensor:
        """Held-out images (the scan's measure split) the proxy ASR is measured on."""
        if self._measure is None:
            self._measure = split_images(self.images, self.config)[1]
        return self._measure

    @property
    def trigger(self) -> Trigger | None:
        """The teacher's recovered trigger of its suspected class (None when no class stands out)."""
        return self.teacher_result.trigger if self.teacher_result is not None else None

    def _scan(self, phase: str, model: torch.nn.Module, run: "Distiller") -> ScanResult:
        relay = None if self.progress is None else (lambda event: self.progress(phase, event))
        return run_scan(model, self.images, self.normalization, self.num_classes, self.config, run.plan,
                        progress=relay, cancel=self.cancel)

    def _proxy(self, model: torch.nn.Module, run: "Distiller") -> float | None:
        trigger = self.trigger
        if trigger is None:
            return None
        was_training = model.training
        model.eval()
        try:
            return proxy_asr(model, self.measure, trigger, self.normalization, plan=run.plan)
        finally:
            model.train(was_training)

    # -- the run's moments ----------------------------------------------------------------------------------
    def on_start(self, run: "Distiller") -> None:
        if self.teacher_result is None:
            try:
                self.teacher_result = self._scan("teacher", run.teacher, run)
            except ScanCancelled:  # the run was stopped during the scan: it ends right away, unscanned
                self.note = "the run was stopped while the teacher was scanned"
                return
        self.teacher_proxy = self._proxy(run.teacher, run)

    def on_epoch_end(self, run: "Distiller") -> dict[str, float | None]:
        return {PROXY_KEY: self._proxy(run.student, run)}

    def on_finish(self, run: "Distiller") -> None:
        self.cleansed_proxy = self._proxy(run.student, run)
        if not self.rescan or self.teacher_result is None:
            return
        if self.cancel is not None and self.cancel():
            self.note = "the run was stopped, so the cleansed model was not scanned"
            return
        was_training = run.student.training
        try:
            self.cleansed_result = self._scan("cleansed", run.student, run)
        except ScanCancelled:
            self.note = "the scan of the cleansed model was stopped"
        finally:
            run.student.train(was_training)

    def write_files(self, folder: Path) -> list[Path]:
        """Each scanned model's recovered trigger and stamped held-out images under ``folder/scan/`` (pictures.py)."""
        from ..runfolder.layout import SCAN_FOLDER, SCAN_PHASES
        from .pictures import write_scan_pictures

        written: list[Path] = []
        for phase, result in zip(SCAN_PHASES, (self.teacher_result, self.cleansed_result)):
            if result is not None:
                written += write_scan_pictures(Path(folder) / SCAN_FOLDER / phase, result, self.measure)
        return written

    def summary_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        if self.teacher_result is not None:
            fields["teacher_scan"] = record(self.teacher_result, self.teacher_proxy)
        if self.cleansed_result is not None:
            fields["cleansed_scan"] = record(self.cleansed_result, self.cleansed_proxy)
        elif self.teacher_result is not None:  # stopped: keep the saved model's proxy ASR all the same
            fields["cleansed_scan"] = ScanRecord(verdict=UNSCANNED, suspected_class=None, anomaly_index=None,
                                                 proxy_asr=self.cleansed_proxy)
        return fields
