"""The report of a real demo run opens offline in headless Chromium and draws a page that is not blank.

Chromium comes from the Debian package (``apt-get install chromium``); without a binary the test is skipped and
says so. The same command makes docs/screenshots/report.png:

    chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,2000 \
        --screenshot=docs/screenshots/report.png file:///path/to/run/report.html
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from PIL import Image, ImageStat

from bcu_gui.core.report import write_report

CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(name)), None)


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (chromium / chromium-browser) on PATH: "
                                             "apt-get install chromium")
def test_report_renders_in_headless_chromium(demo_run_dir, tmp_path):
    page = write_report(demo_run_dir, tmp_path / "report.html")
    shot = tmp_path / "report.png"
    # its own profile folder; no network is needed (the page loads nothing) and none is reached
    subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                    "--window-size=1280,2000", page.resolve().as_uri()],
                   check=True, timeout=120, capture_output=True)
    assert shot.is_file()
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2000)
    stat = ImageStat.Stat(image)
    assert max(stat.stddev) > 20, f"the screenshot looks blank (pixel spread {stat.stddev})"
    # the header band is dark and the page below it light: the style sheet was applied
    top = ImageStat.Stat(image.crop((0, 0, 1280, 60))).mean
    body = ImageStat.Stat(image.crop((0, 200, 60, 1800))).mean
    assert sum(top) / 3 < 80 and sum(body) / 3 > 200
    # text, charts and trigger pictures were drawn: a plain page has a handful of colours, this one hundreds
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 300
