"""Hardening (issue 11): a read-only folder's labels are shown, never hidden; writers never
destroy the database or an image; model files are checked; killed runs leave nothing behind."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.data.scan import scan
from engine.labels.location import READ_ONLY, locate_db
from engine.labels.outputs import OutputRefused, check_output
from engine.labels.store import LabelStore
from engine.learn.model import build_model, load_model, save_model
from engine.learn.run_folder import RunDir

REPO = Path(__file__).resolve().parents[1]


def _can_drop_privileges() -> bool:
    return os.geteuid() != 0 or hasattr(os, "setuid")


@pytest.fixture
def labelled_folder(pbc_dir):
    """A folder (traversable by any user) with 3 cells and an expert correction in its own database."""
    base = Path(os.environ.get("TMPDIR", "/tmp")) / f"allblast-ro-{os.getpid()}-{id(object())}"
    root = base / "data"
    for cls in ("basophil", "neutrophil"):
        (root / cls).mkdir(parents=True)
    sources = sorted((pbc_dir / "basophil").iterdir())[:2] + sorted((pbc_dir / "neutrophil").iterdir())[:1]
    shutil.copy(sources[0], root / "basophil" / "a.jpg")
    shutil.copy(sources[1], root / "basophil" / "b.jpg")
    shutil.copy(sources[2], root / "neutrophil" / "c.jpg")
    store = LabelStore.open(root)
    try:
        store.sync_cells(scan(root).cells)
        store.set_label("basophil/a.jpg", "neutrophil", annotator="Dr. A")  # the expert's work
    finally:
        store.close()
    home = base / "home"
    home.mkdir()
    os.chmod(base, 0o755)
    os.chmod(home, 0o777)
    yield root, home
    for path in [root, *root.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    shutil.rmtree(base)


# One home for "a user who cannot write the folder": tests/unprivileged.py.
from unprivileged import engine_as_other_user as _engine_as_other_user  # noqa: E402
from unprivileged import make_read_only as _make_read_only  # noqa: E402


@pytest.mark.skipif(not _can_drop_privileges(), reason="needs a user that cannot write the folder")
def test_a_read_only_folder_shows_its_labels_and_a_copy_continues_them(labelled_folder):
    root, home = labelled_folder
    db = root / ".allblast" / "project.sqlite"
    _make_read_only(root)
    before = db.read_bytes()
    # Export: the expert's correction is there (before the fix: an empty store in the user data folder).
    out = home / "labels.csv"
    r = _engine_as_other_user(home, "labels", "export", str(root), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "basophil/a.jpg,,basophil,neutrophil,Dr. A" in out.read_text()
    assert "read-only" in r.stderr
    # Labelling there is refused in one line that says what to do; nothing is written anywhere.
    r = _engine_as_other_user(home, "labels", "set", str(root), "basophil/b.jpg", "neutrophil")
    assert r.returncode == 2 and "--db" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 2
    assert not (home / "data").exists() or not any((home / "data").rglob("*.sqlite"))
    # A copy (--db) starts with every label and takes new ones; the folder's database is untouched.
    copy = home / "copy.sqlite"
    r = _engine_as_other_user(home, "labels", "set", str(root), "basophil/b.jpg", "neutrophil", "--db", str(copy))
    assert r.returncode == 0, r.stderr
    r = _engine_as_other_user(home, "labels", "export", str(root), "--db", str(copy), "--out", str(home / "2.csv"))
    text = (home / "2.csv").read_text()
    assert "basophil/a.jpg,,basophil,neutrophil,Dr. A" in text and "basophil/b.jpg,,basophil,neutrophil," in text
    assert db.read_bytes() == before


def test_locating_the_store_of_a_read_only_folder_keeps_the_folder_own(labelled_folder, monkeypatch):
    """Engine level (any user): an unwritable folder with a database opens that database read-only."""
    root, home = labelled_folder
    monkeypatch.setattr("engine.labels.location.folder_writable", lambda folder: False)
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    path, where = locate_db(root)
    assert (path, where) == (root / ".allblast" / "project.sqlite", READ_ONLY)
    store = LabelStore.open(root)
    try:
        assert store.read_only and store.state("basophil/a.jpg").current == "neutrophil"
        with pytest.raises(Exception, match="cannot be saved"):
            store.set_label("basophil/b.jpg", "neutrophil", annotator="x")
    finally:
        store.close()


@pytest.mark.parametrize("target", ["db", "inside", "image"])
def test_no_writer_replaces_the_database_or_an_image(labelled_folder, target, tmp_path):
    root, _ = labelled_folder
    path = {"db": root / ".allblast" / "project.sqlite", "inside": root / ".allblast" / "notes.csv",
            "image": root / "basophil" / "a.jpg"}[target]
    before = path.read_bytes() if path.exists() else None
    with pytest.raises(OutputRefused):
        check_output(path, force=True)
    r = subprocess.run([sys.executable, "-m", "engine.cli", "-q", "labels", "export", str(root), "--out", str(path),
                        "--force"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 2 and "refusing" in r.stderr and "Traceback" not in r.stderr
    assert (path.read_bytes() if path.exists() else None) == before


def test_predict_refuses_to_write_over_an_image_and_needs_force_for_a_file(labelled_folder, tmp_path):
    root, _ = labelled_folder
    model, spec, _ = build_model("test_efficientnet", ["basophil", "neutrophil"], pretrained=False, img_size=32)
    save_model(tmp_path / "model.pt", model, spec)
    image = root / "basophil" / "a.jpg"
    before = image.read_bytes()
    base = [sys.executable, "-m", "engine.cli", "-q", "predict", str(tmp_path / "model.pt"), str(root), "--device", "cpu"]
    r = subprocess.run([*base, "--out", str(image), "--force"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 2 and "image" in r.stderr and image.read_bytes() == before
    existing = tmp_path / "old.csv"
    existing.write_text("keep me\n")
    r = subprocess.run([*base, "--out", str(existing)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 2 and "--force" in r.stderr and existing.read_text() == "keep me\n"
    r = subprocess.run([*base, "--out", str(existing), "--force"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    assert existing.read_text().startswith("path,patient,predicted")


def test_a_model_file_with_an_absurd_spec_is_refused_before_any_allocation(tmp_path):
    model, spec, _ = build_model("test_efficientnet", ["a", "b"], pretrained=False, img_size=32)
    save_model(tmp_path / "model.pt", model, spec)
    ckpt = torch.load(tmp_path / "model.pt", weights_only=True)
    for bad in ({"img_size": 20_000}, {"classes": ["a"]}, {"dropout": 3.0}, {"img_size": "big"}):
        broken = {**ckpt, "spec": {**ckpt["spec"], **bad}}
        torch.save(broken, tmp_path / "bad.pt")
        with pytest.raises(ValueError, match="cannot be used"):
            load_model(tmp_path / "bad.pt")
    torch.save({**ckpt, "spec": {"backbone": "x"}}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="incomplete or malformed"):
        load_model(tmp_path / "bad.pt")


def test_a_killed_runs_temporary_checkpoint_is_removed_when_training_resumes(pbc_dir, tmp_path):
    from engine.learn.fit import TrainConfig, fit
    from engine.utils.jobs import drain

    root = tmp_path / "data"
    for cls in ("basophil", "neutrophil"):
        (root / cls).mkdir(parents=True)
        for f in sorted((pbc_dir / cls).iterdir())[:6]:
            (root / cls / f.name).symlink_to(f)
    run = tmp_path / "run"
    config = TrainConfig(backbone="test_efficientnet", pretrained=False, img_size=32, epochs=1, batch_size=4,
                         ask_every=0, device="cpu", workers=0, split="image", seed=0)
    drain(fit(scan(root), run, config))
    orphan = run / ".model.pt.k1ll3d.tmp"  # what os.replace never got to: the process was killed
    orphan.write_bytes(b"\0" * 1024)
    drain(fit(scan(root), run, TrainConfig.from_dict({**config.to_dict(), "epochs": 2}), resume=True))
    assert not orphan.exists()
    assert RunDir(run).read_model_card()["epochs_run"] == 2
