"""The thumbnail grid: a QListView in icon mode over a CellListModel.

Label keys are not handled here: the main window owns shortcuts (so menus, the inspector and the
grid agree on them) and calls `selected_paths()` / `advance()`. Arrows, Home/End, PageUp/Down,
shift-click and Ctrl+A are Qt's defaults, made aware of lazily fetched rows.
"""
from __future__ import annotations

from PySide6.QtCore import QItemSelection, QItemSelectionModel, QModelIndex, QPoint, QSize, Signal
from PySide6.QtWidgets import QAbstractItemView, QListView, QStyleOptionViewItem, QWidget

from ..cells.rows import CellRow
from ..models.cell_list_model import LABEL_ROLE, CellListModel
from .tile_delegate import TileDelegate


class CellGridView(QListView):
    currentCellChanged = Signal(object)  # CellRow | None
    selectionCountChanged = Signal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setFlow(QListView.Flow.LeftToRight)
        self.setWrapping(True)
        self.setUniformItemSizes(True)  # one sizeHint for all: layout of 15,000 tiles is O(1)
        self.setLayoutMode(QListView.LayoutMode.Batched)  # lay out in slices, keep the GUI live
        self.setBatchSize(500)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)  # no drag-to-rearrange of cells
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setSelectionRectVisible(True)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.setSpacing(0)  # the grid size already includes the delegate's margins
        self.setMouseTracking(True)  # tooltips
        self._delegate = TileDelegate(self)
        self.setItemDelegate(self._delegate)
        self._tile = 112

    # ---- model wiring ---------------------------------------------------------------------

    def setModel(self, model: CellListModel | None) -> None:  # noqa: N802 (Qt override)
        old = self.model()
        if old is not None:
            for signal, slot in self._model_connections(old):
                signal.disconnect(slot)
            if isinstance(old, CellListModel):
                old.set_visible_range_provider(None)
        super().setModel(model)
        if model is None:
            return
        for signal, slot in self._model_connections(model):
            signal.connect(slot)
        if isinstance(model, CellListModel):
            # Thumbnails are only decoded for tiles on screen when the request is made.
            model.set_visible_range_provider(self.visible_row_range)
        selection = self.selectionModel()
        selection.currentChanged.connect(self._on_current_changed)
        selection.selectionChanged.connect(self._on_selection_changed)
        model.set_device_pixel_ratio(self.devicePixelRatioF())
        model.set_tile_size(self._tile)
        self._apply_grid()

    def _model_connections(self, model):
        return [(model.modelReset, self._on_model_reset), (model.dataChanged, self._on_data_changed)]

    def cell_model(self) -> CellListModel | None:
        model = self.model()
        return model if isinstance(model, CellListModel) else None

    # ---- tile size ------------------------------------------------------------------------

    def setTileSize(self, px: int) -> None:  # noqa: N802 (Qt-style name, as the API promises)
        self._tile = max(16, int(px))
        model = self.cell_model()
        if model is not None:
            model.set_device_pixel_ratio(self.devicePixelRatioF())
            model.set_tile_size(self._tile)
        self._apply_grid()

    def tileSize(self) -> int:  # noqa: N802
        return self._tile

    def visible_row_range(self) -> tuple[int, int] | None:
        """(first, last) rows with a tile on screen, or None when none is (hidden, empty)."""
        model = self.model()
        if model is None or not self.isVisible():
            return None
        rows = model.rowCount()
        if rows == 0:
            return None
        vp = self.viewport().rect()
        grid = self.gridSize()
        # Corners of the viewport, stepped in by less than a tile: a corner may fall in the gap
        # right of the last column or below the last row.
        first = last = None
        for dy in (1, grid.height() // 2):
            for dx in (1, grid.width() // 2):
                idx = self.indexAt(QPoint(vp.left() + dx, vp.top() + dy))
                if idx.isValid():
                    first = idx.row() if first is None else min(first, idx.row())
        for dy in (1, grid.height() // 2, grid.height()):
            for dx in (1, grid.width() // 2, grid.width()):
                idx = self.indexAt(QPoint(vp.right() - dx, vp.bottom() - dy))
                if idx.isValid():
                    last = idx.row() if last is None else max(last, idx.row())
        if first is None:
            return (0, rows - 1)  # cannot tell (layout pending): do not drop any request
        if last is None:
            last = rows - 1  # the bottom of the screen is below the last tile
        # Keep the next row of tiles on either side too: they are about to scroll in.
        cols = max(1, vp.width() // max(1, grid.width()))
        return (max(0, first - cols), min(rows - 1, last + cols))

    def _apply_grid(self) -> None:
        option = QStyleOptionViewItem()
        self.initViewItemOption(option)  # the view's font: the label line's height
        self.setGridSize(self._delegate.size_for_tile(self._tile, option))
        current = self.currentIndex()
        if current.isValid():
            self.scrollTo(current)  # zooming keeps the reviewer's cell in sight

    # ---- queries and navigation -----------------------------------------------------------

    def current_path(self) -> str | None:
        cell = self._cell(self.currentIndex())
        return cell.path if cell else None

    def current_cell(self) -> CellRow | None:
        return self._cell(self.currentIndex())

    def selected_rows(self) -> list[int]:
        selection = self.selectionModel()
        if selection is None:
            return []
        return sorted(i.row() for i in selection.selectedIndexes())

    def selected_paths(self) -> list[str]:
        """Paths of the selected cells in display order."""
        model = self.cell_model()
        if model is None:
            return []
        return [c.path for r in self.selected_rows() if (c := model.cell_at(r)) is not None]

    def selection_count(self) -> int:
        selection = self.selectionModel()
        # Sum of ranges, not len(selectedIndexes()): Ctrl+A on 15,000 cells stays cheap.
        return sum(r.height() for r in selection.selection()) if selection is not None else 0

    def select_path(self, path: str) -> bool:
        """Make `path` the current, only selected cell and scroll to it; False if not visible."""
        model = self.cell_model()
        row = model.row_of(path) if model is not None else None
        if row is None:
            return False
        self._go_to(row)
        return True

    def select_paths(self, paths) -> int:
        """Select exactly the shown cells among `paths` (the first becomes current); returns how many."""
        model = self.cell_model()
        rows = sorted(r for p in paths if model is not None and (r := model.row_of(p)) is not None)
        selection = QItemSelection()
        for r in rows:
            index = model.index(r, 0)
            selection.select(index, index)
        if rows:
            self.setCurrentIndex(model.index(rows[0], 0))
        self.selectionModel().select(selection, QItemSelectionModel.SelectionFlag.ClearAndSelect)
        return len(rows)

    def advance(self, step: int = 1) -> bool:
        """Move to the cell `step` places on (clamped), selecting only it; False at the end."""
        model = self.cell_model()
        if model is None or model.visible_count() == 0:
            return False
        current = self.currentIndex()
        start = current.row() if current.isValid() else -1 if step > 0 else model.visible_count()
        row = max(0, min(model.visible_count() - 1, start + step))
        moved = row != start
        self._go_to(row)
        return moved

    def _go_to(self, row: int) -> None:
        model = self.cell_model()
        model.ensure_loaded(row)
        index = model.index(row, 0)
        self.selectionModel().setCurrentIndex(index, QItemSelectionModel.SelectionFlag.ClearAndSelect)
        self.scrollTo(index)

    def selectAll(self) -> None:  # noqa: N802 (Qt override)
        model = self.cell_model()
        if model is not None:
            model.fetch_all()  # rows not fetched yet would otherwise be left out silently
        super().selectAll()

    def moveCursor(self, action: QAbstractItemView.CursorAction, modifiers) -> QModelIndex:  # noqa: N802
        model = self.cell_model()
        if model is not None and action == QAbstractItemView.CursorAction.MoveEnd:
            model.fetch_all()  # End means the last cell, not the last one fetched so far
        return super().moveCursor(action, modifiers)

    # ---- signals out ----------------------------------------------------------------------

    def _cell(self, index: QModelIndex) -> CellRow | None:
        model = self.cell_model()
        return model.cell_at(index.row()) if model is not None and index.isValid() else None

    def _on_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        self.currentCellChanged.emit(self._cell(current))

    def _on_selection_changed(self, _selected: QItemSelection, _deselected: QItemSelection) -> None:
        self.selectionCountChanged.emit(self.selection_count())

    def _on_model_reset(self) -> None:
        # A reset clears selection and current without emitting their change signals.
        self.currentCellChanged.emit(None)
        self.selectionCountChanged.emit(0)

    def _on_data_changed(self, top: QModelIndex, bottom: QModelIndex, roles=()) -> None:
        # Relabelling the current cell: listeners (inspector) see its new label at once.
        current = self.currentIndex()
        if current.isValid() and LABEL_ROLE in roles and top.row() <= current.row() <= bottom.row():
            self.currentCellChanged.emit(self._cell(current))

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(4 * self.gridSize().width() + 24, 3 * self.gridSize().height())
