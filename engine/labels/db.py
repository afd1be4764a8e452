"""The label database file: where it lives, how it is opened, its schema, and its errors.

`engine.labels.store` holds the label logic; this module only knows SQLite. The schema is versioned with
`PRAGMA user_version`; a file written by a newer allblast is refused rather than damaged.
"""
from __future__ import annotations

import getpass
import hashlib
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import platformdirs

from ..utils.files import disk_full_message

log = logging.getLogger(__name__)
SCHEMA_VERSION = 3
DB_NAME = "project.sqlite"
BESIDE_DIR = ".allblast"  # hidden: the scan never enters it

_SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE cells(
    path TEXT PRIMARY KEY,          -- relative to the data root, '/' separators
    original TEXT,                  -- label from the data set (folder / CSV); NULL = unlabeled
    patient TEXT,
    label_source TEXT,
    present INTEGER NOT NULL DEFAULT 1,  -- 0: no longer on disk (labels kept)
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL
);
CREATE TABLE labels(                -- a user's label overrides the original (no row: the original holds)
    path TEXT PRIMARY KEY REFERENCES cells(path),
    label TEXT,                     -- class name, 'unsure', or NULL (explicitly unlabeled)
    annotator TEXT NOT NULL,
    changed_at TEXT NOT NULL
);
CREATE TABLE actions(               -- the global undo stack
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,             -- keyboard | batch | csv-import | cli
    state TEXT NOT NULL CHECK (state IN ('done', 'undone', 'discarded')),
    annotator TEXT NOT NULL,
    created_at TEXT NOT NULL,
    n INTEGER NOT NULL
);
CREATE INDEX actions_state ON actions(state, id);
CREATE TABLE changes(               -- append-only history, undo and redo included
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    action_id INTEGER NOT NULL REFERENCES actions(id),
    path TEXT NOT NULL REFERENCES cells(path),
    old TEXT,
    new TEXT,
    annotator TEXT NOT NULL,
    changed_at TEXT NOT NULL,
    source TEXT NOT NULL,
    prev_set INTEGER NOT NULL,      -- the override row before this change (for exact undo)
    prev_annotator TEXT,
    prev_changed_at TEXT
);
CREATE INDEX changes_path ON changes(path, id);
CREATE INDEX changes_action ON changes(action_id, id);
CREATE TABLE files(                 -- the scan index: what decoding each file told us
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    digest TEXT,
    problem TEXT,
    width INTEGER NOT NULL DEFAULT 0,
    height INTEGER NOT NULL DEFAULT 0
);
"""


# Version 2: per-cell model outputs, keyed by the model file's sha256 (the app shows them at once on
# reopen; switching the active model switches them).
_SCHEMA_V2 = """
CREATE TABLE models(
    sha256 TEXT PRIMARY KEY,        -- of model.pt
    path TEXT NOT NULL,             -- where it was when it predicted
    name TEXT NOT NULL,             -- e.g. the run folder's name
    classes TEXT NOT NULL,          -- JSON list, the order of the probability columns
    temperature REAL NOT NULL DEFAULT 1.0,
    tta INTEGER NOT NULL DEFAULT 0,
    predicted_at TEXT NOT NULL
);
CREATE TABLE predictions(
    model TEXT NOT NULL REFERENCES models(sha256) ON DELETE CASCADE,
    path TEXT NOT NULL,             -- the cell, relative to the data root
    probs BLOB NOT NULL,            -- float32, one per class, calibrated
    PRIMARY KEY(model, path)
) WITHOUT ROWID;
"""


# Version 3: the data set's class set (engine.labels.classes) and the history of its edits.
_SCHEMA_V3 = """
CREATE TABLE classes(
    name TEXT PRIMARY KEY,
    key INTEGER UNIQUE,             -- number key 1-9; NULL: none (more than nine classes)
    color TEXT NOT NULL,            -- #RRGGBB
    ord INTEGER NOT NULL,           -- display order
    positive INTEGER NOT NULL DEFAULT 0  -- 1: the class reports count as suspicious (blasts)
);
CREATE TABLE class_changes(         -- append-only: add, rename, colour, key, order, positive, delete, undo/redo
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    action_id INTEGER REFERENCES actions(id),  -- rename / delete: the undoable action that relabelled cells
    kind TEXT NOT NULL,
    name TEXT NOT NULL,             -- the class, as named before the change
    old TEXT,                       -- JSON of the class before (NULL: added)
    new TEXT,                       -- JSON of the class after (NULL: deleted)
    annotator TEXT NOT NULL,
    changed_at TEXT NOT NULL
);
"""


class StoreError(RuntimeError):
    """The label database (or a file written from it, such as an export) cannot be used or
    written; the message says why and what to do."""


def default_annotator() -> str:
    try:
        return getpass.getuser() or "unknown"
    except Exception:  # no user name in the environment (containers, some Windows services)
        log.debug("no user name from the environment", exc_info=True)
        return "unknown"


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def user_data_root() -> Path:
    return Path(platformdirs.user_data_dir("allblast", appauthor=False))


def user_cache_root() -> Path:
    return Path(platformdirs.user_cache_dir("allblast", appauthor=False))


def can_write_in(folder: Path) -> bool:
    """True when a file can be written in `folder`: tried, not guessed from modes (root ignores
    permission bits; read-only mounts and ACLs do not show in them). Creates nothing: a missing
    folder is judged by its nearest existing parent, probed with a temporary file that is removed."""
    probe_dir = Path(folder)
    while not probe_dir.exists():
        if probe_dir.parent == probe_dir:
            return False
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        return False
    try:
        fd, name = tempfile.mkstemp(prefix=".allblast-write-test-", dir=probe_dir)
    except OSError:
        return False
    os.close(fd)
    try:
        os.unlink(name)
    except OSError:
        pass
    return True


def dir_writable(folder: Path) -> bool:
    """True when a file can be written in `folder`, which is CREATED if missing: only for a folder
    the caller writes to anyway (`locate_db` passes existing folders only; `can_write_in` creates
    nothing)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return can_write_in(folder)


def db_key(data_root: Path) -> str:
    """The data root's name for its database outside the data folder (stable per absolute path)."""
    return hashlib.sha256(str(data_root).encode("utf-8")).hexdigest()[:16]


def db_path_in(folder: Path, data_root: Path) -> Path:
    """The database of `data_root` inside a folder of databases (the user data folder, --db-dir).

    Windows before 0.2 named their --db-dir files `<name>-<12 hex>.sqlite`; such a file is still
    used, so upgrading never hides labels already made.
    """
    path = Path(folder) / db_key(data_root) / DB_NAME
    legacy = Path(folder) / f"{data_root.name or 'data'}-{db_key(data_root)[:12]}.sqlite"
    return legacy if not path.exists() and legacy.is_file() else path


def user_db_path(data_root: Path) -> Path:
    return db_path_in(user_data_root() / "projects", data_root)


def pending_db_path(data_root: Path) -> Path:
    """Where a writable folder's index lives until its first label (nothing is written into a data
    folder that was only opened or browsed): the user cache folder, keyed like `db_path_in`."""
    return db_path_in(user_cache_root() / "pending", data_root)


def remove_db_files(db_path: Path) -> None:
    """Delete a database file and its -wal / -shm companions (best effort)."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            Path(f"{db_path}{suffix}").unlink(missing_ok=True)
        except OSError:
            pass


READ_ONLY = "read-only"  # the folder's own database, in a folder this user cannot write


def locate_db(data_root: Path) -> tuple[Path, str]:
    """Where the label database of `data_root` lives: (path, "beside" | "user-data" | READ_ONLY).

    A read-only folder that already holds a database keeps it (opened read-only: its labels are
    shown, never hidden behind a new empty store), unless the user chose to continue in a copy of
    it in the user data folder (`seed_copy`), which is then used."""
    beside = data_root / BESIDE_DIR / DB_NAME
    # A lookup never leaves a `.allblast/` folder behind: without one, the data folder itself is probed.
    probe = beside.parent if beside.parent.is_dir() else data_root
    if dir_writable(probe) if probe.is_dir() else can_write_in(probe):
        return beside, "beside"
    user = user_db_path(data_root)
    if beside.is_file() and seeded_from(user) != str(beside):
        return beside, READ_ONLY
    return user, "user-data"


def seeded_from(db_path: Path) -> str | None:
    """The database a copy was seeded from (meta 'seeded_from'), or None."""
    if not db_path.is_file():
        return None
    try:
        conn = sqlite3.connect(f"{db_path.as_uri()}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'seeded_from'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def seed_copy(source: Path, target: Path, *, timeout: float = 5.0) -> Path:
    """Copy the database `source` (read-only is fine) to `target` with SQLite's backup API and
    record where it came from; `target` must not exist (nothing is ever overwritten)."""
    if target.exists():
        raise StoreError(f"{target} exists already; it is used as it is")
    target.parent.mkdir(parents=True, exist_ok=True)
    src = _open_read_only(source, timeout)
    try:
        dst = sqlite3.connect(str(target), timeout=timeout, isolation_level=None)
        try:
            src.backup(dst)
            dst.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('seeded_from', ?)", (str(source),))
            dst.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('seeded_at', ?)", (now_utc(),))
        finally:
            dst.close()
    except sqlite3.Error as exc:
        target.unlink(missing_ok=True)
        raise translate_error(exc, target, timeout) from exc
    finally:
        src.close()
    return target


def _open_read_only(db_path: Path, timeout: float) -> sqlite3.Connection:
    """A connection that never writes. A WAL database in a read-only folder cannot make its -shm
    file: without a -wal file it is read as immutable (no locking: nobody can write that folder
    either); with one, whose pages may hold the latest labels, a private copy of both is read."""
    try:
        return _connect_ro(f"{db_path.as_uri()}?mode=ro", timeout)
    except sqlite3.Error as exc:
        error = exc
    wal = Path(f"{db_path}-wal")
    try:
        if wal.is_file() and wal.stat().st_size > 0:
            return _read_with_wal(db_path, wal, timeout)
        return _connect_ro(f"{db_path.as_uri()}?mode=ro&immutable=1", timeout)
    except sqlite3.Error as exc:
        error = exc
    except OSError as exc:  # the -wal file cannot be read: say so rather than show older labels
        raise StoreError(f"cannot read {wal} ({exc.strerror or exc}), which holds the latest labels of "
                         f"{db_path}; make it readable for you, then reopen") from exc
    raise translate_error(error, db_path, timeout)


def _connect_ro(uri: str, timeout: float) -> sqlite3.Connection:
    conn = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.Error:
        conn.close()
        raise
    return conn


def _read_with_wal(db_path: Path, wal: Path, timeout: float) -> sqlite3.Connection:
    """The database with its -wal pages, in memory: both files are copied to a private temporary
    folder (where SQLite may make its -shm file), read whole, and the copies removed."""
    with tempfile.TemporaryDirectory(prefix="allblast-ro-") as tmp:
        copy = Path(tmp) / db_path.name
        shutil.copyfile(db_path, copy)
        shutil.copyfile(wal, f"{copy}-wal")
        src = sqlite3.connect(str(copy), timeout=timeout, isolation_level=None)
        try:
            mem = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            src.backup(mem)
        finally:
            src.close()
    mem.execute("PRAGMA query_only = ON")
    log.info("read %s with its WAL file %s through a private copy (the folder is read-only)", db_path, wal)
    return mem


def find_db(data_root: Path) -> Path | None:
    """The existing label database of `data_root`, or None; creates nothing (a lookup must never
    leave a `.allblast/` folder behind in a data folder)."""
    for path in (data_root / BESIDE_DIR / DB_NAME, user_db_path(data_root)):
        if path.is_file():
            return path
    return None


def translate_error(exc: sqlite3.Error, db_path: Path, timeout: float) -> StoreError:
    msg = str(exc).lower()
    if "locked" in msg or "busy" in msg:
        text = (f"the label database {db_path} is locked by another program (another allblast window "
                f"or an allblast-engine command) for more than {timeout:g} s; wait for it to finish or "
                "close it, then try again")
    elif "readonly" in msg or "read-only" in msg:
        text = (f"the label database {db_path} is read-only; make the file and its folder writable, "
                "or open the data set with a database in a writable place (db_path)")
    elif "not a database" in msg or "malformed" in msg or "corrupt" in msg:
        text = (f"the label database {db_path} is damaged ({exc}); move it aside (rename it) and reopen "
                "the data set to start a new one, then import your last exported labels CSV")
    elif "full" in msg:
        text = disk_full_message(db_path, exc)
    elif "unable to open" in msg:
        text = f"cannot open the label database {db_path} ({exc}); check that its folder exists and is writable"
    else:
        text = f"label database error in {db_path}: {exc}"
    return StoreError(text)


def connect(db_path: Path, data_root: Path, timeout: float, *, read_only: bool = False
            ) -> tuple[sqlite3.Connection, list[str]]:
    """Open (creating or migrating) the database; returns the connection and notes for the user.
    `read_only`: open an existing database without writing anything (no migration)."""
    notes: list[str] = []
    if read_only:
        conn = _open_read_only(db_path, timeout)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as exc:
            conn.close()
            raise translate_error(exc, db_path, timeout) from exc
        if version != SCHEMA_VERSION:
            conn.close()
            raise StoreError(f"the label database {db_path} is read-only and from another allblast version "
                             f"(schema {version}, this one reads {SCHEMA_VERSION}); continue in a copy "
                             "(--db NEW.sqlite, or the app's offer) to use it")
        return conn, notes
    try:
        conn = sqlite3.connect(str(db_path), timeout=timeout, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise translate_error(exc, db_path, timeout) from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        mode = _journal_mode_wal(conn, timeout)
        if str(mode).lower() != "wal":
            notes.append(f"the file system of {db_path} does not support WAL; using {mode} journal")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        _migrate(conn, db_path, data_root)
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(f"database disk image is malformed: {check}")
    except sqlite3.Error as exc:
        conn.close()
        raise translate_error(exc, db_path, timeout) from exc
    except StoreError:
        conn.close()
        raise
    return conn, notes


def _journal_mode_wal(conn: sqlite3.Connection, timeout: float) -> str:
    """Switch to WAL. Several processes opening a new file at once (concurrent first labels) may get
    "database is locked" at once here, without SQLite's busy handler: wait as a busy handler would."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if not ("locked" in str(exc) or "busy" in str(exc)) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _statements(script: str) -> list[str]:
    """Split a script into statements (executescript would COMMIT our transaction)."""
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    return out


def _migrate(conn: sqlite3.Connection, db_path: Path, data_root: Path) -> None:
    if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
        row = conn.execute("SELECT value FROM meta WHERE key = 'root'").fetchone()
        if row is not None and row[0] == str(data_root):
            return  # nothing to write: opening needs no write lock
    conn.execute("BEGIN IMMEDIATE")  # two openers at once: the second waits, then sees the schema
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the label database {db_path} was written by a newer allblast (schema {version}, this "
                f"version reads {SCHEMA_VERSION}); update allblast, or open the data set with another db_path"
            )
        _check_tables_match(conn, db_path, version)
        if version == 0:
            if conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]:
                raise StoreError(
                    f"{db_path} is an SQLite file but not an allblast label database; move it aside "
                    "or choose another db_path"
                )
            for statement in _statements(_SCHEMA):
                conn.execute(statement)
            conn.execute("INSERT INTO meta(key, value) VALUES ('created_at', ?)", (now_utc(),))
            version = 1
        if version < 2:  # migrations run in order, inside this one transaction
            for statement in _statements(_SCHEMA_V2):
                conn.execute(statement)
        if version < 3:
            for statement in _statements(_SCHEMA_V3):
                conn.execute(statement)
        if version < SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        old_root = conn.execute("SELECT value FROM meta WHERE key = 'root'").fetchone()
        if old_root is None or old_root[0] != str(data_root):
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('root', ?)", (str(data_root),))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


# The tables each schema version adds: a file whose version is older than its tables was written
# (or changed) by another allblast, and migrating it would fail halfway ("table ... already exists").
_ADDED_IN = {1: ("cells", "labels", "actions", "changes"), 2: ("models", "predictions"),
             3: ("classes", "class_changes")}


def _check_tables_match(conn: sqlite3.Connection, db_path: Path, version: int) -> None:
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    later = [t for v, names in _ADDED_IN.items() if v > version for t in names if t in tables]
    if later:
        raise StoreError(
            f"the label database {db_path} comes from another (newer or older) version of allblast: it says "
            f"schema {version} but holds tables of a later one ({', '.join(later)}); open it with the allblast "
            "that wrote it, or move it aside (rename it) and import your last exported labels CSV"
        )


class Database:
    """One SQLite connection behind a lock: write transactions, queries, errors as StoreError."""

    def __init__(self, db_path: Path, conn: sqlite3.Connection, timeout: float, *, read_only: bool = False):
        self.db_path = db_path
        self.timeout = timeout
        self.read_only = read_only
        self._conn: sqlite3.Connection | None = conn
        self._lock = threading.RLock()

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"the label store {self.db_path} is closed")
        return self._conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE); sqlite errors become StoreError."""
        if self.read_only:
            raise StoreError(f"the label database {self.db_path} is in a folder you cannot write: its labels are "
                             "shown, but changes cannot be saved there; continue in a copy in your user data "
                             "folder (the app offers it; allblast-engine: --db NEW.sqlite)")
        with self._lock:
            while True:
                conn = self.conn
                try:
                    conn.execute("BEGIN IMMEDIATE")
                except sqlite3.Error as exc:
                    raise translate_error(exc, self.db_path, self.timeout) from exc
                if self._ready(conn):
                    break
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                if isinstance(exc, sqlite3.Error):
                    raise translate_error(exc, self.db_path, self.timeout) from exc
                raise

    def _ready(self, conn: sqlite3.Connection) -> bool:
        """Just after BEGIN IMMEDIATE: True to go on; False when the hook ended that transaction
        and changed `conn` (a pending label store moved beside the images): begin again there."""
        return True

    def query(self, sql: str, params: tuple | list = ()) -> list[tuple]:
        with self._lock:
            try:
                return self.conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise translate_error(exc, self.db_path, self.timeout) from exc

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.execute("PRAGMA optimize")
                except sqlite3.Error:
                    pass
                self._conn.close()
                self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
