"""Who has a data set's folder open: `lock.json` beside its label database.

Each window of the app that has a folder open is an entry of the lock file beside the folder's
label database (user, host, pid and the process's start time, since when, a token per window); a
second window is told who else has the folder open, and both may label (SQLite keeps every change
safe). A command of `allblast-engine` that writes labels holds the folder too, for as long as it
runs (`held`): it refuses to start while the app has the folder open, and says who has it where;
the app shows a command's entry as it shows another window's. Commands do not refuse each other
(several `labels set` at once are safe, and each is kept).

An entry of a process that is gone (killed, crashed) is stale and ignored; the question is asked
of `engine.utils.process`, the one liveness check. An entry of another computer cannot be checked
and counts. A read-only folder gets no entry (nothing can be written there), but its entries are read.
"""
from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..labels.location import locate_db, pending_db_path
from ..labels.stamps import default_annotator
from ..utils.files import atomic_write_text
from ..utils.process import marker_alive, process_marker, this_host

log = logging.getLogger(__name__)
LOCK_NAME = "lock.json"
APP = "allblast"  # what holds the folder when an entry names no program: a window of the app


class FolderHeld(RuntimeError):
    """The app has the data set's folder open; the message (one line) says who, where and since when."""

    def __init__(self, root: str | os.PathLike, holders: list[dict[str, Any]]):
        self.root, self.holders = Path(root), list(holders)
        super().__init__(holders_message(root, holders))


def holder(token: str, program: str | None = None) -> dict[str, Any]:
    """This process as an entry of a lock file: `token` tells its entries apart (one per window);
    `program` names a command (None: a window of the app)."""
    entry: dict[str, Any] = {"user": default_annotator(), **process_marker(), "window": token,
                             "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if program:
        entry["program"] = program
    return entry


def holders_at(path: Path, token: str) -> list[dict[str, Any]]:
    """The live holders recorded in `path` other than `token` (a dead process on this host is
    stale; one on another host cannot be checked and counts)."""
    try:
        holders = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    out = []
    for h in holders if isinstance(holders, list) else []:
        if not isinstance(h, dict) or not isinstance(h.get("pid"), int):
            continue
        if h["pid"] == os.getpid() and h.get("host") == this_host():
            if h.get("window") == token:
                continue
        elif marker_alive(h) is False:
            continue
        out.append(h)
    return out


def lock_dirs(store) -> list[Path]:
    """Where the locks of the store's data set are: beside its database (the folder's own, seen
    from other hosts too) and, while it has none yet, beside the pending index."""
    dirs = [Path(store.db_path).parent]
    if store.home is not None:
        dirs.append(Path(store.home).parent)
    return dirs


def take_lock(store, token: str, *, program: str | None = None) -> tuple[Path | None, list[dict[str, Any]]]:
    """Record this window (or `program`) as a holder of the store's data set (`lock.json` beside
    its database; a read-only folder is left as it is). Returns (the lock file written or None,
    the other live holders)."""
    others = [h for d in lock_dirs(store) for h in holders_at(d / LOCK_NAME, token)]
    if store.read_only:
        return None, others
    return _add(Path(store.db_path).parent / LOCK_NAME, token, program), others


def release_lock(path: Path | None, token: str) -> None:
    """Remove this holder's entry from `path` (the file goes once nobody holds it)."""
    if path is None or not path.is_file():
        return
    try:
        write_locks(path, holders_at(path, token))
    except OSError as exc:
        log.info("lock %s not released: %s", path, exc)


def write_locks(path: Path, holders: list[dict[str, Any]]) -> None:
    if holders:
        atomic_write_text(path, json.dumps(holders, indent=1))
    else:
        path.unlink(missing_ok=True)


def _add(path: Path, token: str, program: str | None) -> Path | None:
    try:
        write_locks(path, [*holders_at(path, token), holder(token, program)])
    except OSError as exc:
        log.info("no lock written at %s: %s", path, exc)
        return None
    return path


def describe_holders(holders: list[dict[str, Any]]) -> str:
    """Who holds a folder, for the app's "also open by ..." (a command is named after its process)."""
    return "; ".join(f"{h.get('user', '?')} on host {h.get('host', '?')} (process {h.get('pid')}"
                     f"{', ' + h['program'] if h.get('program') else ''}) since {h.get('since', '?')}"
                     for h in holders)


def holders_message(root: str | os.PathLike, holders: list[dict[str, Any]]) -> str:
    """The one line a command that may not write says: where the folder is open, by whom, since when."""
    where = " and in ".join(f"{h.get('program') or APP} by {h.get('user', '?')} on {h.get('host', '?')} "
                            f"(pid {h.get('pid')}) since {h.get('since', '?')}" for h in holders)
    return f"{root} is open in {where}; close it there first, then try again"


def folder_lock_dirs(root: str | os.PathLike, db_path: str | os.PathLike | None = None) -> list[Path]:
    """Where the locks of the data set `root` are, found without opening (or creating) anything:
    beside the database it uses (`db_path` when given), and beside its pending index."""
    root = Path(root).expanduser().resolve()
    if db_path is not None:
        return [Path(db_path).expanduser().resolve().parent]
    located, _ = locate_db(root)
    return [located.parent, pending_db_path(root).parent]


def is_app(entry: dict[str, Any]) -> bool:
    """Whether a holder is a window of the app (a command names its program)."""
    return not entry.get("program")


@contextmanager
def held(root: str | os.PathLike, *, program: str, db_path: str | os.PathLike | None = None) -> Iterator[Path | None]:
    """Hold the data set's folder while a command reads or writes its labels. Raises `FolderHeld`
    (before anything is opened) when a live window of the app holds it; else records this command
    in the lock file beside the database that exists (nothing is created for it), removed on
    leaving. Yields the lock file written, or None (no database folder yet, or a read-only one)."""
    dirs = folder_lock_dirs(root, db_path)
    token = f"{program}-{uuid.uuid4().hex[:8]}"
    app = [h for d in dirs for h in holders_at(d / LOCK_NAME, token) if is_app(h)]
    if app:
        raise FolderHeld(Path(root).expanduser().resolve(), app)
    path = next((_add(d / LOCK_NAME, token, program) for d in dirs if d.is_dir()), None)
    try:
        yield path
    finally:
        release_lock(path, token)


__all__ = ["APP", "LOCK_NAME", "FolderHeld", "describe_holders", "folder_lock_dirs", "held", "holder", "holders_at",
           "holders_message", "is_app", "lock_dirs", "release_lock", "take_lock", "write_locks"]
