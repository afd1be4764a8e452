"""Scanning real and deliberately broken folders: labels, patients, problems; files untouched."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.data.scan import scan
from engine.data.imaging import ImageReadError, read_rgb
from engine.data.labelfiles import LabelFileError
from unprivileged import run_as_other_user, world_readable_tmp

CNMC_VAL_CSV = "validation_data/C-NMC_test_prelim_phase_data_labels.csv"


def _tree_fingerprint(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def test_scan_cnmc_samples(cnmc_dir):
    before = _tree_fingerprint(cnmc_dir)
    result = scan(cnmc_dir, labels=cnmc_dir / CNMC_VAL_CSV)
    train = [c for c in result.cells if c.path.startswith("training_data/")]
    val = [c for c in result.cells if c.path.startswith("validation_data/")]
    assert len(train) == 15
    assert sum(c.label == "all" for c in train) == 8
    assert sum(c.label == "hem" for c in train) == 7
    assert {c.patient for c in train} == {"1", "67", "68", "78", "H6", "H48", "H3"}
    assert all(c.fold == "fold_0" and c.label_source == "folder" for c in train)
    by_name = {c.name: c for c in val}
    assert set(by_name) == {"1002.bmp", "1005.bmp"}
    # labelled through the CSV, patient from its Patient_ID column (the original file name)
    assert (by_name["1002.bmp"].label, by_name["1002.bmp"].patient) == ("hem", "H49")
    assert (by_name["1005.bmp"].label, by_name["1005.bmp"].patient) == ("all", "57")
    assert all(c.label_source == "cnmc-csv" for c in val)
    assert len(result.missing) == 1865
    assert result.problems == []
    assert result.by_patient
    assert _tree_fingerprint(cnmc_dir) == before, "a scan must never modify the user's files"


def test_cnmc_labels_csv_is_found_without_being_named(cnmc_dir):
    result = scan(cnmc_dir)
    assert result.class_counts() == {"all": 9, "hem": 8}
    assert len(result.missing) == 1865


def test_scan_pbc_has_classes_but_no_patients(pbc_dir):
    result = scan(pbc_dir, verify=False)
    assert len(result.cells) == 2000
    assert result.class_counts() == {k: 250 for k in (
        "basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet")}
    assert result.patients == [] and not result.by_patient
    assert any("cannot be made by patient" in n for n in result.notes)
    assert result.cells[0].group.startswith("image:")


def _copy_some(src: Path, dst: Path, n: int) -> list[Path]:
    out = []
    for p in sorted(src.glob("*.bmp"))[:n]:
        dst.mkdir(parents=True, exist_ok=True)
        out.append(Path(shutil.copy(p, dst / p.name)))
    return out


def test_bad_files_are_reported_and_good_ones_load(cnmc_dir):
    """Run by a user who cannot read `locked.bmp` (as root the scan drops to nobody: root reads
    mode-000 files anyway, which would hide the "not readable" case)."""
    with world_readable_tmp("scan") as base:
        root = base / "data"
        all_dir, hem_dir = root / "all", root / "hem"
        good = _copy_some(cnmc_dir / "training_data/fold_0/all", all_dir, 3)
        _copy_some(cnmc_dir / "training_data/fold_0/hem", hem_dir, 2)
        (all_dir / "zero.bmp").write_bytes(b"")
        data = good[0].read_bytes()
        (all_dir / "truncated.bmp").write_bytes(data[: len(data) // 2])
        (hem_dir / "notes.png").write_text("this is a text file, not an image\n" * 10)
        (hem_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(200))
        shutil.copy(good[1], hem_dir / "copy_of_all.bmp")  # duplicate content under another class
        unreadable = all_dir / "locked.bmp"
        shutil.copy(sorted((cnmc_dir / "training_data/fold_0/hem").glob("*.bmp"))[4], unreadable)
        unreadable.chmod(0)
        before = _tree_fingerprint(root)

        code = """
            import json
            from engine.data.scan import scan
            result = scan(sys.argv[1])
            print(json.dumps({"reasons": {p.path: p.reason for p in result.problems},
                              "counts": result.class_counts()}))
        """
        r = run_as_other_user(code, base / "home", str(root))
        assert r.returncode == 0, r.stderr
        got = json.loads(r.stdout.strip().splitlines()[-1])
        reasons = got["reasons"]
        assert "empty" in reasons["all/zero.bmp"]
        assert "truncated" in reasons["all/truncated.bmp"]
        assert "not an image" in reasons["hem/notes.png"]
        assert "corrupt" in reasons["hem/broken.jpg"] or "truncated" in reasons["hem/broken.jpg"]
        assert "duplicate" in reasons["hem/copy_of_all.bmp"]
        assert "not readable" in reasons["all/locked.bmp"]
        assert got["counts"] == {"all": 3, "hem": 2}
        assert _tree_fingerprint(root) == before


def test_formats_bit_depths_and_channels_become_rgb(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)
    bgr = rgb[:, :, ::-1]
    cls = tmp_path / "a"
    cls.mkdir()
    (tmp_path / "b").mkdir()
    cv2.imwrite(str(cls / "c.png"), bgr)
    cv2.imwrite(str(cls / "c.tif"), bgr)
    cv2.imwrite(str(cls / "g16.tif"), (rng.integers(0, 4096, (40, 30))).astype(np.uint16))
    cv2.imwrite(str(cls / "rgba.png"), np.dstack([bgr, np.full((40, 30), 255, np.uint8)]))
    cv2.imwrite(str(tmp_path / "b" / "gray.jpg"), rgb[:, :, 0])
    assert np.array_equal(read_rgb(cls / "c.png"), rgb), "OpenCV's BGR must be turned into RGB"
    assert np.array_equal(read_rgb(cls / "rgba.png"), rgb)
    g16 = read_rgb(cls / "g16.tif")
    assert g16.dtype == np.uint8 and g16.shape == (40, 30, 3) and g16.max() == 255
    result = scan(tmp_path)
    assert len(result.cells) == 5 and not result.problems
    assert all((c.width, c.height) == (30, 40) for c in result.cells)


def test_generic_csv_labels_and_patients(cnmc_dir, tmp_path):
    cells = _copy_some(cnmc_dir / "training_data/fold_0/all", tmp_path / "slides", 3)
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text(
        "path,label,patient\n"
        f"slides/{cells[0].name},blast,P1\n"
        f"slides/{cells[1].name},normal,P2\n"
        "slides/absent.bmp,blast,P3\n"
    )
    result = scan(tmp_path, labels=csv_path)
    labels = {c.name: (c.label, c.patient, c.label_source) for c in result.cells}
    assert labels[cells[0].name] == ("blast", "P1", "csv")
    assert labels[cells[1].name] == ("normal", "P2", "csv")
    # not in the CSV and in a lone folder: unlabeled, patient from the C-NMC name
    assert labels[cells[2].name][0] in (None, "all")
    assert result.missing == ["slides/absent.bmp"]


def test_unknown_cnmc_labels_are_problems(cnmc_dir, tmp_path):
    src = cnmc_dir / "validation_data/C-NMC_test_prelim_phase_data"
    dst = tmp_path / "val"
    dst.mkdir()
    for p in src.glob("*.bmp"):
        shutil.copy(p, dst / p.name)
    (tmp_path / "labels.csv").write_text(
        "Patient_ID,new_names,labels\nUID_H49_5_2_hem.bmp,1002.bmp,7\nUID_57_6_4_all.bmp,1005.bmp,1\n")
    result = scan(tmp_path, labels=tmp_path / "labels.csv")
    # the bad row is reported; its image still loads, unlabeled, for the expert to label
    assert {c.name: c.label for c in result.cells} == {"1002.bmp": None, "1005.bmp": "all"}
    assert [p.path for p in result.problems] == ["val/1002.bmp"]
    assert "unknown label '7'" in result.problems[0].reason


def test_wrong_csv_gives_a_clear_error(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(LabelFileError, match="expected the C-NMC form"):
        scan(tmp_path, labels=bad)


def test_slide_folder_and_regex_patient_ids(tmp_path):
    img = np.zeros((8, 8, 3), np.uint8)
    for slide in ("slideA", "slideB"):
        for cls in ("blast", "normal"):
            (tmp_path / slide / cls).mkdir(parents=True)
            img[0, 0] = (len(slide), len(cls), ord(slide[-1]))  # distinct content, not duplicates
            cv2.imwrite(str(tmp_path / slide / cls / f"pt-{slide[-1]}7_{cls}.png"), img)
    result = scan(tmp_path)
    assert {(c.patient, c.label) for c in result.cells} == {
        ("slideA", "blast"), ("slideA", "normal"), ("slideB", "blast"), ("slideB", "normal")}
    by_regex = scan(tmp_path, patient_regex=r"pt-(?P<patient>\w\d+)_")
    assert {c.patient for c in by_regex.cells} == {"A7", "B7"}


def test_unreadable_root_is_a_clear_error(tmp_path):
    with pytest.raises(NotADirectoryError):
        scan(tmp_path / "nope")


def test_read_rgb_reason_for_text_file(tmp_path):
    p = tmp_path / "x.png"
    p.write_text("hello " * 10)
    with pytest.raises(ImageReadError, match="not an image"):
        read_rgb(p)
