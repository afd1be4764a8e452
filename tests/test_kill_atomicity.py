"""A kill in the middle of a multi-row change leaves all of it or none of it (issue 21).

A batch relabel, a CSV import and a class rename each change many rows in one transaction; the
first label of a folder also moves its database from the user cache beside the images. A real
process (tests/kill_child.py) runs each and is SIGKILLed before each of its steps in turn (every
SQL statement and file operation it makes). After every kill the store, opened as the next
session would, holds either the whole change or nothing of it, and its database is intact.
"""
from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from engine.data.cells import Cell
from engine.labels.classes import class_set, load as load_classes
from engine.labels.location import pending_db_path
from engine.labels.store import LabelStore

CHILD = Path(__file__).resolve().parent / "kill_child.py"
N_CELLS = 12


def kill_points(n: int) -> list[int]:
    """Before every step when there are few; else the first and last few (where a transaction
    begins, commits and what follows it) and evenly spread ones between (the rows' writes)."""
    if n <= 16:
        return list(range(1, n + 1))
    middle = [round(3 + k * (n - 7) / 6) for k in range(1, 6)]
    return sorted({1, 2, 3, *middle, n - 3, n - 2, n - 1, n})


def run_child(op: str, root: Path, db: Path, kill_at: int, cache: Path) -> tuple[int, list[str]]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "ALLBLAST_TEST_CACHE": str(cache)}
    r = subprocess.run([sys.executable, str(CHILD), op, str(root), str(db), str(kill_at)], capture_output=True,
                       text=True, timeout=120, env=env)
    lines = r.stdout.splitlines()
    assert lines and lines[0] == "ready", r.stderr
    return r.returncode, lines[1:]


def make_store(base: Path) -> tuple[Path, Path]:
    """N cells, the first half labelled 'all', the rest 'hem', in a database outside the folder."""
    root, db = base / "data", base / "db" / "labels.sqlite"
    root.mkdir(parents=True)
    with LabelStore.open(root, db_path=db) as s:
        s.sync_cells([Cell(f"c{i:03d}.png", "all" if i < N_CELLS // 2 else "hem", None) for i in range(N_CELLS)])
        class_set(s)  # the class set stored, as opening the folder in the app or the CLI does
    (base / "import.csv").write_text("path,label\n" + "".join(f"c{i:03d}.png,hem\n" for i in range(N_CELLS)))
    return root, db


def snapshot(root: Path, db: Path) -> tuple[dict, int, int, list[str]]:
    with sqlite3.connect(db) as conn:  # opened raw first: nothing of allblast repairs it before
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with LabelStore.open(root, db_path=db) as s:
        labels = {p: st.current for p, st in s.states().items()}
        actions = s.query("SELECT COUNT(*) FROM actions")[0][0]
        history = s.query("SELECT COUNT(*) FROM changes")[0][0]
        classes = list(load_classes(s))
    return labels, actions, history, classes


def steps_of(op: str, tmp_path: Path) -> int:
    base = tmp_path / "count"
    root, db = make_store(base)
    rc, lines = run_child(op, root, db, 0, tmp_path / "cache")
    assert rc == 0 and lines[-1] == "done", lines
    return len(lines) - 1


@pytest.mark.parametrize("op", ["relabel", "import", "rename"])
def test_a_kill_during_a_multi_row_change_keeps_all_or_nothing(op, tmp_path):
    fresh = tmp_path / "fresh"
    root0, db0 = make_store(fresh)
    before = snapshot(root0, db0)
    done = tmp_path / "done"
    shutil.copytree(fresh, done, symlinks=True)
    run_child(op, done / "data", done / "db" / "labels.sqlite", 0, tmp_path / "cache")
    after = snapshot(done / "data", done / "db" / "labels.sqlite")
    changed = [p for p in before[0] if before[0][p] != after[0][p]]
    assert len(changed) >= N_CELLS // 2 and after[1] == before[1] + 1  # many rows, one action

    n = steps_of(op, tmp_path)
    assert n >= 3, "the operation should run several statements"
    outcomes = set()
    for kill_at in kill_points(n):
        case = tmp_path / f"kill{kill_at}"
        shutil.copytree(fresh, case, symlinks=True)
        rc, lines = run_child(op, case / "data", case / "db" / "labels.sqlite", kill_at, tmp_path / "cache")
        assert rc == -signal.SIGKILL and len(lines) == kill_at - 1, (kill_at, lines[-3:])
        got = snapshot(case / "data", case / "db" / "labels.sqlite")
        assert got in (before, after), f"killed before step {kill_at}: a partial change"
        outcomes.add(got == after)
        shutil.rmtree(case)
    assert outcomes == {False} or outcomes == {False, True}  # killed before COMMIT: nothing


def test_a_kill_during_the_first_labels_move_beside_the_images_loses_nothing(tmp_path, monkeypatch):
    """The first label: written in the pending index (user cache), then the database is copied
    beside the images and the pending copy removed. Killed before any of those steps, the next
    open shows the label if its transaction had committed, and no label otherwise; never a second,
    diverging database, and the next label lands in the same store as the first."""
    fresh = tmp_path / "fresh"
    root = fresh / "data"
    root.mkdir(parents=True)
    for i in range(6):
        (root / f"c{i}.png").write_bytes(b"x")  # the store indexes what it is given; content unused
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))  # where pending indexes wait, here and in the child

    def prepare(base: Path) -> Path:
        shutil.rmtree(cache, ignore_errors=True)
        data = base / "data"
        with LabelStore.open(data, defer=True) as s:
            s.sync_cells([Cell(f"c{i}.png", None, None) for i in range(6)])
            assert s.pending
        return data

    base = tmp_path / "count"
    shutil.copytree(fresh, base)
    data = prepare(base)
    rc, lines = run_child("first-label", data, Path("-"), 0, cache)
    assert rc == 0 and lines[-1] == "done"
    n = len(lines) - 1
    assert (data / ".allblast" / "project.sqlite").is_file() and not pending_db_path(data).exists()

    for kill_at in kill_points(n):
        case = tmp_path / f"kill{kill_at}"
        shutil.copytree(fresh, case)
        data = prepare(case)
        rc, lines = run_child("first-label", data, Path("-"), kill_at, cache)
        assert rc == -signal.SIGKILL, lines[-3:]
        committed = any(line.endswith(": COMMIT") for line in lines)
        with LabelStore.open(data, defer=True) as s:
            label = s.state("c0.png").current
            assert label == ("hem" if committed else None), (kill_at, lines[-3:])
        with LabelStore.open(data) as s:  # a command that writes: the next label, the same store
            s.set_label("c1.png", "all", annotator="Dr. L")
        with LabelStore.open(data, defer=True) as s:
            assert {p: st.current for p, st in s.states().items() if st.current} == (
                {"c0.png": "hem", "c1.png": "all"} if committed else {"c1.png": "all"}), kill_at
        assert not pending_db_path(data).exists(), f"killed before step {kill_at}: a second database remains"
        shutil.rmtree(case)
