"""Reports from the window: File > Export Report (folder, patient, selection) in the background, the
Runs panel's Model Report, and app.export_report for scripts."""
from __future__ import annotations

import csv
import shutil
from collections import Counter
from pathlib import Path

import pytest

from allblast_gui.scripting import ScriptError

from .conftest import open_and_wait
from .pdftools import pdf_pages_and_images, pdf_text
from .test_predictions_ui import predict, trained  # noqa: F401 - the module's trained-model fixture

pytestmark = pytest.mark.shared_data


def test_a_case_report_of_the_folder_after_predictions(qtbot, window, trained):  # noqa: F811
    data, model = trained
    open_and_wait(qtbot, window, data)
    predict(window, model)
    rows = window.model.all_rows()
    expert = Counter(r.current for r in rows)
    predicted = Counter(r.pred for r in rows)
    disagree = sum(r.pred is not None and r.current != r.pred for r in rows)
    out = window.script_app.export_report(window.predictions.dataset.root.parent / "case.pdf")
    lines = pdf_text(out)
    n = len(rows)
    for name in sorted(expert):
        assert (f"{name} {expert[name]} {expert[name] / n:.1%} {predicted[name]} {predicted[name] / n:.1%}"
                in lines), name
    assert f"Disagreements with the model left open: {disagree} cells." in " ".join(lines)  # may wrap
    assert any("Reviewed by:" in line for line in lines)
    pages, images = pdf_pages_and_images(out)
    assert pages >= 2 and images >= 1 + len(expert)  # the differential and one montage per class


def test_a_report_of_the_selection_and_the_dialog(qtbot, window, trained, tmp_path):  # noqa: F811
    data, _ = trained
    open_and_wait(qtbot, window, data)
    chosen = [window.model.cell_at(i).path for i in (0, 1, 2)]
    assert window.grid.select_paths(chosen) == 3
    assert set(window.grid.selected_paths()) == set(chosen)
    html = window.script_app.export_report(tmp_path / "sel.html", "selection").read_text()
    assert "selection of 3 cells" in html and "3 (3 with a class" in html
    with pytest.raises(ScriptError, match="pdf or .html"):
        window.script_app.export_report(tmp_path / "x.docx")
    with pytest.raises(ScriptError, match="scope"):
        window.script_app.export_report(tmp_path / "x.pdf", "everything")
    # File > Export Report... (Ctrl+E): the dialog writes in the background and says so.
    window.actions["export_report"].trigger()
    dialog = window.reports.dialog
    assert dialog is not None and not dialog.patient.isEnabled()  # PBC names no patients
    dialog.path.setText(str(tmp_path / "dialog.html"))
    dialog.open_after.setChecked(False)
    with qtbot.waitSignal(window.reports.written, timeout=60_000) as blocker:
        dialog.write_button.click()
    assert blocker.args[0] == tmp_path / "dialog.html" and (tmp_path / "dialog.html").is_file()


def test_a_patient_report_on_the_cnmc_samples(qtbot, window, cnmc_dir, indexed_db, tmp_path):
    indexed_db(cnmc_dir, tmp_path / "db")
    open_and_wait(qtbot, window, cnmc_dir / "training_data")
    html = window.script_app.export_report(tmp_path / "h6.html", "patient:H6").read_text()
    cells = [p for p in (cnmc_dir / "training_data").rglob("*.bmp") if p.name.startswith("UID_H6_")]
    assert "patient H6" in html and f"{len(cells)} ({len(cells)} with a class" in html
    assert "all fraction: expert" in html  # C-NMC's blasts, as the Patients panel chooses
    # The patient table as a CSV: the same counts, and a hostile patient id stays text.
    out = window.predictions.patients.export_csv(tmp_path / "patients.csv")
    with open(out, newline="") as fh:
        table = {r["patient"]: r for r in csv.DictReader(fh)}
    assert int(table["H6"]["cells"]) == len(cells) and int(table["H6"]["hem expert"]) == len(cells)
    from allblast_gui.predictions.patient_summary import PatientRow, write_patient_csv

    write_patient_csv(tmp_path / "evil.csv", [PatientRow("=cmd()", 1)], ["all"], "all")
    assert "'=cmd()" in (tmp_path / "evil.csv").read_text()


def test_the_runs_panel_writes_a_model_report(qtbot, window, trained, tmp_path):  # noqa: F811
    data, model = trained
    open_and_wait(qtbot, window, data)
    run = window.training.add_run(model.parent)
    qtbot.waitUntil(lambda: window.training.runs.selected_path() == run)  # listed on a pool thread
    assert window.training.runs.report_button.isEnabled()
    out = window.script_app.export_model_report(run, tmp_path / "model.pdf")
    lines = pdf_text(out)
    assert any(line.startswith("Model report:") for line in lines) and any("Confusion matrix" in line for line in lines)


def test_default_outputs_go_to_the_documents_folder_not_the_data_folder(qtbot, make_window, trained, tmp_path,  # noqa: F811
                                                                      monkeypatch):
    """Regression: with the store beside the images, the default report folder and the scripted
    predictions CSV were inside FOLDER/.allblast/, which every writer now refuses."""
    data, model = trained
    folder = tmp_path / "cells"
    shutil.copytree(data, folder, symlinks=True)
    monkeypatch.setenv("XDG_DOCUMENTS_DIR", str(tmp_path / "docs"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "userdata"))
    window = make_window(default_store=True)
    open_and_wait(qtbot, window, folder)
    out = predict(window, model)
    assert out.is_file() and folder not in out.parents and out.parent == tmp_path / "docs" / "allblast" / "cells"
    window.actions["export_report"].trigger()
    path = Path(window.reports.dialog.path.text())
    assert folder not in path.parents and path.parent == tmp_path / "docs" / "allblast" / "cells"
    window.reports.dialog.reject()
