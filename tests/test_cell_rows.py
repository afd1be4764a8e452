"""CellRow and the grid filter: plain Python, no Qt."""
from __future__ import annotations

import random

import pytest

from allblast_gui.cells.rows import CellFilter, CellRow, apply_filter, rows_from_scan
from engine.data.cells import UNSURE, Cell, Problem, ScanResult
from engine.utils.natsort import natural_key


def row(path, patient=None, original=None, current=..., problem=None):
    name = path.rsplit("/", 1)[-1]
    return CellRow(path, name, patient, original, original if current is ... else current, problem)


@pytest.fixture
def rows():
    return [
        row("all/UID_10_1_1_all.bmp", "10", "all"),  # 0
        row("all/UID_2_1_1_all.bmp", "2", "all", "hem"),  # 1 changed
        row("hem/UID_H3_1_1_hem.bmp", "H3", "hem"),  # 2
        row("hem/UID_h3_2_1_hem.bmp", "H3", "hem", UNSURE),  # 3 changed, unsure
        row("new/cell_9.png", None, None),  # 4 unlabeled
        row("new/cell_10.png", None, None, "all"),  # 5 changed
        row("bad/broken.png", None, None, problem="empty file (0 bytes)"),  # 6
    ]


def names(rows, flt):
    return [rows[i].name for i in apply_filter(rows, flt)]


def test_from_cell_and_changed():
    cell = Cell("training_data/fold_0/all/UID_1_1_1_all.bmp", "all", "1", "folder", "fold_0", 10, 99, 450, 450)
    r = CellRow.from_cell(cell)
    assert (r.name, r.patient, r.original, r.current, r.mtime_ns, r.width) == ("UID_1_1_1_all.bmp", "1", "all", "all", 99, 450)
    assert not r.changed
    assert CellRow.from_cell(cell, current=None).changed
    assert CellRow.from_cell(cell, current=UNSURE).current == UNSURE
    r.current = "hem"
    assert r.changed
    assert CellRow.from_cell(cell) == CellRow.from_cell(cell)  # caches do not affect equality


def test_rows_from_scan_keeps_problems_but_not_duplicates():
    cell = Cell("a/x.png", "a", None)
    scan = ScanResult(root=None, cells=[cell], problems=[Problem("a/bad.png", "empty file (0 bytes)"), Problem("a/y.png", "duplicate content of a/x.png (skipped)")])
    out = rows_from_scan(scan, {"a/x.png": "b"})
    assert [(r.path, r.current, r.problem) for r in out] == [("a/x.png", "b", None), ("a/bad.png", None, "empty file (0 bytes)")]
    assert len(rows_from_scan(scan, include_problems=False)) == 1


def test_default_filter_shows_everything_in_natural_order(rows):
    assert names(rows, CellFilter()) == [
        "broken.png", "cell_9.png", "cell_10.png", "UID_2_1_1_all.bmp", "UID_10_1_1_all.bmp",
        "UID_H3_1_1_hem.bmp", "UID_h3_2_1_hem.bmp",
    ]
    assert natural_key("UID_2") < natural_key("UID_10") < natural_key("uid_11")


def test_class_filter_uses_the_current_label(rows):
    assert names(rows, CellFilter(classes=frozenset({"all"}))) == ["cell_10.png", "UID_10_1_1_all.bmp"]
    assert names(rows, CellFilter(classes=frozenset({"hem", UNSURE}))) == ["UID_2_1_1_all.bmp", "UID_H3_1_1_hem.bmp", "UID_h3_2_1_hem.bmp"]
    assert names(rows, CellFilter(classes=frozenset())) == []


def test_status_filters(rows):
    assert names(rows, CellFilter(changed_only=True)) == ["cell_10.png", "UID_2_1_1_all.bmp", "UID_h3_2_1_hem.bmp"]
    # An unreadable file has no label but is not "unlabeled": it is counted as unreadable.
    assert names(rows, CellFilter(unlabeled_only=True)) == ["cell_9.png"]
    assert names(rows, CellFilter(unsure_only=True)) == ["UID_h3_2_1_hem.bmp"]
    # Both: the cells still needing a decision (OR), not the empty set.
    assert names(rows, CellFilter(unlabeled_only=True, unsure_only=True)) == ["cell_9.png", "UID_h3_2_1_hem.bmp"]
    # Other criteria combine with AND.
    assert names(rows, CellFilter(changed_only=True, classes=frozenset({"all"}))) == ["cell_10.png"]


def test_patient_and_text_filters(rows):
    assert names(rows, CellFilter(patients=frozenset({"H3"}))) == ["UID_H3_1_1_hem.bmp", "UID_h3_2_1_hem.bmp"]
    assert names(rows, CellFilter(patients=frozenset({"2", "10"}))) == ["UID_2_1_1_all.bmp", "UID_10_1_1_all.bmp"]
    assert names(rows, CellFilter(text="uid_h3")) == ["UID_H3_1_1_hem.bmp", "UID_h3_2_1_hem.bmp"]
    assert names(rows, CellFilter(text="  NEW/ ")) == ["cell_9.png", "cell_10.png"]  # folder part of the path
    assert names(rows, CellFilter(text="nothing-like-this")) == []


def test_sorts(rows):
    assert names(rows, CellFilter(sort="patient")) == [
        "UID_2_1_1_all.bmp", "UID_10_1_1_all.bmp", "UID_H3_1_1_hem.bmp", "UID_h3_2_1_hem.bmp",
        "broken.png", "cell_9.png", "cell_10.png",  # no patient: last
    ]
    assert names(rows, CellFilter(sort="label")) == [
        "cell_10.png", "UID_10_1_1_all.bmp", "UID_2_1_1_all.bmp", "UID_H3_1_1_hem.bmp",  # all, hem
        "UID_h3_2_1_hem.bmp",  # unsure
        "broken.png", "cell_9.png",  # unlabeled last
    ]
    with pytest.raises(ValueError):
        apply_filter(rows, CellFilter(sort="size"))


def test_filter_sees_relabels(rows):
    flt = CellFilter(unlabeled_only=True)
    assert names(rows, flt) == ["cell_9.png"]  # not the unreadable broken.png
    rows[4].current = "hem"
    assert names(rows, flt) == []


def test_15000_rows_filter_and_sort_in_natural_order():
    # Speed is measured in benchmarks/bench_gui.py; here: every row once, in natural order.
    rnd = random.Random(0)
    labels = ["all", "hem", None, UNSURE]
    big = [
        row(f"training_data/fold_{i % 3}/x/UID_{i % 73}_{i % 17}_{i}_x.bmp", str(i % 73), labels[i % 2], rnd.choice(labels))
        for i in range(15_000)
    ]
    order = apply_filter(big, CellFilter())
    assert len(order) == 15_000 and len(set(order)) == 15_000
    numbers = [int(big[i].name.split("_")[3]) for i in order if big[i].name.startswith("UID_1_1_")]
    assert numbers == sorted(numbers) and len(numbers) > 10
    by_patient = apply_filter(big, CellFilter(sort="patient"))
    patients = [int(big[i].patient) for i in by_patient]
    assert patients == sorted(patients)
    allc = apply_filter(big, CellFilter(classes=frozenset({"all"}), changed_only=True))
    assert allc and all(big[i].current == "all" and big[i].original != "all" for i in allc)
