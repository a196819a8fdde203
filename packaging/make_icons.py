"""Render assets/icons/omnidesk.svg into the icon files the packages use.

    python packaging/make_icons.py

Writes assets/icons/omnidesk-SIZE.png for each size in SIZES (the Linux hicolor
theme's sizes), omnidesk.ico (Windows) and omnidesk.icns (macOS). Qt's SVG renderer
draws each size; the ICO and ICNS containers hold those PNGs as they are (both
formats accept PNG entries). Run it again after editing the SVG.
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

ICONS = Path(__file__).resolve().parent.parent / "assets" / "icons"
SOURCE = ICONS / "omnidesk.svg"
SIZES = (16, 24, 32, 48, 64, 128, 256, 512)  # px, square
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)  # an ICO entry stores its size in one byte: 256 at most
# ICNS entry types that hold a PNG of the given size (the @2x ones double a smaller point size).
ICNS_TYPES = {
    b"icp4": 16,
    b"icp5": 32,
    b"ic11": 32,
    b"icp6": 64,
    b"ic12": 64,
    b"ic07": 128,
    b"ic08": 256,
    b"ic13": 256,
    b"ic09": 512,
    b"ic14": 512,
}


def main() -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtGui import QGuiApplication

    app = QGuiApplication(sys.argv[:1])  # QPainter on QImage needs an application for its fonts
    pngs = {size: render_png(SOURCE, size) for size in SIZES}
    for size, png in pngs.items():
        (ICONS / f"omnidesk-{size}.png").write_bytes(png)
    (ICONS / "omnidesk.ico").write_bytes(ico({size: pngs[size] for size in ICO_SIZES}))
    (ICONS / "omnidesk.icns").write_bytes(icns({kind: pngs[size] for kind, size in ICNS_TYPES.items()}))
    print(f"wrote {len(pngs)} PNGs, omnidesk.ico and omnidesk.icns in {ICONS}")
    app.quit()
    return 0


def render_png(svg: Path, size: int) -> bytes:
    """The SVG drawn on a transparent size x size square, as PNG bytes."""
    from PySide6.QtCore import QBuffer, QIODevice
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"make_icons.py: {svg} is not a valid SVG")
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(0)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter)
    painter.end()
    buffer = QBuffer()
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buffer, "PNG")
    return bytes(buffer.data().data())


def ico(pngs: dict[int, bytes]) -> bytes:
    """An ICO file of PNG entries: header, one 16-byte directory entry per image, then the images."""
    offset = 6 + 16 * len(pngs)
    header = struct.pack("<HHH", 0, 1, len(pngs))  # reserved, type 1 (icon), count
    directory, data = b"", b""
    for size, png in pngs.items():
        side = size % 256  # 0 means 256
        directory += struct.pack("<BBBBHHII", side, side, 0, 0, 1, 32, len(png), offset + len(data))
        data += png
    return header + directory + data


def icns(entries: dict[bytes, bytes]) -> bytes:
    """An ICNS file: 'icns', the total length, then (type, length, PNG) for each entry (big-endian)."""
    body = b"".join(kind + struct.pack(">I", 8 + len(png)) + png for kind, png in entries.items())
    return b"icns" + struct.pack(">I", 8 + len(body)) + body


if __name__ == "__main__":
    sys.exit(main())
