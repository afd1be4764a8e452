"""Where a data set's label database lives: beside the images, in the user data folder, or in a
read-only folder's own `.allblast/` (then opened read-only); and where a folder's index waits
until its first label (the user cache). Nothing here opens the database for writing: looking a
database up creates nothing (a lookup must never leave a `.allblast/` folder in a data folder).
"""
from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from ..utils.files import folder_writable
from ..utils.places import user_cache_dir, user_data_dir

DB_NAME = "project.sqlite"
BESIDE_DIR = ".allblast"  # hidden: the scan never enters it


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
    return db_path_in(user_data_dir() / "projects", data_root)


def pending_db_path(data_root: Path) -> Path:
    """Where a writable folder's index lives until its first label (nothing is written into a data
    folder that was only opened or browsed): the user cache folder, keyed like `db_path_in`."""
    return db_path_in(user_cache_dir() / "pending", data_root)


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
    if folder_writable(probe):  # an existing folder: probed with a temporary file, removed at once
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


def find_db(data_root: Path) -> Path | None:
    """The existing label database of `data_root`, or None; creates nothing (a lookup must never
    leave a `.allblast/` folder behind in a data folder)."""
    for path in (data_root / BESIDE_DIR / DB_NAME, user_db_path(data_root)):
        if path.is_file():
            return path
    return None


__all__ = ["BESIDE_DIR", "DB_NAME", "READ_ONLY", "db_key", "db_path_in", "find_db", "locate_db", "pending_db_path",
           "remove_db_files", "seeded_from", "user_db_path"]
