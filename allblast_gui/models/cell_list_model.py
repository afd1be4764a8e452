"""The cell grid's Qt model: a thin adapter over `list[CellRow]` and a `CellFilter`.

All the data lives in plain rows (cells.rows); this class only maps visible rows to Qt roles.
Rows appear in batches (canFetchMore/fetchMore, as in Qt's fetchmore example) so a 15,000-cell
folder paints its first screen at once. Thumbnails come from a ThumbnailLoader that never blocks
`data()`; when to ask it, and when to repaint, is the ThumbnailScheduler's job.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from PySide6.QtCore import QAbstractListModel, QModelIndex, QObject, QPersistentModelIndex, Qt, QTimer, Slot
from PySide6.QtGui import QPixmap

from ..style import label_text
from ..cells.rows import CellFilter, CellRow, apply_filter
from ..cells.thumbnail_scheduler import ThumbnailScheduler
from ..cells.thumbnails import IDENTITY, Display, ThumbnailLoader, adjust_image

CELL_ROLE = Qt.ItemDataRole.UserRole + 1  # the CellRow itself
PATH_ROLE = Qt.ItemDataRole.UserRole + 2  # CellRow.path (relative to the data root, "/")
LABEL_ROLE = Qt.ItemDataRole.UserRole + 3  # current label (None = unlabeled)
ORIGINAL_ROLE = Qt.ItemDataRole.UserRole + 4  # label from the data set
CHANGED_ROLE = Qt.ItemDataRole.UserRole + 5  # current != original
PATIENT_ROLE = Qt.ItemDataRole.UserRole + 6
PROBLEM_ROLE = Qt.ItemDataRole.UserRole + 7  # why no thumbnail can be shown, else None
ABSPATH_ROLE = Qt.ItemDataRole.UserRole + 8  # absolute file path (str)
PREDICTED_ROLE = Qt.ItemDataRole.UserRole + 9  # the shown model's class (None: no prediction)
PROBABILITY_ROLE = Qt.ItemDataRole.UserRole + 10  # its probability
DISAGREES_ROLE = Qt.ItemDataRole.UserRole + 11  # model's class != current label

BATCH_SIZE = 2000
_MAX_ADJUSTED = 4000  # adjusted thumbnails kept (as many as the loader keeps)
_ADJUST_BUDGET_S = 0.008  # GUI-thread time for display adjustments per event-loop turn
DEFAULT_TILE = 112

_LABEL_ROLES = [LABEL_ROLE, CHANGED_ROLE, CELL_ROLE, DISAGREES_ROLE, Qt.ItemDataRole.ToolTipRole]
_PREDICTION_ROLES = [PREDICTED_ROLE, PROBABILITY_ROLE, DISAGREES_ROLE, CELL_ROLE, Qt.ItemDataRole.ToolTipRole]
_THUMB_ROLES = [Qt.ItemDataRole.DecorationRole, PROBLEM_ROLE]

_Index = QModelIndex | QPersistentModelIndex


class CellListModel(QAbstractListModel):
    def __init__(self, loader: ThumbnailLoader, parent: QObject | None = None):
        super().__init__(parent)
        self._loader = loader
        self._root = Path()
        self._root_str = ""
        self._rows: list[CellRow] = []
        self._classes: list[str] = []
        self._filter = CellFilter()
        self._visible: list[int] = []  # indices into _rows, in display order
        self._visible_row: dict[str, int] = {}  # path -> position in _visible
        self._loaded = 0  # rows exposed to views so far (fetchMore)
        self._by_path: dict[str, int] | None = None  # path -> index in _rows, built on demand
        self._tile = DEFAULT_TILE
        self._dpr = 1.0
        self._thumb_px = DEFAULT_TILE
        self._prefix = ""  # root + separator: abspath = prefix + CellRow.path
        self._classes_version = 0  # bumped when classes change (tile colours depend on them)
        self._tooltips: dict[int, tuple] = {}  # index into _rows -> (inputs, text)
        self._display = IDENTITY  # brightness/contrast/gamma: the shown pixels, never the files
        # Thumbnails as `_display` shows them, keyed by the loader pixmap's cacheKey: adjusted once
        # per thumbnail and setting (a 256-entry table), so painting stays one blit.
        self._adjusted: OrderedDict[int, QPixmap] = OrderedDict()
        self._patient_on_tiles = False
        self._adjust_spent = 0.0  # seconds spent adjusting thumbnails in this event-loop turn
        self._adjust_later: set[int] = set()  # rows whose adjustment waits for the next turn
        self.scheduler = ThumbnailScheduler(loader, self._loaded_row_of_file, self)
        self.scheduler.rowsReady.connect(self._on_rows_ready)
        self._set_prefix()

    # ---- plain-data API -------------------------------------------------------------------

    def set_rows(self, root: Path, rows: list[CellRow], classes: Sequence[str]) -> None:
        self.beginResetModel()
        self._loader.reset()  # thumbnails still decoding for the previous folder are dropped
        self._root = Path(root)
        self._root_str = str(self._root)
        self._set_prefix()
        self._rows = rows
        self._by_path = None
        self._classes = classes if hasattr(classes, "color_of") else list(classes)  # a ClassSet keeps its colours
        self._classes_version += 1
        self._tooltips.clear()
        self._refilter()
        self.endResetModel()

    def _set_prefix(self) -> None:
        # str(root / path) without pathlib per call (it dominated data()); derived from pathlib
        # once so "." and "/" roots join exactly as Path does.
        self._prefix = str(self._root / "x")[:-1]

    def set_filter(self, flt: CellFilter) -> None:
        self.beginResetModel()
        self._filter = flt
        self._refilter()
        self.endResetModel()

    def _refilter(self) -> None:
        self._forget_thumbnail_rows()
        self._visible = apply_filter(self._rows, self._filter)
        self._visible_row = {self._rows[i].path: pos for pos, i in enumerate(self._visible)}
        self._loaded = min(BATCH_SIZE, len(self._visible))

    def filter(self) -> CellFilter:
        return self._filter

    def root(self) -> Path:
        return self._root

    def all_rows(self) -> list[CellRow]:
        return self._rows

    def classes(self) -> Sequence[str]:
        """The class set (names in order; a ClassSet also knows keys and colours). Do not modify."""
        return self._classes

    def set_classes(self, classes: Sequence[str]) -> None:
        """A new class set (names, keys or colours edited): tiles are drawn again."""
        self._classes = classes if hasattr(classes, "color_of") else list(classes)
        self._classes_version += 1
        if self.rowCount():
            self.dataChanged.emit(self.index(0, 0), self.index(self.rowCount() - 1, 0))

    def visible_count(self) -> int:
        """Cells passing the filter, including those not fetched into the view yet."""
        return len(self._visible)

    def cell_at(self, row: int) -> CellRow | None:
        if 0 <= row < len(self._visible):
            return self._rows[self._visible[row]]
        return None

    def row_for_path(self, path: str) -> CellRow | None:
        """The row of a cell, whether or not the filter shows it."""
        i = self._index_by_path().get(path)
        return self._rows[i] if i is not None else None

    def abspath(self, cell: CellRow) -> str:
        path = cell.path
        if path.startswith("/"):  # rows built with absolute paths
            return str(self._root / path)
        return self._prefix + path

    def classes_version(self) -> int:
        """Changes whenever classes() may have (so cached tile renderings can be dropped)."""
        return self._classes_version

    def row_of(self, path: str) -> int | None:
        """Visible row of a cell (by CellRow.path), or None when filtered out.

        Fetches batches up to that row, so `index(row_of(p), 0)` is always valid.
        """
        row = self._visible_row.get(path)
        if row is not None:
            self.ensure_loaded(row)
        return row

    def ensure_loaded(self, row: int) -> None:
        """Fetch batches until `row` exists for views (e.g. before selecting or scrolling to it)."""
        row = min(row, len(self._visible) - 1)
        if row >= self._loaded:
            self._fetch(row + 1 - self._loaded)

    def fetch_all(self) -> None:
        """Expose every visible row (select-all must cover cells not scrolled to yet)."""
        self._fetch(len(self._visible) - self._loaded)

    def update_labels(self, changes: Mapping[str, str | None]) -> None:
        """Set the current label of cells (by path) and repaint the visible ones.

        Deliberately does not re-filter: a cell relabelled out of a class filter stays in place
        until the filter changes, so the reviewer's place in the grid never jumps under them.
        """
        by_path = self._index_by_path()
        for path, label in changes.items():
            i = by_path.get(path)
            if i is not None:
                self._rows[i].current = label
        self._repaint(changes, _LABEL_ROLES)

    def predictions_changed(self, paths=None) -> None:
        """The rows of `paths` (None: every row) got new predictions: repaint the visible ones.
        Like relabelling, this does not re-sort: the reviewer's place stays put."""
        if paths is None:
            if self._loaded:
                self.dataChanged.emit(self.index(0), self.index(self._loaded - 1), _PREDICTION_ROLES)
            return
        self._repaint(paths, _PREDICTION_ROLES)

    def review_marks_changed(self, paths) -> None:
        """The rows of `paths` got another review mark (`CellRow.reviewed`): repaint them."""
        self._repaint(paths, _LABEL_ROLES)

    def _repaint(self, paths, roles) -> None:
        touched = sorted(row for p in paths if (row := self._visible_row.get(p)) is not None and row < self._loaded)
        if not touched:
            return
        if len(touched) > 64:  # a bulk change: one span instead of thousands of signals
            self.dataChanged.emit(self.index(touched[0]), self.index(touched[-1]), roles)
            return
        for row in touched:
            idx = self.index(row)
            self.dataChanged.emit(idx, idx, roles)

    def _index_by_path(self) -> dict[str, int]:
        # Built on the first relabel after set_rows, not per call: a bulk relabel of a
        # 15,000-cell folder must not rebuild it for every key press.
        if self._by_path is None or len(self._by_path) != len(self._rows):
            self._by_path = {r.path: i for i, r in enumerate(self._rows)}
        return self._by_path

    def set_tile_size(self, px: int) -> None:
        px = max(16, int(px))
        if px == self._tile:
            return
        self._tile = px
        self._thumb_px = round(self._tile * self._dpr)
        self.scheduler.forget_rows()
        if self._loaded:  # thumbnails must be re-requested at the new size
            self.dataChanged.emit(self.index(0), self.index(self._loaded - 1), [Qt.ItemDataRole.DecorationRole, Qt.ItemDataRole.SizeHintRole])

    def tile_size(self) -> int:
        return self._tile

    def set_device_pixel_ratio(self, ratio: float) -> None:
        """Thumbnails are decoded at tile x ratio physical pixels (sharp on HiDPI screens)."""
        self._dpr = max(1.0, float(ratio))
        self._thumb_px = round(self._tile * self._dpr)

    def thumbnail_pixels(self) -> int:
        return self._thumb_px

    def set_visible_range_provider(self, provider: Callable[[], tuple[int, int] | None] | None) -> None:
        """`provider()` -> (first, last) rows on screen (or None: unknown). Thumbnails are only
        requested for rows in that range, and queued ones scrolled out of it are cancelled."""
        self.scheduler.set_visible_range_provider(provider)

    def thumbnail(self, row: int) -> QPixmap | None:
        """The thumbnail of a fetched row if it is in memory; otherwise None, and the row is
        noted so its thumbnail is requested shortly if it is still on screen then."""
        cell = self._rows[self._visible[row]]
        if cell.problem:
            return None  # never try to decode a file the scan already found broken
        key = (self.abspath(cell), self._thumb_px, cell.mtime_ns)
        pixmap = self._loader.lookup(*key)
        if pixmap is None:
            if self._loader.failure(key[0]) is None:
                self.scheduler.want(row, key)
            return None
        if self._display is IDENTITY:
            return pixmap
        raw_key = pixmap.cacheKey()
        shown = self._adjusted.get(raw_key)
        if shown is not None:
            self._adjusted.move_to_end(raw_key)
            return shown
        # Adjusting costs ~0.3 ms a tile: a screenful of new tiles in one paint would stall a
        # scroll. Past a few ms per event-loop turn, the rest wait (shown as loading) for the next.
        if self._adjust_spent >= _ADJUST_BUDGET_S:
            self._adjust_later.add(row)
            return None
        if not self._adjust_spent:
            QTimer.singleShot(0, self._end_adjust_turn)
        start = time.perf_counter()
        shown = self._adjusted[raw_key] = QPixmap.fromImage(adjust_image(pixmap.toImage(), self._display))
        while len(self._adjusted) > _MAX_ADJUSTED:
            self._adjusted.popitem(last=False)
        self._adjust_spent += time.perf_counter() - start or 1e-9
        return shown

    def _end_adjust_turn(self) -> None:
        self._adjust_spent = 0.0
        rows, self._adjust_later = sorted(self._adjust_later), set()
        rows = [r for r in rows if r < self._loaded]
        if rows:
            self.dataChanged.emit(self.index(rows[0]), self.index(rows[-1]), [Qt.ItemDataRole.DecorationRole])

    # ---- display ------------------------------------------------------------------------------

    def set_display(self, display: Display) -> None:
        """Show the thumbnails with `display` (brightness, contrast, gamma, auto contrast)."""
        display = IDENTITY if display.is_identity() else display
        if display == self._display:
            return
        self._display = display
        self._adjusted.clear()
        self._adjust_later.clear()
        if self._loaded:
            self.dataChanged.emit(self.index(0), self.index(self._loaded - 1), [Qt.ItemDataRole.DecorationRole])

    def display(self) -> Display:
        return self._display

    def sample_images(self, limit: int = 256) -> list:
        """Up to `limit` thumbnails already in memory (as decoded, unadjusted QImages), spread over
        the data set: what auto contrast measures. Never decodes anything."""
        readable = [r for r in self._rows if not r.problem]
        step = max(1, len(readable) // (limit * 4) if readable else 1)
        images = []
        for cell in readable[::step]:
            pixmap = self._loader.cached(self.abspath(cell), self._thumb_px, cell.mtime_ns)
            if pixmap is not None:
                images.append(pixmap.toImage())
                if len(images) >= limit:
                    break
        return images

    def set_patient_on_tiles(self, on: bool) -> None:
        on = bool(on)
        if on != self._patient_on_tiles:
            self._patient_on_tiles = on
            if self._loaded:
                self.dataChanged.emit(self.index(0), self.index(self._loaded - 1), [PATIENT_ROLE])

    def patient_on_tiles(self) -> bool:
        return self._patient_on_tiles

    def problem(self, row: int) -> str | None:
        cell = self._rows[self._visible[row]]
        return cell.problem or self._loader.failure(self.abspath(cell))

    # ---- Qt model interface ---------------------------------------------------------------

    def rowCount(self, parent: _Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else self._loaded

    def canFetchMore(self, parent: _Index = QModelIndex()) -> bool:
        return not parent.isValid() and self._loaded < len(self._visible)

    def fetchMore(self, parent: _Index = QModelIndex()) -> None:
        if not parent.isValid():
            self._fetch(BATCH_SIZE)

    def _fetch(self, count: int) -> None:
        count = min(count, len(self._visible) - self._loaded)
        if count <= 0:
            return
        self.beginInsertRows(QModelIndex(), self._loaded, self._loaded + count - 1)
        self._loaded += count
        self.endInsertRows()

    def flags(self, index: _Index) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemNeverHasChildren

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole):
        row = index.row()
        if not 0 <= row < self._loaded or index.column() != 0 or not index.isValid():
            return None
        getter = _ROLE_GETTERS.get(role)
        return None if getter is None else getter(self, row)

    def _tooltip_row(self, row: int) -> str:
        i = self._visible[row]
        cell = self._rows[i]
        problem = cell.problem or self._loader.failure(self.abspath(cell))
        inputs = (cell.current, problem, cell.pred, cell.pred_p, cell.reviewed)
        cached = self._tooltips.get(i)
        if cached is None or cached[0] != inputs:
            cached = self._tooltips[i] = (inputs, self._tooltip(cell))
        return cached[1]

    def _tooltip(self, cell: CellRow) -> str:
        lines = [cell.path, f"patient: {cell.patient or 'unknown'}"]
        if cell.changed:
            lines.append(f"label: {label_text(cell.current)} (was {label_text(cell.original)})")
        else:
            lines.append(f"label: {label_text(cell.current)}")
        if cell.reviewed:
            lines.append(f"reviewed: {cell.reviewed}")
        if cell.width and cell.height:
            lines.append(f"{cell.width} x {cell.height} px")
        if cell.pred is not None:
            lines.append(f"model: {cell.pred} ({cell.pred_p:.0%}), margin {cell.margin:.2f}"
                         + ("; disagrees with the label" if cell.disagrees else ""))
        problem = cell.problem or self._loader.failure(self.abspath(cell))
        if problem:
            lines.append(f"problem: {problem}")
        return "\n".join(lines)

    def roleNames(self) -> dict[int, bytes]:
        names = dict(super().roleNames())
        names.update({
            CELL_ROLE: b"cell", PATH_ROLE: b"path", LABEL_ROLE: b"label",
            ORIGINAL_ROLE: b"original", CHANGED_ROLE: b"changed", PATIENT_ROLE: b"patient",
            PROBLEM_ROLE: b"problem", ABSPATH_ROLE: b"abspath", PREDICTED_ROLE: b"predicted",
            PROBABILITY_ROLE: b"probability", DISAGREES_ROLE: b"disagrees",
        })
        return names

    # ---- thumbnails -----------------------------------------------------------------------

    def _forget_thumbnail_rows(self) -> None:
        self.scheduler.forget_rows()  # rows are about to mean other cells

    def _loaded_row_of_file(self, abspath: str) -> int | None:
        prefix = self._prefix
        path = abspath[len(prefix):] if prefix and abspath.startswith(prefix) else abspath
        row = self._visible_row.get(path)
        if row is None and path is not abspath:
            row = self._visible_row.get(abspath)  # rows built with absolute paths
        return row if row is not None and row < self._loaded else None

    @Slot(int, int)
    def _on_rows_ready(self, first: int, last: int) -> None:
        last = min(last, self._loaded - 1)
        if first <= last:
            self.dataChanged.emit(self.index(first), self.index(last), _THUMB_ROLES)


def _decoration(model: CellListModel, row: int):
    return model.thumbnail(row)


# role -> getter(model, row): one dict lookup instead of a chain of comparisons per data() call
_ROLE_GETTERS: dict[int, Callable[[CellListModel, int], object]] = {
    Qt.ItemDataRole.DisplayRole: lambda m, r: m._rows[m._visible[r]].name,
    Qt.ItemDataRole.DecorationRole: _decoration,
    CELL_ROLE: lambda m, r: m._rows[m._visible[r]],
    PATH_ROLE: lambda m, r: m._rows[m._visible[r]].path,
    LABEL_ROLE: lambda m, r: m._rows[m._visible[r]].current,
    ORIGINAL_ROLE: lambda m, r: m._rows[m._visible[r]].original,
    CHANGED_ROLE: lambda m, r: m._rows[m._visible[r]].changed,
    PATIENT_ROLE: lambda m, r: m._rows[m._visible[r]].patient,
    PROBLEM_ROLE: CellListModel.problem,
    ABSPATH_ROLE: lambda m, r: m.abspath(m._rows[m._visible[r]]),
    Qt.ItemDataRole.ToolTipRole: CellListModel._tooltip_row,
    PREDICTED_ROLE: lambda m, r: m._rows[m._visible[r]].pred,
    PROBABILITY_ROLE: lambda m, r: m._rows[m._visible[r]].pred_p,
    DISAGREES_ROLE: lambda m, r: m._rows[m._visible[r]].disagrees,
}
