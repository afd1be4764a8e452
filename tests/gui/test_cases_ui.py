"""Cases in the window: the Cases dock counts a C-NMC patient, a click shows its cells, signing is
refused until every cell is reviewed (the confirm key), a signature writes the signed report, and a
label changed afterwards asks for a reason and marks the case amended."""
from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtWidgets import QDockWidget, QInputDialog

from allblast_gui.scripting import ScriptError

from .conftest import open_and_wait

P1 = [f"fold_0/all/UID_1_{n}_all.bmp" for n in ("1_1", "3_1", "4_2", "8_1", "9_1")]


@pytest.fixture
def cnmc_copy(cnmc_dir, tmp_path) -> Path:
    root = tmp_path / "cnmc"
    for f in sorted((cnmc_dir / "training_data").rglob("*.bmp")):
        target = root / f.relative_to(cnmc_dir / "training_data")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(f)
    return root


def test_a_patient_is_reviewed_signed_amended_and_signed_again_in_the_window(qtbot, make_window, cnmc_copy,
                                                                             monkeypatch):
    window = make_window(annotator="Dr. A")
    app = window.script_app
    open_and_wait(qtbot, window, cnmc_copy)
    cases = window.cases
    assert window.findChild(QDockWidget, "casesDock") is window.docks["cases"].dock
    assert window.actions["sign_off_case"].shortcut().toString() == "Ctrl+Shift+S"
    rows = {c["title"]: c for c in app.cases()}
    assert list(rows)[:2] == ["patient 1", "patient 67"] and len(rows) == 7
    p1 = rows["patient 1"]
    assert (p1["cells"], p1["reviewed"], p1["status"], p1["counted"]) == (5, 0, "open", 5)
    assert p1["ci95"][0] == pytest.approx(0.5655, abs=1e-4) and p1["ci95"][1] == 1.0

    # a click on the case shows its cells in the grid
    cases.panel.select("patient:1")
    cases.panel.table.clicked.emit(cases.panel.table.currentIndex())
    qtbot.waitUntil(lambda: window.model.visible_count() == 5)
    assert {window.model.cell_at(i).path for i in range(5)} == set(P1)

    # Ctrl+Shift+S: the dialog says what is missing, and Sign stays off
    window.actions["sign_off_case"].trigger()
    dialog = cases.dialog
    assert dialog is not None and dialog.chosen().key == "patient:1"
    assert "5 cell(s) not reviewed" in dialog.missing.toPlainText() and not dialog.sign_button.isEnabled()
    dialog.close()
    with pytest.raises(ScriptError, match="cannot sign patient 1: 5 cell"):
        app.sign_off("1")

    # the confirm key (Y) on the selection: the label shown is right
    window.grid.select_paths(P1)
    window.actions["confirm_label"].trigger()
    qtbot.waitUntil(lambda: all(window.model.row_for_path(p).reviewed == "confirmed" for p in P1), timeout=5000)
    from allblast_gui.views.tile_delegate import tile_caption

    assert tile_caption(window.model.row_for_path(P1[0])) == "all ✓"
    assert {c["title"]: c for c in app.cases()}["patient 1"]["status"] == "ready"

    report = app.sign_off("1")
    assert report.name == "patient-1-v1.pdf" and report.is_file() and report.with_suffix(".json").is_file()
    assert {c["title"]: c for c in app.cases()}["patient 1"]["status"] == "signed"
    assert app.verify() == {"patient 1": "intact"}

    # a label of the signed case: a reason is asked for, the amendment recorded, the case amended
    asked = []
    monkeypatch.setattr(QInputDialog, "getText",
                        staticmethod(lambda *a, **k: (asked.append(a[2]), ("second look: lymphocyte", True))[1]))
    window.grid.select_path(P1[2])
    window.actions["label_2"].trigger()  # C-NMC: key 2 is hem
    assert asked and "signed case 'patient 1'" in asked[0]
    assert window.model.row_for_path(P1[2]).current == "hem"
    qtbot.waitUntil(lambda: cases.panel.row("patient:1").status == "amended", timeout=5000)
    assert app.verify("1") == {"patient 1": "amended"}
    v2 = app.sign_off("1", annotator="Dr. B")
    assert v2.name == "patient-1-v2.pdf" and report.is_file()  # the first signed report stays beside it
    assert {c["title"]: c for c in app.cases()}["patient 1"]["status"] == "signed"
