"""The run report (core/report.py) on a real demo run: every section, embedded pictures, nothing fetched, hostile
strings escaped, damaged files reported, sweeps, and never overwriting a file unasked."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from bcu_gui.core.errors import ConfigError
from bcu_gui.core.report import (ReportExistsError, build_report, read_run, write_report)
from bcu_gui.core.report_charts import pareto_front
from bcu_gui.core.summary import RunSummary

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


class _Tags(HTMLParser):
    """Every start tag with its attributes, as a browser's parser would see them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def tags_of(page: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Tags()
    parser.feed(page)
    return parser.tags


def data_pngs(page: str) -> list[Image.Image]:
    images = []
    for tag, attrs in tags_of(page):
        if tag == "img":
            src = attrs["src"] or ""
            assert src.startswith("data:image/png;base64,"), src[:60]
            images.append(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))))
    return images


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.pt", "*.safetensors", "report.html"))
    return dst


def test_a_real_run_records_its_environment_and_scan_pictures(demo_run_dir):
    env = json.loads((demo_run_dir / "environment.json").read_text())
    for key in ("python", "torch", "torchvision", "bcu", "cpu", "device", "precision"):
        assert env.get(key), key
    for phase in ("teacher", "cleansed"):
        folder = demo_run_dir / "scan" / phase
        assert (folder / "scan.json").is_file()
        assert len(list(folder.glob("stamped_*.png"))) == 4
        assert (folder / "mask.png").is_file() or (folder / "perturbation.png").is_file()


def test_run_report_has_every_section_and_the_run_numbers(demo_run_dir):
    page = build_report(demo_run_dir)
    ids = {attrs.get("id") for tag, attrs in tags_of(page) if tag == "section"}
    assert {"results", "curves", "scan", "reinit", "model", "config", "environment", "timings"} <= ids
    summary = RunSummary.from_dict(json.loads((demo_run_dir / "summary.json").read_text()))
    acc = f"{summary.cleansed.acc * 100:.1f}%"
    asr = f"{summary.teacher.asr * 100:.1f}%"
    assert acc in page and asr in page
    assert summary.teacher_scan is not None and summary.teacher_scan.verdict_line() in page
    assert "resnet18_cifar" in page and "layer4" in page
    env = json.loads((demo_run_dir / "environment.json").read_text())
    assert env["torch"] in page and env["cpu"] in page
    assert "Problems reading the folder" not in page


def test_configuration_reads_as_text_not_as_json(demo_run_dir):
    page = build_report(demo_run_dir)
    config = page[page.index('<section id="config">'):]
    config = config[:config.index("</section>")]
    config_json = json.loads((demo_run_dir / "config.json").read_text())
    assert any(v is None for v in config_json.values()) and isinstance(config_json["resolved"]["memory"], dict)
    assert "null" not in config and "{" not in config  # unset settings say "default"; records are key: value
    assert "default" in config and "path: " in config


def test_pictures_are_embedded_pngs_and_nothing_is_fetched(demo_run_dir):
    page = build_report(demo_run_dir)
    images = data_pngs(page)
    # two curves + per scanned model: mask, pattern (or perturbation) and four stamped images
    assert len(images) >= 2 + 2 * 5
    charts = [im for im in images if im.width > 200]
    assert len(charts) == 2 and all(im.height > 200 for im in charts)
    assert not re.search(r"https?://", page)
    assert "<script" not in page.lower() and "<link" not in page.lower() and "@import" not in page
    for tag, attrs in tags_of(page):
        for name, value in attrs.items():
            if name in ("src", "href"):
                assert value.startswith(("data:", "#")), (tag, name, value)
    assert "Content-Security-Policy" in page and "default-src 'none'" in page


def test_hostile_strings_from_the_folder_are_escaped(demo_run_dir, tmp_path):
    run = copy_run(demo_run_dir, tmp_path / 'run<b onmouseover="x">')
    cfg = json.loads((run / "config.json").read_text())
    cfg["checkpoint"] = f"/models/{HOSTILE}.pt"
    cfg["unlabeled"] = HOSTILE
    cfg["resolved"]["model"]["dataset"] = HOSTILE
    (run / "config.json").write_text(json.dumps(cfg))
    summary = json.loads((run / "summary.json").read_text())
    summary["note"] = HOSTILE
    summary["kept_reason"] = "</table>" + HOSTILE
    summary["reinit"]["ratios"] = {HOSTILE: 0.5, **summary["reinit"]["ratios"]}
    summary["device"] = HOSTILE
    (run / "summary.json").write_text(json.dumps(summary))
    env = json.loads((run / "environment.json").read_text())
    env["cpu"] = HOSTILE
    (run / "environment.json").write_text(json.dumps(env))
    with (run / "metrics.jsonl").open("a") as fh:
        fh.write(json.dumps({"epoch": HOSTILE, "loss": HOSTILE, "acc": "<i>"}) + "\n")
    page = build_report(run)
    assert "<script" not in page.lower()
    assert "<img src=x" not in page and "<b onmouseover" not in page
    assert {tag for tag, _ in tags_of(page)} <= {"html", "head", "meta", "title", "style", "body", "header", "div",
                                                 "h1", "h2", "h3", "p", "code", "span", "nav", "a", "main", "section",
                                                 "table", "thead", "tbody", "tr", "th", "td", "img", "details",
                                                 "summary", "b", "br", "ul", "li", "figure", "figcaption", "dl", "dt",
                                                 "dd"}
    assert all(not name.startswith("on") for _, attrs in tags_of(page) for name in attrs)
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page  # shown, as text


def test_damaged_files_are_named_and_the_rest_still_reported(demo_run_dir, tmp_path):
    run = copy_run(demo_run_dir, tmp_path / "run")
    with (run / "metrics.jsonl").open("a") as fh:
        fh.write("{not json\n[1, 2]\n")
    (run / "environment.json").write_text("[]")
    (run / "scan" / "teacher" / "mask.png").write_bytes(b"<svg onload=alert(1)>")
    page = build_report(run)
    assert "Problems reading the folder" in page
    assert "2 line(s) were not epoch records" in page
    assert "environment.json does not hold a JSON object" in page
    assert "scan/teacher/mask.png is not a PNG" in page
    assert "<svg" not in page
    (run / "summary.json").write_text('{"teacher": 1}')
    page = build_report(run)
    assert "summary.json is not a run summary" in page
    assert 'id="curves"' in page and "incomplete" in page


def test_an_unfinished_run_is_reported_as_such(demo_run_dir, tmp_path):
    run = copy_run(demo_run_dir, tmp_path / "run")
    (run / "summary.json").unlink()
    (run / "resume.pt").write_bytes(b"")
    rec = read_run(run)
    assert rec.report_status == "unfinished (resumable)"
    page = build_report(run)
    assert "unfinished (resumable)" in page and "bcu cleanse --resume" in page
    assert len(data_pngs(page)) >= 2  # the curves of the epochs done so far


def test_folders_that_are_not_runs_are_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        build_report(tmp_path / "missing")
    with pytest.raises(ConfigError, match="not a BCU run folder"):
        build_report(tmp_path)
    (tmp_path / "config.json").write_text('{"some": "other tool"}')
    with pytest.raises(ConfigError, match="not a BCU run folder"):
        build_report(tmp_path)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        build_report(tmp_path / "file.txt")


def test_write_report_never_overwrites_unasked_and_writes_atomically(demo_run_dir, tmp_path):
    target = tmp_path / "out" / "report.html"
    assert write_report(demo_run_dir, target) == target
    first = target.read_text()
    assert first.startswith("<!DOCTYPE html>") and first.rstrip().endswith("</html>")
    target.write_text("my own notes")
    with pytest.raises(ReportExistsError, match="already exists"):
        write_report(demo_run_dir, target)
    assert target.read_text() == "my own notes"
    write_report(demo_run_dir, target, overwrite=True)
    assert target.read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.html"]  # no temporary file left
    with pytest.raises(ConfigError, match="is a folder"):
        write_report(demo_run_dir, tmp_path)


def test_pareto_front():
    points = [(0.5, 0.9), (0.1, 0.8), (0.1, 0.7), (0.0, 0.5), (0.6, 0.95), (0.7, 0.6)]
    assert pareto_front(points) == [3, 1, 0, 4]
    assert pareto_front([]) == []


def _sweep(demo_run_dir: Path, root: Path) -> Path:
    """Three runs of one sweep (copies of the real run with other final scores) and a CSV of hostile text."""
    root.mkdir()
    scores = {"a-strong": (0.98, 0.02), "b-paper": (0.99, 0.95), f"c-{HOSTILE[:8]}": (0.90, 0.50)}
    for name, (acc, asr) in scores.items():
        run = copy_run(demo_run_dir, root / ("runs" if name.startswith("c") else "") / name)  # one level down too
        summary = json.loads((run / "summary.json").read_text())
        summary["cleansed"].update(acc=acc, asr=asr)
        (run / "summary.json").write_text(json.dumps(summary))
    with (root / "sweep.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["run", "acc", HOSTILE])
        for name, (acc, asr) in scores.items():
            writer.writerow([name, acc, HOSTILE])
    (root / "sweep.json").write_text(json.dumps({"grid": {"layer4": [0.27, 1]}, "note": HOSTILE}))
    (root / "not-a-run").mkdir()
    return root


def test_sweep_report_tables_every_run_and_draws_the_scatter(demo_run_dir, tmp_path):
    root = _sweep(demo_run_dir, tmp_path / "sweep")
    page = build_report(root)
    assert "Ratio sweep report" in page and 'id="scatter"' in page and 'id="csv"' in page
    images = data_pngs(page)
    assert len(images) == 1 and images[0].width > 400
    assert "a-strong" in page and "b-paper" in page and "98.0%" in page and "95.0%" in page
    assert "<script" not in page.lower() and not re.search(r"https?://", page)
    # a-strong (98%, ASR 2%) and b-paper (99%, ASR 95%) are on the front; the third is beaten by a-strong
    rows = re.findall(r"<tr><td>(\d+)(&nbsp;&#9733;)?</td><td><code>([^<]*)</code>", page)
    starred = {name for _, star, name in rows if star}
    assert starred == {"a-strong", "b-paper"}
    assert len(rows) == 3 and rows[2][2] == "runs/c-&lt;script&gt;"
    assert (root / "sweep.csv").is_file()
    written = write_report(root)
    assert written == root / "report.html"
