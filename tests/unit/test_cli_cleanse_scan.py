"""`bcu demo --scan` (the same code path as `bcu cleanse --scan`) on a cut-down demo: the proxy-ASR curve
lands in metrics.jsonl, both verdicts in summary.json, the console prints them side by side, and bad scan
options are one line and exit 2."""

from __future__ import annotations

import json

import pytest

from bcu_gui.cli import main
from bcu_gui.core.outcome import EXIT_RUINED
from bcu_gui.core.summary import RunSummary

QUICK = ["--epochs", "1", "--scan-steps", "8", "--scan-limit", "60", "--device", "cpu", "--precision", "fp32"]


@pytest.mark.slow
def test_demo_with_scan_records_the_proxy_curve_and_both_verdicts(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["demo", "--scan", *QUICK, "--out", str(run)]) == EXIT_RUINED  # 1 epoch of the demo: ruined, and said
    captured = capsys.readouterr()
    header, scan_row, proxy_row = captured.out.splitlines()[-3:]
    assert header.split() == ["teacher", "cleansed"]
    assert scan_row.startswith("scan") and scan_row.count("anomaly") == 2
    # n/a when such a short scan names no class (then there is no trigger to stamp)
    assert proxy_row.startswith("proxy ASR") and len(proxy_row.split()) == 4
    assert "scanning the model before cleansing" in captured.err and "scan of the cleansed model" in captured.err
    assert captured.err.count("scanning the model before cleansing") <= 5  # progress, not a flood
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1 and "proxy_asr" in metrics[0]["extra"]
    summary = RunSummary.from_dict(json.loads((run / "summary.json").read_text()))
    assert summary.teacher_scan is not None and summary.cleansed_scan is not None
    assert summary.teacher_scan.verdict in ("backdoor", "clean")
    assert summary.cleansed_scan.verdict in ("backdoor", "clean")


@pytest.mark.parametrize("flag, value, message", [("--scan-steps", "0", "--scan-steps must be at least 1"),
                                                  ("--scan-limit", "2", "--scan-limit must be at least 3")])
def test_bad_scan_options_are_one_line_and_exit_2(tmp_path, capsys, flag, value, message):
    assert main(["demo", "--scan", flag, value, "--device", "cpu", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
