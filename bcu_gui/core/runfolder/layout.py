"""The names of the files in a run folder: the one place that knows them, so writer and readers agree.

A run folder (``bcu cleanse --out``, or a timestamped folder under the runs root) is a self-describing record
of one cleansing run; every file in it is written whole and atomically (core/atomic.py)::

    config.json          everything needed to run it again (CleanseConfig.to_dict plus a "resolved" record)
    environment.json     the machine, library versions and device the run used (core/environment.py)
    running.json         the heartbeat, while a process writes the folder (core/heartbeat.py)
    failed.json          why the run failed, when it did (core/heartbeat.py)
    metrics.jsonl        one JSON line per completed epoch
    resume.pt            the resume point while the run is unfinished (core/resume.py, weights only)
    summary.json         teacher and final ACC/ASR, re-init counts, time, whether it was cancelled
    cleansed.pt          the student as a plain state_dict
    cleansed.safetensors the same weights as safetensors
    cleansed.json        sidecar: architecture, classes, input size, normalisation
    features.npz         feature-space frames, when asked for (core/feature_space.py)
    original_form/       the student saved back in the checkpoint's own form (core/saveback.py)
    scan/<phase>/        a scan's pictures and scan.json, phase teacher or cleansed (core/scan/pictures.py)
    report.html          the offline report, when one is written into the folder (core/report.py)

Nothing here reads or writes a file: this module is names only and imports nothing.
"""

from __future__ import annotations

CONFIG_FILE = "config.json"
ENVIRONMENT_FILE = "environment.json"
HEARTBEAT_FILE = "running.json"
FAILED_FILE = "failed.json"
METRICS_FILE = "metrics.jsonl"
RESUME_FILE = "resume.pt"
SUMMARY_FILE = "summary.json"
MODEL_STEM = "cleansed"  # cleansed.pt, cleansed.safetensors and the cleansed.json sidecar
MODEL_FILE = f"{MODEL_STEM}.pt"
SIDECAR_FILE = f"{MODEL_STEM}.json"
FEATURES_FILE = "features.npz"
ORIGINAL_FORM_FOLDER = "original_form"
SCAN_FOLDER = "scan"
SCAN_FILE = "scan.json"
SCAN_PHASES = ("teacher", "cleansed")  # scan/<phase>/
REPORT_NAME = "report.html"

# any one of these makes a folder look like a run's (a cheap test on names only)
RUN_MARKERS = (CONFIG_FILE, SUMMARY_FILE, METRICS_FILE, RESUME_FILE)
