"""Issue 11, item 1 in the window: a read-only folder's own labels are shown, saving is refused
with a clear message, and "Continue in a Copy" carries every label into a writable store."""
from __future__ import annotations

import shutil

import pytest
from PySide6.QtWidgets import QMessageBox

from engine.data.scan import scan
from engine.labels.store import LabelStore

from .conftest import open_and_wait

pytestmark = pytest.mark.shared_data


def test_a_read_only_folder_shows_its_labels_then_continues_in_a_copy(qtbot, make_window, pbc_dir, tmp_path,
                                                                       monkeypatch):
    root = tmp_path / "data"
    for cls in ("basophil", "neutrophil"):
        (root / cls).mkdir(parents=True)
        for f in sorted((pbc_dir / cls).iterdir())[:3]:
            shutil.copy(f, root / cls / f.name)
    first = sorted(p.relative_to(root).as_posix() for p in (root / "basophil").iterdir())[0]
    with LabelStore.open(root) as store:
        store.sync_cells(scan(root).cells)
        store.set_label(first, "neutrophil", annotator="Dr. A")
    # The folder becomes unwritable for this user (root ignores permission bits: say so directly).
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "userdata"))
    monkeypatch.setattr("engine.labels.db.dir_writable", lambda folder: root not in (folder, *folder.parents))
    window = make_window(default_store=True)
    ds = open_and_wait(qtbot, window, root)
    assert ds.store.read_only and "READ-ONLY" in window.status.db.text()
    assert {r.path: r.current for r in window.model.all_rows()}[first] == "neutrophil"  # not hidden
    box = window.read_only_box
    assert box.objectName() == "readOnlyBox" and box.isVisible() and "Continue in a copy" in box.text()
    box.buttons()[-1].click()  # "Only Look"
    # A label key cannot save here: one clear message, the row keeps its label.
    warnings = []
    monkeypatch.setattr(QMessageBox, "warning", staticmethod(lambda parent, title, text: warnings.append(text)))
    window.grid.select_path(first)
    window.review.label_class(1)  # the "1" key
    assert len(warnings) == 1 and "cannot be saved" in warnings[0]
    assert {r.path: r.current for r in window.model.all_rows()}[first] == "neutrophil"
    # Continue in a copy: the same labels, now writable; the folder's database is untouched.
    before = (root / ".allblast" / "project.sqlite").read_bytes()
    with qtbot.waitSignal(window.datasetOpened, timeout=60_000) as blocker:
        copy = window.continue_in_copy()
    again = blocker.args[0]
    assert not again.store.read_only and again.store.db_path == copy
    assert again.store.state(first).current == "neutrophil" and again.store.history(first)[0].annotator == "Dr. A"
    window.grid.select_path(first)
    window.review.label_class(1)
    assert again.store.state(first).current == "basophil" and not warnings[1:]
    assert (root / ".allblast" / "project.sqlite").read_bytes() == before
