"""The label store: one SQLite file per data set holding labels, their history and undo/redo.

Labels are a class name, `UNSURE`, or None (unlabeled). A cell's *original* label comes from the
scan (class folder or labels CSV); a user's label is an override kept in `labels`, so refreshing the
originals never loses a review. Every change is written in one `BEGIN IMMEDIATE` transaction and
appended to `changes` (never rewritten); `actions` is the global undo stack, persisted, so undo
survives a restart and works the same from every window or CLI run on the data set.

Durability: WAL journal with `synchronous=FULL`, so a label whose write returned survives a killed
process (WAL + NORMAL would already survive SIGKILL) and also a power cut. `busy_timeout` lets two
windows, or a window and the CLI, share the file without failing spuriously.

The database lives in `<root>/.allblast/project.sqlite` (the scan skips hidden folders; images are
never touched), or, when the data folder cannot be written, under the user data directory. Opened
with `defer=True` (how `open_dataset` opens it), a writable folder without a database gets none
until its first label: the index is kept in the user cache folder (`pending_db_path`) and copied
beside the images when a label is first written (`home`).
"""
from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..data.cells import UNSURE, parse_label
from . import pending as pend
from .pending import PendingHome
from .classes import CLASS_EDIT, revert_class_edit
from .connection import Database, connect, seed_copy
from .errors import StoreError
from .location import BESIDE_DIR, DB_NAME, READ_ONLY, locate_db, pending_db_path
from .schema import SCHEMA_VERSION
from .signed import record_amendments
from .stamps import default_annotator, now_utc

if TYPE_CHECKING:
    from ..data.cells import Cell

log = logging.getLogger(__name__)
SOURCES = ("keyboard", "batch", "csv-import", "undo", "redo", "cli", CLASS_EDIT)
ACCEPTED_PREDICTION = "accepted prediction"  # + " (model <short sha256>)": an expert took the model's class

__all__ = [
    "UNSURE", "LabelState", "Change", "StoreError", "LabelStore",
    "default_annotator", "SCHEMA_VERSION",
]


@dataclass(frozen=True)
class LabelState:
    path: str
    original: str | None
    current: str | None
    annotator: str | None  # who set `current`; None while it is the original label
    changed_at: str | None  # ISO-8601 UTC

    @property
    def changed(self) -> bool:
        return self.current != self.original


@dataclass(frozen=True)
class Change:
    id: int
    action_id: int
    path: str
    old: str | None
    new: str | None
    annotator: str
    changed_at: str
    source: str  # keyboard | batch | csv-import | undo | redo | cli


_STATE_SQL = (
    "SELECT c.path, c.original, l.path IS NOT NULL, l.label, l.annotator, l.changed_at "
    "FROM cells c LEFT JOIN labels l ON l.path = c.path"
)
_UPSERT_LABEL = (
    "INSERT INTO labels(path, label, annotator, changed_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT(path) DO UPDATE SET label = excluded.label, annotator = excluded.annotator, "
    "changed_at = excluded.changed_at"
)
_INSERT_CHANGE = (
    "INSERT INTO changes(action_id, path, old, new, annotator, changed_at, source, "
    "prev_set, prev_annotator, prev_changed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _state(row) -> LabelState:
    path, original, has, label, annotator, changed_at = row
    if has:
        return LabelState(path, original, label, annotator, changed_at)
    return LabelState(path, original, original, None, None)


def normalise_label(label: str | None) -> str | None:
    """A label as the store keeps it (`parse_label`: the reserved words mean unsure or unlabeled)."""
    if label is not None and not isinstance(label, str):
        raise TypeError(f"a label is a class name, {UNSURE!r} or None, not {label!r}")
    return parse_label(label)


class LabelStore(PendingHome, Database):
    """Labels of one data set. Thread-safe (one connection behind a lock); process-safe (SQLite).

    `transaction()` (BEGIN IMMEDIATE) and `query()` come from `Database`, through `PendingHome`
    (where a pending store writes and reads); both raise StoreError.
    """

    def __init__(self, data_root: Path, db_path: Path, location: str, conn: sqlite3.Connection,
                 timeout: float, notes: list[str], *, home: Path | None = None, created: bool = False):
        super().__init__(db_path, conn, timeout, read_only=location == READ_ONLY)
        self.data_root = data_root
        # "beside" | "user-data" | "custom" (db_path given) | READ_ONLY (the folder's own, not writable here)
        self.location = location
        self.notes = notes  # e.g. WAL not available on this file system
        # While not None: `db_path` is the pending index in the user cache, and `home` (beside the
        # images) is where the database goes with the first label change.
        self.home = home
        self.created = created  # this open made the database file (nothing was there)
        self._promote_after = False
        self.last_class_edit: str | None = None  # set by undo / redo of a class rename or delete

    @property
    def pending(self) -> bool:
        """Nothing written into the data folder yet (no label so far)."""
        return self.home is not None

    @classmethod
    def open(cls, data_root, *, db_path=None, timeout: float = 5.0, defer: bool = False) -> "LabelStore":
        """`defer`: a writable folder without a database gets one only with its first label (the
        index waits in the user cache folder until then)."""
        root = Path(data_root).expanduser().resolve()
        if not root.is_dir():
            raise StoreError(f"{root} is not a folder (or cannot be opened); choose the data set's folder")
        if db_path is not None:
            db, location = Path(db_path).expanduser().resolve(), "custom"
            beside = root / BESIDE_DIR / DB_NAME
            if not db.exists() and beside.is_file() and beside.resolve() != db:
                seed_copy(beside, db, timeout=timeout)  # a new store never hides the folder's own labels
        else:
            db, location = locate_db(root)
        home = None
        # A pending index (`engine.labels.pending`) is always joined, never hidden: a non-deferred
        # open (a command that writes) adopts it, and one left beside an existing database (a window
        # that had not labelled yet, or a move cut short) is carried over into it.
        if location == "beside" and (pending_db_path(root).is_file() or (defer and not db.is_file())):
            home, db = db, pending_db_path(root)
        created = not db.exists()
        if location != READ_ONLY:
            try:
                db.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the folder for the label database {db.parent} ({exc.strerror or exc}); "
                    "make it writable or choose another database location"
                ) from exc
        try:
            conn, notes = connect(db, root, timeout, read_only=location == READ_ONLY)
        except StoreError:
            if home is None or not home.is_file():
                raise
            # Another process moved the pending index beside the images (and removed it) just as
            # this open reached it: open the database there instead.
            log.debug("pending index %s moved while opening it; using %s", db, home, exc_info=True)
            db, home = home, None
            created = not db.exists()
            conn, notes = connect(db, root, timeout)
        if location == READ_ONLY:
            notes.append(f"{root} is read-only for you: its labels ({db}) are shown, but changes cannot be saved "
                         "there; continue in a copy in your user data folder to label")
        log.debug("label store %s opened (%s%s) for %s", db, location, ", pending" if home else "", root)
        store = cls(root, db, location, conn, timeout, notes, home=home, created=created)
        if home is not None:
            try:
                pend.stamp(conn, db, timeout)
            except StoreError:
                store.close()
                raise
            if not defer or home.is_file() or store.query("SELECT 1 FROM actions LIMIT 1"):
                store._promote_safely()  # labels made while pending (the move was cut short) go beside the images
        return store

    # ----------------------------------------------------------------- cells
    def sync_cells(self, cells: Iterable["Cell"]) -> None:
        """Record the scan's cells: new ones added, originals refreshed, vanished ones flagged absent.

        Only rows that differ are written, so reopening an unchanged 15,000-cell folder costs one read.
        """
        stored = {r[0]: r[1:] for r in self.query("SELECT path, original, patient, label_source, present FROM cells")}
        now = now_utc()
        rows, seen = [], set()
        for c in cells:
            seen.add(c.path)
            if stored.get(c.path) != (c.label, c.patient, c.label_source, 1):
                rows.append((c.path, c.label, c.patient, c.label_source, now, now))
        gone = [(p,) for p, r in stored.items() if r[3] == 1 and p not in seen]
        if not rows and not gone:
            return
        with self.transaction() as conn:
            conn.executemany(
                "INSERT INTO cells(path, original, patient, label_source, present, first_seen, last_seen) "
                "VALUES (?, ?, ?, ?, 1, ?, ?) ON CONFLICT(path) DO UPDATE SET original = excluded.original, "
                "patient = excluded.patient, label_source = excluded.label_source, present = 1, "
                "last_seen = excluded.last_seen",
                rows,
            )
            conn.executemany("UPDATE cells SET present = 0 WHERE path = ?", gone)

    def states(self) -> dict[str, LabelState]:
        """Label state of every cell present on disk."""
        return {r[0]: _state(r) for r in self.query(_STATE_SQL + " WHERE c.present = 1 ORDER BY c.rowid")}

    def state(self, path: str) -> LabelState:
        rows = self.query(_STATE_SQL + " WHERE c.path = ?", (path,))
        if not rows:
            raise KeyError(path)
        return _state(rows[0])

    def absent(self) -> list[str]:
        """Cells seen before but no longer on disk (their labels are kept)."""
        return [r[0] for r in self.query("SELECT path FROM cells WHERE present = 0 ORDER BY path")]

    def meta(self, key: str) -> str | None:
        """A setting of this data set kept with its labels (e.g. the active model)."""
        rows = self.query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str | None) -> None:
        with self.transaction() as conn:
            if value is None:
                conn.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def revision(self) -> int:
        """Grows with every label change from any window or process: poll it to refresh views."""
        return self.query("SELECT COALESCE(MAX(id), 0) FROM changes")[0][0]

    def _fetch(self, conn: sqlite3.Connection, paths: list[str]) -> dict[str, tuple]:
        if len(paths) > 2000:
            wanted = set(paths)
            return {r[0]: r for r in conn.execute(_STATE_SQL) if r[0] in wanted}
        out: dict[str, tuple] = {}
        for i in range(0, len(paths), 500):
            chunk = paths[i : i + 500]
            marks = ",".join("?" * len(chunk))
            out.update((r[0], r) for r in conn.execute(_STATE_SQL + f" WHERE c.path IN ({marks})", chunk))
        return out

    # ----------------------------------------------------------------- labelling
    def set_label(self, path: str, label: str | None, *, annotator: str, source: str = "keyboard",
                  reason: str | None = None) -> int | None:
        """Set one cell's label; returns the undoable action's id, or None when nothing changed.
        `reason`: why, for a cell of a signed case (an amendment; without it: ReasonRequired)."""
        return self.set_labels([path], label, annotator=annotator, source=source, reason=reason)

    def set_labels(self, paths: Iterable[str], label: str | None, *, annotator: str,
                   source: str = "batch", reason: str | None = None) -> int | None:
        """Give many cells one label as ONE undoable action; None when nothing changed."""
        label = normalise_label(label)
        with self.transaction() as conn:
            return self.apply(conn, {p: label for p in paths}, annotator=annotator, source=source, reason=reason)[0]

    def set_many(self, updates: dict[str, str | None], *, annotator: str, source: str = "batch",
                 reason: str | None = None) -> tuple[int | None, list[str]]:
        """Give each cell its own label, all as ONE undoable action; returns (action id or None,
        the paths whose label changed)."""
        with self.transaction() as conn:
            return self.apply(conn, {p: normalise_label(v) for p, v in updates.items()}, annotator=annotator,
                              source=source, reason=reason)

    def apply(self, conn: sqlite3.Connection, updates: dict[str, str | None], *, annotator: str,
              source: str, always: bool = False, reason: str | None = None) -> tuple[int | None, list[str]]:
        """Inside `transaction()`: write `updates` as one action. Returns (action id, changed paths).

        Unknown paths raise KeyError (the transaction is rolled back). `always`: the action is
        recorded even when no label changes (a class rename of an unused class is still undoable).
        A change to a signed case's cell is an amendment: it needs `reason` (else
        `engine.labels.signed.ReasonRequired`, and nothing is written); a class rename or delete
        gives its own.
        """
        if source not in SOURCES and not source.startswith(ACCEPTED_PREDICTION):
            raise ValueError(f"unknown change source {source!r}; expected one of {', '.join(SOURCES)}")
        annotator = (annotator or "").strip() or default_annotator()
        rows = self._fetch(conn, list(updates))
        unknown = [p for p in updates if p not in rows]
        if unknown:
            more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
            raise KeyError(f"not a cell of this data set: {unknown[0]}{more}")
        todo = [(p, new) for p, new in updates.items() if _state(rows[p]).current != new]
        if not todo and not always:
            return None, []
        if self.home is not None:  # (set under the lock `transaction` holds)
            self._promote_after = True  # the first label: the database goes beside the images
        now = now_utc()
        conn.execute("UPDATE actions SET state = 'discarded' WHERE state = 'undone'")  # new action ends redo
        aid = conn.execute(
            "INSERT INTO actions(kind, state, annotator, created_at, n) VALUES (?, 'done', ?, ?, ?)",
            (source, annotator, now, len(todo)),
        ).lastrowid
        changes, labels = [], []
        for path, new in todo:
            _, _, has, _, prev_ann, prev_at = rows[path]
            old = _state(rows[path]).current
            changes.append((aid, path, old, new, annotator, now, source, int(bool(has)), prev_ann, prev_at))
            labels.append((path, new, annotator, now))
        if source == CLASS_EDIT and not reason:
            reason = "class renamed or deleted (Label ▸ Classes…)"
        record_amendments(conn, [(c[1], c[2], c[3]) for c in changes], reason=reason, annotator=annotator,
                          when=now, action_id=aid, source=source)
        conn.executemany(_INSERT_CHANGE, changes)
        conn.executemany(_UPSERT_LABEL, labels)
        return aid, [p for p, _ in todo]

    # ----------------------------------------------------------------- undo / redo
    def can_undo(self) -> bool:
        return bool(self.query("SELECT 1 FROM actions WHERE state = 'done' LIMIT 1"))

    def can_redo(self) -> bool:
        return bool(self.query("SELECT 1 FROM actions WHERE state = 'undone' LIMIT 1"))

    def undo(self, *, annotator: str | None = None, reason: str | None = None) -> list[str]:
        """Revert the latest action (from any window or process); returns the paths it changed.
        When the action renamed or deleted a class, `last_class_edit` describes it (else None).
        Reverting a signed case's label is an amendment: it needs `reason` (ReasonRequired)."""
        return self._step("undo", annotator, reason)

    def redo(self, *, annotator: str | None = None, reason: str | None = None) -> list[str]:
        return self._step("redo", annotator, reason)

    def _step(self, kind: str, annotator: str | None, reason: str | None = None) -> list[str]:
        who = (annotator or "").strip() or default_annotator()
        with self.transaction() as conn:
            if kind == "undo":
                sql = "SELECT id FROM actions WHERE state = 'done' ORDER BY id DESC LIMIT 1"
            else:  # undone actions are always the newest: redo the oldest of them
                sql = "SELECT id FROM actions WHERE state = 'undone' ORDER BY id LIMIT 1"
            row = conn.execute(sql).fetchone()
            self.last_class_edit = None
            if row is None:
                return []
            aid = row[0]
            forward = conn.execute(
                "SELECT path, old, new, annotator, changed_at, prev_set, prev_annotator, prev_changed_at "
                "FROM changes WHERE action_id = ? AND source NOT IN ('undo', 'redo') ORDER BY id",
                (aid,),
            ).fetchall()
            if kind == "undo":
                forward.reverse()
            current = self._fetch(conn, [f[0] for f in forward])
            now = now_utc()
            amended: list[tuple[str, str | None, str | None]] = []
            for path, old, new, ann, at, prev_set, prev_ann, prev_at in forward:
                before = current[path]
                was = _state(before).current
                if kind == "redo":
                    conn.execute(_UPSERT_LABEL, (path, new, ann, at))
                    target = new
                elif prev_set:
                    conn.execute(_UPSERT_LABEL, (path, old, prev_ann, prev_at))
                    target = old
                else:
                    conn.execute("DELETE FROM labels WHERE path = ?", (path,))
                    target = before[1]  # back to the original label
                conn.execute(_INSERT_CHANGE, (aid, path, was, target, who, now, kind,
                                              int(bool(before[2])), before[4], before[5]))
                amended.append((path, was, target))
            if not reason and conn.execute("SELECT kind FROM actions WHERE id = ?", (aid,)).fetchone()[0] == CLASS_EDIT:
                reason = f"{kind} of a class rename or delete"
            record_amendments(conn, [a for a in amended if a[1] != a[2]], reason=reason, annotator=who, when=now,
                              action_id=aid, source=kind)
            self.last_class_edit = revert_class_edit(conn, aid, kind, who, now)
            state = "undone" if kind == "undo" else "done"
            conn.execute("UPDATE actions SET state = ? WHERE id = ?", (state, aid))
            return list(dict.fromkeys(f[0] for f in forward))

    def history(self, path: str) -> list[Change]:
        """Every change of one cell, oldest first, undo and redo included."""
        rows = self.query(
            "SELECT id, action_id, path, old, new, annotator, changed_at, source FROM changes "
            "WHERE path = ? ORDER BY id",
            (path,),
        )
        return [Change(*r) for r in rows]

    def all_changes(self) -> list[Change]:
        rows = self.query(
            "SELECT id, action_id, path, old, new, annotator, changed_at, source FROM changes ORDER BY id"
        )
        return [Change(*r) for r in rows]
