"""The SQLite label store: labels, undo/redo, history, CSV in/out, location, locking, durability."""
from __future__ import annotations

import hashlib
import json
import os
import re
import random
import signal
import sqlite3
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

import pytest

from engine.labels.errors import translate_error
from engine.labels.schema import SCHEMA_VERSION
from engine.utils.files import folder_writable
from engine.utils.places import user_data_dir
from engine.data.cells import Cell
from engine.data.labelfiles import read_label_file
from engine.data.cells import UNSURE
from engine.labels.csv_io import export_csv, import_csv
from engine.utils.logs import AllblastWarning
from engine.labels.store import Change, LabelStore, StoreError, default_annotator
from unprivileged import make_read_only, run_as_other_user, world_readable_tmp

HERE = Path(__file__).resolve().parent
CNMC_CSV = "validation_data/C-NMC_test_prelim_phase_data_labels.csv"


def make_cells(n=6):
    labels = ["all", "hem", None]
    return [Cell(f"c{i}.png", labels[i % 3], f"P{i % 2}") for i in range(n)]


@pytest.fixture
def store(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    s = LabelStore.open(root, db_path=tmp_path / "db" / "labels.sqlite")
    s.sync_cells(make_cells())
    yield s
    s.close()


def current(store):
    return {p: st.current for p, st in store.states().items()}


# ------------------------------------------------------------------ location
def test_beside_location_in_a_writable_folder(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    with LabelStore.open(root) as s:
        assert s.location == "beside"
        assert s.db_path == root.resolve() / ".allblast" / "project.sqlite"
        assert s.db_path.is_file()
        assert s.query("PRAGMA journal_mode")[0][0] == "wal"
        assert s.query("PRAGMA user_version")[0][0] == SCHEMA_VERSION
        assert s.query("SELECT value FROM meta WHERE key = 'root'")[0][0] == str(root.resolve())


def test_read_only_folder_falls_back_to_user_data():
    """A folder its user cannot write, holding no database: the store goes to the user data
    folder (found again on the next open) and nothing is written beside the images. Run by a user
    who really cannot write it (as root the child drops to nobody: root ignores permissions)."""
    assert user_data_dir().name.lower() == "allblast"  # platformdirs' per-user data folder
    with world_readable_tmp() as base:
        root, home = base / "ro-data", base / "home"
        root.mkdir()
        (root / "a.png").write_bytes(b"not really an image")
        make_read_only(root)
        code = """
            import json
            from engine.data.cells import Cell
            from engine.labels.store import LabelStore
            root = sys.argv[1]
            with LabelStore.open(root) as s:
                first = [s.location, str(s.db_path), s.query("SELECT value FROM meta WHERE key = 'root'")[0][0]]
                s.sync_cells([Cell("a.png", "x", None)])
                s.set_label("a.png", "y", annotator="t")
            with LabelStore.open(root) as s:  # the same database is found again
                print(json.dumps(first + [s.state("a.png").current]))
        """
        r = run_as_other_user(code, home, str(root))
        assert r.returncode == 0, r.stderr
        location, db_path, meta_root, label = json.loads(r.stdout.strip().splitlines()[-1])
        key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
        assert location == "user-data" and label == "y"
        assert Path(db_path) == (home / "data" / "allblast" / "projects" / key / "project.sqlite").resolve()
        assert meta_root == str(root.resolve())
        assert sorted(p.name for p in root.iterdir()) == ["a.png"]  # nothing beside the images


def test_dir_writable_probe(tmp_path):
    assert folder_writable(tmp_path / "new" / "folder", create=True)
    assert list((tmp_path / "new" / "folder").iterdir()) == []  # the probe file is removed
    (tmp_path / "file").write_text("x")
    assert not folder_writable(tmp_path / "file" / "sub", create=True)


def test_default_annotator():
    assert isinstance(default_annotator(), str) and default_annotator()


# ------------------------------------------------------------------ labels and undo
def test_set_undo_redo(store):
    st = store.state("c0.png")
    assert (st.original, st.current, st.annotator, st.changed_at, st.changed) == ("all", "all", None, None, False)
    assert not store.can_undo() and not store.can_redo()
    aid = store.set_label("c0.png", "hem", annotator="ann")
    assert isinstance(aid, int)
    assert store.set_label("c0.png", "hem", annotator="ann") is None  # no change, no action
    st = store.state("c0.png")
    assert st.current == "hem" and st.changed and st.annotator == "ann"
    assert store.can_undo()
    assert store.undo() == ["c0.png"]
    st = store.state("c0.png")
    assert (st.current, st.annotator, st.changed) == ("all", None, False)
    assert store.can_redo()
    assert store.redo() == ["c0.png"]
    assert store.state("c0.png").current == "hem" and store.state("c0.png").annotator == "ann"
    assert store.undo() == ["c0.png"] and store.undo() == [] and not store.can_undo()
    assert store.redo() == ["c0.png"] and store.redo() == []


def test_new_action_after_undo_clears_redo(store):
    store.set_label("c0.png", "hem", annotator="a")
    store.set_label("c1.png", "all", annotator="a")
    store.undo()
    assert store.can_redo()
    store.set_label("c2.png", UNSURE, annotator="a")
    assert not store.can_redo() and store.redo() == []
    assert current(store) == {"c0.png": "hem", "c1.png": "hem", "c2.png": UNSURE,
                              "c3.png": "all", "c4.png": "hem", "c5.png": None}


def test_unsure_and_unlabeled(store):
    store.set_label("c1.png", UNSURE, annotator="a")
    assert store.state("c1.png").current == UNSURE
    store.set_label("c1.png", None, annotator="a")
    st = store.state("c1.png")
    assert st.current is None and st.original == "hem" and st.changed
    store.set_label("c2.png", "Blast", annotator="a")  # any class name is accepted
    assert store.state("c2.png").current == "Blast" and store.state("c2.png").original is None
    store.undo()
    store.undo()
    assert store.state("c1.png").current == UNSURE
    store.undo()
    assert store.state("c1.png").current == "hem" and not store.state("c1.png").changed


def test_batch_relabel_is_one_undo_step(store):
    before = current(store)
    aid = store.set_labels([f"c{i}.png" for i in range(6)], "hem", annotator="b")
    assert aid is not None
    assert set(current(store).values()) == {"hem"}
    changed = store.undo()
    assert sorted(changed) == ["c0.png", "c2.png", "c3.png", "c5.png"]  # c1, c4 already hem
    assert current(store) == before and not store.can_undo()
    assert sorted(store.redo()) == sorted(changed)
    assert set(current(store).values()) == {"hem"}
    hist = store.history("c0.png")
    assert [h.source for h in hist] == ["batch", "undo", "redo"] and len({h.action_id for h in hist}) == 1


def test_unknown_path_raises_and_changes_nothing(store):
    with pytest.raises(KeyError):
        store.set_labels(["c0.png", "nope.png"], "hem", annotator="a")
    assert store.state("c0.png").current == "all" and not store.can_undo()
    with pytest.raises(KeyError):
        store.state("nope.png")
    with pytest.raises(ValueError):
        store.set_label("c0.png", "hem", annotator="a", source="telepathy")


def test_history_records_annotator_time_and_source(store):
    store.set_label("c3.png", "hem", annotator="alice")
    store.set_label("c3.png", UNSURE, annotator="bob", source="cli")
    store.undo(annotator="carol")
    store.redo()
    hist = store.history("c3.png")
    assert all(isinstance(h, Change) for h in hist)
    assert [(h.old, h.new, h.annotator, h.source) for h in hist] == [
        ("all", "hem", "alice", "keyboard"),
        ("hem", UNSURE, "bob", "cli"),
        (UNSURE, "hem", "carol", "undo"),
        ("hem", UNSURE, default_annotator(), "redo"),
    ]
    times = [datetime.fromisoformat(h.changed_at) for h in hist]
    assert all(t.utcoffset().total_seconds() == 0 for t in times) and times == sorted(times)
    assert [h.id for h in hist] == sorted(h.id for h in hist)
    assert store.history("c4.png") == []


def test_sync_flags_absent_cells_and_keeps_labels(store):
    store.set_label("c5.png", "all", annotator="a")
    store.sync_cells([c for c in make_cells() if c.path != "c5.png"] + [Cell("new.png", "all", None)])
    assert "c5.png" not in store.states() and store.absent() == ["c5.png"]
    assert store.state("c5.png").current == "all"
    assert store.states()["new.png"].original == "all"
    store.sync_cells([Cell(c.path, "hem" if c.path == "c0.png" else c.label, c.patient) for c in make_cells()])
    assert store.states()["c5.png"].current == "all" and store.absent() == ["new.png"]
    assert store.state("c0.png").original == "hem" and store.state("c0.png").current == "hem"


def test_restart_keeps_labels_and_undo_stack(tmp_path):
    root, db = tmp_path, tmp_path / "x.sqlite"
    with LabelStore.open(root, db_path=db) as s:
        s.sync_cells(make_cells())
        s.set_label("c0.png", "hem", annotator="a")
        s.set_labels(["c1.png", "c2.png"], UNSURE, annotator="a")
        s.undo()
    with LabelStore.open(root, db_path=db) as s:
        assert s.state("c0.png").current == "hem" and s.state("c1.png").current == "hem"
        assert s.can_redo() and s.can_undo()
        assert sorted(s.redo()) == ["c1.png", "c2.png"]
        assert s.state("c2.png").current == UNSURE
    with LabelStore.open(root, db_path=db) as s:
        assert sorted(s.undo()) == ["c1.png", "c2.png"] and s.undo() == ["c0.png"]
        assert s.state("c0.png").current == "all"


def test_two_instances_alternate_and_agree(tmp_path):
    db = tmp_path / "x.sqlite"
    a = LabelStore.open(tmp_path, db_path=db)
    b = LabelStore.open(tmp_path, db_path=db)
    try:
        a.sync_cells(make_cells())
        for i in range(10):
            (a if i % 2 else b).set_label(f"c{i % 6}.png", f"k{i}", annotator="a" if i % 2 else "b")
        assert current(a) == current(b)
        assert b.undo() == ["c3.png"]  # the global stack: b undoes a's latest write
        assert a.state("c3.png").current == "k3" and a.can_redo()
        assert a.redo() == ["c3.png"] and b.state("c3.png").current == "k9"
        assert a.revision() == b.revision() > 0
        assert current(a) == current(b)
    finally:
        a.close()
        b.close()


def test_concurrent_threads_with_separate_connections(tmp_path):
    db = tmp_path / "x.sqlite"
    with LabelStore.open(tmp_path, db_path=db) as s:
        s.sync_cells([Cell(f"t{i}.png", None, None) for i in range(40)])
    errors = []

    def work(k):
        try:
            with LabelStore.open(tmp_path, db_path=db) as s:
                for i in range(k, 40, 2):
                    s.set_label(f"t{i}.png", f"w{k}", annotator=f"w{k}")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with LabelStore.open(tmp_path, db_path=db) as s:
        assert current(s) == {f"t{i}.png": f"w{i % 2}" for i in range(40)}


# ------------------------------------------------------------------ errors
def test_locked_database_gives_clear_error(tmp_path):
    db = tmp_path / "x.sqlite"
    with LabelStore.open(tmp_path, db_path=db) as s:
        s.sync_cells(make_cells())
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    s = LabelStore.open(tmp_path, db_path=db, timeout=0.2)  # opening needs no write lock
    try:
        assert s.state("c0.png").current == "all"  # readers are not blocked (WAL)
        with pytest.raises(StoreError, match="locked.*try again"):
            s.set_label("c0.png", "hem", annotator="a")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert s.set_label("c0.png", "hem", annotator="a") is not None
    s.close()


def test_corrupt_and_foreign_databases_are_refused(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database at all" * 200)
    with pytest.raises(StoreError, match="damaged.*move it aside"):
        LabelStore.open(tmp_path, db_path=bad)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t(x)")
    with pytest.raises(StoreError, match="not an allblast label database"):
        LabelStore.open(tmp_path, db_path=other)
    newer = tmp_path / "newer.sqlite"
    LabelStore.open(tmp_path, db_path=newer).close()
    with sqlite3.connect(newer) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="newer allblast"):
        LabelStore.open(tmp_path, db_path=newer)
    with pytest.raises(StoreError, match="not a folder"):
        LabelStore.open(tmp_path / "missing", db_path=tmp_path / "m.sqlite")


def test_read_only_database_file():
    """A database file its user cannot write: labelling is refused with the store's message."""
    with world_readable_tmp() as base:
        db, home = base / "db" / "x.sqlite", base / "home"
        with LabelStore.open(base, db_path=db) as s:
            s.sync_cells(make_cells())
        make_read_only(db.parent)
        code = """
            from engine.labels.store import LabelStore, StoreError
            try:
                with LabelStore.open(sys.argv[1], db_path=sys.argv[2]) as s:
                    s.set_label("c0.png", "hem", annotator="a")
            except StoreError as e:
                print("refused:", e)
            else:
                print("written")
        """
        r = run_as_other_user(code, home, str(base), str(db))
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("refused:") and re.search("read-only|cannot open", r.stdout), r.stdout
        with LabelStore.open(base, db_path=db) as s:
            assert s.state("c0.png").current == "all"  # its label from the folder; the change was not written


# ------------------------------------------------------------------ durability
def test_labels_survive_sigkill(tmp_path):
    root, db, n = tmp_path / "data", tmp_path / "kill.sqlite", 7
    root.mkdir()
    with LabelStore.open(root, db_path=db) as s:
        s.sync_cells([Cell(f"c{i}.png", None, None) for i in range(n)])
    acked: list[tuple[str, str]] = []
    rng = random.Random(1234)
    for rnd in range(5):
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "store_writer.py"), str(root), str(db), str(n), str(rnd)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        # Killed after a counted number of acknowledgements (not after a sleep, whose worth
        # depends on the machine's speed): the writer is then in the middle of its next writes.
        wanted = rng.randint(1, 40)
        lines = [proc.stdout.readline() for _ in range(wanted)]
        os.kill(proc.pid, signal.SIGKILL)
        lines += proc.stdout.readlines()  # acknowledged between the count and the kill
        proc.wait(10)
        assert proc.returncode == -signal.SIGKILL
        assert all(line.endswith("\n") for line in lines[:wanted]), proc.stderr.read()
        acked += [tuple(line.rstrip("\n").split("\t")) for line in lines if line.endswith("\n")]
        with sqlite3.connect(db) as conn:  # opened raw, before any allblast recovery code runs
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    print(f"{len(acked)} acknowledged writes over 5 kills")
    order = {label: k for k, (_, label) in enumerate(acked)}
    with LabelStore.open(root, db_path=db) as s:
        logged = {(c.path, c.new) for c in s.all_changes()}
        assert set(acked) <= logged  # every acknowledged write is in the history
        last: dict[str, str] = {}
        for path, label in acked:
            last[path] = label
        for path, label in last.items():
            now = s.state(path).current
            rnd_now, i_now = map(int, now[1:].split("_"))
            rnd_ack, i_ack = map(int, label[1:].split("_"))
            # the acknowledged label, or a later write that committed before its ack was printed
            assert now == label or (rnd_now, i_now) > (rnd_ack, i_ack), (path, now, label)
        assert len(order) == len(acked)


# ------------------------------------------------------------------ CSV import / export
def test_import_generic_csv_is_one_undoable_action(store, tmp_path):
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text(
        "path,label,patient\n"
        "c0.png,hem,P0\n"          # all -> hem
        "./c1.png,hem,\n"          # unchanged
        "c2.png,UNSURE\n"          # unlabeled -> unsure
        "sub/c3.png,lymphocyte\n"  # names a folder that does not hold c3.png: missing, never matched by name
        "gone.png,all\n"           # missing image
    )
    before = current(store)
    report = import_csv(store, csv_path, annotator="importer")
    assert (report.applied, report.unchanged, report.missing, report.problems) == (
        2, 1, ["sub/c3.png", "gone.png"], [])
    after = current(store)
    assert (after["c0.png"], after["c1.png"], after["c2.png"], after["c3.png"]) == ("hem", "hem", UNSURE, "all")
    h = store.history("c0.png")[-1]
    assert (h.source, h.annotator) == ("csv-import", "importer")
    assert sorted(store.undo()) == ["c0.png", "c2.png"]
    assert current(store) == before and not store.can_undo()


def test_import_cnmc_csv_and_bad_rows(tmp_path):
    root = tmp_path / "data"
    (root / "val").mkdir(parents=True)
    with LabelStore.open(root, db_path=tmp_path / "x.sqlite") as s:
        s.sync_cells([Cell("val/1.bmp", None, None), Cell("val/2.bmp", None, None), Cell("val/3.bmp", "all", None)])
        csv_path = root / "val" / "labels.csv"
        csv_path.write_text("Patient_ID,new_names,labels\nUID_1_1_1_all.bmp,1.bmp,1\n"
                            "UID_H2_1_1_hem.bmp,2.bmp,0\nUID_3_1_1_all.bmp,3.bmp,7\nUID_4_1_1_all.bmp,4.bmp,1\n")
        report = import_csv(s, csv_path, annotator="a")
        assert (report.applied, report.unchanged) == (2, 0)
        assert report.missing == ["val/4.bmp"]
        assert len(report.problems) == 1 and report.problems[0][0] == "3.bmp" and "unknown label" in report.problems[0][1]
        assert current(s) == {"val/1.bmp": "all", "val/2.bmp": "hem", "val/3.bmp": "all"}
        not_csv = tmp_path / "x.csv"
        not_csv.write_text("a,b\n1,2\n")
        with pytest.raises(ValueError, match="expected the C-NMC form"):
            import_csv(s, not_csv, annotator="a")
        assert s.undo() and current(s)["val/1.bmp"] is None and not s.can_undo()


def test_export_generic_cnmc_history_and_read_back(store, tmp_path):
    store.set_label("c0.png", "hem", annotator="ann")   # all -> hem
    store.set_label("c3.png", UNSURE, annotator="ann")  # all -> unsure
    store.set_label("c4.png", "blast", annotator="ann")  # hem -> other class
    out = tmp_path / "out" / "generic.csv"
    assert export_csv(store, out) == 6
    lines = out.read_text().splitlines()
    assert lines[0] == "path,patient,original,label,annotator,changed_at"
    assert lines[1].startswith("c0.png,P0,all,hem,ann,20")
    assert "c5.png,P1,,,," in lines
    lf = read_label_file(out, store.data_root)
    assert lf.kind == "generic"
    assert {r.path: r.label for r in lf.rows} == {
        "c0.png": "hem", "c1.png": "hem", "c2.png": None, "c3.png": UNSURE, "c4.png": "blast", "c5.png": None}

    cnmc = tmp_path / "cnmc.csv"
    with pytest.warns(AllblastWarning, match="skipped 4 cells") as warned:
        assert export_csv(store, cnmc, format="cnmc") == 2
    assert "1 unsure" in str(warned[0].message) and "2 unlabeled" in str(warned[0].message)
    assert cnmc.read_text().splitlines() == ["Patient_ID,new_names,labels", "c0.png,c0.png,0", "c1.png,c1.png,0"]
    lf = read_label_file(cnmc, store.data_root)
    assert lf.kind == "cnmc" and [(r.path, r.label) for r in lf.rows] == [("c0.png", "hem"), ("c1.png", "hem")]

    hist = tmp_path / "history.csv"
    store.undo()
    assert export_csv(store, hist, history=True) == 4
    rows = hist.read_text().splitlines()
    assert rows[0] == "path,old,new,annotator,changed_at,source,action_id,event,reason"
    assert rows[-1].startswith("c4.png,blast,hem,") and rows[-1].endswith(",undo,3,change,")
    with pytest.raises(ValueError, match="unknown export format"):
        export_csv(store, tmp_path / "x.csv", format="xml")


def test_export_then_import_restores_labels(store, tmp_path):
    store.set_labels(["c0.png", "c1.png"], UNSURE, annotator="a")
    saved = current(store)
    export_csv(store, tmp_path / "snap.csv")
    store.set_labels([f"c{i}.png" for i in range(6)], "all", annotator="a")
    report = import_csv(store, tmp_path / "snap.csv", annotator="a")
    assert (report.applied, report.unchanged, report.missing, report.problems) == (5, 1, [], [])
    assert current(store) == saved


def test_import_real_cnmc_validation_csv(cnmc_dir, tmp_path):
    from engine.labels.project import open_dataset

    with open_dataset(cnmc_dir, db_path=tmp_path / "cnmc.sqlite") as project:
        s = project.store
        val = "validation_data/C-NMC_test_prelim_phase_data/1002.bmp"
        assert s.state(val).current == "hem"  # the scan applied the CSV already
        s.set_label(val, "all", annotator="a")
        report = import_csv(s, cnmc_dir / CNMC_CSV, annotator="a")
        assert len(report.missing) == 1865 and report.problems == []
        assert "validation_data/1.bmp" in report.missing  # as the scan reports it
        assert (report.applied, report.unchanged) == (1, 1)
        assert s.state(val).current == "hem"
    assert not (cnmc_dir / ".allblast").exists()


def test_sqlite_errors_become_actionable_messages(tmp_path):
    db = tmp_path / "x.sqlite"
    cases = {
        "attempt to write a readonly database": "read-only; make the file and its folder writable",
        "database is locked": "locked by another program",
        "file is not a database": "damaged",
        "database or disk is full": "full",
    }
    for text, expected in cases.items():
        err = translate_error(sqlite3.OperationalError(text), db, 5.0)
        assert isinstance(err, StoreError) and expected in str(err) and str(db) in str(err)
