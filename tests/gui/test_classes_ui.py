"""Label ▸ Classes… in the real window: labelling an unlabeled folder from scratch, stable number
keys, rename undone with Ctrl+Z, a class in use deleted only after saying what its cells become,
and an import that brings new classes only when the user agrees."""
from __future__ import annotations

import pytest
from PySide6.QtWidgets import QInputDialog

from engine.labels import classes as C
from tests.bccd_crops import write_crops
from tests.gui.conftest import open_and_wait


@pytest.fixture
def crops(tmp_path, bccd_dir):
    folder = tmp_path / "smear-crops"
    write_crops(bccd_dir, folder, limit=12)
    return folder


def test_an_unlabeled_folder_is_labelled_from_a_preset(qtbot, make_window, crops):
    window = make_window(default_store=True)  # the database where a user's goes: beside, from the first label
    ds = open_and_wait(qtbot, window, crops)
    assert len(ds.classes) == 0 and not window.actions["label_1"].isEnabled()
    classes_node = window.tree.topLevelItem(1)
    assert "Label ▸ Classes…" in classes_node.child(0).text(0)
    window.grid.select_path(window.model.cell_at(0).path)
    window.actions["label_1"].setEnabled(True)  # the key itself, pressed with no class yet
    window.review.label_class(1)
    assert "No classes yet" in window.status.currentMessage()
    assert not (crops / ".allblast").exists()  # browsing and pressing keys wrote nothing into the folder

    assert window.actions["classes"].isEnabled() and window.actions["classes"].shortcut().toString() == "Ctrl+K"
    window.actions["classes"].trigger()
    dialog = window.classes.dialog
    assert dialog.isVisible() and "No classes yet" in dialog.note.text()
    assert dialog.apply_preset("wbc")
    assert window.actions["label_1"].text() == "1  neutrophil" and window.actions["label_6"].text() == "6  blast"
    assert list(window.datasets.current.classes) == list(C.PRESETS["wbc"].names)
    first = window.model.cell_at(0).path
    window.grid.select_path(first)
    window.actions["label_6"].trigger()
    assert ds.store.state(first).current == "blast"
    assert window.model.row_for_path(first).current == "blast"
    assert (crops / ".allblast" / "project.sqlite").is_file()  # the first label: now beside the images
    assert C.load(ds.store).positive == "blast"
    tree_texts = [window.tree.topLevelItem(1).child(i).text(0) for i in range(window.tree.topLevelItem(1).childCount())]
    assert "blast  [6]" in tree_texts


def test_adding_a_class_keeps_every_key_and_rename_is_undone_with_ctrl_z(qtbot, window, cnmc_dir, indexed_db,
                                                                            tmp_path):
    indexed_db(cnmc_dir, tmp_path / "db")
    ds = open_and_wait(qtbot, window, cnmc_dir)
    assert [window.actions["label_1"].text(), window.actions["label_2"].text()] == ["1  all", "2  hem"]
    dialog = window.classes.open_dialog()
    assert dialog.add("aaa")  # sorts first: it must not take key 1 or 2
    assert [window.actions[f"label_{i}"].text() for i in (1, 2, 3)] == ["1  all", "2  hem", "3  aaa"]

    hem = [r.path for r in window.model.all_rows() if r.current == "hem"]
    assert dialog.rename("hem", "normal")
    assert all(window.model.row_for_path(p).current == "normal" for p in hem)
    assert window.actions["label_2"].text() == "2  normal" and "renamed" in dialog.note.text().lower()
    assert "rename hem" in dialog.history.toPlainText()

    window.actions["undo"].trigger()
    assert "Undo: rename of hem to normal" in window.status.currentMessage()
    assert window.actions["label_2"].text() == "2  hem"
    assert all(window.model.row_for_path(p).current == "hem" for p in hem)
    assert list(C.load(ds.store)) == ["all", "hem", "aaa"]
    assert [dialog.table.item(r, 1).text() for r in range(dialog.table.rowCount())] == ["all", "hem", "aaa"]


def test_a_class_in_use_is_deleted_only_after_choosing_what_its_cells_become(qtbot, window, cnmc_dir, indexed_db,
                                                                            tmp_path, monkeypatch):
    indexed_db(cnmc_dir, tmp_path / "db")
    ds = open_and_wait(qtbot, window, cnmc_dir)
    dialog = window.classes.open_dialog()
    hem = [r.path for r in window.model.all_rows() if r.current == "hem"]
    asked = []

    def answer(_parent, title, text, items, *args, **kwargs):
        asked.append((title, text, list(items)))
        return ("", False)  # Cancel

    monkeypatch.setattr(QInputDialog, "getItem", answer)
    assert not dialog.delete("hem")
    assert asked and f"{len(hem)} cells are labelled hem" in asked[0][1] and "unlabeled (no label)" in asked[0][2]
    assert "hem" in C.load(ds.store)

    monkeypatch.setattr(QInputDialog, "getItem", lambda *a, **k: ("unlabeled (no label)", True))
    assert dialog.delete("hem")
    assert "hem" not in window.datasets.current.classes
    assert all(window.model.row_for_path(p).current is None for p in hem)
    assert window.actions["label_1"].text() == "1  all" and not window.actions["label_2"].isVisible()


def test_an_import_with_new_labels_adds_classes_only_when_agreed(qtbot, window, cnmc_dir, indexed_db, tmp_path,
                                                                warnings_shown):
    indexed_db(cnmc_dir, tmp_path / "db")
    ds = open_and_wait(qtbot, window, cnmc_dir)
    cell = window.model.cell_at(0).path
    csv = tmp_path / "labels.csv"
    csv.write_text(f"path,label\n{cell},lymphoblast\n")
    assert window.import_labels(csv, add_classes=False) is None  # "No": nothing imported
    assert ds.store.state(cell).current != "lymphoblast" and "lymphoblast" not in window.datasets.current.classes
    summary = window.import_labels(csv, add_classes=True)
    assert "new classes lymphoblast" in summary
    assert window.actions["label_3"].text() == "3  lymphoblast"
    assert window.model.row_for_path(cell).current == "lymphoblast"
