"""Predictions in the window: streaming onto the tiles, kept across a reopen, review by doubt and
disagreement, accept-prediction with undo, the Patients panel, saliency, and the CSV the app
writes against the CLI's. A small Lite0 model is trained once (CLI, 64 px, 1 epoch) on real PBC
cells linked from ../shared/data; where the saliency map points is checked with a second one trained
at 128 px (a map fine enough to locate the cell)."""
from __future__ import annotations

import csv
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt

from allblast_gui.models.cell_list_model import DISAGREES_ROLE, PREDICTED_ROLE
from allblast_gui.predictions.patient_summary import summarize_patients
from allblast_gui.cells.predictions import apply_predictions
from engine.learn.weights import LITE0

from .conftest import open_and_wait
from .test_training_ui import link_subset

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def trained(pbc_dir, tmp_path_factory):
    """(data folder, model.pt) of a quick Lite0 run on 3 PBC classes x 16 cells."""
    base = tmp_path_factory.mktemp("predict")
    data = link_subset(pbc_dir, base / "pbc-small", 16)
    run = base / "run"
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "-q", "train", str(data), "--out", str(run),
                           "--backbone", LITE0, "--img-size", "64", "--epochs", "1", "--batch-size", "8",
                           "--ask-every", "0", "--device", "cpu", "--workers", "0", "--split", "image"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return data, run / "model.pt"


def predict(window, model, **kwargs) -> Path:
    return window.script_app.predict(model, device="cpu", batch_size=8, **kwargs)


def test_predictions_stream_onto_the_tiles_and_come_back_on_reopen(qtbot, make_window, trained, tmp_path):
    data, model = trained
    window = make_window()
    open_and_wait(qtbot, window, data)
    arrived = []
    window.predictions.controller.arrived.connect(arrived.append)
    predict(window, model)
    assert len(arrived) >= 1 and sum(map(len, arrived)) == 48  # in batches, as they came
    rows = {r.path: r for r in window.model.all_rows()}
    assert all(r.pred in ("eosinophil", "lymphocyte", "neutrophil") for r in rows.values())
    assert all(abs(float(r.probs.sum()) - 1) < 1e-4 and 0 <= r.margin <= 1 for r in rows.values())
    assert window.model.index(0).data(PREDICTED_ROLE) == window.model.cell_at(0).pred
    assert "model:" in window.model.index(0).data(Qt.ItemDataRole.ToolTipRole)
    shown = window.predictions.controller.shown
    assert shown.classes == ("eosinophil", "lymphocyte", "neutrophil") and shown.name == "run"
    before = {p: (r.pred, r.probs.copy()) for p, r in rows.items()}
    window.close()

    again = make_window()  # same folder, same database: the stored predictions show at once
    ds = open_and_wait(qtbot, again, data)
    assert ds.predictions is not None and ds.predictions.sha256 == shown.sha256
    for r in again.model.all_rows():
        assert r.pred == before[r.path][0]
        np.testing.assert_allclose(r.probs, before[r.path][1], atol=1e-7)
    assert "Model" in again.inspector.predictions.model_label.text()


def test_disagreement_filter_count_and_doubt_sort_are_exact(qtbot, window, trained):
    data, model = trained
    open_and_wait(qtbot, window, data)
    predict(window, model)
    store = window.datasets.current.store
    rows = window.model.all_rows()
    # Make the expert disagree with the model on three cells, and mark one unsure.
    targets = rows[:3]
    for r in targets:
        other = next(c for c in r.pred_classes if c != r.pred)
        store.set_label(r.path, other, annotator="t")
    store.set_label(rows[3].path, "unsure", annotator="t")
    window.review.reload_from_store()
    expected = {r.path for r in rows if r.current in r.pred_classes and r.current != r.pred}
    assert {r.path for r in targets} <= expected and rows[3].path not in expected
    assert window.tree.count_text("disagree", None) == str(len(expected))
    window.tree.disagreeRequested.emit()  # the tree item: "Disagreements with the model"
    assert window.filter_bar.current_filter().disagree_only
    shown = {window.model.cell_at(i).path for i in range(window.model.visible_count())}
    assert shown == expected
    assert all(window.model.index(i).data(DISAGREES_ROLE) for i in range(window.model.rowCount()))
    # Doubt: smallest margin first, composing with the other filters.
    window.filter_bar.show_all()
    window.filter_bar.set_sort("margin")
    margins = [window.model.cell_at(i).margin for i in range(window.model.visible_count())]
    assert margins == sorted(margins)
    cls = rows[0].pred
    window.filter_bar.predicted_combo.setCurrentIndex(window.filter_bar.predicted_combo.findData(cls))
    window.filter_bar.prob_min.setValue(0.3)
    window.filter_bar._emit()
    visible = [window.model.cell_at(i) for i in range(window.model.visible_count())]
    assert visible and all(r.pred == cls and r.pred_p >= 0.3 for r in visible)
    assert len(visible) == sum(1 for r in rows if r.pred == cls and r.pred_p >= 0.3)


def test_accept_prediction_is_one_undo_step_with_its_source(qtbot, window, trained):
    data, model = trained
    open_and_wait(qtbot, window, data)
    predict(window, model)
    store = window.datasets.current.store
    rows = window.model.all_rows()[:4]
    for r in rows:
        store.set_label(r.path, next(c for c in r.pred_classes if c != r.pred), annotator="t")
    window.review.reload_from_store()
    before = {r.path: r.current for r in rows}
    window.filter_bar.show_all()
    window.grid.selectionModel().clearSelection()
    for r in rows[:3]:
        window.grid.selectionModel().select(window.model.index(window.model.row_of(r.path)),
                                            window.grid.selectionModel().SelectionFlag.Select)
    qtbot.keyClick(window.grid, Qt.Key.Key_A)
    for r in rows[:3]:
        assert store.state(r.path).current == r.pred
        change = store.history(r.path)[-1]
        assert change.source == f"accepted prediction (model {window.predictions.controller.shown.short})"
    assert store.state(rows[3].path).current == before[rows[3].path]  # not selected: untouched
    window.actions["undo"].trigger()  # one step takes all three back
    assert {r.path: store.state(r.path).current for r in rows} == before


def test_the_app_writes_the_same_predictions_csv_as_the_cli(qtbot, window, trained, tmp_path):
    data, model = trained
    open_and_wait(qtbot, window, data)
    app_csv = predict(window, model, out=tmp_path / "app.csv")
    cli_csv = tmp_path / "cli.csv"
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "-q", "predict", str(model), str(data), "--out",
                           str(cli_csv), "--device", "cpu", "--batch-size", "8"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr

    def read(path):
        with open(path, newline="") as fh:
            return list(csv.DictReader(fh))

    app_rows, cli_rows = read(app_csv), read(cli_csv)
    assert list(app_rows[0]) == list(cli_rows[0])  # the same columns, in the same order
    assert [r["path"] for r in app_rows] == [r["path"] for r in cli_rows] and len(app_rows) == 48
    for a, c in zip(app_rows, cli_rows):
        assert (a["patient"], a["predicted"]) == (c["patient"], c["predicted"])
        for key in a:
            if key.startswith("p_") or key in ("margin", "entropy"):
                assert abs(float(a[key]) - float(c[key])) < 1e-5, (key, a[key], c[key])  # 6 decimals, rounded twice


def test_switching_the_active_model_switches_the_predictions_shown(qtbot, window, trained, tmp_path):
    import torch

    data, model = trained
    other = tmp_path / "other" / "model.pt"
    other.parent.mkdir()
    ckpt = torch.load(model, weights_only=True)
    ckpt["calibration"] = {"temperature": 3.0}  # a different file: another model for the store
    torch.save(ckpt, other)
    open_and_wait(qtbot, window, data)
    predict(window, model)
    first = {r.path: r.pred_p for r in window.model.all_rows()}
    window.script_app.set_active_model(other.parent)  # never predicted: nothing shown
    assert all(r.pred is None for r in window.model.all_rows())
    assert window.tree.count_text("disagree", None) == "–"
    predict(window, other.parent)
    softer = {r.path: r.pred_p for r in window.model.all_rows()}
    assert all(softer[p] < first[p] for p in first)  # temperature 3 is less confident
    window.script_app.set_active_model(model)  # back: the first model's stored results
    assert {r.path: r.pred_p for r in window.model.all_rows()} == pytest.approx(first)


def test_a_model_of_other_classes_is_explained_not_crashed_on(qtbot, window, trained, cnmc_dir, indexed_db,
                                                             tmp_path):
    _, model = trained
    indexed_db(cnmc_dir, tmp_path / "db")
    open_and_wait(qtbot, window, cnmc_dir)
    messages = []
    window.predictions.message.connect(messages.append)
    predict(window, model)
    assert any("this folder's all, hem cells" in m for m in messages)
    rows = [r for r in window.model.all_rows() if not r.problem]
    assert all(r.pred is not None and not r.disagrees for r in rows)
    assert window.tree.count_text("disagree", None) == "0"


def test_saliency_shows_a_heat_map_over_the_cell(qtbot, window, trained):
    data, model = trained
    open_and_wait(qtbot, window, data)
    predict(window, model)
    window.grid.select_path(window.model.cell_at(2).path)
    qtbot.keyClick(window.grid, Qt.Key.Key_G)
    assert window.inspector.saliency_on
    qtbot.waitUntil(window.inspector.image.has_overlay, timeout=60_000)
    assert "where the model saw" in window.inspector.predictions.saliency_text.text()
    window.grid.select_path(window.model.cell_at(5).path)  # the mode stays on: the next cell gets one too
    qtbot.waitUntil(window.inspector.image.has_overlay, timeout=60_000)
    qtbot.keyClick(window.grid, Qt.Key.Key_G)
    assert not window.inspector.image.has_overlay()


# Lite0's last stage is 4 x 4 at 128 px: fine enough to tell the cell from what surrounds it (at the
# `trained` model's 64 px it is 2 x 2, and any peak sits in a corner quadrant).
CAM_SIZE = 128
# PBC cells are centred in their 360 x 363 crops; the white cell (a large monocyte included) lies within
# 0.35 of the image size of the centre, the red cells and platelets around it mostly outside.
CELL_RADIUS = 0.35


@pytest.fixture(scope="module")
def located(pbc_dir, tmp_path_factory):
    """(folder of 16 held-out PBC cells, model.pt) of a Lite0 run at 128 px that learned its 3 classes:
    trained 2 epochs on 3 x 16 cells, the epoch kept by its accuracy on 3 x 6 other cells."""
    base = tmp_path_factory.mktemp("located")

    def link(dst, first, count):
        for cls in ("eosinophil", "lymphocyte", "neutrophil"):
            (dst / cls).mkdir(parents=True)
            for image in sorted((pbc_dir / cls).glob("*.jpg"))[first:first + count]:
                (dst / cls / image.name).symlink_to(image)
        return dst

    data, val, cells = link(base / "train", 0, 16), link(base / "val", 100, 6), link(base / "cells", 200, 6)
    for extra in sorted((cells / "eosinophil").iterdir())[4:]:
        extra.unlink()  # 4 + 6 + 6 = 16 cells
    run = base / "run"
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "-q", "train", str(data), "--out", str(run), "--val",
                           str(val), "--monitor", "val_accuracy", "--backbone", LITE0, "--img-size", str(CAM_SIZE),
                           "--epochs", "2", "--batch-size", "8", "--ask-every", "0", "--device", "cpu",
                           "--workers", "0", "--seed", "0"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    return cells, run / "model.pt"


def test_saliency_peaks_on_the_cell_for_most_real_cells(qtbot, window, located):
    from engine.learn.saliency import hot_spot  # the window's own definition of a map's peak

    cells, model = located
    open_and_wait(qtbot, window, cells)
    predict(window, model)
    rows = window.model.all_rows()
    assert len(rows) == 16
    # The model learned its classes (chance is 1 in 3), so its maps are of classes it tells apart.
    assert sum(r.pred == r.original for r in rows) >= 9, [(r.original, r.pred) for r in rows]
    controller = window.predictions.controller
    window.inspector.toggle_saliency()
    inside, where = 0, []
    for row in rows:
        # The window's own map: selecting the cell asks the controller, which runs grad_cam on a pool thread.
        with qtbot.waitSignal(controller.saliencyReady, timeout=60_000,
                              check_params_cb=lambda path, *_, p=row.path: path == p) as blocker:
            window.grid.select_path(row.path)
        _, cam, _ = blocker.args
        h, w = cam.shape
        assert (h, w) == (363, 360) and cam.max() == pytest.approx(1.0)
        # A peak, not a flat map (whose hot spot would be the centre whatever the model saw).
        assert (cam >= 0.95).mean() < 0.2, (row.path, float((cam >= 0.95).mean()))
        y, x = hot_spot(cam)
        distance = float(np.hypot((y - (h - 1) / 2) / h, (x - (w - 1) / 2) / w))
        where.append((row.path, round(distance, 3)))
        inside += distance <= CELL_RADIUS
    qtbot.waitUntil(window.inspector.image.has_overlay, timeout=10_000)
    assert inside >= 12, f"the heat map's peak lies on the cell in {inside} of 16 cells: {where}"


def test_patient_counts_equal_a_hand_count_on_the_cnmc_samples(qtbot, window, cnmc_dir, indexed_db, tmp_path):
    indexed_db(cnmc_dir, tmp_path / "db")
    ds = open_and_wait(qtbot, window, cnmc_dir)
    rows = window.model.all_rows()
    # A known "model": everything from patient 1 is predicted hem, every other cell all.
    paths = [r.path for r in rows if not r.problem]
    probs = np.array([[0.2, 0.8] if r.patient == "1" else [0.9, 0.1] for r in rows if not r.problem], np.float32)
    apply_predictions({r.path: r for r in rows}, ("all", "hem"), paths, probs)
    hand: dict[str, Counter] = {}
    for path in paths:  # C-NMC names carry the patient and the class: UID_<patient>_<img>_<cell>_<class>
        name = Path(path).name
        if not name.startswith("UID_"):
            continue
        parts = name[:-4].split("_")
        patient = parts[1].upper() if parts[1][:1] in "hH" else parts[1]
        hand.setdefault(patient, Counter())[parts[-1].lower()] += 1
    summary = {p.patient: p for p in summarize_patients(rows)}
    for patient, counts in hand.items():
        assert dict(summary[patient].expert) == dict(counts), patient
        n = sum(counts.values())
        assert summary[patient].expert_fraction("all") == pytest.approx(counts["all"] / n)
        assert summary[patient].model_fraction("all") == (0.0 if patient == "1" else 1.0)
    # The panel shows the same numbers, "all" (the blasts) as the class by default.
    panel = window.predictions.patients
    window.show_dock("patients")  # a hidden panel recounts only when it is shown
    panel.refresh()
    assert panel.positive.currentData() == "all"
    table = panel.model
    by_patient = {table.index(i, 0).data(): i for i in range(table.rowCount())}
    i = by_patient["H6"]
    assert table.index(i, 1).data() == str(sum(hand["H6"].values()))
    assert table.index(i, 2).data() == f"{hand['H6']['all'] / sum(hand['H6'].values()):.1%}"
    panel.table.clicked.emit(table.index(i, 0))  # a click filters the grid to that patient
    assert window.filter_bar.current_filter().patients == frozenset({"H6"})
    assert ds.patients and len(by_patient) >= len(hand)
