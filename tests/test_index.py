"""open_dataset: the cached scan index and its label store, on the real data and on tmp copies."""
from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

import engine.data.scan
from engine.labels.project import Project, load_checks, open_dataset
from engine.data.cells import UNSURE


def test_open_cnmc_samples(cnmc_dir, tmp_path):
    db = tmp_path / "cnmc.sqlite"
    with open_dataset(cnmc_dir, db_path=db) as project:
        assert isinstance(project, Project)
        assert project.root == cnmc_dir.resolve() and project.store.location == "custom"
        assert len(project.scan.cells) == 17 and project.scan.class_counts() == {"all": 9, "hem": 8}
        assert project.first_open and len(project.added) == 17
        assert project.removed == [] and project.changed == []
        states = project.store.states()
        assert len(states) == 17
        assert states["training_data/fold_0/hem/UID_h3_6_1_hem.bmp"].original == "hem"
        assert states["validation_data/C-NMC_test_prelim_phase_data/1005.bmp"].current == "all"
        assert len(project.scan.missing) == 1865
        assert project.store.query("SELECT patient FROM cells WHERE path LIKE '%UID_h3_%'")[0][0] == "H3"
        assert len(load_checks(project.store)) == 17
        project.store.set_label("training_data/fold_0/all/UID_1_1_1_all.bmp", UNSURE, annotator="a")
    with open_dataset(cnmc_dir, db_path=db) as again:
        assert not again.first_open and (again.added, again.removed, again.changed) == ([], [], [])
        assert again.store.state("training_data/fold_0/all/UID_1_1_1_all.bmp").current == UNSURE
        assert again.store.can_undo()
    assert not (cnmc_dir / ".allblast").exists()  # the shared data folder is never written


def test_reopen_pbc_decodes_nothing(pbc_dir, tmp_path, monkeypatch):
    db = tmp_path / "pbc.sqlite"
    calls = []
    with open_dataset(pbc_dir, db_path=db, progress=lambda done, total: calls.append((done, total))) as project:
        assert len(project.scan.cells) == 2000 and len(project.scan.classes) == 8
        assert project.scan.class_counts()["basophil"] == 250
        assert calls[-1] == (2000, 2000)
        project.store.set_labels([c.path for c in project.scan.cells[:10]], "ig", annotator="a")

    def no_decoding(*args, **kwargs):  # pragma: no cover - failing path
        raise AssertionError("an unchanged file was decoded again")

    monkeypatch.setattr(engine.data.scan, "_check_file", no_decoding)
    with open_dataset(pbc_dir, db_path=db) as again:
        assert len(again.scan.cells) == 2000 and again.scan.problems == []
        assert (again.added, again.removed, again.changed) == ([], [], [])
        assert sum(st.current == "ig" for st in again.store.states().values()) == 250 + 10 - sum(
            1 for c in project.scan.cells[:10] if c.label == "ig")


def _copy_some(src, dst, per_class=3):
    for cls in ("basophil", "eosinophil", "monocyte"):
        (dst / cls).mkdir(parents=True)
        for f in sorted((src / cls).iterdir())[:per_class]:
            shutil.copy2(f, dst / cls / f.name)


def test_reopen_notices_new_removed_and_changed_files(pbc_dir, tmp_path):
    root = tmp_path / "copy"
    _copy_some(pbc_dir, root)
    db = tmp_path / "copy.sqlite"
    with open_dataset(root, db_path=db) as project:
        assert len(project.scan.cells) == 9 and project.first_open
        paths = [c.path for c in project.scan.cells]
        gone, edited = paths[0], paths[4]
        project.store.set_label(gone, UNSURE, annotator="a")

    (root / gone).unlink()
    img = cv2.imread(str(root / edited))
    cv2.imwrite(str(root / edited), np.ascontiguousarray(img[::-1]))  # different content, new mtime
    new_img = np.full((40, 50, 3), 120, np.uint8)
    cv2.imwrite(str(root / "monocyte" / "MO_new.png"), new_img)
    (root / "monocyte" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 40)

    with open_dataset(root, db_path=db) as again:
        assert sorted(again.added) == ["monocyte/MO_new.png", "monocyte/broken.png"]
        assert again.removed == [gone] and again.changed == [edited]
        assert [p.path for p in again.scan.problems] == ["monocyte/broken.png"]
        states = again.store.states()
        assert gone not in states and again.store.absent() == [gone]
        assert again.store.state(gone).current == UNSURE  # the label is kept for when it returns
        assert states["monocyte/MO_new.png"].original == "monocyte"
        checks = load_checks(again.store)
        assert gone not in checks and checks["monocyte/MO_new.png"].width == 50
        assert checks["monocyte/broken.png"].problem


def test_labels_file_is_remembered(pbc_dir, tmp_path):
    root = tmp_path / "copy"
    _copy_some(pbc_dir, root, per_class=1)
    csv_path = tmp_path / "labels.csv"
    first = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))[0]
    csv_path.write_text(f"path,label\n{first},platelet\n")
    db = tmp_path / "x.sqlite"
    with open_dataset(root, csv_path, db_path=db) as project:
        assert project.labels_file == csv_path.resolve()
        assert project.store.state(first).original == "platelet"
    with open_dataset(root, db_path=db) as again:
        assert again.labels_file == csv_path.resolve()
        assert again.store.state(first).original == "platelet"


def test_beside_store_is_not_scanned(pbc_dir, tmp_path):
    root = tmp_path / "copy"
    _copy_some(pbc_dir, root, per_class=1)
    with open_dataset(root) as project:
        # the store moves beside the images with the first label (nothing is written there before)
        project.store.set_label(project.scan.cells[0].path, "unsure", annotator="t")
        assert project.store.location == "beside"
        assert project.store.db_path.parent == root.resolve() / ".allblast"
        (project.store.db_path.parent / "stray.png").write_bytes(b"x" * 100)
    with open_dataset(root) as again:
        assert len(again.scan.cells) == 3 and not any(".allblast" in c.path for c in again.scan.cells)
        assert again.added == []


def test_missing_folder_raises(tmp_path):
    from engine.labels.store import StoreError

    with pytest.raises(StoreError, match="not a folder"):
        open_dataset(tmp_path / "nope", db_path=tmp_path / "x.sqlite")
