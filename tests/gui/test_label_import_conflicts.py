"""Import Labels… in the app: a file whose rows disagree, or that is broken, changes nothing
unless the user explicitly lets the last row win (issue 11)."""
from __future__ import annotations

import shutil

import pytest
from PySide6.QtWidgets import QMessageBox

from .conftest import open_and_wait


@pytest.fixture
def data(pbc_dir, tmp_path):
    root = tmp_path / "data"
    for cls in ("basophil", "neutrophil"):
        (root / cls).mkdir(parents=True)
        for src in sorted((pbc_dir / cls).iterdir())[:2]:
            shutil.copyfile(src, root / cls / src.name)
    return root


@pytest.fixture
def boxes(monkeypatch):
    """Record message boxes instead of blocking on them; `answer` is what a question gets."""
    shown = {"question": [], "warning": [], "answer": QMessageBox.StandardButton.No}

    def question(_parent, title, text, *args, **kwargs):
        shown["question"].append((title, text))
        return shown["answer"]

    def warning(_parent, title, text, *args, **kwargs):
        shown["warning"].append((title, text))
        return QMessageBox.StandardButton.Ok

    monkeypatch.setattr(QMessageBox, "question", question)
    monkeypatch.setattr(QMessageBox, "warning", warning)
    return shown


def _labels(window):
    return {p: st.current for p, st in window.datasets.current.store.states().items()}


def test_conflicting_rows_are_shown_and_import_nothing_unless_the_last_row_may_win(
        qtbot, window, data, tmp_path, boxes):
    ds = open_and_wait(qtbot, window, data)
    b1 = next(r.path for r in ds.rows if r.path.startswith("basophil/"))
    n1 = next(r.path for r in ds.rows if r.path.startswith("neutrophil/"))
    before = _labels(window)
    csv_path = tmp_path / "conflict.csv"
    csv_path.write_text(f"path,label\n{b1},neutrophil\n{n1},basophil\n{b1},eosinophil\n")

    assert window.import_labels(csv_path) is None  # the user answered No
    assert len(boxes["question"]) == 1
    text = boxes["question"][0][1]
    assert b1 in text and "line 2 'neutrophil'" in text and "line 4 'eosinophil'" in text
    assert _labels(window) == before and not window.datasets.current.store.can_undo()

    boxes["answer"] = QMessageBox.StandardButton.Yes
    summary = window.import_labels(csv_path)
    assert summary and "2 labels changed" in summary and "last row" in summary
    assert (_labels(window)[b1], _labels(window)[n1]) == ("eosinophil", "basophil")
    assert {r.path: r.current for r in ds.rows if r.path in (b1, n1)} == {b1: "eosinophil", n1: "basophil"}
    window.review.undo()  # still one undoable step
    assert _labels(window) == before


def test_a_broken_csv_is_one_clear_message_and_changes_nothing(qtbot, window, data, tmp_path, boxes):
    ds = open_and_wait(qtbot, window, data)
    b1, b2 = [r.path for r in ds.rows if r.path.startswith("basophil/")][:2]
    before = _labels(window)
    csv_path = tmp_path / "quote.csv"
    csv_path.write_text(f'path,label\n{b1},neutrophil\n"{b2},neutrophil\n{b1},basophil\n')
    assert window.import_labels(csv_path) is None
    assert len(boxes["warning"]) == 1 and not boxes["question"]
    text = boxes["warning"][0][1]
    assert "quote.csv, line 3:" in text and "\n" not in text
    assert _labels(window) == before
