"""Paints one cell tile: thumbnail, label-coloured edge, label text, changed mark, problems.

Everything comes from model roles, so the delegate has no state of its own apart from fonts; it
never decodes or scales images itself beyond drawPixmap into the tile (the loader already made
the thumbnail at the tile's pixel size).
"""
from __future__ import annotations

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QPointF, QRect, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPalette, QPen, QPixmap
from PySide6.QtWidgets import QStyle, QStyledItemDelegate, QStyleOptionViewItem

from ..models.cell_list_model import CHANGED_ROLE, DEFAULT_TILE, LABEL_ROLE, PROBLEM_ROLE
from ..style import PROBLEM_COLOR, is_unsure, label_color, label_text

MARGIN = 4  # around the tile, inside the grid cell: selection shows as a frame around it
EDGE = 3  # label-coloured edge around the thumbnail
TEXT_GAP = 2


class TileDelegate(QStyledItemDelegate):
    def tile_size(self, index: QModelIndex | QPersistentModelIndex) -> int:
        model = index.model()
        return model.tile_size() if hasattr(model, "tile_size") else DEFAULT_TILE

    def size_for_tile(self, tile: int, option: QStyleOptionViewItem | None = None) -> QSize:
        fm = option.fontMetrics if option is not None else None
        text_h = fm.height() if fm is not None else 14
        return QSize(tile + 2 * MARGIN, tile + TEXT_GAP + text_h + 2 * MARGIN)

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex) -> QSize:
        return self.size_for_tile(self.tile_size(index), option)

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex) -> None:
        tile = self.tile_size(index)
        rect = option.rect
        palette = option.palette
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        model = index.model()
        classes = model.classes() if hasattr(model, "classes") else []
        label = index.data(LABEL_ROLE)
        color = label_color(label, classes)

        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        if selected:
            painter.fillRect(rect, palette.color(QPalette.ColorRole.Highlight))

        # Thumbnail square, centred horizontally at the top of the cell.
        x = rect.x() + (rect.width() - tile) // 2
        square = QRect(x, rect.y() + MARGIN, tile, tile)
        if selected:
            # A base-coloured gap between highlight and edge: a blue class edge stays readable
            # on a blue selection.
            painter.fillRect(square.adjusted(-2, -2, 2, 2), palette.color(QPalette.ColorRole.Base))
        painter.fillRect(square, QColor("#101010"))  # C-NMC cells sit on black; so do we
        inner = square.adjusted(EDGE, EDGE, -EDGE, -EDGE)
        pixmap = index.data(Qt.ItemDataRole.DecorationRole)
        problem = index.data(PROBLEM_ROLE)
        if isinstance(pixmap, QPixmap) and not pixmap.isNull():
            self._draw_pixmap(painter, inner, pixmap)
        elif problem:
            self._draw_problem(painter, inner, problem, option)
        else:
            painter.fillRect(inner, QColor("#2A2A2A"))  # still loading: a calm, empty tile

        self._draw_edge(painter, square, QColor(PROBLEM_COLOR) if problem else color, is_unsure(label))
        if index.data(CHANGED_ROLE):
            self._draw_changed_mark(painter, square, color)

        # Label text under the thumbnail.
        painter.setFont(option.font)
        text_rect = QRect(rect.x() + MARGIN, square.bottom() + 1 + TEXT_GAP, rect.width() - 2 * MARGIN, option.fontMetrics.height())
        role = QPalette.ColorRole.HighlightedText if selected else QPalette.ColorRole.Text
        painter.setPen(palette.color(role))
        text = option.fontMetrics.elidedText(label_text(label), Qt.TextElideMode.ElideRight, text_rect.width())
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignVCenter, text)

        if option.state & QStyle.StateFlag.State_HasFocus:
            pen = QPen(palette.color(QPalette.ColorRole.Highlight).darker(150), 1, Qt.PenStyle.DotLine)
            painter.setPen(pen)
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawRect(rect.adjusted(1, 1, -2, -2))
        painter.restore()

    @staticmethod
    def _draw_pixmap(painter: QPainter, target: QRect, pixmap: QPixmap) -> None:
        ratio = pixmap.devicePixelRatio() or 1.0
        w, h = pixmap.width() / ratio, pixmap.height() / ratio
        scale = min(target.width() / w, target.height() / h)
        dw, dh = w * scale, h * scale
        dest = QRectF(target.x() + (target.width() - dw) / 2, target.y() + (target.height() - dh) / 2, dw, dh)
        # The loader made the thumbnail at (about) this size; smoothing only matters on HiDPI.
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        painter.drawPixmap(dest, pixmap, QRectF(pixmap.rect()))

    @staticmethod
    def _draw_edge(painter: QPainter, square: QRect, color: QColor, dashed: bool) -> None:
        # Dashed for "unsure": the meaning survives printing in grey and colour-blind viewing.
        pen = QPen(color, EDGE, Qt.PenStyle.DashLine if dashed else Qt.PenStyle.SolidLine)
        pen.setJoinStyle(Qt.PenJoinStyle.MiterJoin)
        painter.setPen(pen)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        half = EDGE / 2
        painter.drawRect(QRectF(square).adjusted(half, half, -half, -half))

    @staticmethod
    def _draw_changed_mark(painter: QPainter, square: QRect, color: QColor) -> None:
        """A dog-ear in the top-right corner: this cell's label was changed in review."""
        size = max(12, min(28, square.width() // 4))
        right, top = square.right() + 1, square.top()
        path = QPainterPath(QPointF(right - size, top))
        path.lineTo(right, top)
        path.lineTo(right, top + size)
        path.closeSubpath()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.setPen(QPen(QColor("#FFFFFF"), 1.5))
        painter.setBrush(color)
        painter.drawPath(path)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)

    @staticmethod
    def _draw_problem(painter: QPainter, target: QRect, reason: str, option: QStyleOptionViewItem) -> None:
        painter.save()  # the smaller font must not leak into the label line
        painter.fillRect(target, QColor("#3A1F24"))
        painter.setPen(QColor("#FFB4B4"))
        font = painter.font()
        font.setPointSizeF(max(6.0, font.pointSizeF() * 0.8))
        painter.setFont(font)
        text_rect = target.adjusted(4, 4, -4, -4)
        fm = painter.fontMetrics()
        # Reasons are short ("empty file (0 bytes)"); wrap, and cut whatever does not fit.
        lines = max(1, text_rect.height() // max(1, fm.height()) - 1)
        text = "\u26a0 " + reason
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, _clip_lines(text, fm, text_rect.width(), lines))
        painter.restore()


def _clip_lines(text: str, fm, width: int, lines: int) -> str:
    """Greedy word wrap to at most `lines` lines, eliding the last one."""
    words, out, line = text.split(), [], ""
    for word in words:
        trial = f"{line} {word}".strip()
        if fm.horizontalAdvance(trial) <= width or not line:
            line = trial
        else:
            out.append(line)
            line = word
        if len(out) == lines:
            break
    if len(out) < lines and line:
        out.append(line)
    if out and " ".join(out) != " ".join(words):
        out[-1] = fm.elidedText(out[-1] + " …", Qt.TextElideMode.ElideRight, width)
    return "\n".join(fm.elidedText(s, Qt.TextElideMode.ElideRight, width) for s in out)
