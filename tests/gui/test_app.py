"""The review window end to end, on the real shared data (read in place; databases in tmp_path)."""
from __future__ import annotations

import csv
import shutil
import sqlite3
import threading
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence

from allblast_gui.actions import ACTIONS, shortcut_text
from allblast_gui.opening.dataset import db_path_for
from allblast_gui.dialogs.help_dialog import shortcut_rows
from engine.data.cells import UNSURE

from .conftest import open_and_wait

pytestmark = pytest.mark.shared_data


def _press(qtbot, window, key, modifier=Qt.KeyboardModifier.NoModifier):
    qtbot.keyClick(window.grid, key, modifier)


def _label(window, path):
    return window.datasets.current.store.state(path).current


def test_label_keys_advance_undo_redo(qtbot, window, cnmc_dir, indexed_db, tmp_path, warnings_shown):
    indexed_db(cnmc_dir, tmp_path / "db")
    ds = open_and_wait(qtbot, window, cnmc_dir)
    assert ds.classes == ["all", "hem"]
    assert window.model.visible_count() == len(ds.rows) >= 15
    first, second, third = (window.model.cell_at(i).path for i in range(3))
    assert window.grid.current_path() == first

    other = "hem" if window.model.cell_at(0).original == "all" else "all"
    _press(qtbot, window, Qt.Key.Key_2 if other == "hem" else Qt.Key.Key_1)  # class 1 = all, 2 = hem
    assert _label(window, first) == other
    assert window.grid.current_path() == second  # the selection moved on
    _press(qtbot, window, Qt.Key.Key_U)
    assert _label(window, second) == UNSURE
    assert window.grid.current_path() == third
    _press(qtbot, window, Qt.Key.Key_0)
    assert _label(window, third) is None
    assert window.model.cell_at(2).current is None  # the grid model follows the store

    _press(qtbot, window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert _label(window, third) == window.model.cell_at(2).original
    _press(qtbot, window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert _label(window, third) is None
    assert window.tree.count_text("class", UNSURE) == "1"
    assert window.tree.count_text("class", None) == "1"
    assert "3 changed" in window.status.counts.text()
    assert "tester" in window.status.annotator.text()
    history = window.datasets.current.store.history(first)
    assert [(c.new, c.annotator) for c in history] == [(other, "tester")]
    assert not warnings_shown


def test_batch_relabel_is_one_undo_step(qtbot, window, pbc_dir, indexed_db, tmp_path):
    indexed_db(pbc_dir, tmp_path / "db")
    ds = open_and_wait(qtbot, window, pbc_dir)
    assert ds.classes[2] == "erythroblast" and len(ds.classes) == 8
    window.filter_bar.show_class("monocyte")
    qtbot.waitUntil(lambda: window.model.visible_count() == 250)
    _press(qtbot, window, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    assert len(window.grid.selected_paths()) == 250
    _press(qtbot, window, Qt.Key.Key_3)
    store = window.datasets.current.store
    states = store.states()
    monocytes = [r.path for r in ds.rows if r.original == "monocyte"]
    assert all(states[p].current == "erythroblast" for p in monocytes)
    assert window.tree.count_text("class", "erythroblast") == "500"
    _press(qtbot, window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # one step undoes all
    states = store.states()
    assert all(states[p].current == "monocyte" for p in monocytes)
    assert window.tree.count_text("class", "erythroblast") == "250"
    assert not store.can_undo()


def test_changed_only_shows_exactly_the_changed_cells(qtbot, window, pbc_dir, indexed_db, tmp_path):
    indexed_db(pbc_dir, tmp_path / "db")
    open_and_wait(qtbot, window, pbc_dir)
    labelled = []
    for key in (Qt.Key.Key_5, Qt.Key.Key_U, Qt.Key.Key_Backspace):
        labelled.append(window.grid.current_path())
        _press(qtbot, window, key)
    with qtbot.waitSignal(window.filter_bar.filterChanged):
        window.filter_bar.changed_check.setChecked(True)
    shown = {window.model.cell_at(i).path for i in range(window.model.visible_count())}
    assert shown == set(labelled)
    # the tree's "Changed by review" item drives the same filter
    window.filter_bar.show_all()
    assert window.model.visible_count() == 2000


def test_export_then_reopen_keeps_every_label(qtbot, make_window, cnmc_dir, indexed_db, tmp_path):
    db_dir = tmp_path / "db"
    indexed_db(cnmc_dir, db_dir)
    window = make_window(db_dir=db_dir)
    open_and_wait(qtbot, window, cnmc_dir)
    expected = {}
    for key, label in ((Qt.Key.Key_1, "all"), (Qt.Key.Key_2, "hem"), (Qt.Key.Key_U, UNSURE), (Qt.Key.Key_0, None)):
        expected[window.grid.current_path()] = label
        _press(qtbot, window, key)

    out = tmp_path / "labels.csv"
    summary = window.export_labels("generic", out)
    assert summary and "Wrote" in summary
    with open(out, newline="") as fh:
        rows = {r["path"]: r for r in csv.DictReader(fh)}
    for path, label in expected.items():
        assert rows[path]["label"] == (label or "")
        assert rows[path]["annotator"] == "tester"
    window.export_labels("history", tmp_path / "history.csv")
    with open(tmp_path / "history.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 4

    window.close()
    again = make_window(db_dir=db_dir)
    ds = open_and_wait(qtbot, again, cnmc_dir)
    current = {r.path: r.current for r in ds.rows}
    for path, label in expected.items():
        assert current[path] == label
    assert again.prefs.recent_folders()[0] == str(Path(cnmc_dir).resolve())


def test_import_labels_is_one_undoable_step(qtbot, window, cnmc_dir, indexed_db, tmp_path):
    indexed_db(cnmc_dir, tmp_path / "db")
    ds = open_and_wait(qtbot, window, cnmc_dir)
    target = [r for r in ds.rows if r.original == "all"][:3]
    csv_path = tmp_path / "import.csv"
    csv_path.write_text("path,label\n" + "".join(f"{r.path},hem\n" for r in target))
    summary = window.import_labels(csv_path)
    assert summary and "3 labels changed" in summary
    assert all(r.current == "hem" for r in target)
    window.review.undo()
    assert all(r.current == "all" for r in target)


def test_corrupt_image_is_a_problem_tile_not_a_crash(qtbot, window, pbc_dir, tmp_path, warnings_shown):
    data = tmp_path / "data"
    for cls in ("basophil", "platelet"):
        (data / cls).mkdir(parents=True)
        for src in sorted((pbc_dir / cls).iterdir())[:4]:
            shutil.copyfile(src, data / cls / src.name)
    (data / "basophil" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good = sorted((data / "platelet").iterdir())[0]
    (data / "platelet" / "truncated.jpg").write_bytes(good.read_bytes()[:600])
    ds = open_and_wait(qtbot, window, data)
    problems = {p for p, _ in ds.problems}
    assert {"basophil/broken.jpg", "platelet/truncated.jpg"} <= problems
    assert window.tree.count_text("header", "problems") == str(len(problems))
    window.tree.cellRequested.emit("basophil/broken.jpg")  # as clicking it in the tree does
    assert window.grid.current_path() == "basophil/broken.jpg"
    assert "unreadable" in window.inspector.fields["size"].text()
    window.grid.viewport().repaint()  # paints the placeholder tiles
    assert not warnings_shown
    # and a file that breaks after the scan shows the reason in the inspector, not a crash
    (data / "platelet" / good.name).write_bytes(b"garbage")
    window.grid.select_path(f"platelet/{good.name}")
    qtbot.waitUntil(lambda: "Cannot show" in window.inspector.image._text.toPlainText(), timeout=10_000)


def test_damaged_database_gives_a_message(qtbot, window, cnmc_dir, tmp_path, warnings_shown):
    db = db_path_for(Path(cnmc_dir).resolve(), tmp_path / "db")
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not an sqlite database" * 100)
    with qtbot.waitSignal(window.datasetFailed, timeout=60_000) as blocker:
        window.open_folder(cnmc_dir)
    assert "damaged" in blocker.args[0]
    assert warnings_shown and "damaged" in warnings_shown[0][1]
    assert window.datasets.current is None


def test_locked_database_gives_a_message_and_keeps_the_label(qtbot, window, cnmc_dir, indexed_db, tmp_path,
                                                             warnings_shown):
    db = indexed_db(cnmc_dir, tmp_path / "db")
    ds = open_and_wait(qtbot, window, cnmc_dir)
    ds.store.conn.execute("PRAGMA busy_timeout = 100")  # fail fast instead of the 5 s default
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        path = window.grid.current_path()
        before = window.model.cell_at(0).current
        _press(qtbot, window, Qt.Key.Key_2)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert warnings_shown and "locked" in warnings_shown[-1][1]
    assert window.model.cell_at(0).current == before  # the screen shows what is on disk
    assert window.grid.current_path() == path  # and the reviewer stays on the cell


def test_missing_folder_gives_a_message(qtbot, window, tmp_path, warnings_shown):
    with qtbot.waitSignal(window.datasetFailed):
        window.open_folder(tmp_path / "no-such-folder")
    assert warnings_shown and "not a folder" in warnings_shown[0][1]


def test_opening_another_folder_drops_the_stale_load(qtbot, window, cnmc_dir, pbc_dir, indexed_db, tmp_path):
    indexed_db(cnmc_dir, tmp_path / "db")
    indexed_db(pbc_dir, tmp_path / "db")
    with qtbot.waitSignal(window.datasetOpened, timeout=60_000) as blocker:
        window.open_folder(pbc_dir)
        window.open_folder(cnmc_dir)  # the reviewer changed their mind
    assert blocker.args[0].root == Path(cnmc_dir).resolve()
    qtbot.waitUntil(lambda: not window.runner.busy(), timeout=60_000)
    assert window.datasets.current.root == Path(cnmc_dir).resolve()


def test_tree_click_filters_the_grid(qtbot, window, cnmc_dir, indexed_db, tmp_path):
    indexed_db(cnmc_dir, tmp_path / "db")
    ds = open_and_wait(qtbot, window, cnmc_dir)
    window.tree.classRequested.emit("hem")
    hem = [r for r in ds.rows if r.current == "hem"]
    assert window.model.visible_count() == len(hem) > 0
    patient = ds.patients[0]
    window.tree.patientRequested.emit(patient)
    assert all(window.model.cell_at(i).patient == patient for i in range(window.model.visible_count()))
    window.tree.allRequested.emit()
    assert window.model.visible_count() == len(ds.rows)


def test_search_is_debounced(qtbot, window, cnmc_dir, indexed_db, tmp_path):
    indexed_db(cnmc_dir, tmp_path / "db")
    open_and_wait(qtbot, window, cnmc_dir)
    with qtbot.waitSignal(window.filter_bar.filterChanged, timeout=2000) as blocker:
        qtbot.keyClicks(window.filter_bar.search, "_all")
    assert blocker.args[0].text == "_all"
    assert all("_all" in window.model.cell_at(i).path for i in range(window.model.visible_count()))


def test_tile_size_and_settings_are_remembered(qtbot, make_window):
    window = make_window()
    size = window.model.tile_size()
    window.actions["bigger"].trigger()
    assert window.model.tile_size() == size + 16
    window.close()
    again = make_window()
    assert again.model.tile_size() == size + 16


def test_help_lists_exactly_the_shortcuts_the_window_binds(window):
    rows = shortcut_rows(["all", "hem"])
    listed = {r[1]: r[2] for r in rows}
    for spec in ACTIONS:
        if spec.shortcuts and spec.group != "Labeling":
            assert shortcut_text(spec) in listed, spec.name  # e.g. "Ctrl+=, Ctrl++" as one row
            bound = [k.toString() for k in window.actions[spec.name].shortcuts()]
            assert bound == [QKeySequence(s).toString() for s in spec.shortcuts], spec.name
    assert ("Labeling", "1", "all") in rows and ("Labeling", "2", "hem") in rows
    assert ("Labeling", "2", "hem") in rows


def test_closing_leaves_no_threads(qtbot, window, pbc_dir, indexed_db, tmp_path):
    indexed_db(pbc_dir, tmp_path / "db")
    before = threading.active_count()
    open_and_wait(qtbot, window, pbc_dir)
    window.grid.viewport().repaint()  # thumbnails start decoding
    window.close()
    assert window.runner.pool.activeThreadCount() == 0
    assert window.datasets.current is None
    qtbot.waitUntil(lambda: threading.active_count() <= before, timeout=5000)


def test_main_parses_arguments(tmp_path):
    from allblast_gui.app import parse_args

    args = parse_args([str(tmp_path), "--annotator", "dr x", "--db-dir", str(tmp_path / "db")])
    assert args.folder == str(tmp_path) and args.annotator == "dr x"
    with pytest.raises(SystemExit):
        parse_args([str(tmp_path / "missing")])


def test_closing_during_a_first_open_is_clean(qtbot, window, pbc_dir):
    window.open_folder(pbc_dir)  # no index yet: decodes 2,000 files on a pool thread
    qtbot.waitUntil(lambda: window.datasets.busy, timeout=5000)
    window.close()  # discards the load; the fixture checks that every thread has ended
    assert not window.runner.busy()
    assert window.datasets.current is None


def test_dropping_a_folder_opens_it(qtbot, window, cnmc_dir, indexed_db, tmp_path):
    from PySide6.QtCore import QMimeData, QPointF, QUrl
    from PySide6.QtGui import QDropEvent

    indexed_db(cnmc_dir, tmp_path / "db")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(cnmc_dir))])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(window.datasetOpened, timeout=60_000):
        window.dropEvent(event)
    assert window.datasets.current.root == Path(cnmc_dir).resolve()


def test_help_dialog_names_the_open_classes(qtbot, window, cnmc_dir, indexed_db, tmp_path):
    from allblast_gui.dialogs.help_dialog import HelpDialog

    indexed_db(cnmc_dir, tmp_path / "db")
    open_and_wait(qtbot, window, cnmc_dir)
    dialog = HelpDialog(window.review.classes, window)
    qtbot.addWidget(dialog)
    cells = {dialog.table.item(r, c).text() for r in range(dialog.table.rowCount()) for c in range(3)}
    assert {"hem", "all", "Ctrl+Shift+Z", "F1"} <= cells


def test_an_opened_data_set_is_kept_out_of_the_cyclic_gc(qtbot, window, pbc_dir):
    """Full collections walking 15,000 rows stalled scrolling; the loaded rows are frozen."""
    import gc

    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    open_and_wait(qtbot, window, pbc_dir)
    assert gc.get_freeze_count() > 2000  # at least one object per cell row


def test_help_show_log_folder_opens_the_user_log_folder(window, monkeypatch, tmp_path):
    from PySide6.QtGui import QDesktopServices

    from engine.utils.places import user_log_dir

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url.toLocalFile()) or True)
    window.actions["log_folder"].trigger()
    assert opened == [str(user_log_dir())] and user_log_dir().is_relative_to(tmp_path)
    assert user_log_dir().is_dir()
