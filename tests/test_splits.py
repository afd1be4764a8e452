"""Splits: patients never straddle splits, classes are stratified, seeds reproduce, leaks are named."""
from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from engine.data.cells import Cell, ScanResult
from engine.data.scan import scan
from engine.data.splits import LEAKY_NOTE, Split, make_split


def _cnmc_like(n_all=26, n_hem=14, seed=1, folds=False) -> ScanResult:
    """Synthetic C-NMC: ALL patients 1..n, normal subjects H1..Hn, 3..30 cells each (about 2:1)."""
    rng = random.Random(seed)
    cells = []
    for i, (pid, cls) in enumerate([(str(n), "all") for n in range(1, n_all + 1)]
                                   + [(f"H{n}", "hem") for n in range(1, n_hem + 1)]):
        fold = f"fold_{i % 3}" if folds else None
        for k in range(rng.randint(3, 30)):
            folder = f"training_data/{fold}/{cls}" if folds else cls
            cells.append(Cell(f"{folder}/UID_{pid}_{k}_1_{cls}.bmp", cls, pid, "folder", fold))
    return ScanResult(Path("/data"), cells)


def _groups(split: Split, scan_: ScanResult) -> dict[str, set[str]]:
    group = {c.path: c.group for c in scan_.cells}
    return {part: {group[p] for p in getattr(split, part)} for part in ("train", "val", "test")}


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_patient_split_keeps_patients_apart_synthetic(seed):
    data = _cnmc_like()
    split = make_split(data, "patient", seed=seed)
    g = _groups(split, data)
    assert not g["train"] & g["val"] and not g["train"] & g["test"] and not g["val"] & g["test"]
    assert sorted(split.train + split.val + split.test) == sorted(c.path for c in data.cells)
    assert split.by_patient and not split.leaky and split.warnings == []
    # Stratified: every class in every split, and each split near its share of the images.
    label = {c.path: c.label for c in data.cells}
    for part, share in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        counts = Counter(label[p] for p in getattr(split, part))
        assert set(counts) == {"all", "hem"}
        assert abs(len(getattr(split, part)) / len(data.cells) - share) < 0.08, (part, seed)


def test_patient_split_stratifies_each_class():
    data = _cnmc_like(n_all=40, n_hem=20, seed=7)
    split = make_split(data, "patient", seed=0)
    total = Counter(c.label for c in data.cells)
    label = {c.path: c.label for c in data.cells}
    for part in ("train", "val", "test"):
        counts = Counter(label[p] for p in getattr(split, part))
        frac_all = counts["all"] / sum(counts.values())
        assert abs(frac_all - total["all"] / sum(total.values())) < 0.12, part


def test_patient_split_on_real_cnmc_names(cnmc_dir):
    data = scan(cnmc_dir)
    assert data.by_patient
    for seed in range(6):
        split = make_split(data, "patient", seed=seed)
        g = _groups(split, data)
        assert not (g["train"] & g["val"] or g["train"] & g["test"] or g["val"] & g["test"])
        # 'h3' and 'H3' are one subject: a patient id, never a file-name spelling, is the group.
        assert {"all", "hem"} <= {c.label for c in data.cells if c.path in set(split.train)}
        d = split.to_json()
        assert d["protocol"] == "patient" and d["by_patient"] is True and d["leaky"] is False
        assert set(d) >= {"train", "val", "test", "seed", "warnings"}
        assert all(not p.startswith("/") for p in d["train"] + d["val"] + d["test"])
        json.dumps(d)


def test_split_is_deterministic_by_seed():
    data = _cnmc_like()
    a, b = make_split(data, "patient", seed=3), make_split(data, "patient", seed=3)
    assert a.to_json() == b.to_json()
    others = {tuple(make_split(data, "patient", seed=s).val) for s in range(5)}
    assert len(others) > 1  # the seed really changes the split
    img = [make_split(data, "image", seed=s).val for s in (0, 0, 1)]
    assert img[0] == img[1] != img[2]


def test_without_patient_ids_each_image_is_a_group_and_the_split_says_so():
    cells = [Cell(f"{c}/{i}.jpg", c, None, "folder") for c in ("a", "b") for i in range(40)]
    split = make_split(ScanResult(Path("/d"), cells), "patient", seed=0)
    assert not split.by_patient
    assert any("could not split by patient" in w for w in split.warnings)
    assert len(split.val) > 0 and len(split.test) > 0


def test_image_split_is_labelled_leaky():
    data = _cnmc_like()
    split = make_split(data, "image", seed=0)
    n = len(data.cells)
    assert split.leaky and not split.by_patient
    assert LEAKY_NOTE in split.warnings
    d = split.to_json()
    assert d["leaky"] is True and "leaky" in d["leaky_note"]
    assert abs(len(split.train) / n - 0.90) < 0.02 and abs(len(split.val) / n - 0.05) < 0.02
    # Image-level: patients do straddle the splits (that is the leak).
    g = _groups(split, data)
    assert g["train"] & (g["val"] | g["test"])


def test_folds_split_uses_cnmc_folds():
    data = _cnmc_like(folds=True)
    extra = [Cell(f"validation_data/{i}.bmp", "all" if i % 2 else "hem", f"P{i}", "cnmc-csv") for i in range(6)]
    data = ScanResult(data.root, data.cells + extra)
    split = make_split(data, "folds")
    fold = {c.path: c.fold for c in data.cells}
    assert {fold[p] for p in split.train} == {"fold_0", "fold_1"}
    assert {fold[p] for p in split.val} == {"fold_2"}
    assert sorted(split.test) == sorted(c.path for c in extra)
    assert not split.leaky  # patients were assigned to folds whole


def test_folds_split_without_fold_info_is_an_error(cnmc_dir):
    no_folds = _cnmc_like()
    with pytest.raises(ValueError, match="fold"):
        make_split(no_folds, "folds")
    with pytest.raises(ValueError, match="at least two folds"):
        make_split(scan(cnmc_dir), "folds")  # the samples hold fold_0 only


def test_predefined_split_uses_the_separate_validation_folder(cnmc_dir):
    data = scan(cnmc_dir)
    val_dir = cnmc_dir / "validation_data"
    split = make_split(data, "predefined", val_scan=val_dir)
    assert split.test == []
    assert split.val == sorted(["C-NMC_test_prelim_phase_data/1002.bmp", "C-NMC_test_prelim_phase_data/1005.bmp"])
    assert all(p.startswith("training_data/") for p in split.train)  # val images left out of train
    d = split.to_json()
    assert Path(d["val_root"]) == val_dir.resolve() and d["val_paths_relative_to"] == "val_root"
    assert any("inside the data folder" in w for w in split.warnings)
    with pytest.raises(ValueError, match="val"):
        make_split(data, "predefined")


def test_only_labelled_sure_cells_are_split():
    data = _cnmc_like()
    odd = [Cell("x/unsure.bmp", "unsure", "1", "csv"), Cell("x/none.bmp", None, "1")]
    split = make_split(ScanResult(data.root, data.cells + odd), "patient", seed=0)
    assert not {"x/unsure.bmp", "x/none.bmp"} & set(split.train + split.val + split.test)


def test_class_without_training_images_is_a_clear_error():
    data = _cnmc_like()
    with pytest.raises(ValueError, match="no training images: blast"):
        make_split(data, "patient", classes=["all", "hem", "blast"])
    one = ScanResult(Path("/d"), [c for c in data.cells if c.label == "all"])
    with pytest.raises(ValueError, match="two classes"):
        make_split(one, "patient")
    # predefined: a validation class the training data never shows
    val = ScanResult(Path("/v"), [Cell("v/1.bmp", "blast", "V1")])
    with pytest.raises(ValueError, match="no training images: blast"):
        make_split(data, "predefined", val_scan=val)


def test_class_absent_from_validation_warns():
    data = _cnmc_like()
    rare = [Cell(f"rare/{i}.bmp", "rare", "R1") for i in range(5)]  # one patient: train only
    split = make_split(ScanResult(data.root, data.cells + rare), "patient", seed=0)
    assert any("absent from validation" in w and "rare" in w for w in split.warnings)
    assert all(p in split.train for p in (c.path for c in rare))


def test_split_json_round_trip():
    split = make_split(_cnmc_like(), "image", seed=5)
    back = Split.from_json(json.loads(json.dumps(split.to_json())))
    assert back == split
