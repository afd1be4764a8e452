"""Opening folders safely (issue 10), engine side: nothing is written into a data folder until the
user labels something; a cancelled first open leaves nothing behind; the CLI's read-only commands
create nothing; the writability probe creates nothing."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from unprivileged import make_read_only, run_as_other_user, world_readable_tmp


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def user_dirs(tmp_path, monkeypatch):
    """The user data and cache folders under tmp_path (the pending index lives in the cache)."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return tmp_path


def make_images(root: Path, per_class: int = 2) -> Path:
    for cls, colour in (("all", (200, 40, 40)), ("hem", (40, 40, 200))):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = Image.new("RGB", (16, 16), colour)
            img.putpixel((i % 16, i // 16), (i, 255 - i, 7))  # every file distinct (no duplicates)
            img.save(root / cls / f"UID_{i + 1}_1_1_{cls}.png")
    return root


def cache_files(tmp_path: Path) -> list[Path]:
    base = tmp_path / "xdg-cache"
    return [p for p in base.rglob("*") if p.is_file()] if base.exists() else []


def test_locating_the_store_creates_nothing(tmp_path):
    from engine.labels.location import locate_db

    root = tmp_path / "data"
    root.mkdir()
    path, where = locate_db(root)
    assert (path, where) == (root / ".allblast" / "project.sqlite", "beside")
    assert list(root.iterdir()) == [], "probing must not leave a folder or a file behind"


def test_the_writability_probe_creates_nothing(tmp_path):
    from engine.utils.files import folder_writable as probe

    root = tmp_path / "data"
    root.mkdir()
    assert probe(root / ".allblast" / "deeper")
    assert list(root.iterdir()) == []
    # A folder its user cannot write (as root the probe runs as nobody: root ignores permissions).
    with world_readable_tmp("probe") as base:
        ro = base / "data"
        ro.mkdir()
        make_read_only(ro)
        code = """
            from pathlib import Path
            from engine.utils.files import folder_writable
            print(folder_writable(Path(sys.argv[1]) / ".allblast"), folder_writable(Path(sys.argv[2])))
        """
        r = run_as_other_user(code, base / "home", str(ro), str(base / "home" / "new" / "deeper"))
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["False", "True"]  # refused in the read-only folder, allowed in its home
        assert list(ro.iterdir()) == [] and not (base / "home" / "new").exists()


@pytest.mark.parametrize("kind", ["empty", "images"])
def test_opening_writes_nothing_into_the_folder(tmp_path, kind):
    from engine.labels.project import open_dataset

    root = tmp_path / "data"
    root.mkdir()
    if kind == "images":
        make_images(root)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    with open_dataset(root) as project:
        assert project.store.pending
        assert len(project.scan.cells) == (4 if kind == "images" else 0)
    with open_dataset(root) as again:  # reopening (browsing) writes nothing either
        assert again.added == []
    assert not (root / ".allblast").exists()
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


def test_the_first_label_puts_labels_index_and_history_beside_the_images(tmp_path):
    from engine.labels.project import open_dataset

    root = make_images(tmp_path / "data")
    beside = root / ".allblast" / "project.sqlite"
    with open_dataset(root) as project:
        cell = "all/UID_1_1_1_all.png"
        assert not beside.exists()
        project.store.set_label(cell, "hem", annotator="Dr. A")
        assert beside.is_file() and not project.store.pending
        assert project.store.db_path == beside.resolve()
        project.store.set_label(cell, "unsure", annotator="Dr. A")  # goes on in the same file
    conn = sqlite3.connect(beside)
    try:
        assert conn.execute("SELECT label, annotator FROM labels").fetchall() == [("unsure", "Dr. A")]
        assert conn.execute("SELECT COUNT(*) FROM files").fetchone()[0] == 4  # the index came along
        assert [r[0] for r in conn.execute("SELECT new FROM changes ORDER BY id")] == ["hem", "unsure"]
    finally:
        conn.close()
    assert not [p for p in cache_files(tmp_path) if p.name.startswith("project.sqlite")], \
        "the pending index is removed once it moved"
    with open_dataset(root) as again:
        assert again.store.location == "beside" and not again.store.pending
        assert again.store.state(cell).current == "unsure"
        assert [c.new for c in again.store.history(cell)] == ["hem", "unsure"]
        assert again.added == []  # nothing decoded again: the index was kept


def test_a_csv_import_is_a_first_label_too(tmp_path):
    from engine.labels.csv_io import import_csv
    from engine.labels.project import open_dataset

    root = make_images(tmp_path / "data")
    csv_path = tmp_path / "fix.csv"
    csv_path.write_text("path,label\nall/UID_1_1_1_all.png,hem\n")
    with open_dataset(root) as project:
        import_csv(project.store, csv_path, annotator="Dr. B")
    with open_dataset(root) as again:
        assert again.store.location == "beside" and not again.store.pending
        assert again.store.state("all/UID_1_1_1_all.png").current == "hem"


def test_a_label_left_in_the_pending_index_moves_beside_at_the_next_open(tmp_path):
    """A kill between the label's commit and the move loses nothing: the next open moves it."""
    from engine.labels.location import pending_db_path
    from engine.labels.project import open_dataset

    root = make_images(tmp_path / "data")
    with open_dataset(root) as project:
        pending = project.store.db_path
    assert pending == pending_db_path(root.resolve())
    # What a killed process leaves: the label committed in the pending database, not moved yet.
    conn = sqlite3.connect(pending)
    conn.execute("INSERT INTO actions(kind, state, annotator, created_at, n) VALUES ('keyboard', 'done', 'x', 't', 1)")
    conn.execute("INSERT INTO changes(action_id, path, old, new, annotator, changed_at, source, prev_set) "
                 "VALUES (1, 'all/UID_1_1_1_all.png', 'all', 'hem', 'x', 't', 'keyboard', 0)")
    conn.execute("INSERT INTO labels VALUES ('all/UID_1_1_1_all.png', 'hem', 'x', 't')")
    conn.commit()
    conn.close()
    with open_dataset(root) as again:
        assert again.store.location == "beside" and not again.store.pending
        assert again.store.state("all/UID_1_1_1_all.png").current == "hem"
    assert (root / ".allblast" / "project.sqlite").is_file()


def test_a_cancelled_first_open_leaves_nothing_behind(tmp_path):
    from engine.labels.project import open_dataset
    from engine.utils.jobs import Cancelled

    root = make_images(tmp_path / "data", per_class=5)

    def progress(done, total):
        if done >= 2:
            raise Cancelled()

    with pytest.raises(Cancelled):
        open_dataset(root, progress=progress)
    assert not (root / ".allblast").exists()
    assert cache_files(tmp_path) == [], "no pending index, no half index"


def test_an_existing_store_is_used_as_today(tmp_path):
    from engine.labels.project import open_dataset
    from engine.labels.store import LabelStore

    root = make_images(tmp_path / "data")
    with LabelStore.open(root) as store:  # made beside by an older allblast
        assert store.location == "beside"
    with open_dataset(root) as project:
        assert not project.store.pending and project.store.location == "beside"
        assert project.store.db_path == (root / ".allblast" / "project.sqlite").resolve()
    assert cache_files(tmp_path) == []


def test_a_writing_open_adopts_the_pending_index_instead_of_hiding_it(tmp_path):
    """Regression: a plain LabelStore.open (a command about to write) made an empty store beside
    the images while the folder's index (and any predictions, meta) waited in the cache."""
    from engine.labels.project import open_dataset
    from engine.labels.store import LabelStore

    root = make_images(tmp_path / "data")
    with open_dataset(root) as project:
        assert project.store.pending
        project.store.set_meta("active_model", "/runs/x/model.pt")
    assert not (root / ".allblast").exists()
    with LabelStore.open(root) as store:
        assert not store.pending and store.location == "beside"
        assert len(store.states()) == 4 and store.meta("active_model") == "/runs/x/model.pt"
    assert cache_files(tmp_path) == []


def _cli(*args: str, env_home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_DATA_HOME": str(env_home / "xdg-data"), "XDG_CACHE_HOME": str(env_home / "xdg-cache"),
           "XDG_STATE_HOME": str(env_home / "xdg-state"), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, env=env,
                          cwd=env_home, timeout=300)


def test_the_cli_read_only_commands_create_nothing_in_the_folder(tmp_path):
    root = make_images(tmp_path / "data")
    scan = _cli("-q", "scan", str(root), env_home=tmp_path)
    assert scan.returncode == 0, scan.stderr
    out = tmp_path / "labels.csv"
    export = _cli("-q", "labels", "export", str(root), "--out", str(out), env_home=tmp_path)
    assert export.returncode == 0, export.stderr
    assert out.is_file()
    assert not (root / ".allblast").exists()
    labelled = _cli("-q", "labels", "set", str(root), "all/UID_1_1_1_all.png", "hem", "--annotator", "Dr. C",
                    env_home=tmp_path)
    assert labelled.returncode == 0, labelled.stderr
    assert (root / ".allblast" / "project.sqlite").is_file()


def test_a_failed_move_loses_no_label(tmp_path, monkeypatch):
    """The folder cannot take the database at the first label: the label stays in the pending
    database (the user is told), and moves beside the images at the next open."""
    from engine.labels import store as store_module
    from engine.labels.errors import StoreError
    from engine.labels.project import open_dataset

    root = make_images(tmp_path / "data")

    def refuse(*args, **kwargs):
        raise StoreError("disk full")

    with monkeypatch.context() as m:
        m.setattr(store_module.pend, "snapshot", refuse)
        with open_dataset(root) as project:
            project.store.set_label("hem/UID_1_1_1_hem.png", "all", annotator="Dr. D")
            assert project.store.pending and any("could not be moved" in n for n in project.store.notes)
            assert project.store.state("hem/UID_1_1_1_hem.png").current == "all"
    assert not (root / ".allblast").exists()
    with open_dataset(root) as again:
        assert not again.store.pending and again.store.state("hem/UID_1_1_1_hem.png").current == "all"
    assert (root / ".allblast" / "project.sqlite").is_file()
