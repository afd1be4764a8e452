"""CellGridView and TileDelegate: navigation, selection over lazy rows, signals, painting."""
from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from allblast_gui.models.cell_list_model import BATCH_SIZE, CellListModel
from allblast_gui.cells.rows import CellRow
from engine.data.cells import UNSURE
from allblast_gui.cells.thumbnails import ThumbnailLoader
from allblast_gui.style import label_color, label_text
from allblast_gui.views.cell_grid import CellGridView


def synthetic(n):
    return [CellRow(f"cells/c_{i}.png", f"c_{i}.png", None, "a", "a") for i in range(n)]


@pytest.fixture
def grid(qtbot, tmp_path):
    loader = ThumbnailLoader(cache_dir=tmp_path / "thumbs")
    model = CellListModel(loader)
    view = CellGridView()
    view.setModel(model)
    qtbot.addWidget(view)
    view.resize(600, 400)
    yield view, model
    assert loader.shutdown(10_000)


def test_configuration(grid):
    view, model = grid
    assert view.viewMode() == view.ViewMode.IconMode and view.uniformItemSizes()
    assert view.selectionMode() == view.SelectionMode.ExtendedSelection
    view.setTileSize(150)
    assert model.tile_size() == 150 and view.gridSize().width() >= 150


def test_advance_select_path_and_signals(qtbot, grid):
    view, model = grid
    rows = synthetic(BATCH_SIZE + 50)
    with qtbot.waitSignal(view.currentCellChanged) as reset_signal:
        model.set_rows(Path("/data"), rows, ["a"])
    assert reset_signal.args == [None]
    with qtbot.waitSignal(view.currentCellChanged) as current:
        assert view.advance()
    assert current.args == [rows[0]] and view.current_path() == rows[0].path
    with qtbot.waitSignal(view.selectionCountChanged) as count:
        view.advance(3)
    assert count.args == [1] and view.selected_paths() == [rows[3].path]
    # A cell in a batch not fetched yet: fetched, selected, current.
    assert view.select_path(rows[-1].path)
    assert view.current_path() == rows[-1].path and view.selected_paths() == [rows[-1].path]
    assert not view.advance()  # at the end: stays
    assert not view.select_path("no/such.png")


def test_select_all_covers_unfetched_rows(qtbot, grid):
    view, model = grid
    model.set_rows(Path("/data"), synthetic(BATCH_SIZE * 2 + 5), ["a"])
    with qtbot.waitSignal(view.selectionCountChanged) as count:
        view.selectAll()
    assert count.args == [BATCH_SIZE * 2 + 5] and len(view.selected_paths()) == BATCH_SIZE * 2 + 5


def test_relabel_of_current_cell_is_announced(qtbot, grid):
    view, model = grid
    rows = synthetic(5)
    model.set_rows(Path("/data"), rows, ["a", "b"])
    view.select_path(rows[2].path)
    with qtbot.waitSignal(view.currentCellChanged) as current:
        model.update_labels({rows[2].path: "b"})
    assert current.args[0] is rows[2] and rows[2].current == "b"


def test_paints_every_kind_of_tile(qtbot, grid, tmp_path, cnmc_dir):
    view, model = grid
    good = sorted(cnmc_dir.rglob("*.bmp"))[0]
    rows = [
        CellRow(good.relative_to(cnmc_dir).as_posix(), good.name, "1", "all", "hem"),  # changed
        CellRow("x/unsure.png", "unsure.png", None, "all", UNSURE),
        CellRow("x/plain.png", "plain.png", None, None, None),
        CellRow.from_problem("x/bad.png", "empty file (0 bytes)"),
    ]
    model.set_rows(cnmc_dir, rows, ["all", "hem"])
    view.show()
    first = model.index(model.row_of(rows[0].path))
    qtbot.waitUntil(lambda: first.data(Qt.ItemDataRole.DecorationRole) is not None, timeout=10_000)
    view.selectAll()
    image = view.viewport().grab().toImage()
    assert not image.isNull()
    image.save(str(tmp_path / "grid.png"))
    # The changed cell's edge has its label's colour somewhere on the tile's left side.
    rect = view.visualRect(first)
    hem = label_color("hem", ["all", "hem"]).rgb()
    column = [image.pixel(x, y) for x in range(rect.left(), rect.left() + 12) for y in range(rect.top(), rect.bottom())]
    assert hem in column


def test_style_helpers():
    classes = ["all", "hem"]
    colors = {label_color(c, classes).name() for c in classes}
    assert len(colors) == 2
    assert label_color(UNSURE, classes).name() not in colors
    assert label_color(None, classes).name() not in colors
    assert label_color("other", classes) == label_color("other", classes)  # stable
    many = [f"c{i}" for i in range(20)]
    assert len({label_color(c, many).name() for c in many}) == 20
    assert label_text(None) == "unlabeled" and label_text("hem") == "hem"


def test_set_tile_size_without_model(qtbot):
    view = CellGridView()
    qtbot.addWidget(view)
    view.setTileSize(90)
    assert view.tileSize() == 90 and view.gridSize().width() >= 90


def test_tile_cache_rerenders_only_on_change(qtbot, grid):
    view, model = grid
    rows = synthetic(6)
    model.set_rows(Path("/data"), rows, ["a", "b"])
    view.show()
    qtbot.waitExposed(view)
    delegate = view.itemDelegate()
    view.viewport().repaint()
    before = delegate.renders
    view.viewport().repaint()
    assert delegate.renders == before  # painted again from the cache
    rect = view.visualRect(model.index(2))
    old = view.viewport().grab().toImage().pixel(rect.left() + 5, rect.top() + 20)
    model.update_labels({rows[2].path: "b"})  # colour and changed mark of one tile
    view.viewport().repaint()
    assert delegate.renders > before
    new = view.viewport().grab().toImage().pixel(rect.left() + 5, rect.top() + 20)
    assert new != old and new == label_color("b", ["a", "b"]).rgb()
