"""CellListModel: Qt model contract, filtering, lazy batches, relabel signals, thumbnails."""
from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QModelIndex, Qt
from PySide6.QtGui import QPixmap

from allblast_gui.models import cell_list_model as clm
from allblast_gui.models.cell_list_model import (
    CELL_ROLE, CHANGED_ROLE, LABEL_ROLE, ORIGINAL_ROLE, PATH_ROLE, PATIENT_ROLE, PROBLEM_ROLE, CellListModel,
)
from allblast_gui.cells.rows import CellFilter, CellRow, rows_from_scan
from engine.data.cells import UNSURE
from allblast_gui.cells.thumbnails import ThumbnailLoader
from engine.data.scan import scan


@pytest.fixture
def loader(tmp_path, qapp):
    loader = ThumbnailLoader(cache_dir=tmp_path / "thumbs")
    yield loader
    assert loader.shutdown(10_000)


@pytest.fixture
def model(loader):
    return CellListModel(loader)


@pytest.fixture(scope="module")
def cnmc_scan(cnmc_dir):
    return scan(cnmc_dir)


@pytest.fixture(scope="module")
def pbc_scan(pbc_dir):
    return scan(pbc_dir, verify=False)  # 2,000 JPEGs; decoding them is the loader's test, not this one's


def synthetic(n):
    return [CellRow(f"cells/c_{i}.png", f"c_{i}.png", f"P{i % 7}", "a" if i % 2 else "b", "a" if i % 2 else "b") for i in range(n)]


def test_modeltester_cnmc(qtmodeltester, model, cnmc_scan):
    rows = [CellRow.from_cell(c) for c in cnmc_scan.cells]
    model.set_rows(cnmc_scan.root, rows, cnmc_scan.classes)
    assert model.rowCount() == len(rows) == 17
    qtmodeltester.check(model, force_py=True)
    model.set_filter(CellFilter(classes=frozenset({"hem"}), sort="patient"))
    qtmodeltester.check(model, force_py=True)


def test_modeltester_pbc(qtmodeltester, model, pbc_scan):
    model.set_rows(pbc_scan.root, rows_from_scan(pbc_scan), pbc_scan.classes)
    assert model.rowCount() == 2000
    assert model.classes() == pbc_scan.classes
    qtmodeltester.check(model)


def test_roles(model, cnmc_scan):
    rows = [CellRow.from_cell(c) for c in cnmc_scan.cells]
    rows[0].current = UNSURE
    model.set_rows(cnmc_scan.root, rows, cnmc_scan.classes)
    row = model.row_of(rows[0].path)
    idx = model.index(row)
    assert idx.data(Qt.ItemDataRole.DisplayRole) == rows[0].name
    assert idx.data(CELL_ROLE) is rows[0] and model.cell_at(row) is rows[0]
    assert idx.data(PATH_ROLE) == rows[0].path
    assert idx.data(LABEL_ROLE) == UNSURE and idx.data(ORIGINAL_ROLE) == rows[0].original
    assert idx.data(CHANGED_ROLE) is True
    assert idx.data(PATIENT_ROLE) == rows[0].patient
    assert idx.data(PROBLEM_ROLE) is None
    tip = idx.data(Qt.ItemDataRole.ToolTipRole)
    assert rows[0].path in tip and "unsure" in tip and "was" in tip
    assert model.flags(idx) & Qt.ItemFlag.ItemIsSelectable and model.flags(idx) & Qt.ItemFlag.ItemIsEnabled
    assert model.cell_at(10_000) is None and model.row_of("no/such.png") is None


def test_filters_and_sorts(model, cnmc_scan):
    rows = [CellRow.from_cell(c) for c in cnmc_scan.cells]
    model.set_rows(cnmc_scan.root, rows, cnmc_scan.classes)
    counts = cnmc_scan.class_counts()
    model.set_filter(CellFilter(classes=frozenset({"hem"})))
    assert model.rowCount() == counts["hem"]
    assert all(model.cell_at(r).current == "hem" for r in range(model.rowCount()))
    assert model.filter() == CellFilter(classes=frozenset({"hem"}))
    model.set_filter(CellFilter(patients=frozenset({"H6"}), sort="name"))
    assert [model.cell_at(r).name for r in range(model.rowCount())] == [
        "UID_H6_1_1_hem.bmp", "UID_H6_5_1_hem.bmp", "UID_H6_7_1_hem.bmp", "UID_H6_10_1_hem.bmp", "UID_H6_14_1_hem.bmp",
    ]
    model.set_filter(CellFilter(text="c-nmc_test"))
    assert model.rowCount() == 2  # the validation cells, labelled by the official CSV
    model.set_filter(CellFilter(sort="label"))
    labels = [model.cell_at(r).current for r in range(model.rowCount())]
    assert labels == sorted(labels)
    assert len(model.all_rows()) == 17


def test_fetch_more_batches(qtbot, model):
    rows = synthetic(5000)
    with qtbot.waitSignal(model.modelReset):
        model.set_rows(Path("/data"), rows, ["a", "b"])
    assert model.visible_count() == 5000
    assert model.rowCount() == clm.BATCH_SIZE
    assert model.canFetchMore(QModelIndex())
    with qtbot.waitSignal(model.rowsInserted) as blocker:
        model.fetchMore(QModelIndex())
    assert blocker.args[1:] == [clm.BATCH_SIZE, 2 * clm.BATCH_SIZE - 1]
    model.fetchMore(QModelIndex())
    assert model.rowCount() == 5000 and not model.canFetchMore(QModelIndex())
    model.fetchMore(QModelIndex())  # nothing left: a no-op
    assert model.rowCount() == 5000
    # A new filter starts again with one batch.
    model.set_filter(CellFilter(classes=frozenset({"a"})))
    assert model.visible_count() == 2500 and model.rowCount() == clm.BATCH_SIZE
    # row_of a cell beyond the fetched rows fetches up to it, so its index is valid.
    last = rows[4999]
    row = model.row_of(last.path)
    assert row == 2499 and model.rowCount() == 2500 and model.index(row).data(CELL_ROLE) is last


def test_modeltester_with_lazy_rows(qtmodeltester, model):
    model.set_rows(Path("/data"), synthetic(5000), ["a", "b"])
    qtmodeltester.check(model)


def test_update_labels_emits_data_changed_without_refiltering(qtbot, model):
    rows = synthetic(5000)
    model.set_rows(Path("/data"), rows, ["a", "b"])
    model.set_filter(CellFilter(classes=frozenset({"a"})))
    target = model.cell_at(7)
    with qtbot.waitSignal(model.dataChanged) as blocker:
        model.update_labels({target.path: "b"})
    top, bottom, roles = blocker.args
    assert top.row() == bottom.row() == 7 and LABEL_ROLE in roles
    # Still in place under the "a" filter: the reviewer's position must not jump.
    assert model.cell_at(7) is target and target.current == "b" and target.changed
    assert model.index(7).data(LABEL_ROLE) == "b"
    # Relabelling a cell that is filtered out (or not fetched yet) changes data, emits nothing.
    hidden = next(r for r in rows if r.current == "b")
    far = model.cell_at(2400)
    with qtbot.assertNotEmitted(model.dataChanged):
        model.update_labels({hidden.path: UNSURE, far.path: None, "no/such.png": "a"})
    assert hidden.current == UNSURE and far.current is None
    # The next filter change applies the new labels.
    model.set_filter(CellFilter(classes=frozenset({"a"})))
    assert model.row_of(target.path) is None and model.row_of(far.path) is None


def test_bulk_update_emits_one_span(qtbot, model):
    rows = synthetic(3000)
    model.set_rows(Path("/data"), rows, ["a", "b"])
    changes = {model.cell_at(r).path: UNSURE for r in range(10, 500)}
    spy = []
    model.dataChanged.connect(lambda a, b, roles: spy.append((a.row(), b.row())))
    model.update_labels(changes)
    assert spy == [(10, 499)]


def test_decoration_loads_thumbnail_and_notifies(qtbot, model, loader, cnmc_scan):
    rows = [CellRow.from_cell(c) for c in cnmc_scan.cells]
    model.set_rows(cnmc_scan.root, rows, cnmc_scan.classes)
    model.set_tile_size(64)
    idx = model.index(3)
    with qtbot.waitSignal(model.dataChanged, timeout=10_000) as blocker:
        assert idx.data(Qt.ItemDataRole.DecorationRole) is None  # schedules the load
    assert blocker.args[0].row() == 3 and Qt.ItemDataRole.DecorationRole in blocker.args[2]
    pixmap = idx.data(Qt.ItemDataRole.DecorationRole)
    assert isinstance(pixmap, QPixmap) and max(pixmap.width(), pixmap.height()) == 64


def test_problem_rows_never_decode(model, loader, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    rows = [CellRow.from_problem("bad.png", "empty file (0 bytes)")]
    model.set_rows(tmp_path, rows, [])
    idx = model.index(0)
    assert idx.data(Qt.ItemDataRole.DecorationRole) is None
    assert loader.pending_count() == 0
    assert idx.data(PROBLEM_ROLE) == "empty file (0 bytes)"
    assert "empty file" in idx.data(Qt.ItemDataRole.ToolTipRole)


def test_set_rows_resets_loader_generation(model, loader):
    before = loader.generation
    model.set_rows(Path("/a"), synthetic(3), ["a", "b"])
    assert loader.generation == before + 1
    model.set_filter(CellFilter(text="c_1"))  # same folder: in-flight thumbnails still useful
    assert loader.generation == before + 1


def test_tile_size(qtbot, model):
    model.set_rows(Path("/data"), synthetic(10), ["a", "b"])
    with qtbot.waitSignal(model.dataChanged) as blocker:
        model.set_tile_size(160)
    assert model.tile_size() == 160
    assert (blocker.args[0].row(), blocker.args[1].row()) == (0, 9)
    with qtbot.assertNotEmitted(model.dataChanged):
        model.set_tile_size(160)


def test_thumbnail_ready_is_coalesced_into_one_update(qtbot, model, loader):
    model.set_rows(Path("/data"), synthetic(50), ["a", "b"])
    spy = []
    model.dataChanged.connect(lambda a, b, roles: spy.append((a.row(), b.row(), list(roles))))
    for row in (3, 9, 5):
        loader.ready.emit(model.abspath(model.cell_at(row)), loader.generation)
    loader.ready.emit("/elsewhere/x.png", loader.generation)  # not a row of ours: ignored
    loader.ready.emit(model.abspath(model.cell_at(7)), loader.generation - 1)  # stale: ignored
    assert spy == []  # nothing per image...
    with qtbot.waitSignal(model.scheduler.rowsReady, timeout=2000) as ready:
        pass
    assert ready.args == [3, 9]  # ...one span per tick
    assert [s[:2] for s in spy] == [(3, 9)]
    assert Qt.ItemDataRole.DecorationRole in spy[0][2]
    # Nothing is left to announce: no second update can follow.
    assert not model.scheduler._ready_timer.isActive() and not model.scheduler._ready_rows


def test_thumbnail_requests_are_deferred_to_visible_rows(qtbot, model, loader, tmp_path):
    rows = synthetic(40)
    model.set_rows(tmp_path, rows, ["a", "b"])  # files do not exist: each load fails fast
    model.set_visible_range_provider(lambda: (10, 12))
    for r in range(0, 20):
        assert model.index(r).data(Qt.ItemDataRole.DecorationRole) is None
    assert loader.pending_count() == 0  # nothing scheduled from inside data()
    requested = []
    real = loader.request
    loader.request = lambda *key: requested.append(key) or real(*key)
    try:
        qtbot.waitUntil(lambda: bool(requested), timeout=2000)
    finally:
        del loader.request
    assert sorted(k[0] for k in requested) == sorted(model.abspath(rows[i]) for i in (10, 11, 12))
    qtbot.waitUntil(lambda: model.index(11).data(PROBLEM_ROLE) is not None, timeout=10_000)
    assert model.index(3).data(PROBLEM_ROLE) is None  # never asked for: off screen


def test_queued_requests_scrolled_away_are_cancelled(qtbot, model, loader, tmp_path):
    model.set_rows(tmp_path, synthetic(40), ["a", "b"])
    loader.pool().setMaxThreadCount(1)
    span = [(0, 5)]
    model.set_visible_range_provider(lambda: span[0])
    for r in range(6):
        model.index(r).data(Qt.ItemDataRole.DecorationRole)
    model.scheduler.flush_requests()
    span[0] = (30, 35)
    model.scheduler.flush_requests()  # rows 0-5 left the screen: whatever is still queued is dropped
    assert loader.pending_count() == 0 and model.scheduler.requested() == {}


def test_tooltip_follows_label_changes(model):
    rows = synthetic(3)
    model.set_rows(Path("/data"), rows, ["a", "b"])
    idx = model.index(0)
    assert "label: b" in idx.data(Qt.ItemDataRole.ToolTipRole)
    model.update_labels({rows[0].path: UNSURE})
    assert "label: unsure (was b)" in idx.data(Qt.ItemDataRole.ToolTipRole)
