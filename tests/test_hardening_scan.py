"""Issue 11, the folder scan: no input may be hidden, misplaced or silently lost.

A failed check that depends on the environment is checked again; symlinked folders are followed
(loops and dangling links reported); decompression bombs are refused from their header; duplicate
files keep a row in predict output; file names cannot drive the terminal.
"""
from __future__ import annotations

import builtins
import csv
import shutil
from pathlib import Path

import cv2

from benchmarks.bench_scan_bomb import write_png_bomb  # one maker of the bomb: the benchmark's
from engine.cli import main
from engine.data import imaging
from engine.data.scan import scan


def _copy_cells(pbc_dir: Path, dest: Path, names: list[str], cls: str = "neutrophil") -> list[Path]:
    """Real PBC JPEGs (distinct content) copied under `dest` with the given names."""
    dest.mkdir(parents=True, exist_ok=True)
    sources = sorted((pbc_dir / cls).glob("*.jpg"))
    out = []
    for src, name in zip(sources, names):
        shutil.copy(src, dest / name)
        out.append(dest / name)
    return out


# --------------------------------------------------------------- 1. failures of the environment

def test_environment_failures_are_checked_again_on_the_next_scan(pbc_dir, tmp_path, monkeypatch):
    root = tmp_path / "d"
    _copy_cells(pbc_dir, root, ["a.jpg", "denied.jpg", "oom.jpg"])
    (root / "empty.jpg").write_bytes(b"")
    oom_size = (root / "oom.jpg").stat().st_size

    real_open, real_imdecode = builtins.open, cv2.imdecode

    def deny(path, *args, **kwargs):  # as root, chmod 000 does not stop a read: simulate it
        if str(path).endswith("denied.jpg"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    def out_of_memory(buf, flags):
        if buf.nbytes == oom_size:
            raise MemoryError()
        return real_imdecode(buf, flags)

    with monkeypatch.context() as failing:
        failing.setattr(imaging, "open", deny, raising=False)
        failing.setattr(cv2, "imdecode", out_of_memory)
        first = scan(root)
    assert [c.path for c in first.cells] == ["a.jpg"]
    reasons = {p.path: p.reason for p in first.problems}
    assert set(reasons) == {"denied.jpg", "oom.jpg", "empty.jpg"}
    assert "permission denied" in reasons["denied.jpg"]

    # Permissions fixed, memory freed, files untouched (same size and mtime): the cells come back.
    second = scan(root, known=first.checks)
    assert [c.path for c in second.cells] == ["a.jpg", "denied.jpg", "oom.jpg"]
    assert [p.path for p in second.problems] == ["empty.jpg"]
    # A verdict on the content itself is still reused, not decoded again.
    assert second.checks["empty.jpg"] is first.checks["empty.jpg"]


def test_reopening_the_project_brings_back_a_file_that_was_unreadable(pbc_dir, tmp_path, monkeypatch):
    """The same through the label store's index (load_checks / save_checks), as the app and CLI reopen."""
    from engine.labels.project import open_dataset

    root = tmp_path / "d"
    _copy_cells(pbc_dir, root, ["a.jpg", "denied.jpg"])
    db = tmp_path / "labels.sqlite"
    real_open = builtins.open

    def deny(path, *args, **kwargs):
        if str(path).endswith("denied.jpg"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    with monkeypatch.context() as failing:
        failing.setattr(imaging, "open", deny, raising=False)
        with open_dataset(root, db_path=db) as project:
            assert [c.path for c in project.scan.cells] == ["a.jpg"]
    with open_dataset(root, db_path=db) as project:
        assert [c.path for c in project.scan.cells] == ["a.jpg", "denied.jpg"]
        assert project.scan.problems == []


# --------------------------------------------------------------------- 2. symlinked class folders

def test_symlinked_class_folders_are_followed_and_bad_links_reported(pbc_dir, tmp_path):
    root = tmp_path / "sl"
    _copy_cells(pbc_dir, root / "neutrophil", ["n1.jpg", "n2.jpg"])
    _copy_cells(pbc_dir, tmp_path / "elsewhere" / "lymphocyte", ["l1.jpg", "l2.jpg"], cls="lymphocyte")
    (root / "lymphocyte").symlink_to(tmp_path / "elsewhere" / "lymphocyte", target_is_directory=True)
    (root / "neutrophil" / "back").symlink_to(root, target_is_directory=True)  # a loop
    (root / "again").symlink_to(root / "neutrophil", target_is_directory=True)  # walked already
    (root / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")  # dangling

    result = scan(root)

    assert result.class_counts() == {"lymphocyte": 2, "neutrophil": 2}
    assert result.unlabeled == 0
    # named through the link, relative to the root as the user sees it
    assert sorted(c.path for c in result.cells if c.label == "lymphocyte") == ["lymphocyte/l1.jpg", "lymphocyte/l2.jpg"]
    reasons = {p.path: p.reason for p in result.problems}
    assert reasons["neutrophil/back"].startswith("link loop")
    assert reasons["again"].startswith("link to a folder already scanned as neutrophil")
    assert reasons["gone.jpg"].startswith("broken link")
    assert len(result.problems) == 3


# ----------------------------------------------------------------------- 3. decompression bombs

def test_a_decompression_bomb_is_refused_from_its_header(pbc_dir, tmp_path, monkeypatch):
    root = tmp_path / "d"
    _copy_cells(pbc_dir, root, ["a.jpg", "b.jpg"])
    write_png_bomb(root / "bomb.png", 30000, 30000)
    bomb = (root / "bomb.png").read_bytes()
    assert len(bomb) < 1_000_000  # small on disk, 3.5 GB once decoded to RGB

    decoded = []
    real_imdecode = cv2.imdecode

    def spy(buf, flags):
        if buf.nbytes == len(bomb):
            decoded.append("bomb")
            return None  # never really decode it here, whatever the code under test does
        return real_imdecode(buf, flags)

    monkeypatch.setattr(cv2, "imdecode", spy)
    monkeypatch.delenv("ALLBLAST_MAX_PIXELS", raising=False)
    result = scan(root)
    assert [c.path for c in result.cells] == ["a.jpg", "b.jpg"]
    assert [(p.path, p.reason) for p in result.problems] == [
        ("bomb.png", "image too large: 30000 x 30000 pixels (limit 100000000)")]
    assert decoded == []


def test_the_pixel_limit_is_configurable_and_raising_it_rechecks(tmp_path, monkeypatch):
    root = tmp_path / "d"
    root.mkdir()
    write_png_bomb(root / "big.png", 2000, 1500)
    monkeypatch.setenv("ALLBLAST_MAX_PIXELS", "1000000")
    first = scan(root)
    assert [p.reason for p in first.problems] == ["image too large: 2000 x 1500 pixels (limit 1000000)"]
    # the limit is a setting, not a fact about the file: a higher one lets the unchanged file in
    second = scan(root, known=first.checks, max_pixels=0)
    assert [(c.path, c.width, c.height) for c in second.cells] == [("big.png", 2000, 1500)]


# ------------------------------------------------------------------ 4. duplicates in predictions

def test_duplicates_get_a_row_in_predict_output(cnmc_dir, tmp_path, capsys):
    import torch

    from engine.learn.model import build_model, save_model

    torch.manual_seed(0)
    model, spec, _ = build_model("test_efficientnet", ["all", "hem"], pretrained=False, img_size=64)
    save_model(tmp_path / "model.pt", model, spec)
    src = sorted((cnmc_dir / "training_data/fold_0/all").glob("*.bmp"))[:2]
    data = tmp_path / "d"
    (data / "all").mkdir(parents=True)
    (data / "hem").mkdir()
    shutil.copy(src[0], data / "all" / "a.bmp")
    shutil.copy(src[1], data / "all" / "b.bmp")
    shutil.copy(src[0], data / "hem" / "copy\x1b[31m.bmp")  # same content as all/a.bmp
    out = tmp_path / "p.csv"

    assert main(["-q", "predict", str(tmp_path / "model.pt"), str(data), "--out", str(out), "--device", "cpu"]) == 0

    with open(out, newline="") as fh:
        rows = list(csv.reader(fh))
    header, rows = rows[0], {r[0]: dict(zip(rows[0], r)) for r in rows[1:]}
    assert header == ["path", "patient", "predicted", "p_all", "p_hem", "margin", "entropy", "duplicate_of"]
    assert set(rows) == {"all/a.bmp", "all/b.bmp", "hem/copy\x1b[31m.bmp"}
    dup, orig = rows["hem/copy\x1b[31m.bmp"], rows["all/a.bmp"]
    assert dup["duplicate_of"] == "all/a.bmp" and orig["duplicate_of"] == rows["all/b.bmp"]["duplicate_of"] == ""
    assert [dup[k] for k in header[2:7]] == [orig[k] for k in header[2:7]]
    printed = capsys.readouterr()
    assert "\x1b" not in printed.out + printed.err
    assert "duplicate hem/copy\\x1b[31m.bmp: same content as all/a.bmp" in printed.err + printed.out


# --------------------------------------------------------------------------- 5. terminal output

def test_control_characters_in_names_are_escaped_in_cli_output(pbc_dir, tmp_path, capsys):
    root = tmp_path / "d"
    _copy_cells(pbc_dir, root / "neutrophil", ["ok.jpg"])
    _copy_cells(pbc_dir, root / "mono\x1b[2Jcyte", ["ok.jpg"], cls="monocyte")
    (root / "neutrophil" / "evil\x1b]0;pwned\x07\nname.jpg").write_bytes(b"")
    (root / "neutrophil" / "élan_日本.jpg").write_bytes(b"")

    assert main(["-q", "scan", str(root)]) == 0

    out = capsys.readouterr().out
    assert not any(ch in out for ch in "\x1b\x07\r"), out
    assert "mono\\x1b[2Jcyte: 1" in out
    assert "neutrophil/evil\\x1b]0;pwned\\x07\\nname.jpg: empty file (0 bytes)" in out
    assert "neutrophil/élan_日本.jpg: empty file" in out  # letters of any script stay as they are


def test_printable_escapes_only_control_characters():
    from engine.utils.text import printable

    assert printable("a\nb\tc\x1b[0m\x7f\x9b") == "a\\nb\\tc\\x1b[0m\\x7f\\x9b"
    assert printable("évé 日本 ü") == "évé 日本 ü"
    assert printable("x\u202ey\u2028z") == "x\\u202ey\\u2028z"  # bidi override, line separator
    assert printable("bad\udcffname") == "bad\\udcffname"  # undecodable byte: print() would raise
    assert printable(Path("/a/b")) == "/a/b"
