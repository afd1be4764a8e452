"""Opening a label database: a connection (WAL, full sync, the schema migrated), a read-only one
that never writes (a read-only folder's database, its -wal pages included), a copy seeded from
another database, and `Database`: one connection behind a lock, its write transactions, its errors
as `StoreError`.
"""
from __future__ import annotations

import logging
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import StoreError, translate_error
from .schema import SCHEMA_VERSION, migrate
from .stamps import now_utc

log = logging.getLogger(__name__)


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
        migrate(conn, db_path, data_root)
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


__all__ = ["Database", "connect", "seed_copy"]
