"""Render the app icon from its SVG: ``resources/icons/bcu-studio.png`` (256 px) and ``bcu-studio.ico``.

The SVG is the source; the PNG (Linux .deb, .desktop entry, window icon) and the ICO (Windows installer and
executables) are generated from it and kept in the repository, so a build needs neither this script nor Qt's
SVG module. Run it again after editing the SVG:

    .venv/bin/python packaging/make_icon.py

Needs PySide6 (QtSvg, shipped in PySide6-Essentials) and Pillow (for the multi-size ICO).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

ICONS = Path(__file__).resolve().parents[1] / "resources" / "icons"
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)


def render_png(svg: Path, size: int) -> bytes:
    """The SVG rendered to a square transparent PNG of ``size`` pixels, as bytes."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    _app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])  # noqa: F841 (kept alive)
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"make_icon: {svg} is not a valid SVG")
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
    renderer.render(painter)
    painter.end()
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buffer, "PNG")
    buffer.close()
    return bytes(data.data())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--svg", type=Path, default=ICONS / "bcu-studio.svg")
    parser.add_argument("--out-dir", type=Path, default=ICONS)
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)

    png = args.out_dir / "bcu-studio.png"
    png.write_bytes(render_png(args.svg, 256))
    print(f"wrote {png}")

    from PIL import Image

    # Pillow's ICO writer downsamples one big image; render each size from the SVG instead for crisp edges.
    frames = [Image.open(io.BytesIO(render_png(args.svg, s))).convert("RGBA") for s in ICO_SIZES]
    ico = args.out_dir / "bcu-studio.ico"
    frames[-1].save(ico, format="ICO", sizes=[(s, s) for s in ICO_SIZES], append_images=frames[:-1])
    print(f"wrote {ico}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
