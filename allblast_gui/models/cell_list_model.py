"""The cell grid's Qt model: a thin adapter over `list[CellRow]` and a `CellFilter`.

All the data lives in plain rows (cell_rows); this class only maps visible rows to Qt roles.
Rows appear in batches (canFetchMore/fetchMore, as in Qt's fetchmore example) so a 15,000-cell
folder paints its first screen at once, and thumbnails come from a ThumbnailLoader that never
blocks `data()`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from PySide6.QtCore import QAbstractListModel, QModelIndex, QObject, QPersistentModelIndex, Qt, Slot

from ..style import label_text
from .cell_rows import CellFilter, CellRow, apply_filter
from .thumbnails import ThumbnailLoader

CELL_ROLE = Qt.ItemDataRole.UserRole + 1  # the CellRow itself
PATH_ROLE = Qt.ItemDataRole.UserRole + 2  # CellRow.path (relative to the data root, "/")
LABEL_ROLE = Qt.ItemDataRole.UserRole + 3  # current label (None = unlabeled)
ORIGINAL_ROLE = Qt.ItemDataRole.UserRole + 4  # label from the data set
CHANGED_ROLE = Qt.ItemDataRole.UserRole + 5  # current != original
PATIENT_ROLE = Qt.ItemDataRole.UserRole + 6
PROBLEM_ROLE = Qt.ItemDataRole.UserRole + 7  # why no thumbnail can be shown, else None
ABSPATH_ROLE = Qt.ItemDataRole.UserRole + 8  # absolute file path (str)

BATCH_SIZE = 2000
DEFAULT_TILE = 112

_LABEL_ROLES = [LABEL_ROLE, CHANGED_ROLE, CELL_ROLE, Qt.ItemDataRole.ToolTipRole]
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
        loader.ready.connect(self._on_thumbnail_ready)

    # ---- plain-data API -------------------------------------------------------------------

    def set_rows(self, root: Path, rows: list[CellRow], classes: Sequence[str]) -> None:
        self.beginResetModel()
        self._loader.reset()  # thumbnails still decoding for the previous folder are dropped
        self._root = Path(root)
        self._root_str = str(self._root)
        self._rows = rows
        self._by_path = None
        self._classes = list(classes)
        self._refilter()
        self.endResetModel()

    def set_filter(self, flt: CellFilter) -> None:
        self.beginResetModel()
        self._filter = flt
        self._refilter()
        self.endResetModel()

    def _refilter(self) -> None:
        self._visible = apply_filter(self._rows, self._filter)
        self._visible_row = {self._rows[i].path: pos for pos, i in enumerate(self._visible)}
        self._loaded = min(BATCH_SIZE, len(self._visible))

    def filter(self) -> CellFilter:
        return self._filter

    def root(self) -> Path:
        return self._root

    def all_rows(self) -> list[CellRow]:
        return self._rows

    def classes(self) -> list[str]:
        return list(self._classes)

    def visible_count(self) -> int:
        """Cells passing the filter, including those not fetched into the view yet."""
        return len(self._visible)

    def visible_rows(self) -> list[CellRow]:
        return [self._rows[i] for i in self._visible]

    def cell_at(self, row: int) -> CellRow | None:
        if 0 <= row < len(self._visible):
            return self._rows[self._visible[row]]
        return None

    def abspath(self, cell: CellRow) -> str:
        return str(self._root / cell.path)

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
        touched: list[int] = []
        for path, label in changes.items():
            i = by_path.get(path)
            if i is None:
                continue
            self._rows[i].current = label
            row = self._visible_row.get(path)
            if row is not None and row < self._loaded:
                touched.append(row)
        if not touched:
            return
        touched.sort()
        if len(touched) > 64:  # a bulk relabel: one span instead of thousands of signals
            self.dataChanged.emit(self.index(touched[0]), self.index(touched[-1]), _LABEL_ROLES)
            return
        for row in touched:
            idx = self.index(row)
            self.dataChanged.emit(idx, idx, _LABEL_ROLES)

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
        if self._loaded:  # thumbnails must be re-requested at the new size
            self.dataChanged.emit(self.index(0), self.index(self._loaded - 1), [Qt.ItemDataRole.DecorationRole, Qt.ItemDataRole.SizeHintRole])

    def tile_size(self) -> int:
        return self._tile

    def set_device_pixel_ratio(self, ratio: float) -> None:
        """Thumbnails are decoded at tile x ratio physical pixels (sharp on HiDPI screens)."""
        self._dpr = max(1.0, float(ratio))

    def thumbnail_pixels(self) -> int:
        return round(self._tile * self._dpr)

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
        if not index.isValid() or index.column() != 0 or not 0 <= index.row() < self._loaded:
            return None
        cell = self._rows[self._visible[index.row()]]
        if role == Qt.ItemDataRole.DisplayRole:
            return cell.name
        if role == Qt.ItemDataRole.DecorationRole:
            if cell.problem:
                return None  # never try to decode a file the scan already found broken
            return self._loader.request(self.abspath(cell), self.thumbnail_pixels(), cell.mtime_ns)
        if role == CELL_ROLE:
            return cell
        if role == PATH_ROLE:
            return cell.path
        if role == LABEL_ROLE:
            return cell.current
        if role == ORIGINAL_ROLE:
            return cell.original
        if role == CHANGED_ROLE:
            return cell.changed
        if role == PATIENT_ROLE:
            return cell.patient
        if role == PROBLEM_ROLE:
            return cell.problem or self._loader.failure(self.abspath(cell))
        if role == ABSPATH_ROLE:
            return self.abspath(cell)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(cell)
        return None

    def _tooltip(self, cell: CellRow) -> str:
        lines = [cell.path, f"patient: {cell.patient or 'unknown'}"]
        if cell.changed:
            lines.append(f"label: {label_text(cell.current)} (was {label_text(cell.original)})")
        else:
            lines.append(f"label: {label_text(cell.current)}")
        if cell.width and cell.height:
            lines.append(f"{cell.width} x {cell.height} px")
        problem = cell.problem or self._loader.failure(self.abspath(cell))
        if problem:
            lines.append(f"problem: {problem}")
        return "\n".join(lines)

    def roleNames(self) -> dict[int, bytes]:
        names = dict(super().roleNames())
        names.update({
            CELL_ROLE: b"cell", PATH_ROLE: b"path", LABEL_ROLE: b"label",
            ORIGINAL_ROLE: b"original", CHANGED_ROLE: b"changed", PATIENT_ROLE: b"patient",
            PROBLEM_ROLE: b"problem", ABSPATH_ROLE: b"abspath",
        })
        return names

    # ---- thumbnails -----------------------------------------------------------------------

    @Slot(str, int)
    def _on_thumbnail_ready(self, abspath: str, generation: int) -> None:
        if generation != self._loader.generation:
            return
        try:
            path = Path(abspath).relative_to(self._root).as_posix()
        except ValueError:
            path = abspath  # rows built with absolute paths
        row = self._visible_row.get(path)
        if row is not None and row < self._loaded:
            idx = self.index(row)
            self.dataChanged.emit(idx, idx, _THUMB_ROLES)
