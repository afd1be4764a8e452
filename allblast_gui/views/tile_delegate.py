"""Paints one cell tile: thumbnail, label-coloured edge, label text, changed mark, problems.

Everything comes from the model, so the delegate's only state is a cache of rendered tiles: each
tile is drawn once into a QPixmap keyed by everything it shows (cell, label, changed, problem,
thumbnail, tile size, selection, palette, font, device pixel ratio), and paint() is then one
drawPixmap plus the focus frame. Tiles still loading or unreadable do not depend on the cell at
all, so they share one rendering per label. It never decodes or scales images itself beyond
drawPixmap into the tile (the loader already made the thumbnail at the tile's pixel size).
"""
from __future__ import annotations

from collections import OrderedDict

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QPointF, QRect, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPalette, QPen, QPixmap
from PySide6.QtWidgets import QStyle, QStyledItemDelegate, QStyleOptionViewItem

from ..models.cell_list_model import CHANGED_ROLE, DEFAULT_TILE, LABEL_ROLE, PROBLEM_ROLE, CellListModel
from ..style import DISAGREE_COLOR, PROBLEM_COLOR, is_unsure, label_color, label_text

MARGIN = 4  # around the tile, inside the grid cell: selection shows as a frame around it
EDGE = 3  # label-coloured edge around the thumbnail
TEXT_GAP = 2
# Rendered tiles kept (bytes of pixels): a few screens' worth, so scrolling back and the repaints
# while thumbnails arrive are one blit per tile.
CACHE_BYTES = 64 * 1024 * 1024


UNREADABLE = "unreadable"


REVIEWED_MARK = " ✓"


def tile_caption(cell, patient: bool = False) -> str:
    """The line under a tile: the current label, or "unreadable" for a file that cannot be shown
    (it has no label, but it is not a cell waiting to be labelled); with `patient`, the patient id
    after it (View ▸ Patient on Tiles). A ✓ after the label: the expert reviewed it (set, accepted,
    confirmed, or unsure with a note)."""
    text = UNREADABLE if cell.problem else label_text(cell.current) + (REVIEWED_MARK if cell.reviewed else "")
    return f"{text} · {cell.patient}" if patient and cell.patient else text


class TileDelegate(QStyledItemDelegate):
    def __init__(self, parent=None):
        super().__init__(parent)
        self._cache: OrderedDict[tuple, QPixmap] = OrderedDict()  # LRU: oldest first
        self._cache_max = 256
        self.renders = 0  # tiles rendered (not served from the cache): for tests and benchmarks

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
        model = index.model()
        if not isinstance(model, CellListModel):
            self._paint_generic(painter, option, index)
            return
        row = index.row()
        cell = model.cell_at(row)
        if cell is None:
            return
        pixmap = model.thumbnail(row)
        problem = model.problem(row) if pixmap is None else None  # a shown thumbnail has none
        state = option.state
        selected = bool(state & QStyle.StateFlag.State_Selected)
        rect = option.rect
        w, h = rect.width(), rect.height()
        dpr = painter.device().devicePixelRatioF() if painter.device() is not None else 1.0
        palette, font = option.palette, option.font
        label = cell.current
        caption = tile_caption(cell, model.patient_on_tiles()) if problem is None else UNREADABLE
        badge = (cell.pred, round(cell.pred_p * 100), cell.disagrees) if cell.pred is not None else None
        key = (
            # Loading and unreadable tiles look the same for every cell with the same label.
            cell.path if pixmap is not None else None, pixmap.cacheKey() if pixmap is not None else 0,
            label, caption, cell.changed, problem, badge, model.tile_size(), w, h, selected, dpr,
            model.classes_version(), id(model), palette.cacheKey(), font.key(),
        )
        cache = self._cache
        tile_pm = cache.get(key)
        if tile_pm is None:
            tile_pm = self._render_tile(option, model, label, cell.changed, pixmap, problem, selected, w, h, dpr,
                                        badge, caption)
            cache[key] = tile_pm
            if len(cache) == 1:
                self._cache_max = max(64, CACHE_BYTES // max(1, tile_pm.width() * tile_pm.height() * 4))
            while len(cache) > self._cache_max:
                cache.popitem(last=False)
        else:
            cache.move_to_end(key)
        painter.drawPixmap(rect.topLeft(), tile_pm)
        if state & QStyle.StateFlag.State_HasFocus:
            self._draw_focus(painter, rect, palette)

    def _render_tile(self, option: QStyleOptionViewItem, model, label, changed: bool, pixmap, problem,
                     selected: bool, w: int, h: int, dpr: float, badge=None, caption: str | None = None) -> QPixmap:
        self.renders += 1
        out = QPixmap(max(1, round(w * dpr)), max(1, round(h * dpr)))
        out.setDevicePixelRatio(dpr)
        # Opaque, on the view's own background: blitting an opaque pixmap is a copy, while an
        # alpha one is blended pixel by pixel (0.17 ms a tile, most of a scroll frame).
        out.fill(option.palette.color(QPalette.ColorRole.Base))
        p = QPainter(out)
        try:
            p.setFont(option.font)  # as the view's painter has: problem text derives from it
            self._draw_tile(p, option, QRect(0, 0, w, h), model.tile_size(), model.classes(), label, changed,
                            pixmap, problem, selected, badge, caption)
        finally:
            p.end()
        return out

    def _paint_generic(self, painter: QPainter, option: QStyleOptionViewItem, index) -> None:
        """Any other model: straight from its roles, uncached."""
        model = index.model()
        classes = model.classes() if hasattr(model, "classes") else []
        painter.save()
        self._draw_tile(painter, option, option.rect, self.tile_size(index), classes, index.data(LABEL_ROLE),
                        bool(index.data(CHANGED_ROLE)), index.data(Qt.ItemDataRole.DecorationRole),
                        index.data(PROBLEM_ROLE), bool(option.state & QStyle.StateFlag.State_Selected))
        painter.restore()
        if option.state & QStyle.StateFlag.State_HasFocus:
            self._draw_focus(painter, option.rect, option.palette)

    @staticmethod
    def _draw_focus(painter: QPainter, rect: QRect, palette: QPalette) -> None:
        painter.save()
        pen = QPen(palette.color(QPalette.ColorRole.Highlight).darker(150), 1, Qt.PenStyle.DotLine)
        painter.setPen(pen)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRect(rect.adjusted(1, 1, -2, -2))
        painter.restore()

    def _draw_tile(self, painter: QPainter, option: QStyleOptionViewItem, rect: QRect, tile: int, classes,
                   label, changed: bool, pixmap, problem, selected: bool, badge=None,
                   caption: str | None = None) -> None:
        palette = option.palette
        color = label_color(label, classes)
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
        if isinstance(pixmap, QPixmap) and not pixmap.isNull():
            self._draw_pixmap(painter, inner, pixmap)
        elif problem:
            self._draw_problem(painter, inner, problem, option)
        else:
            painter.fillRect(inner, QColor("#2A2A2A"))  # still loading: a calm, empty tile

        self._draw_edge(painter, square, QColor(PROBLEM_COLOR) if problem else color, is_unsure(label))
        if changed:
            self._draw_changed_mark(painter, square, color)
        if badge is not None:
            self._draw_badge(painter, inner, option, classes, *badge)

        # Label text under the thumbnail.
        painter.setFont(option.font)
        text_rect = QRect(rect.x() + MARGIN, square.bottom() + 1 + TEXT_GAP, rect.width() - 2 * MARGIN, option.fontMetrics.height())
        role = QPalette.ColorRole.HighlightedText if selected else QPalette.ColorRole.Text
        painter.setPen(palette.color(role))
        if caption is None:
            caption = UNREADABLE if problem else label_text(label)
        text = option.fontMetrics.elidedText(caption, Qt.TextElideMode.ElideRight, text_rect.width())
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignVCenter, text)

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
    def _draw_badge(painter: QPainter, inner: QRect, option: QStyleOptionViewItem, classes, predicted: str,
                    percent: int, disagrees: bool) -> None:
        """The model's class and probability in the bottom-right corner ("neut 93%"); a model that
        disagrees with the label gets a red badge with "≠" in front."""
        painter.save()
        font = painter.font()
        font.setPointSizeF(max(6.0, font.pointSizeF() * 0.78))
        font.setBold(disagrees)
        painter.setFont(font)
        fm = painter.fontMetrics()
        name = predicted if fm.horizontalAdvance(predicted) < inner.width() * 0.55 else predicted[:4]
        text = f"{'≠ ' if disagrees else ''}{name} {percent}%"
        text = fm.elidedText(text, Qt.TextElideMode.ElideRight, inner.width() - 4)
        tw, th = fm.horizontalAdvance(text) + 6, fm.height() + 1
        box = QRect(inner.right() - tw + 1, inner.bottom() - th + 1, tw, th)
        background = QColor(DISAGREE_COLOR) if disagrees else label_color(predicted, classes).darker(130)
        background.setAlpha(225)
        painter.fillRect(box, background)
        painter.setPen(QColor("#FFFFFF"))
        painter.drawText(box, Qt.AlignmentFlag.AlignCenter, text)
        painter.restore()

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
