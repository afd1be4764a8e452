"""The label database's errors: `StoreError`, and SQLite's errors said as what to do."""
from __future__ import annotations

import sqlite3
from pathlib import Path

from ..utils.files import disk_full_message


class StoreError(RuntimeError):
    """The label database (or a file written from it, such as an export) cannot be used or
    written; the message says why and what to do."""


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


__all__ = ["StoreError", "translate_error"]
