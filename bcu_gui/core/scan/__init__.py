"""Scan a model for a backdoor without labels or triggered images (maximum margin, trigger inversion, a
calibrated p-value), and proxy ASR.

Pure PyTorch, no Qt. The CLI's ``bcu scan`` and the app's scan view both drive :func:`scan` (a generator of
events) or :func:`run_scan`; a cleansing job calls :func:`proxy_asr` with the teacher's recovered trigger
after every epoch.
"""

from .anomaly import STATISTICS, mad_index, median_ratio
from .calibration import DEFAULT_FALSE_ALARM, top_class_test
from .margin import MarginSettings
from .probes import ProbeSettings
from .scanner import (
    PROBE_KINDS, ClassScore, ProbeReport, ScanCancelled, ScanConfig, ScanEvent, ScanFinished, ScanProgress,
    ScanResult, ScanStarted, VERDICTS, format_p, format_rate, run_scan, scan, split_images,
)
from .trigger import Trigger, proxy_asr, stamp
from .export import write_triggered_set  # noqa: E402
from .hook import PROXY_KEY, ScanHook  # noqa: E402 (needs the scanner above)

__all__ = [
    "DEFAULT_FALSE_ALARM", "MarginSettings", "PROBE_KINDS", "format_p", "format_rate", "top_class_test",
    "ClassScore", "ProbeReport", "ProbeSettings", "ScanCancelled", "ScanConfig", "ScanEvent", "ScanFinished",
    "ScanProgress", "ScanResult", "ScanHook", "PROXY_KEY", "write_triggered_set", "ScanStarted", "STATISTICS", "Trigger", "VERDICTS", "mad_index",
    "median_ratio", "proxy_asr", "run_scan", "scan", "split_images", "stamp",
]
