"""Reports: a model report from a real (tiny) trained run checked against its own predictions CSV,
the case report's counts against a hand count, escaping, and spreadsheet-safe CSVs."""
from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from engine.data.cells import UNSURE
from engine.data.scan import scan
from engine.labels.csv_io import export_csv, import_csv
from engine.labels.store import LabelStore
from engine.report.case import CaseCell, build_case_report
from engine.report.html import render_html
from engine.report.model_report import build_model_report
from engine.report.sources import folder_cells
from engine.utils.csvsafe import neutralise, unneutralise
from gui.pdftools import pdf_pages_and_images, pdf_text

CLASSES = ("basophil", "eosinophil", "neutrophil")
HOSTILE = "<img src=x onerror=alert(1)>"


def _engine(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    return subprocess.run([sys.executable, "-m", "engine.cli", "-q", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def pbc_small(pbc_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pbc3")
    for c in CLASSES:
        (root / c).mkdir()
        for f in sorted((pbc_dir / c).iterdir())[:40]:
            (root / c / f.name).symlink_to(f)
    return root


@pytest.fixture(scope="module")
def trained_run(pbc_small, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "lite0"
    proc = _engine("train", str(pbc_small), "--out", str(out), "--backbone", "tf_efficientnet_lite0",
                   "--img-size", "64", "--epochs", "2", "--batch-size", "16", "--ask-every", "0", "--device", "cpu",
                   "--workers", "0", "--split", "image", "--val-fraction", "0.2", "--test-fraction", "0.2")
    assert proc.returncode == 0, proc.stderr
    return out


def test_the_model_report_pdf_states_what_its_predictions_csv_says(trained_run, tmp_path):
    out = tmp_path / "model.pdf"
    proc = _engine("report", str(trained_run), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    # Independently of the engine's metrics: the run's own test predictions CSV, read by hand.
    with open(trained_run / "test_predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    y_true, y_pred = [r["label"] for r in rows], [r["predicted"] for r in rows]
    assert len(rows) == 24
    lines = pdf_text(out)
    assert f"Accuracy {accuracy_score(y_true, y_pred):.3f}" in lines
    assert f"Weighted F1 {f1_score(y_true, y_pred, average='weighted'):.3f}" in lines
    matrix = confusion_matrix(y_true, y_pred, labels=list(CLASSES))
    for name, counts in zip(CLASSES, matrix):
        assert f"{name} {' '.join(str(int(n)) for n in counts)}" in lines, name
    pages, images = pdf_pages_and_images(out)
    assert pages >= 2 and images >= 3  # loss, accuracy, confusion matrix
    if shutil.which("pdfimages"):
        listed = subprocess.run(["pdfimages", "-list", str(out)], capture_output=True, text=True, check=True).stdout
        assert len(listed.strip().splitlines()) - 2 >= 3


def test_the_model_report_reads_curves_halvings_and_the_split(trained_run):
    report = build_model_report(trained_run)
    assert report.curves.epochs == [1, 2] and report.curves.best_epoch in (1, 2)
    assert report.evaluation.split == "test" and report.evaluation.n == 24 and not report.evaluation.optimistic
    assert report.counts["test"]["n"] == 24 and sum(report.counts["train"]["per_class"].values()) == 72
    assert report.model.leaky and report.model.backbone == "tf_efficientnet_lite0"


def test_a_case_report_counts_the_cnmc_samples_as_a_hand_count_does(cnmc_dir):
    root = cnmc_dir / "training_data"
    hand = Counter(p.parent.name for p in root.rglob("*.bmp"))  # the class is the folder: all / hem
    cells, classes, _ = folder_cells(root)
    report = build_case_report(cells, classes, data_root=root, positive="all", reviewer="Dr. A")
    total = sum(hand.values())
    assert {c.name: c.expert for c in report.counts} == dict(hand)
    assert {c.name: round(c.expert_pct * 100, 1) for c in report.counts} == {
        k: round(100 * n / total, 1) for k, n in hand.items()}
    html = render_html("case_report.html", report, {})
    for name, n in hand.items():
        assert re.search(rf"<td>{name}</td><td[^>]*>{n}</td><td[^>]*>{100 * n / total:.1f}%</td>", html)
    assert f"all fraction: expert {100 * hand['all'] / total:.1f}% ({hand['all']} of {total} labelled cells)" in html
    assert report.patients == sorted({c.patient for c in cells}, key=lambda p: (not p.isdigit(), p.zfill(8)))


def test_a_case_report_lists_changes_unsure_and_open_disagreements():
    cells = [CaseCell("a/1.png", "P1", "all", "hem", "all", 0.9, 0.8),  # changed, and the model disagrees
             CaseCell("a/2.png", "P1", "all", "all", "all", 0.6, 0.2),
             CaseCell("a/3.png", "P1", "all", UNSURE, "hem", 0.55, 0.1),
             CaseCell("a/4.png", "P1", None, None)]
    r = build_case_report(cells, ["all", "hem"], data_root="/x", positive="all")
    assert [c.path for c in r.changed] == ["a/1.png", "a/3.png"]
    assert [c.path for c in r.unsure_cells] == ["a/3.png"] and [c.path for c in r.disagreements] == ["a/1.png"]
    assert (r.labelled, r.unsure, r.unlabeled, r.predicted) == (2, 1, 1, 3)
    assert {c.name: (c.expert, c.model) for c in r.counts} == {"all": (1, 2), "hem": (1, 1)}
    # doubtful first in the montage: a/2 (margin 0.2) before nothing else in "all"
    assert [m.path for m in r.montage["all"]] == ["a/2.png"]


def test_html_escapes_hostile_names_and_is_self_contained(pbc_dir, tmp_path):
    root = tmp_path / "hostile"
    (root / "neutrophil").mkdir(parents=True)
    srcs = sorted((pbc_dir / "neutrophil").iterdir())[:2]
    shutil.copy(srcs[0], root / "neutrophil" / f"{HOSTILE}.jpg")
    shutil.copy(srcs[1], root / "neutrophil" / "plain.jpg")
    store = LabelStore.open(root)
    try:
        store.sync_cells(scan(root).cells)
        store.set_label(f"neutrophil/{HOSTILE}.jpg", UNSURE, annotator=HOSTILE)
    finally:
        store.close()
    cells, classes, reviewer = folder_cells(root)
    assert reviewer == HOSTILE
    report = build_case_report(cells, classes, data_root=root, reviewer=reviewer)
    html = render_html("case_report.html", report, {"montage_0": "data:image/png;base64,AAAA"})
    assert HOSTILE not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", html, re.I)
    assert all(src.startswith("data:") for src in re.findall(r'<img src="([^"]*)"', html))


def test_every_csv_writer_neutralises_formulas_and_import_reads_them_back(pbc_dir, tmp_path):
    import numpy as np

    from engine.data.scan import scan
    from engine.learn.inference import Predictions

    root = tmp_path / "formula"
    (root / "neutrophil").mkdir(parents=True)
    (root / "basophil").mkdir()
    srcs = sorted((pbc_dir / "neutrophil").iterdir())[:3]  # three different images: copies would be duplicates
    evil = "=HYPERLINK(1).jpg"
    shutil.copy(srcs[0], root / "neutrophil" / evil)
    shutil.copy(srcs[1], root / "basophil" / "-2+3.jpg")
    shutil.copy(srcs[2], root / "=SUM(1).jpg")  # a cell outside any class folder: its path starts with "="
    store = LabelStore.open(root)
    try:
        store.sync_cells(scan(root).cells)
        store.set_label(f"neutrophil/{evil}", "basophil", annotator="@admin")
        store.set_label("=SUM(1).jpg", "neutrophil", annotator="@admin")
        generic, history = tmp_path / "labels.csv", tmp_path / "history.csv"
        export_csv(store, generic)
        export_csv(store, history, history=True)
    finally:
        store.close()
    preds = tmp_path / "pred.csv"
    Predictions([f"neutrophil/{evil}"], ["+patient"], ("basophil", "neutrophil"),
                np.array([[0.25, 0.75]], np.float32)).write_csv(preds, labels=["-x"])
    for path in (generic, history, preds):
        with open(path, newline="") as fh:
            cells = [c for row in csv.reader(fh) for c in row]
        risky = [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r"))]
        assert not risky, (path.name, risky)
    with open(generic, newline="") as fh:
        rows = {r["path"]: r for r in csv.DictReader(fh)}
    assert rows["'=SUM(1).jpg"]["label"] == "neutrophil" and rows["'=SUM(1).jpg"]["annotator"] == "'@admin"
    # Round trip: a fresh store of the same folder imports the export and gets the same labels.
    copy = tmp_path / "formula-copy"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns(".allblast"))
    again = LabelStore.open(copy)
    try:
        again.sync_cells(scan(copy).cells)
        report = import_csv(again, generic, annotator="me")
        assert not report.missing and not report.problems
        assert again.state(f"neutrophil/{evil}").current == "basophil"
        assert again.state("basophil/-2+3.jpg").current == "basophil"
        assert again.state("=SUM(1).jpg").current == "neutrophil"  # the prefix the export added is gone
    finally:
        again.close()


@pytest.mark.parametrize("value", ["=1+1", "+1", "-1", "@x", "\tx", "\rx", "plain", "'quoted", ""])
def test_neutralise_round_trips(value):
    out = neutralise(value)
    assert not str(out).startswith(("=", "+", "-", "@", "\t", "\r"))
    assert unneutralise(out) == value


def test_the_cli_writes_a_case_report_with_data(trained_run, pbc_small, tmp_path):
    out = tmp_path / "r" / "model.html"
    proc = _engine("report", str(trained_run), "--out", str(out), "--data", str(pbc_small), "--reviewer", "Dr. B")
    assert proc.returncode == 0, proc.stderr
    case = out.with_name("model-case.html")
    html = case.read_text()
    assert "Dr. B" in html and "basophil" in html and "data:image/png;base64," in html
    assert not (pbc_small / ".allblast").exists()  # a report writes nothing into a data folder
    bad = _engine("report", str(trained_run), "--out", str(tmp_path / "x.docx"))
    assert bad.returncode == 2 and "pdf or .html" in bad.stderr and "Traceback" not in bad.stderr
