"""The pending database: a writable folder's label index before its first label.

Opening a folder writes nothing into it: its index (cells, files, meta, predictions) waits in the
user cache (`location.pending_db_path`) and moves beside the images (`home`) with the first label. Several
processes (windows, CLI commands) may hold the same pending database at once, so one rule keeps
every label: the pending database's write lock (BEGIN IMMEDIATE) is the gate.

- A process writes into the pending database only while it holds that lock and the database has
  not moved (`has_moved`: marked, or a `home` exists).
- The move happens under that lock: a snapshot taken just before it is used only when nothing was
  committed since (`Snapshot.current`), it is linked into place (never over an existing file), and
  the pending database is marked moved before the lock is released.

So every label written there before the move is in the copy, and none is written after it. The file
is removed once moved; a process still holding it (now unlinked) sees the mark and continues in
`home`. A `home` made some other way (a plain open, another pending file) gets the pending
database's label actions replayed into it (`read_carried` / `merge_into`), never dropped.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..data.cells import UNSURE
from .classes import add_missing, load
from .connection import connect
from .errors import StoreError, translate_error
from .location import remove_db_files

log = logging.getLogger(__name__)
LINEAGE = "pending_id"  # meta: which pending database this one is, or (beside) was copied from
MOVED_TO = "moved_to"  # meta of a pending database: its content is in this database now
_NOT_CARRIED = (LINEAGE, MOVED_TO, "root", "created_at")


def stamp(conn: sqlite3.Connection, db_path: Path, timeout: float) -> None:
    """Give a pending database its lineage id once (copies carry it beside the images)."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)", (LINEAGE, uuid.uuid4().hex))
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise translate_error(exc, db_path, timeout) from exc


def _meta(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


def has_moved(conn: sqlite3.Connection, home: Path) -> bool:
    """Under the pending database's write lock: its labels belong in `home` now."""
    return home.is_file() or _meta(conn, MOVED_TO) is not None


def mark_moved(conn: sqlite3.Connection, home: Path) -> None:
    """Inside the pending database's write transaction: nothing may be written here any more."""
    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (MOVED_TO, str(home)))


def is_marked(conn: sqlite3.Connection) -> bool:
    return _meta(conn, MOVED_TO) is not None


@dataclass
class Snapshot:
    """A copy of the pending database taken outside its lock (SQLite's backup API cannot copy
    from a connection inside a write transaction), good only while nothing was committed since."""

    path: Path
    version: int  # PRAGMA data_version before the copy: it changes with every other writer's commit

    def current(self, conn: sqlite3.Connection) -> bool:
        """Under the lock: no other connection committed since the copy began."""
        return conn.execute("PRAGMA data_version").fetchone()[0] == self.version


def snapshot(conn: sqlite3.Connection, home: Path, timeout: float) -> Snapshot:
    """Copy the open pending database into a temporary file beside `home` (from this connection,
    so it works even when the file was unlinked by another process)."""
    try:
        home.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{home.name}.", suffix=".tmp", dir=home.parent)
    except OSError as exc:
        raise StoreError(f"cannot create the folder for the label database {home.parent} "
                         f"({exc.strerror or exc}); make it writable or choose another database location") from exc
    os.close(fd)
    tmp = Path(name)
    try:
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        dst = sqlite3.connect(str(tmp), timeout=timeout, isolation_level=None)
        try:
            conn.backup(dst)
        finally:
            dst.close()
    except sqlite3.Error as exc:
        remove_db_files(tmp)
        raise translate_error(exc, home, timeout) from exc
    except BaseException:
        remove_db_files(tmp)
        raise
    return Snapshot(tmp, version)


def place(snap: Snapshot, home: Path) -> bool:
    """Link the snapshot into place; False when a database is there already (never replaced)."""
    try:
        os.link(snap.path, home)
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links
        if home.exists():
            return False
        os.replace(snap.path, home)
    return True


def lineage(conn: sqlite3.Connection) -> str | None:
    return _meta(conn, LINEAGE)


@dataclass
class Carried:
    """What a pending database holds that a `home` made elsewhere must not lose."""

    actions: list[tuple[str, str, dict[str, str | None]]] = field(default_factory=list)  # kind, annotator, updates
    cells: list[tuple] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    models: list[tuple] = field(default_factory=list)
    predictions: list[tuple] = field(default_factory=list)
    meta: list[tuple[str, str]] = field(default_factory=list)
    reviews: list[tuple] = field(default_factory=list)  # confirmations (engine.labels.reviews)
    resolutions: list[tuple] = field(default_factory=list)  # disagreements kept with a reason


def read_carried(conn: sqlite3.Connection) -> Carried:
    """The pending database's done label actions (their forward changes, in order), cells, classes,
    stored predictions and settings."""
    out = Carried()
    for aid, kind, annotator in conn.execute(
            "SELECT id, kind, annotator FROM actions WHERE state = 'done' ORDER BY id").fetchall():
        updates = dict(conn.execute("SELECT path, new FROM changes WHERE action_id = ? AND source NOT IN "
                                    "('undo', 'redo') ORDER BY id", (aid,)).fetchall())
        if updates:
            out.actions.append((kind, annotator, updates))
    out.cells = conn.execute("SELECT path, original, patient, label_source, present, first_seen, last_seen "
                             "FROM cells").fetchall()
    out.classes = list(load(conn))
    out.models = conn.execute("SELECT sha256, path, name, classes, temperature, tta, predicted_at "
                              "FROM models").fetchall()
    out.predictions = conn.execute("SELECT model, path, probs FROM predictions").fetchall()
    marks = ",".join("?" * len(_NOT_CARRIED))
    out.meta = conn.execute(f"SELECT key, value FROM meta WHERE key NOT IN ({marks})", _NOT_CARRIED).fetchall()
    out.reviews = conn.execute("SELECT path, label, note, annotator, reviewed_at, source FROM reviews "
                               "ORDER BY id").fetchall()
    out.resolutions = conn.execute("SELECT path, model, label, predicted, reason, annotator, resolved_at "
                                   "FROM resolutions ORDER BY id").fetchall()
    return out


def merge_into(conn: sqlite3.Connection, carried: Carried, apply: Callable[..., object]) -> int:
    """Inside `home`'s write transaction: add what it lacks of `carried` and replay its label
    actions (`apply`: the store's, so each is one undoable action with its annotator). Returns the
    number of actions replayed."""
    conn.executemany("INSERT OR IGNORE INTO cells(path, original, patient, label_source, present, first_seen, "
                     "last_seen) VALUES (?, ?, ?, ?, ?, ?, ?)", carried.cells)
    used = {lb for _, _, updates in carried.actions for lb in updates.values() if lb not in (None, UNSURE)}
    add_missing(conn, [*carried.classes, *sorted(used)], annotator="allblast", why="another window's labels")
    conn.executemany("INSERT OR IGNORE INTO models(sha256, path, name, classes, temperature, tta, predicted_at) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)", carried.models)
    conn.executemany("INSERT OR IGNORE INTO predictions(model, path, probs) VALUES (?, ?, ?)", carried.predictions)
    conn.executemany("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)", carried.meta)
    conn.executemany("INSERT INTO reviews(path, label, note, annotator, reviewed_at, source) VALUES (?, ?, ?, ?, ?, ?)",
                     carried.reviews)
    conn.executemany("INSERT INTO resolutions(path, model, label, predicted, reason, annotator, resolved_at) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)", carried.resolutions)
    for kind, annotator, updates in carried.actions:
        apply(conn, updates, annotator=annotator, source=kind,
              reason="labelled in another window before this folder's label database existed")
    return len(carried.actions)


class PendingHome:
    """The part of `LabelStore` that knows where its database is: a pending store (`home` set)
    writes and reads under the rules above, and moves beside the images with its first label."""

    home: Path | None
    data_root: Path
    notes: list[str]
    location: str
    created: bool
    _promote_after: bool

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """`Database.transaction`; a pending store moves beside the images once a label was written
        (`apply`), and follows the database another process put there meanwhile (`_ready`)."""
        with self._lock:  # the flag below belongs to this transaction only
            self._promote_after = False
            try:
                with super().transaction() as conn:
                    yield conn
            except BaseException:
                self._promote_after = False
                raise
            if self._promote_after:
                self._promote_after = False
                self._promote_safely()

    def _ready(self, conn: sqlite3.Connection) -> bool:
        """Under the pending database's write lock: write there only while it has not moved."""
        if self.home is None or not has_moved(conn, self.home):
            return True
        self._move(conn, None)
        return False

    def query(self, sql: str, params: tuple | list = ()) -> list[tuple]:
        with self._lock:
            if self.home is not None and self.home.is_file() and not self.conn.in_transaction:
                self._follow()  # another process moved the labels beside the images: read them there
            return super().query(sql, params)

    def _follow(self) -> None:
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise translate_error(exc, self.db_path, self.timeout) from exc
        if self._ready(conn):
            conn.execute("ROLLBACK")

    def _promote_safely(self) -> None:
        """`_promote`, where a failure loses nothing: the labels stay in the pending database (it is
        tried again at the next label and the next open), and the user is told."""
        try:
            self._promote()
        except (StoreError, OSError, sqlite3.Error) as exc:
            text = (f"labels of {self.data_root} are kept in {self.db_path} for now: they could not be moved "
                    f"beside the images ({exc}); make the folder writable, then reopen it")
            log.warning("%s", text)
            if text not in self.notes:
                self.notes.append(text)

    def _promote(self) -> None:
        """Move the pending database beside the images (copied whole: index, cells, labels, history,
        predictions, meta) and continue there. A copy is placed only when nothing was committed to
        the pending database since it was taken (else it is taken again)."""
        with self._lock:
            while self.home is not None:
                snap = None if self.home.is_file() else snapshot(self.conn, self.home, self.timeout)
                try:
                    conn = self.conn
                    try:
                        conn.execute("BEGIN IMMEDIATE")
                    except sqlite3.Error as exc:
                        raise translate_error(exc, self.db_path, self.timeout) from exc
                    self._move(conn, snap)
                finally:
                    if snap is not None:
                        remove_db_files(snap.path)

    def _move(self, conn: sqlite3.Connection, snap: "Snapshot | None") -> None:
        """With the pending database's write lock held (BEGIN IMMEDIATE on `conn`): put its content in
        `home` (the snapshot, or replayed into a `home` made elsewhere), mark it moved, continue in
        `home`. Returns without moving (lock released) when the snapshot is out of date."""
        home, home_conn = self.home, None
        try:
            if not is_marked(conn):
                placed = False
                if not home.is_file():
                    if snap is None or not snap.current(conn):
                        conn.execute("ROLLBACK")
                        return
                    placed = place(snap, home)
                home_conn, notes = connect(home, self.data_root, self.timeout)
                if not placed and lineage(conn) != lineage(home_conn):
                    self._merge(conn, home_conn)
                mark_moved(conn, home)
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if home_conn is not None:
                home_conn.close()
            if isinstance(exc, sqlite3.Error):
                raise translate_error(exc, self.db_path, self.timeout) from exc
            raise
        if home_conn is None:  # marked by another process: its move put everything in `home`
            home_conn, notes = connect(home, self.data_root, self.timeout)
        old, self.db_path = self.db_path, home
        conn.close()
        self._conn, self.home, self.location = home_conn, None, "beside"
        self.notes.extend(notes)
        remove_db_files(old)
        log.info("labels of %s are now kept in %s", self.data_root, home)

    def _merge(self, conn: sqlite3.Connection, home_conn: sqlite3.Connection) -> None:
        """`home` was made without this pending database: replay its labels there (one transaction)."""
        carried = read_carried(conn)
        if not carried.actions and not carried.reviews and not carried.resolutions:
            return
        home_conn.execute("BEGIN IMMEDIATE")
        try:
            n = merge_into(home_conn, carried, self.apply)
            home_conn.execute("COMMIT")
        except BaseException:
            if home_conn.in_transaction:
                home_conn.execute("ROLLBACK")
            raise
        finally:
            self._promote_after = False
        log.warning("labels of %s: %d action(s) made before %s existed were added to it", self.data_root, n, self.home)

    def discard_pending(self) -> None:
        """Close, and remove the database if this open created it in the user cache (a cancelled or
        failed first open leaves nothing behind)."""
        path, made = self.db_path, self.created and self.home is not None
        self.close()
        # SQLite removes the WAL with the last connection: one still there means another window or
        # command opened this index meanwhile, and goes on using it.
        if made and not Path(f"{path}-wal").exists():
            remove_db_files(path)
            try:
                path.parent.rmdir()
            except OSError:
                pass
