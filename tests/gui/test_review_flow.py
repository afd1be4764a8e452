"""The review loop on a small folder with broken files: honest counts, label-and-advance past
unreadable cells, undo messages that count what changed, the annotator asked for once."""
from __future__ import annotations

import shutil

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QInputDialog

from .conftest import open_and_wait

pytestmark = pytest.mark.shared_data


@pytest.fixture
def broken_dir(pbc_dir, tmp_path):
    """3 basophils and 3 IGs (real PBC images), an empty .jpg, a truncated copy and a duplicate."""
    data = tmp_path / "data"
    for cls in ("basophil", "ig"):
        (data / cls).mkdir(parents=True)
        for src in sorted((pbc_dir / cls).iterdir())[:3]:
            shutil.copyfile(src, data / cls / src.name)
    good = sorted((data / "ig").iterdir())[0]
    (data / "ig" / "truncated.jpg").write_bytes(good.read_bytes()[:600])
    (data / "basophil" / "empty.jpg").write_bytes(b"")
    shutil.copyfile(good, data / "ig" / "copy.jpg")  # duplicate content: skipped by the scan
    return data


def _press(qtbot, window, key, modifier=Qt.KeyboardModifier.NoModifier):
    qtbot.keyClick(window.grid, key, modifier)


def _tile_text(window, path):
    """The label line a tile paints (the delegate's own choice of words)."""
    from allblast_gui.views.tile_delegate import tile_caption

    return tile_caption(window.model.row_for_path(path))


def test_unreadable_files_are_counted_as_unreadable_everywhere(qtbot, window, broken_dir, warnings_shown):
    ds = open_and_wait(qtbot, window, broken_dir)
    problems = {p for p, _ in ds.problems}
    assert {"basophil/empty.jpg", "ig/truncated.jpg"} <= problems
    readable = [r for r in ds.rows if not r.problem]
    assert len(readable) == 6
    # the tree, the status bar and the tiles agree
    assert window.tree.count_text("all", None) == "6"
    assert window.tree.count_text("header", "problems") == str(len(problems))
    counts = window.status.counts.text()
    assert counts.startswith("6 cells"), counts
    assert f"{len(problems)} unreadable" in counts
    assert window.tree.count_text("class", None) == "0"  # nothing is unlabeled
    assert _tile_text(window, "basophil/empty.jpg") == "unreadable"
    assert _tile_text(window, "ig/truncated.jpg") == "unreadable"
    assert _tile_text(window, readable[0].path) == readable[0].current
    # the "unlabeled" filter shows what the tree counts: no broken tiles
    window.tree.classRequested.emit(None)
    qtbot.waitUntil(lambda: window.filter_bar.current_filter().unlabeled_only)
    assert window.model.visible_count() == 0
    window.grid.viewport().repaint()
    assert not warnings_shown


def test_label_and_advance_skips_unreadable_cells(qtbot, window, broken_dir, warnings_shown):
    open_and_wait(qtbot, window, broken_dir)
    order = [window.model.cell_at(i).path for i in range(window.model.visible_count())]
    broken = order.index("basophil/empty.jpg")
    assert 0 < broken < len(order) - 1
    before, after = order[broken - 1], order[broken + 1]
    window.grid.select_path(before)
    _press(qtbot, window, Qt.Key.Key_U)
    assert window.datasets.current.store.state(before).current == "unsure"
    assert window.grid.current_path() == after  # the unreadable tile was skipped
    # labelling an unreadable cell is refused in the status bar, not in a message box
    window.grid.select_path("basophil/empty.jpg")
    _press(qtbot, window, Qt.Key.Key_1)
    assert not warnings_shown
    assert "unreadable" in window.status.currentMessage()
    assert window.grid.current_path() == "basophil/empty.jpg"


def test_batch_and_undo_messages_count_the_same_cells(qtbot, window, broken_dir, warnings_shown):
    ds = open_and_wait(qtbot, window, broken_dir)
    ig = ds.classes.index("ig") + 1
    # readable cells only: 3 basophils become ig, 3 IGs already are
    readable = [r.path for r in ds.rows if not r.problem]
    assert window.grid.select_paths(readable) == 6
    _press(qtbot, window, getattr(Qt.Key, f"Key_{ig}"))
    labelled = window.status.currentMessage()
    assert labelled == "3 cells labelled ig (3 already ig)", labelled
    _press(qtbot, window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert window.status.currentMessage() == "Undo: 3 cells"
    # with the unreadable tiles selected too (Ctrl+A): they are skipped, and counted apart
    _press(qtbot, window, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    selected = len(window.grid.selected_paths())
    assert selected == 8  # 6 readable + 2 unreadable tiles
    _press(qtbot, window, getattr(Qt.Key, f"Key_{ig}"))
    labelled = window.status.currentMessage()
    assert labelled.startswith("3 cells labelled ig"), labelled
    assert "3 already ig" in labelled and "2 unreadable" in labelled
    _press(qtbot, window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert window.status.currentMessage() == "Undo: 3 cells"
    _press(qtbot, window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert window.status.currentMessage() == "Redo: 3 cells"
    # a single cell that already has the label: nothing to undo, and the message says so
    window.grid.select_path(next(r.path for r in ds.rows if r.original == "ig"))
    _press(qtbot, window, getattr(Qt.Key, f"Key_{ig}"))
    assert "already ig" in window.status.currentMessage()
    assert not warnings_shown


def test_first_label_asks_for_the_annotator_once(qtbot, make_window, broken_dir, monkeypatch, warnings_shown):
    asked = []
    answers = [("", False), ("Dr Test", True)]

    def get_text(*args, **kwargs):
        asked.append(args[1:3])
        return answers.pop(0)

    monkeypatch.setattr(QInputDialog, "getText", get_text)
    window = make_window(annotator=None)
    assert "root" not in window.status.annotator.text()
    open_and_wait(qtbot, window, broken_dir)
    first = window.grid.current_path()
    _press(qtbot, window, Qt.Key.Key_U)  # cancelled: nothing saved, nobody recorded
    assert len(asked) == 1
    assert window.datasets.current.store.state(first).current == window.model.row_for_path(first).original
    assert window.grid.current_path() == first
    _press(qtbot, window, Qt.Key.Key_U)
    assert len(asked) == 2
    assert [c.annotator for c in window.datasets.current.store.history(first)] == ["Dr Test"]
    assert "Dr Test" in window.status.annotator.text()
    _press(qtbot, window, Qt.Key.Key_U)  # remembered: not asked again
    assert len(asked) == 2
    assert window.prefs.annotator() == "Dr Test"
    assert not warnings_shown


def _mean(image) -> float:
    from allblast_gui.cells.thumbnails import qimage_to_rgb

    return float(qimage_to_rgb(image).mean())


def _wait_for_pictures(qtbot, window):
    qtbot.waitUntil(lambda: window.model.thumbnail(0) is not None, timeout=30_000)
    qtbot.waitUntil(window.inspector.image.has_image, timeout=30_000)


def test_brightness_contrast_gamma_change_the_display_not_the_files(qtbot, window, broken_dir):
    open_and_wait(qtbot, window, broken_dir)
    _wait_for_pictures(qtbot, window)
    cell = window.model.cell_at(0)
    file = broken_dir / cell.path
    before = file.read_bytes()
    raw_tile = window.model.thumbnail(0)
    raw_view = window.inspector.shown_image()
    _press(qtbot, window, Qt.Key.Key_B)  # brighter
    _press(qtbot, window, Qt.Key.Key_B)
    qtbot.waitUntil(lambda: window.model.thumbnail(0) is not None)  # adjusted within a time budget
    tile = window.model.thumbnail(0)
    assert tile.cacheKey() != raw_tile.cacheKey()
    assert window.model.thumbnail(0).cacheKey() == tile.cacheKey()  # adjusted once, then cached
    assert _mean(tile.toImage()) > _mean(raw_tile.toImage()) + 3
    assert _mean(window.inspector.shown_image()) > _mean(raw_view) + 3
    _press(qtbot, window, Qt.Key.Key_C)  # more contrast
    _press(qtbot, window, Qt.Key.Key_BracketRight)  # gamma up
    display = window.model.display()
    assert display.brightness > 0 and display.contrast > 1 and display.gamma > 1
    assert window.inspector.display() == display
    assert "files unchanged" in window.status.currentMessage()
    window.grid.viewport().repaint()
    _press(qtbot, window, Qt.Key.Key_0, Qt.KeyboardModifier.ControlModifier)  # reset
    assert window.model.display().is_identity()
    assert window.model.thumbnail(0).cacheKey() == raw_tile.cacheKey()
    assert window.inspector.shown_image() == raw_view
    assert file.read_bytes() == before  # never the file


def test_auto_contrast_per_data_set_and_actual_size(qtbot, window, cnmc_dir, indexed_db, tmp_path):
    indexed_db(cnmc_dir, tmp_path / "db")
    open_and_wait(qtbot, window, cnmc_dir)
    _wait_for_pictures(qtbot, window)
    raw = window.model.thumbnail(0).toImage()
    _press(qtbot, window, Qt.Key.Key_L, Qt.KeyboardModifier.ControlModifier)
    levels = window.model.display().levels
    assert levels is not None and levels[1] < 255  # C-NMC cells are dark: the stretch is real
    qtbot.waitUntil(lambda: window.model.thumbnail(0) is not None)
    assert _mean(window.model.thumbnail(0).toImage()) > _mean(raw)
    assert window.inspector.display().levels == levels
    assert window.prefs.auto_levels(cnmc_dir) == levels  # remembered for this folder
    # 1:1 in the inspector
    _press(qtbot, window, Qt.Key.Key_1, Qt.KeyboardModifier.ControlModifier)
    view = window.inspector.image
    assert abs(view.zoom_factor() * view.devicePixelRatioF() - 1.0) < 1e-6
    # patient ids on the tiles (C-NMC has patients)
    action = window.actions["patient_on_tiles"]
    assert action.isEnabled()
    action.trigger()
    assert window.model.patient_on_tiles()
    from allblast_gui.views.tile_delegate import tile_caption

    cell = window.model.cell_at(0)
    assert tile_caption(cell, window.model.patient_on_tiles()).endswith(cell.patient)
    window.grid.viewport().repaint()


def test_an_unattended_script_is_never_stopped_by_the_annotator_question(qtbot, make_window, broken_dir, monkeypatch):
    """--script ... --exit-after without --annotator: the first label must not open a dialog that
    nobody will answer (automation would hang); the label is refused and nobody is recorded."""
    monkeypatch.setattr(QInputDialog, "getText", lambda *a, **k: pytest.fail("a dialog in unattended mode"))
    window = make_window(annotator=None)
    window.script_app.unattended = True
    open_and_wait(qtbot, window, broken_dir)
    first = window.grid.current_path()
    window.review.label_class(1)
    assert window.datasets.current.store.history(first) == []


def test_a_folder_keeps_its_auto_contrast_by_any_path_to_it(tmp_path):
    """Regression: the levels were keyed by the path as given, and the window stores them under
    the folder's resolved path, so asking through a symlink (CI's ../shared) found none."""
    from PySide6.QtCore import QSettings

    from allblast_gui.settings import Prefs

    real = tmp_path / "cells"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    prefs = Prefs(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    prefs.set_auto_levels(real, (18, 116))
    assert prefs.auto_levels(tmp_path / "link") == (18, 116)
    assert prefs.auto_levels(real / ".." / "cells") == (18, 116)
