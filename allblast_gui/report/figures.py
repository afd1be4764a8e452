"""Report figures drawn with QPainter into QImages: curves, a confusion matrix, a differential bar
chart and cell montages. QImage painting is safe off the GUI thread, so a report renders on a
worker; the figures are sized for an A4 page at print resolution (2x the CSS width)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPainterPath, QPen

from ..style import CLASS_PALETTE

SCALE = 2  # pixels per CSS pixel: sharp when printed
TRAIN, VAL, EXTRA = QColor("#1f77b4"), QColor("#d55e00"), QColor("#009e73")
GRID, TEXT = QColor("#dddddd"), QColor("#333333")


def png_bytes(image: QImage) -> bytes:
    data = QByteArray()
    buf = QBuffer(data)
    buf.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buf, "PNG")
    buf.close()
    return bytes(data.data())


def _canvas(width: int, height: int) -> tuple[QImage, QPainter]:
    image = QImage(width * SCALE, height * SCALE, QImage.Format.Format_RGB32)
    image.fill(QColor("white"))
    p = QPainter(image)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.scale(SCALE, SCALE)
    font = QFont("DejaVu Sans")
    font.setPixelSize(11)
    p.setFont(font)
    return image, p


def _nice(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) < 0.01 or abs(v) >= 1000:
        return f"{v:.0e}"
    return f"{v:.2f}".rstrip("0").rstrip(".")


def line_chart(title: str, epochs: Sequence[int], series: Sequence[tuple[str, Sequence[float | None], QColor]],
               *, best_epoch: int | None = None, marks: Sequence[int] = (), width: int = 600,
               height: int = 240) -> QImage:
    """Curves over epochs with a dashed best-epoch line and dotted learning-rate-halving marks."""
    image, p = _canvas(width, height)
    left, right, top, bottom = 52, 16, 42, 34
    plot = QRectF(left, top, width - left - right, height - top - bottom)
    values = [v for _, ys, _ in series for v in ys if v is not None and math.isfinite(v)]
    p.setPen(TEXT)
    p.drawText(QRectF(0, 2, width, 20), Qt.AlignmentFlag.AlignHCenter, title)
    if not epochs or not values:
        p.drawText(plot, Qt.AlignmentFlag.AlignCenter, "no data")
        p.end()
        return image
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    pad = (hi - lo) * 0.08
    lo, hi = lo - pad, hi + pad
    x0, x1 = min(epochs), max(epochs)
    span = max(x1 - x0, 1)

    def pt(x: float, y: float) -> QPointF:
        return QPointF(plot.left() + (x - x0) / span * plot.width(), plot.bottom() - (y - lo) / (hi - lo) * plot.height())

    for k in range(5):  # horizontal grid with values
        y = lo + (hi - lo) * k / 4
        a = pt(x0, y)
        p.setPen(QPen(GRID, 1))
        p.drawLine(QPointF(plot.left(), a.y()), QPointF(plot.right(), a.y()))
        p.setPen(TEXT)
        p.drawText(QRectF(0, a.y() - 8, left - 6, 16), Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, _nice(y))
    step = max(1, math.ceil(len(epochs) / 10))
    for e in epochs[::step]:
        a = pt(e, lo)
        p.drawText(QRectF(a.x() - 15, plot.bottom() + 4, 30, 14), Qt.AlignmentFlag.AlignHCenter, str(e))
    p.drawText(QRectF(plot.left(), height - 16, plot.width(), 14), Qt.AlignmentFlag.AlignHCenter, "epoch")
    for e in marks:
        p.setPen(QPen(QColor("#888888"), 1, Qt.PenStyle.DotLine))
        p.drawLine(pt(e, lo), pt(e, hi))
    if best_epoch is not None:
        p.setPen(QPen(EXTRA, 1.5, Qt.PenStyle.DashLine))
        p.drawLine(pt(best_epoch, lo), pt(best_epoch, hi))
        p.drawText(pt(best_epoch, hi) + QPointF(-28, 12), "best")
    legend_x = plot.left() + 6
    for name, ys, color in series:
        path, started = QPainterPath(), False
        for x, y in zip(epochs, ys):
            if y is None or not math.isfinite(y):
                continue
            (path.lineTo if started else path.moveTo)(pt(x, y))
            started = True
        p.setPen(QPen(color, 2))
        p.drawPath(path)
        p.setBrush(color)
        for x, y in zip(epochs, ys):
            if y is not None and math.isfinite(y):
                p.drawEllipse(pt(x, y), 2.5, 2.5)
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawLine(QPointF(legend_x, top - 10), QPointF(legend_x + 16, top - 10))  # legend above the plot
        p.setPen(TEXT)
        p.drawText(QPointF(legend_x + 20, top - 6), name)
        legend_x += 28 + p.fontMetrics().horizontalAdvance(name)
    p.setPen(QPen(TEXT, 1))
    p.drawRect(plot)
    p.end()
    return image


def confusion_figure(matrix: Sequence[Sequence[int]], classes: Sequence[str], *, cell: int = 46) -> QImage:
    """Counts in a blue heat map, rows = expert label, columns = model; the diagonal is correct."""
    n = len(classes)
    m = np.asarray(matrix, dtype=float).reshape(n, n)
    label_w = max(60, 7 * max(len(c) for c in classes) + 10)
    width, height = label_w + n * cell + 10, label_w + n * cell + 24
    image, p = _canvas(width, height)
    top = label_w
    row_sums = m.sum(1, keepdims=True)
    share = np.divide(m, row_sums, out=np.zeros_like(m), where=row_sums > 0)
    for i in range(n):
        for j in range(n):
            rect = QRectF(label_w + j * cell, top + i * cell, cell, cell)
            s = share[i, j]
            color = QColor.fromRgbF(1 - 0.85 * s, 1 - 0.55 * s, 1 - 0.25 * s)
            p.fillRect(rect, color)
            p.setPen(QColor("white") if s > 0.55 else TEXT)
            p.drawText(rect, Qt.AlignmentFlag.AlignCenter, str(int(m[i, j])))
    p.setPen(QPen(TEXT, 1))
    p.drawRect(QRectF(label_w, top, n * cell, n * cell))
    for k, name in enumerate(classes):
        p.drawText(QRectF(0, top + k * cell, label_w - 6, cell), Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, name)
        p.save()
        p.translate(label_w + k * cell + cell / 2 + 5, top - 6)
        p.rotate(-60)
        p.drawText(QPointF(0, 0), name)
        p.restore()
    p.drawText(QRectF(label_w, top + n * cell + 4, n * cell, 16), Qt.AlignmentFlag.AlignHCenter, "model")
    p.end()
    return image


def bar_chart(classes: Sequence[str], groups: Sequence[tuple[str, Sequence[float | None], QColor]], *,
              title: str = "", width: int = 560, height: int = 200) -> QImage:
    """Grouped bars of shares (0..1) per class, e.g. expert against model."""
    image, p = _canvas(width, height)
    left, top, bottom = 40, 24, 40
    plot = QRectF(left, top, width - left - 10, height - top - bottom)
    p.setPen(TEXT)
    if title:
        p.drawText(QRectF(0, 2, width, 18), Qt.AlignmentFlag.AlignHCenter, title)
    for k in range(5):
        y = plot.bottom() - plot.height() * k / 4
        p.setPen(QPen(GRID, 1))
        p.drawLine(QPointF(plot.left(), y), QPointF(plot.right(), y))
        p.setPen(TEXT)
        p.drawText(QRectF(0, y - 8, left - 4, 16), Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, f"{k * 25}%")
    slot = plot.width() / max(len(classes), 1)
    bar = slot * 0.8 / max(len(groups), 1)
    for i, name in enumerate(classes):
        for g, (_, values, color) in enumerate(groups):
            v = values[i]
            if v is None:
                continue
            h = plot.height() * v
            p.fillRect(QRectF(plot.left() + i * slot + slot * 0.1 + g * bar, plot.bottom() - h, bar - 1, h), color)
        p.drawText(QRectF(plot.left() + i * slot, plot.bottom() + 3, slot, 16), Qt.AlignmentFlag.AlignHCenter,
                   p.fontMetrics().elidedText(name, Qt.TextElideMode.ElideRight, int(slot)))
    x = plot.left()
    for name, _, color in groups:
        p.fillRect(QRectF(x, height - 16, 10, 10), color)
        p.drawText(QPointF(x + 14, height - 7), name)
        x += 30 + p.fontMetrics().horizontalAdvance(name)
    p.end()
    return image


MONTAGE_WIDTH = 592  # CSS px: 8 tiles of 70 px fit A4's text width with 15 mm margins


def montage(root: Path, cells: Sequence, *, columns: int = 8, tile: int = 70) -> QImage:
    """A row-major grid of cell thumbnails with their captions (file name, model class); a cell the
    model disagrees on gets a red frame. Unreadable files show as a grey tile, never an error."""
    from engine.data.imaging import read_rgb

    rows = max(1, math.ceil(len(cells) / columns))
    caption_h = 26
    width, height = columns * (tile + 4), rows * (tile + caption_h + 6)
    image, p = _canvas(width, height)
    font = p.font()
    font.setPixelSize(8)
    p.setFont(font)
    for k, cell in enumerate(cells):
        x, y = (k % columns) * (tile + 4), (k // columns) * (tile + caption_h + 6)
        target = QRectF(x + 1, y + 1, tile, tile)
        try:
            rgb = np.ascontiguousarray(read_rgb(Path(root) / cell.path))
            h, w = rgb.shape[:2]
            thumb = QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
            p.drawImage(target, thumb.scaled(tile * SCALE, tile * SCALE, Qt.AspectRatioMode.KeepAspectRatio,
                                             Qt.TransformationMode.SmoothTransformation))
        except Exception:  # noqa: BLE001 - one unreadable image must not cost the report
            p.fillRect(target, QColor("#cccccc"))
        if cell.disagrees:
            p.setPen(QPen(QColor("#c0392b"), 2.5))
            p.drawRect(target)
        p.setPen(TEXT)
        p.drawText(QRectF(x, y + tile + 2, tile + 2, caption_h), Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop,
                   cell.caption)
    p.end()
    return image


def class_colors(classes: Sequence[str]) -> list[QColor]:
    return [QColor(CLASS_PALETTE[i % len(CLASS_PALETTE)]) for i in range(len(classes))]
