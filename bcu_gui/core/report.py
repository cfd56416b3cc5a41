"""One run (or one sweep) as ONE self-contained HTML file that opens offline in any browser.

The report reads only the run folder's own records, through ``runfolder.reader.read_run``: ``config.json``,
``metrics.jsonl``, ``summary.json`` (:class:`RunSummary`), ``environment.json``, the ``cleansed.json`` sidecar
and the scan's pictures under ``scan/`` (core/scan/pictures.py). Curves are PNGs drawn with matplotlib's
Agg backend and embedded as ``data:`` URIs, as are the recovered trigger's pictures; the page loads nothing
(no script, no font, no style sheet, no image from anywhere) and says so to the browser with a
Content-Security-Policy.

Run folders are untrusted input (a colleague's folder, a downloaded one): every string taken from a file is
escaped before it reaches the page, numbers are checked to be numbers, pictures to be PNGs of modest size,
and a damaged file becomes a line under "Problems reading the folder" rather than a failed report.

A sweep folder (``sweep.csv``, one run folder per setting) gives one page: the CSV as a table, every run's
final scores from its own ``summary.json``, and final ACC against ASR (proxy ASR without a triggered set) with
the Pareto front. The sweep's CSV columns are shown as they are, not interpreted, so the page does not
depend on how the sweep names them.
"""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import html
import io
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

from . import atomic, report_charts, untrusted
from .errors import ConfigError
from .numbers import finite, pct
from .runfolder import layout
from .runfolder.layout import REPORT_NAME
from .runfolder.reader import MAX_JSON_BYTES, RunRecord, is_run_folder, read_json_lenient, read_run

SWEEP_CSV = "sweep.csv"
SWEEP_JSON = "sweep.json"
MAX_CSV_ROWS = 5000
SCAN_PHASES = tuple(zip(layout.SCAN_PHASES, ("Teacher (before cleansing)", "Cleansed model (after)")))


class ReportExistsError(ConfigError):
    """The report's file exists and the caller did not say it may be replaced."""


# ---------------------------------------------------------------------------------------------- HTML bits

def esc(value: Any) -> str:
    """Any value as text safe inside HTML (element content and quoted attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def fmt(value: Any, spec: str = "") -> str:
    """A number formatted with ``spec``, any other value escaped as text; '-' for None."""
    if value is None:
        return "-"
    v = finite(value)
    if v is not None and spec:
        return esc(format(v, spec))
    return esc(value)


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _img(data: bytes, alt: str, css: str = "chart") -> str:
    return f'<img class="{css}" alt="{esc(alt)}" src="{_png_uri(data)}">'


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], css: str = "") -> str:
    """``header`` is escaped here; each cell of ``rows`` must already be HTML (escaped by its maker)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _kv(rows: Iterable[tuple[str, str]]) -> str:
    """A two-column table: label (escaped here) and value (already HTML)."""
    body = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv"><tbody>{body}</tbody></table>'


def _grid(rows: Iterable[tuple[str, str]]) -> str:
    """Label / value pairs in two columns of pairs (long settings lists); labels escaped here, values HTML."""
    return '<dl class="grid">' + "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{esc(title)}</h2>{body}</section>'


def _json_value(value: Any, nested: bool = False) -> str:
    """A config value as short escaped text a person reads: no raw ``null`` or JSON braces.

    None is "default" at the top level (the setting was left to the program) and "none" inside a record;
    a record (dict) becomes ``key: value`` lines, a list a comma-separated line.
    """
    if value is None:
        return "none" if nested else '<span class="muted">default</span>'
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return "<br>".join(f"{esc(k)}: {_json_value(v, nested=True)}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(_json_value(v, nested=True) for v in value) or "-"
    return esc(value)


STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;background:#f4f5f7;color:#1d2128}
main{max-width:1060px;margin:0 auto;padding:24px 28px 60px}
header{background:#1d2b3a;color:#fff;padding:22px 28px}
header .inner{max-width:1060px;margin:0 auto}
header h1{margin:0 0 6px;font-size:24px}
header p{margin:2px 0;color:#c9d3de;font-size:14px;overflow-wrap:anywhere}
nav{margin-top:10px;font-size:13px}
nav a{color:#9cc3ff;margin-right:14px;text-decoration:none}
section{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:14px 20px 18px;margin:18px 0}
h2{font-size:18px;margin:4px 0 12px;color:#1d2b3a}
h3{font-size:15px;margin:16px 0 8px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{padding:4px 10px;border-bottom:1px solid #e6e8eb;text-align:left;vertical-align:top;overflow-wrap:break-word}
thead th{background:#eef1f4;font-weight:600}
table.kv th{font-weight:600;color:#4a5563;white-space:nowrap;width:1%}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
code{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px;overflow-wrap:anywhere}
.status{white-space:nowrap;display:inline-block;padding:2px 9px;border-radius:10px;font-size:13px;font-weight:600}
.ok{background:#d8f0dc;color:#1d6b2e}.warn{background:#fdecc8;color:#8a5a00}.bad{background:#f9d6d5;color:#9b1c1c}
.verdict-backdoor{color:#b42318;font-weight:600}.verdict-clean{color:#1d6b2e;font-weight:600}
img.chart{max-width:100%;height:auto;display:block;margin:8px 0}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:10px;align-items:start}
dl.grid{display:grid;grid-template-columns:max-content minmax(0,1fr) max-content minmax(0,1fr);gap:0;font-size:13px;margin:6px 0}
dl.grid dt{font-weight:600;color:#4a5563;padding:4px 10px;border-bottom:1px solid #e6e8eb}
dl.grid dd{margin:0;padding:4px 10px;border-bottom:1px solid #e6e8eb;overflow-wrap:anywhere}
.pictures{display:flex;flex-wrap:wrap;gap:8px;margin:6px 0 10px}
.pictures figure{margin:0;text-align:center;font-size:12px;color:#4a5563}
img.pixel{width:64px;height:64px;image-rendering:pixelated;border:1px solid #ccd;background:#fff}
.bar{background:#e6e8eb;border-radius:3px;height:10px;width:160px;display:inline-block;vertical-align:middle}
.bar span{display:block;height:10px;border-radius:3px;background:#1f77b4}
.muted{color:#6b7480;font-size:13px}
.problems{border-color:#f0b429;background:#fffaeb}
details summary{cursor:pointer;color:#1d4f91;font-size:14px;margin:6px 0}
"""

# Defence in depth: even if a string escaped the escaping, the page can run no script and fetch nothing.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def _page(title: str, header: str, nav: Sequence[tuple[str, str]], sections: Sequence[str]) -> str:
    from .. import __version__

    links = "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t in nav)
    made = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
        f'<header><div class="inner">{header}<nav>{links}</nav></div></header><main>'
        + "".join(sections)
        + f'<p class="muted">Made by BCU Studio {esc(__version__)} on {esc(made)}. '
          "This page is self-contained: it loads nothing from the network.</p></main></body></html>\n"
    )


# ---------------------------------------------------------------------------------------------- a run

def _status_badge(status: str) -> str:
    css = "ok" if status == "finished" else "bad" if status.startswith("failed") else "warn"
    return f'<span class="status {css}">{esc(status)}</span>'


def _resolved(rec: RunRecord) -> dict[str, Any]:
    resolved = (rec.config or {}).get("resolved")
    return resolved if isinstance(resolved, dict) else {}


def _model_info(rec: RunRecord) -> dict[str, Any]:
    model = _resolved(rec).get("model")
    if isinstance(model, dict):
        return model
    return rec.sidecar or {}


def _scan_record(rec: RunRecord, phase: str):
    if rec.summary is None:
        return None
    return rec.summary.teacher_scan if phase == "teacher" else rec.summary.cleansed_scan


def _verdict_html(scan) -> str:
    if scan is None:
        return "not scanned"
    css = "verdict-backdoor" if scan.verdict == "backdoor" else "verdict-clean" if scan.verdict == "clean" else ""
    return f'<span class="{css}">{esc(scan.verdict)}</span>: {esc(scan.verdict_line())}'


def _results_section(rec: RunRecord) -> str:
    s = rec.summary
    if s is None:
        last = rec.metrics[-1] if rec.metrics else None
        body = '<p class="muted">This run has no summary.json'
        body += (" yet (it is unfinished: <code>bcu cleanse --resume RUN_DIR</code> continues it)"
                 if rec.resumable else "") + ".</p>"
        if last is not None:
            body += _kv([("last epoch recorded", fmt(last.get("epoch"))), ("ACC", pct(last.get("acc"))),
                         ("ASR", pct(last.get("asr"))), ("proxy ASR", pct(last.get("proxy_asr")))])
        return _section("results", "Teacher against cleansed", body)
    t, c = s.teacher, s.cleansed
    ts, cs = s.teacher_scan, s.cleansed_scan
    rows = [
        ("ACC (clean accuracy)", pct(t.acc), pct(c.acc)),
        ("ASR (attack success)", pct(t.asr), pct(c.asr)),
        ("agreement with the teacher", pct(t.agreement), pct(c.agreement)),
    ]
    if ts is not None or cs is not None:
        rows.append(("proxy ASR (teacher's recovered trigger)", pct(ts.proxy_asr if ts else None),
                     pct(cs.proxy_asr if cs else None)))
        rows.append(("scan verdict", _verdict_html(ts), _verdict_html(cs)))
    rows.append(("epoch", "-", esc(f"{c.epoch}" + (" (partial)" if c.partial else ""))))
    table = _table(["", "teacher", "cleansed (saved)"], rows, "results")
    reason = f" &mdash; {esc(s.kept_reason)}" if s.kept_reason else ""
    kept = f"<p><b>Saved:</b> {esc(s.kept_text())}{reason}.</p>"
    outcome = s.outcome()
    css = "verdict-clean" if outcome.kind == "removed" else "verdict-backdoor" if not outcome.ok else ""
    verdict = f'<p><b>Verdict:</b> <span class="{css}">{esc(outcome.headline)}</span></p>'
    note = f'<p class="muted">{esc(s.note)}</p>' if s.note else ""
    others = [(name, sc) for name, sc in (("moving average (EMA)", s.ema), ("best epoch (lowest ASR)", s.best),
                                          ("lowest-proxy-ASR epoch", s.proxy)) if sc is not None]
    extra = ""
    if others:
        extra = "<h3>Other candidates</h3>" + _table(
            ["candidate", "epoch", "ACC", "ASR", "agreement"],
            [(esc(n), fmt(sc.epoch), pct(sc.acc), pct(sc.asr), pct(sc.agreement)) for n, sc in others])
    return _section("results", "Teacher against cleansed", verdict + table + kept + note + extra)


def _series(rec: RunRecord, key: str) -> list[Any]:
    return [m.get(key) for m in rec.metrics]


def _curves_section(rec: RunRecord) -> str:
    if not rec.metrics:
        return _section("curves", "Curves", '<p class="muted">No epoch was recorded (metrics.jsonl is empty or '
                                            "absent).</p>")
    epochs = [int(e) if finite(e) is not None else i + 1 for i, e in enumerate(_series(rec, "epoch"))]
    images = [_img(report_charts.loss_chart(epochs, _series(rec, "loss")), "loss per epoch")]
    series: dict[str, tuple[list[Any], str, str]] = {}
    # agreement first: it follows ACC closely and must not hide it
    for key, label, colour, style in (("agreement", "agreement", report_charts.GREY, "-"),
                                      ("acc", "ACC", report_charts.BLUE, "-"),
                                      ("asr", "ASR", report_charts.RED, "-"),
                                      ("proxy_asr", "proxy ASR", report_charts.ORANGE, "--"),
                                      ("ema_acc", "EMA ACC", report_charts.BLUE, ":"),
                                      ("ema_asr", "EMA ASR", report_charts.RED, ":")):
        values = _series(rec, key)
        if any(finite(v) is not None for v in values):
            series[label] = (values, colour, style)
    refs: dict[str, tuple[float | None, str, str]] = {}
    if rec.summary is not None:
        t = rec.summary.teacher
        refs = {"teacher ACC": (t.acc, report_charts.BLUE, "--"), "teacher ASR": (t.asr, report_charts.RED, "--")}
        if rec.summary.teacher_scan is not None:
            refs["teacher proxy ASR"] = (rec.summary.teacher_scan.proxy_asr, report_charts.ORANGE, ":")
    if series:
        images.append(_img(report_charts.rates_chart(epochs, series, refs), "ACC, ASR and proxy ASR per epoch"))
    rows = []
    for m in rec.metrics:
        rows.append([fmt(m.get("epoch")), fmt(m.get("loss"), ".4f"), pct(m.get("acc")), pct(m.get("asr")),
                     pct(m.get("proxy_asr")), pct(m.get("agreement")), fmt(m.get("lr"), ".5g"),
                     fmt(m.get("temperature"), ".2f"), fmt(m.get("seconds"), ".2f")])
    table = _table(["epoch", "loss", "ACC", "ASR", "proxy ASR", "agreement", "lr", "T", "seconds"], rows)
    return _section("curves", "Curves", f'<div class="charts">{"".join(images)}</div>'
                    + f"<details><summary>Every epoch ({len(rows)})</summary>{table}</details>")


def _scan_section(rec: RunRecord) -> str:
    parts = []
    for phase, title in SCAN_PHASES:
        record = _scan_record(rec, phase)
        files = rec.scans.get(phase, {})
        data = files.get("json") or {}
        if record is None and not files:
            continue
        rows = [("verdict", _verdict_html(record))] if record is not None else []
        if record is not None:
            rows += [("deciding probe", esc(record.probe or "-")), ("anomaly index", fmt(record.anomaly_index, ".2f"))]
            if record.p_value is not None:  # summaries from before the calibrated verdict have none
                rows += [("p-value (top class only)", fmt(record.p_value, ".2g")),
                         ("false-alarm rate", pct(record.false_alarm)),
                         ("index needed at that rate", fmt(record.threshold, ".2f"))]
            else:
                rows.append(("threshold", fmt(record.threshold, "g")))
            rows.append(("proxy ASR", pct(record.proxy_asr)))
        for key, label in (("fit_images", "images fitted on"), ("measure_images", "held-out images"),
                           ("seconds", "seconds"), ("device", "device")):
            if key in data:
                rows.append((label, fmt(data[key])))
        body = f"<h3>{esc(title)}</h3>" + _kv(rows)
        pictures = files.get("pictures") or []
        if pictures:
            figs = "".join(f"<figure>{_img(png, name, 'pixel')}<figcaption>{esc(name[:-4])}</figcaption></figure>"
                           for name, png in pictures)
            body += ("<p class=\"muted\">The most anomalous class's recovered trigger and held-out images "
                     f"stamped with it (shown enlarged):</p><div class=\"pictures\">{figs}</div>")
        classes = data.get("classes")
        if isinstance(classes, list) and classes:
            rows = [[fmt(c.get("class")), fmt(c.get("mask_l1"), ".1f"), pct(c.get("mask_flip")),
                     fmt(c.get("perturbation"), ".3f"), pct(c.get("perturbation_flip"))]
                    for c in classes if isinstance(c, dict)]
            body += ("<details><summary>Per class</summary>"
                     + _table(["class", "mask L1", "flip", "perturbation (L_inf, 0..1)", "flip"], rows) + "</details>")
        parts.append(f"<div>{body}</div>")
    if not parts:
        return _section("scan", "Scan", '<p class="muted">This run did not scan its models (no trigger '
                                        "inversion; <code>bcu cleanse --scan</code> adds it).</p>")
    return _section("scan", "Scan (trigger inversion, no labels)", f'<div class="charts">{"".join(parts)}</div>')


def _reinit_section(rec: RunRecord) -> str:
    if rec.summary is not None:
        r = rec.summary.reinit
        ratios, counts, totals, seed = r.ratios, r.counts, r.totals, r.seed
    else:
        ratios, counts, totals, seed = _resolved(rec).get("ratios") or {}, {}, {}, (rec.config or {}).get("seed")
    if not isinstance(ratios, dict) or not ratios:
        return _section("reinit", "Re-initialisation", '<p class="muted">Not recorded.</p>')
    rows = []
    for group, ratio in ratios.items():
        count, total = finite(counts.get(group)) if isinstance(counts, dict) else None, \
            finite(totals.get(group)) if isinstance(totals, dict) else None
        share = count / total if count is not None and total else finite(ratio)
        width = max(0.0, min(1.0, share or 0.0)) * 100
        rows.append([esc(group), fmt(ratio, ".3f"), fmt(count, ",.0f"), fmt(total, ",.0f"),
                     f'<span class="bar"><span style="width:{width:.1f}%"></span></span> {pct(share)}'])
    all_count = sum(finite(v) or 0 for v in counts.values()) if isinstance(counts, dict) else 0
    all_total = sum(finite(v) or 0 for v in totals.values()) if isinstance(totals, dict) else 0
    if all_total:
        rows.append(["<b>all</b>", "", f"<b>{all_count:,.0f}</b>", f"<b>{all_total:,.0f}</b>",
                     pct(all_count / all_total)])
    preset = rec.summary.preset if rec.summary else (rec.config or {}).get("preset")
    intro = f"<p>Preset <b>{esc(preset)}</b>, mask seed {fmt(seed)}. Each weight of a group is replaced by a " \
            "freshly initialised one with the group's probability; normalisation layers are copied.</p>"
    return _section("reinit", "Re-initialisation per group",
                    intro + _table(["group", "ratio", "re-initialised", "weights", "share"], rows))


def _model_data_section(rec: RunRecord) -> str:
    cfg = rec.config or {}
    model = _model_info(rec)
    norm = model.get("normalize")
    mean, std = model.get("mean"), model.get("std")
    rows = [("checkpoint", f"<code>{esc(cfg.get('checkpoint'))}</code>"),
            ("architecture", esc(model.get("arch"))), ("classes", fmt(model.get("num_classes"))),
            ("input size", fmt(model.get("input_size"))), ("base width", fmt(model.get("width"))),
            ("normalisation", esc(norm) + (f" <code>mean {esc(mean)} std {esc(std)}</code>" if mean else "")),
            ("dataset (file's metadata)", esc(model.get("dataset")) if model.get("dataset") else "-")]
    data = [("unlabelled images", f"<code>{esc(cfg.get('unlabeled'))}</code>"),
            ("clean labelled set (ACC)", f"<code>{esc(cfg.get('eval_clean'))}</code>" if cfg.get("eval_clean")
             else "none"),
            ("triggered set (ASR)", f"<code>{esc(cfg.get('eval_poisoned'))}</code>" if cfg.get("eval_poisoned")
             else "none"),
            ("target class", fmt(cfg.get("target_class")))]
    if cfg.get("unlabeled_limit") is not None:
        data.append(("unlabelled limit", fmt(cfg.get("unlabeled_limit"))))
    return _section("model", "Model and data", "<h3>Model</h3>" + _kv(rows) + "<h3>Data</h3>" + _kv(data))


def _config_section(rec: RunRecord) -> str:
    cfg = rec.config
    if cfg is None:
        return _section("config", "Configuration", '<p class="muted">config.json is missing.</p>')
    rows = [(str(k), _json_value(v)) for k, v in cfg.items() if k != "resolved"]
    resolved = _resolved(rec)
    used = [(f"{k} (as used)", _json_value(v)) for k, v in resolved.items() if k not in ("model", "ratios")]
    return _section("config", "Configuration", _grid(rows + used)
                    + '<p class="muted">config.json repeats this run: '
                      "<code>bcu cleanse --config RUN_DIR/config.json --out NEW_DIR</code>.</p>")


def _environment_section(rec: RunRecord) -> str:
    env = rec.environment
    labels = (("bcu", "BCU Studio"), ("python", "Python"), ("torch", "PyTorch"), ("torchvision", "torchvision"),
              ("numpy", "NumPy"), ("os", "operating system"), ("cpu", "CPU"), ("cpu_count", "CPU cores"),
              ("torch_threads", "torch threads"), ("cuda", "CUDA (torch build)"), ("gpu", "GPU"),
              ("device", "device"), ("precision", "precision"), ("channels_last", "channels-last"))
    if env is None:
        device = rec.summary.device if rec.summary else _resolved(rec).get("device")
        return _section("environment", "Environment",
                        '<p class="muted">This run folder has no environment.json (it was made before runs '
                        "recorded one).</p>" + _kv([("device", esc(device))]))
    rows = [(label, _json_value(env[key], nested=True)) for key, label in labels if key in env]
    return _section("environment", "Environment", _kv(rows))


def _timings_section(rec: RunRecord) -> str:
    rows = []
    s = rec.summary
    if s is not None:
        scans = " and scans" if s.teacher_scan is not None else ""
        rows += [(f"run time (training{scans}; pauses left out)", fmt(s.seconds, ".1f") + " s"),
                 ("throughput (whole run)", fmt(s.images_per_second, ",.1f") + " images/s"),
                 ("epochs", f"{fmt(s.epochs_completed)} of {fmt(s.epochs)}"), ("optimiser steps", fmt(s.steps)),
                 ("batch size", fmt(s.batch_size) + (f" <span class=\"muted\">{esc(s.batch_reason)}</span>"
                                                    if s.batch_reason else ""))]
    per_epoch = [v for v in (finite(m.get("seconds")) for m in rec.metrics) if v is not None]
    if s is not None and per_epoch and finite(s.batch_size) and s.epochs_completed and sum(per_epoch) > 0:
        images = s.steps / s.epochs_completed * s.batch_size * len(per_epoch)  # per epoch, as the epochs ran
        rows.append(("throughput (epochs only, evaluation included)", f"{images / sum(per_epoch):,.1f} images/s"))
    if per_epoch:
        rows.append(("seconds per epoch", f"mean {sum(per_epoch) / len(per_epoch):.2f}, min {min(per_epoch):.2f}, "
                                          f"max {max(per_epoch):.2f}"))
    for phase, title in SCAN_PHASES:
        seconds = finite((rec.scans.get(phase, {}).get("json") or {}).get("seconds"))
        if seconds is not None:
            rows.append((f"scan of the {phase}", f"{seconds:.1f} s"))
    if not rows:
        return _section("timings", "Timings", '<p class="muted">Not recorded.</p>')
    return _section("timings", "Timings", _kv(rows))


def _files_section(rec: RunRecord) -> str:
    if rec.summary is None or not rec.summary.model_files:
        return ""
    names = []
    for f in rec.summary.model_files:
        try:
            names.append(str(Path(f).relative_to(Path(rec.summary.run_dir))))
        except ValueError:
            names.append(str(f))
    return _section("files", "Saved models", "<ul>" + "".join(f"<li><code>{esc(n)}</code></li>" for n in names)
                    + "</ul>")


def _problems_section(problems: Sequence[str]) -> str:
    if not problems:
        return ""
    items = "".join(f"<li>{esc(p)}</li>" for p in problems)
    return f'<section id="problems" class="problems"><h2>Problems reading the folder</h2><ul>{items}</ul></section>'


def render_run(rec: RunRecord) -> str:
    """The run's report as one HTML document (see the module doc)."""
    cfg = rec.config or {}
    title = f"BCU run report: {rec.path.name}"
    checkpoint = Path(str(cfg.get("checkpoint") or "?")).name
    headline = ""
    if rec.summary is not None:
        t, c = rec.summary.teacher, rec.summary.cleansed
        headline = (f"<p>ACC {esc(pct(t.acc))} &rarr; {esc(pct(c.acc))} &nbsp;&middot;&nbsp; "
                    f"ASR {esc(pct(t.asr))} &rarr; {esc(pct(c.asr))}</p>")
    header = (f"<h1>Backdoor cleansing report {_status_badge(rec.report_status)}</h1>"
              f"<p>Run <code>{esc(rec.path.name)}</code> of <code>{esc(checkpoint)}</code></p>"
              f"<p>Folder <code>{esc(rec.path.resolve())}</code></p>{headline}")
    sections = [_problems_section(rec.problems), _results_section(rec), _curves_section(rec), _scan_section(rec),
                _reinit_section(rec), _model_data_section(rec), _config_section(rec), _environment_section(rec),
                _timings_section(rec), _files_section(rec)]
    nav = [("results", "Results"), ("curves", "Curves"), ("scan", "Scan"), ("reinit", "Re-initialisation"),
           ("model", "Model and data"), ("config", "Configuration"), ("environment", "Environment"),
           ("timings", "Timings")]
    return _page(title, header, nav, sections)


# ---------------------------------------------------------------------------------------------- a sweep

def is_sweep_folder(path: Path) -> bool:
    return (path / SWEEP_CSV).is_file()


def _read_csv(path: Path, problems: list[str]) -> tuple[list[str], list[list[str]]]:
    try:
        text = untrusted.read_text(path.parent, path.name, MAX_JSON_BYTES)
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except untrusted.UntrustedFileError as exc:
        problems.append(f"{path.name} {exc.reason}")
        return [], []
    except (OSError, ValueError, csv.Error) as exc:
        problems.append(f"{path.name} could not be read: {exc}")
        return [], []
    if not rows:
        return [], []
    if len(rows) - 1 > MAX_CSV_ROWS:
        problems.append(f"{path.name} has {len(rows) - 1} rows; the first {MAX_CSV_ROWS} are shown")
    return rows[0], rows[1:MAX_CSV_ROWS + 1]


def _run_folders(folder: Path) -> list[Path]:
    """Run folders inside ``folder`` or one level further down (``sweep/runs/<setting>``), by path."""
    found = []
    for child in sorted(p for p in folder.iterdir() if p.is_dir()):
        if is_run_folder(child):
            found.append(child)
        else:
            found += sorted(p for p in child.iterdir() if p.is_dir() and is_run_folder(p))
    return found


def sweep_runs(folder: Path, problems: list[str]) -> list[RunRecord]:
    """Every run folder of the sweep (see ``_run_folders``); unreadable ones are named in ``problems``."""
    runs = []
    for child in _run_folders(folder):
        try:
            rec = read_run(child)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        problems.extend(f"{child.relative_to(folder)}: {p}" for p in rec.problems)
        runs.append(rec)
    return runs


def _ratios_text(rec: RunRecord) -> str:
    ratios = rec.summary.reinit.ratios if rec.summary else _resolved(rec).get("ratios")
    if not isinstance(ratios, dict):
        return "-"
    return ", ".join(f"{k}={finite(v):g}" if finite(v) is not None else f"{k}=?" for k, v in ratios.items())


def render_sweep(folder: Path) -> str:
    """The sweep's report: its CSV, every run's final scores, and ACC against (proxy) ASR with the Pareto front."""
    problems: list[str] = []
    header_row, csv_rows = _read_csv(folder / SWEEP_CSV, problems)
    settings = read_json_lenient(folder, SWEEP_JSON, problems)
    runs = sweep_runs(folder, problems)
    finished = [r for r in runs if r.summary is not None]
    use_asr = any(finite(r.summary.cleansed.asr) is not None for r in finished)
    x_label = "ASR" if use_asr else "proxy ASR"

    def x_of(rec: RunRecord) -> float | None:
        s = rec.summary
        if use_asr:
            return finite(s.cleansed.asr)
        return finite(s.cleansed_scan.proxy_asr) if s.cleansed_scan is not None else None

    numbered = list(enumerate(runs, start=1))
    plotted = [(n, x_of(r), finite(r.summary.cleansed.acc)) for n, r in numbered if r.summary is not None]
    plotted = [(n, x, y) for n, x, y in plotted if x is not None and y is not None]
    sections = [_problems_section(problems)]
    body = ""
    front_numbers: set[int] = set()
    if plotted:
        points = [(x, y) for _, x, y in plotted]
        front_numbers = {plotted[i][0] for i in report_charts.pareto_front(points)}
        teacher = None
        t = finished[0].summary.teacher if finished else None
        if t is not None:
            tx = finite(t.asr) if use_asr else finite(finished[0].summary.teacher_scan.proxy_asr
                                                     if finished[0].summary.teacher_scan else None)
            if tx is not None and finite(t.acc) is not None:
                teacher = (tx, float(t.acc))
        chart = report_charts.sweep_scatter(points, [n for n, _, _ in plotted], x_label, teacher)
        body += _img(chart, f"final ACC against {x_label} per run")
        body += ('<p class="muted">Each point is one run, numbered as in the table below; the green line joins '
                 f"the Pareto front: the runs no other run beats on both ACC and {esc(x_label)}.</p>")
    else:
        body += '<p class="muted">No finished run with both ACC and ASR (or proxy ASR) to plot yet.</p>'
    rows = []
    for n, r in numbered:
        s = r.summary
        cfg = r.config or {}
        mark = "&nbsp;&#9733;" if n in front_numbers else ""
        rows.append([f"{n}{mark}", f"<code>{esc(r.path.relative_to(folder))}</code>", _status_badge(r.report_status),
                     esc(s.preset if s else cfg.get("preset")), esc(_ratios_text(r)),
                     fmt(s.reinit.seed if s else cfg.get("seed")),
                     fmt(s.epochs_completed if s else len(r.metrics)),
                     pct(s.cleansed.acc if s else None), pct(s.cleansed.asr if s else None),
                     pct(s.cleansed_scan.proxy_asr if s and s.cleansed_scan else None),
                     fmt(s.seconds if s else None, ".1f")])
    body += "<h3>Runs</h3>" + _table(["#", "run folder", "status", "preset", "ratios", "seed", "epochs", "ACC",
                                      "ASR", "proxy ASR", "seconds"], rows)
    sections.append(_section("scatter", f"ACC against {x_label}", body))
    if header_row:
        sections.append(_section("csv", "sweep.csv", _table(header_row, [[esc(c) for c in row] for row in csv_rows])))
    if isinstance(settings, dict):
        sections.append(_section("settings", "Sweep settings (sweep.json)",
                                 _kv((str(k), _json_value(v)) for k, v in settings.items())))
    first_env = next((r for r in runs if r.environment), None)
    if first_env is not None:
        sections.append(_environment_section(first_env).replace("<h2>Environment</h2>",
                                                                "<h2>Environment (first run)</h2>", 1))
    header = (f"<h1>Ratio sweep report</h1><p>Sweep <code>{esc(folder.name)}</code>: {len(runs)} run(s), "
              f"{len(finished)} with a summary</p><p>Folder <code>{esc(folder.resolve())}</code></p>")
    nav = [("scatter", "ACC against " + x_label), ("csv", "sweep.csv"), ("settings", "Settings"),
           ("environment", "Environment")]
    return _page(f"BCU sweep report: {folder.name}", header, nav, sections)


# ---------------------------------------------------------------------------------------------- entry points

def build_report(source: str | Path) -> str:
    """The HTML of the report of a run folder or a sweep folder; ``ConfigError`` when it is neither."""
    folder = Path(source)
    if not folder.exists():
        raise ConfigError(f"{folder} does not exist")
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder; give a run folder (or a sweep folder)")
    if is_sweep_folder(folder):
        return render_sweep(folder)
    if not is_run_folder(folder):
        raise ConfigError(f"{folder} is not a BCU run folder (no config.json of a run, no summary.json) nor a "
                          f"sweep folder (no {SWEEP_CSV})")
    return render_run(read_run(folder))


def default_report_path(source: str | Path) -> Path:
    return Path(source) / REPORT_NAME


def write_report(source: str | Path, out: str | Path | None = None, *, overwrite: bool = False) -> Path:
    """Write the report of ``source`` to ``out`` (default: ``source/report.html``) atomically.

    An existing file is replaced only with ``overwrite`` (the user said so); otherwise
    :class:`ReportExistsError`, before any work.
    """
    target = Path(out) if out is not None else default_report_path(source)
    if target.is_dir():
        raise ConfigError(f"{target} is a folder; name the report's file, e.g. {target / REPORT_NAME}")
    if target.exists() and not overwrite:
        raise ReportExistsError(f"{target} already exists; nothing was overwritten")
    page = build_report(source)
    atomic.write_text(target, page)
    return target
