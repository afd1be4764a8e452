"""Hardening round 2 (issue 22), the label store: no label may be lost, hidden or misreported.

Concurrent first labels all land; a read-only folder's labels still in its WAL are read; a
byte-identical copy never takes a labelled cell's place; a full disk is said as such; CSV
neutralising is reversible; `none` means one thing; unsupported images are listed; a database of
another schema version is one clear line.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def make_images(root: Path, n: int = 4, classes=("all", "hem")) -> list[str]:
    """`n` distinct small PNGs per class folder; returns their relative paths."""
    rels = []
    for k, cls in enumerate(classes):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = Image.new("RGB", (16, 16), (200 - 60 * k, 40, 40 + 60 * k))
            img.putpixel((i % 16, i // 16), (i, 255 - i, 7))
            name = f"{cls}/UID_{i + 1}_1_1_{cls}.png"
            img.save(root / name)
            rels.append(name)
    return rels


def user_env(home: Path) -> dict[str, str]:
    return {**os.environ, "HOME": str(home), "XDG_DATA_HOME": str(home / "data"),
            "XDG_CACHE_HOME": str(home / "cache"), "XDG_STATE_HOME": str(home / "state"),
            "XDG_CONFIG_HOME": str(home / "config"), "PYTHONPATH": str(REPO)}


def cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", "-q", *args], capture_output=True, text=True,
                          cwd=REPO, env=user_env(home), timeout=300)


def stored_labels(db: Path) -> dict[str, str]:
    conn = sqlite3.connect(db)
    try:
        return dict(conn.execute("SELECT path, label FROM labels"))
    finally:
        conn.close()


# ------------------------------------------------------------- 2. concurrent first labels

# Each child imports the engine once, then runs one command per line it reads (JSON arguments) and
# answers with its exit code: the parent hands every child its command at the same moment, so
# the commands open the fresh folder and write their first label together.
_CHILD = textwrap.dedent("""
    import contextlib, json, sys
    import engine.cli, engine.cli.labels, engine.labels.project, engine.labels.classes
    engine.cli.build_parser()
    print("ready", flush=True)
    for line in sys.stdin:
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the exit codes
            code = engine.cli.main(json.loads(line))
        print(code, flush=True)
""")


class AtOnce:
    """`n` engine processes that run one command each, all at once (`run`)."""

    def __init__(self, n: int, home: Path):
        self.procs = [subprocess.Popen([sys.executable, "-c", _CHILD], cwd=REPO, env=user_env(home),
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True) for _ in range(n)]
        for p in self.procs:
            assert p.stdout.readline().strip() == "ready", p.communicate()[1]

    def run(self, commands: list[list[str]]) -> list[int]:
        for p, cmd in zip(self.procs, commands):
            p.stdin.write(json.dumps(["-q", *cmd]) + "\n")
        for p in self.procs:
            p.stdin.flush()
        return [int(p.stdout.readline() or -1) for p in self.procs]

    def close(self) -> str:
        return "".join(p.communicate(timeout=60)[1] for p in self.procs)


def test_concurrent_first_labels_are_all_kept(tmp_path):
    """Regression: four `labels set` at once on a folder without a database stored 3 labels in
    about half the runs, every process exiting 0 (the pending index was removed under a writer)."""
    rounds, writers, lost = 20, 4, []
    group = AtOnce(writers, tmp_path / "home")
    try:
        for rnd in range(rounds):
            root = tmp_path / f"r{rnd}"
            cells = make_images(root, n=writers // 2)
            codes = group.run([["labels", "set", str(root), cell, "unsure", "--annotator", f"writer {i}"]
                               for i, cell in enumerate(cells)])
            if codes != [0] * writers:
                pytest.fail(f"round {rnd}: exit codes {codes}: {group.close()}")
            got = stored_labels(root / ".allblast" / "project.sqlite")
            if sorted(got) != sorted(cells):
                lost.append((rnd, sorted(set(cells) - set(got))))
    finally:
        errors = group.close()
    assert "Traceback" not in errors, errors
    assert not list((tmp_path / "home" / "cache").rglob("project.sqlite")), "the pending index is removed"
    assert lost == [], f"labels lost in {len(lost)} of {rounds} rounds: {lost}"


def test_a_window_sees_and_joins_labels_a_command_moved_beside_the_images(tmp_path, monkeypatch):
    """A window holds the pending index; a CLI command labels first: the window then reads that label
    (it was hidden behind the stale pending file) and writes its own beside it."""
    from engine.labels.project import open_dataset

    home = tmp_path / "home"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    root = tmp_path / "data"
    cells = make_images(root, n=1)
    with open_dataset(root) as window:
        assert window.store.pending
        for label in ("unsure", "hem"):  # the second goes only to the database beside the images
            r = cli(home, "labels", "set", str(root), cells[0], label, "--annotator", "Dr. CLI")
            assert r.returncode == 0, r.stderr
        assert window.store.states()[cells[0]].current == "hem"  # read where the labels are now
        window.store.set_label(cells[1], "all", annotator="Dr. Window")
        assert not window.store.pending
    assert stored_labels(root / ".allblast" / "project.sqlite") == {cells[0]: "hem", cells[1]: "all"}
    assert not list((home / "cache").rglob("project.sqlite"))


def test_labels_left_in_a_pending_index_join_a_database_made_elsewhere(tmp_path, monkeypatch):
    """A database appeared beside the images without the pending index (another pending file, a
    plain open): the labels the pending index holds are replayed into it, never dropped."""
    from engine.labels.location import pending_db_path
    from engine.labels.project import open_dataset
    from engine.labels.store import LabelStore

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "data"
    cells = make_images(root, n=1)
    (root / ".allblast").write_text("")  # a file where the folder would go: the move fails
    with open_dataset(root) as project:
        project.store.set_label(cells[0], "hem", annotator="Dr. P")
        assert project.store.pending  # the label waits in the pending index
    (root / ".allblast").unlink()
    waiting = pending_db_path(root.resolve())
    aside = waiting.with_name("aside.sqlite")
    waiting.rename(aside)
    with LabelStore.open(root) as other:  # made beside the images without it
        from engine.data.scan import scan

        other.sync_cells(scan(root).cells)
        other.set_label(cells[1], "all", annotator="Dr. O")
    aside.rename(waiting)
    with open_dataset(root) as project:
        assert not project.store.pending
        states = project.store.states()
        assert (states[cells[0]].current, states[cells[0]].annotator) == ("hem", "Dr. P")
        assert states[cells[1]].current == "all"
    assert not waiting.exists()


# ------------------------------------------------------ 3. read-only folder, labels in the WAL

def test_a_read_only_folder_shows_labels_still_in_its_wal(pbc_dir):
    """Regression: `project.sqlite` + `project.sqlite-wal` without `-shm` in a folder the user cannot
    write was read as immutable, which ignores the WAL: its latest labels were missing from export,
    the window and a --db copy."""
    from unprivileged import engine_as_other_user, make_read_only, world_readable_tmp

    from engine.data.scan import scan
    from engine.labels.store import LabelStore

    with world_readable_tmp("wal") as base:
        work, root, home = base / "work", base / "data", base / "home"
        for cls in ("basophil", "neutrophil"):
            (work / cls).mkdir(parents=True)
            for src in sorted((pbc_dir / cls).iterdir())[:2]:
                shutil.copy(src, work / cls / src.name)
        cell = next(c.path for c in scan(work).cells if c.label == "basophil")
        store = LabelStore.open(work)
        try:
            store.sync_cells(scan(work).cells)
            store.set_label(cell, "eosinophil", annotator="Dr. Old")
            store.query("PRAGMA wal_checkpoint(TRUNCATE)")  # that one is in the database file itself
            store.set_label(cell, "neutrophil", annotator="Dr. WAL")  # the latest only in the WAL
            # What a copy (or a killed writer) leaves: the database and its WAL, no -shm.
            shutil.copytree(work, root, ignore=shutil.ignore_patterns("*-shm"))
        finally:
            store.close()
        db = root / ".allblast" / "project.sqlite"
        assert Path(f"{db}-wal").stat().st_size > 0 and not Path(f"{db}-shm").exists()
        make_read_only(root)
        r = engine_as_other_user(home, "labels", "export", str(root), "--out", str(home / "l.csv"))
        assert r.returncode == 0, r.stderr
        assert f"{cell},,basophil,neutrophil,Dr. WAL" in (home / "l.csv").read_text()
        copy = home / "copy.sqlite"
        r = engine_as_other_user(home, "labels", "export", str(root), "--db", str(copy), "--out", str(home / "c.csv"))
        assert r.returncode == 0, r.stderr
        assert f"{cell},,basophil,neutrophil,Dr. WAL" in (home / "c.csv").read_text()
        assert not Path(f"{db}-shm").exists(), "nothing is written into the read-only folder"


# ----------------------------------------------------- 4. a copy never hides a labelled cell

def test_a_byte_identical_copy_never_takes_a_labelled_cells_place(tmp_path, cnmc_dir, monkeypatch):
    """Regression: `Copy of X.bmp` sorts before `X.bmp`; the labelled X became the skipped duplicate,
    its label vanished from export and --expert-labels, and `labels set X` said "not a cell"."""
    from engine.data.scan import scan
    from engine.labels.project import with_expert_labels

    home, root = tmp_path / "home", tmp_path / "data"
    for cls in ("all", "hem"):
        (root / cls).mkdir(parents=True)
        for src in sorted((cnmc_dir / "training_data" / "fold_0" / cls).glob("*.bmp"))[:2]:
            shutil.copy(src, root / cls / src.name)
    original = sorted((root / "all").glob("*.bmp"))[0]
    rel = f"all/{original.name}"
    r = cli(home, "labels", "set", str(root), rel, "hem", "--annotator", "Dr. A")
    assert r.returncode == 0, r.stderr
    shutil.copy(original, root / "all" / f"Copy of {original.name}")  # sorts first

    r = cli(home, "labels", "export", str(root), "--out", str(tmp_path / "l.csv"))
    assert r.returncode == 0, r.stderr
    rows = (tmp_path / "l.csv").read_text().splitlines()
    assert any(line.startswith(f"{rel},") and ",hem,Dr. A," in line for line in rows), rows
    assert not any(line.startswith("Copy of") for line in rows)
    r = cli(home, "labels", "set", str(root), rel, "unsure", "--annotator", "Dr. A")
    assert r.returncode == 0 and "not a cell" not in r.stderr, r.stderr
    # train / predict --expert-labels: their own scan (no store) is corrected to keep the cell
    result, changed = with_expert_labels(scan(root))
    kept = {c.path: c.label for c in result.cells}
    assert kept.get(rel) == "unsure" and f"all/Copy of {original.name}" not in kept
    assert result.duplicates == {f"all/Copy of {original.name}": rel}
    # ... and the copy is what the data set lists as the duplicate
    from engine.labels.project import open_dataset

    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    with open_dataset(root) as project:
        assert [(p.path, p.reason) for p in project.scan.problems] == [
            (f"all/Copy of {original.name}", f"duplicate content of {rel} (skipped)")]


# ------------------------------------------------------------------ 13. a full disk on export

def test_a_full_disk_during_export_is_said_as_such(tmp_path, monkeypatch, capsys):
    import errno

    from engine.cli import main
    from engine.labels import csv_io
    from engine.labels.errors import translate_error

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "data"
    make_images(root, n=1)

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(csv_io, "atomic_write_text", full)
    out = tmp_path / "l.csv"
    assert main(["-q", "labels", "export", str(root), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "internal error" not in err and len(err.splitlines()) == 1
    assert err.endswith(f"the disk holding {out} is full (No space left on device); free some space and try again")
    # one wording: the store's own
    store_text = str(translate_error(sqlite3.OperationalError("database or disk is full"), out, 5))
    assert store_text.startswith(f"the disk holding {out} is full (")
    assert store_text.endswith("); free some space and try again")


# ------------------------------------------------------------ 17. CSV round trip is exact

@pytest.mark.parametrize("value", ["'=x.bmp", "=x.bmp", "''", "'", "'abc", "\tx.bmp", " x.bmp", "-1", "plain",
                                   "'\tx", "@a", "''=b"])
def test_neutralising_is_reversible(value):
    from engine.utils.csvsafe import neutralise, unneutralise

    written = neutralise(value)
    assert not written.startswith(("=", "+", "-", "@", "\t", "\r"))
    assert unneutralise(written.strip()) == value


def test_names_starting_with_a_quote_or_a_tab_survive_export_and_import(tmp_path, monkeypatch, capsys):
    """Regression: `'=x.bmp` exported unchanged and came back as `=x.bmp` (missing); a name
    starting with a tab came back stripped (missing)."""
    from engine.cli import main
    from engine.labels.project import open_dataset

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "data"
    make_images(root, n=1)
    names = ["'=x.png", "\tt.png", "=f.png", " s.png"]  # at the top: the path column starts with them
    for k, name in enumerate(names):
        Image.new("RGB", (16, 16), (10, 20 + k, 30)).save(root / name)
    for name in names:
        assert main(["-q", "labels", "set", str(root), name, "hem", "--annotator", "Dr. Q"]) == 0
    out = tmp_path / "l.csv"
    assert main(["-q", "labels", "export", str(root), "--out", str(out)]) == 0
    for name in names:  # cleared again, then the import puts them back
        assert main(["-q", "labels", "set", str(root), name, "none"]) == 0
    capsys.readouterr()
    assert main(["-q", "labels", "import", str(root), str(out)]) == 0
    said = capsys.readouterr().out
    assert "missing images 0" in said, said
    with open_dataset(root) as project:
        states = project.store.states()
        assert [states[n].current for n in names] == ["hem"] * 4


# ---------------------------------------------------------------- 18. `none` means one thing

def test_none_means_unlabeled_in_set_import_and_folder_names(tmp_path, monkeypatch, capsys):
    """Regression: with a class folder named `none`, `labels set ... none` cleared the label while
    `labels import` gave the class `none`."""
    from engine.cli import main
    from engine.labels.project import open_dataset

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "data"
    make_images(root, n=2, classes=("blast", "none"))
    assert main(["-q", "scan", str(root)]) == 0
    said = capsys.readouterr().out
    assert "unlabeled: 2" in said and "none/ (2)" in said and "Rename such a folder" in said, said
    assert main(["-q", "labels", "set", str(root), "blast/UID_1_1_1_blast.png", "none"]) == 0
    csv_path = tmp_path / "in.csv"
    csv_path.write_text("path,label\nblast/UID_2_1_1_blast.png,None\nnone/UID_1_1_1_none.png,blast\n")
    assert main(["-q", "labels", "import", str(root), str(csv_path)]) == 0
    with open_dataset(root) as project:
        states = project.store.states()
        assert states["blast/UID_1_1_1_blast.png"].current is None
        assert states["blast/UID_2_1_1_blast.png"].current is None  # the same meaning as `labels set`
        assert states["none/UID_1_1_1_none.png"].current == "blast"
        assert states["none/UID_2_1_1_none.png"].original is None  # the folder is not a class
        assert list(project.classes) == ["blast"]
    capsys.readouterr()
    assert main(["-q", "labels", "classes", str(root), "--add", "Unlabeled"]) == 2
    assert "reserved" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ extras

def test_unsupported_image_formats_are_listed_not_skipped(tmp_path):
    from engine.data.scan import scan

    root = tmp_path / "data"
    make_images(root, n=1)
    for name in ("a.gif", "b.webp", "c.JFIF"):
        Image.new("RGB", (16, 16)).save(root / "all" / name, format="GIF" if name.endswith("gif") else
                                        "WEBP" if name.endswith("webp") else "JPEG")
    result = scan(root)
    reasons = {p.path: p.reason for p in result.problems}
    assert set(reasons) == {"all/a.gif", "all/b.webp", "all/c.JFIF"}
    for ext, path in ((".gif", "all/a.gif"), (".webp", "all/b.webp"), (".jfif", "all/c.JFIF")):
        assert reasons[path].startswith(f"unsupported image format {ext}")
        assert "bmp, jpeg, jpg, png, tif, tiff" in reasons[path]


def test_a_database_of_another_schema_version_is_one_clear_line(tmp_path, monkeypatch, capsys):
    from engine.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "data"
    make_images(root, n=1)
    assert main(["-q", "labels", "set", str(root), "all/UID_1_1_1_all.png", "hem"]) == 0
    conn = sqlite3.connect(root / ".allblast" / "project.sqlite")
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    capsys.readouterr()
    assert main(["-q", "labels", "export", str(root), "--out", str(tmp_path / "l.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already exists" not in err and "internal error" not in err
    assert "another (newer or older) version of allblast" in err
