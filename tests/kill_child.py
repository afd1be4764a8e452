"""Child for tests/test_kill_atomicity.py: one label-store operation, SIGKILLed at a chosen step.

usage: python kill_child.py OP ROOT DB KILL_AT

Every SQL statement any connection of this process runs, and every file rename, link or removal,
is a numbered step; the process kills itself (SIGKILL: no cleanup, no atexit, no finally) just
before step KILL_AT. Each step is printed first ("step N: what"), so the parent knows what ran.
KILL_AT 0 runs to the end and prints "done". The operation starts after "ready" is printed;
steps before it (opening the store) are not counted.

OP: relabel (every cell to "hem" in one action), import (a CSV of every cell, one action), rename
(class "all" -> "blast", relabelling its cells), first-label (the first label of a folder whose
index waits in the user cache: the database moves beside the images).
"""
from __future__ import annotations

import os
import signal
import sqlite3
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STEP = {"n": 0, "armed": False, "kill_at": 0}


def step(what: str) -> None:
    if not STEP["armed"]:
        return
    STEP["n"] += 1
    if STEP["n"] == STEP["kill_at"]:
        os.kill(os.getpid(), signal.SIGKILL)
    print(f"step {STEP['n']}: {what}", flush=True)


def _traced_connect(connect):
    def traced(*args, **kwargs):
        conn = connect(*args, **kwargs)
        conn.set_trace_callback(lambda sql: step(" ".join(sql.split()[:3])))
        return conn
    return traced


def _traced_file_op(name: str, op):
    def traced(*args, **kwargs):
        step(f"{name} {args[0] if args else ''}")
        return op(*args, **kwargs)
    return traced


def install_kill_points() -> None:
    sqlite3.connect = _traced_connect(sqlite3.connect)
    for name in ("replace", "rename", "link", "unlink", "remove", "rmdir"):
        setattr(os, name, _traced_file_op(name, getattr(os, name)))


def main() -> None:
    op, root, db, kill_at = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    install_kill_points()  # before the engine binds anything
    from engine.labels.classes import rename_class
    from engine.labels.csv_io import import_csv
    from engine.labels.store import LabelStore

    store = LabelStore.open(root, defer=True) if op == "first-label" else LabelStore.open(root, db_path=db)
    paths = sorted(store.states())
    print("ready", flush=True)
    STEP.update(armed=True, kill_at=kill_at)
    if op == "relabel":
        store.set_labels(paths, "hem", annotator="Dr. K")
    elif op == "import":
        store_csv = root.parent / "import.csv"
        import_csv(store, store_csv, annotator="Dr. K", last_wins=True)
    elif op == "rename":
        rename_class(store, "all", "blast", annotator="Dr. K")
    elif op == "first-label":
        store.set_label(paths[0], "hem", annotator="Dr. K")
    else:
        raise SystemExit(f"unknown operation {op}")
    STEP["armed"] = False
    store.close()
    print("done", flush=True)


if __name__ == "__main__":
    main()
