"""Opening a data set folder off the GUI thread, and owning the open one.

`open_dataset` decodes every file on a first open (minutes for 15,000 cells), so it runs in a
worker together with building the grid rows; the GUI thread only receives the finished
`LoadedDataset`. Opening another folder while one is loading makes the first load stale: its
result is dropped and its label store closed.
"""
from __future__ import annotations

import gc
import getpass
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from engine.labels.classes import ClassSet
from engine.labels.db import db_path_in
from engine.utils.process import marker_alive, process_marker, this_host
from ..models.cell_rows import CellRow, rows_from_scan
from ..workers import TaskRunner

LOAD_KEY = "open-dataset"
LARGE_FOLDER = 20_000  # files: more than this and the window asks before indexing
log = logging.getLogger(__name__)


@dataclass
class LoadedDataset:
    root: Path
    project: object  # engine.index.Project
    rows: list[CellRow]
    classes: ClassSet  # names in order (a Sequence[str]), with number keys and colours
    patients: list[str]
    problems: list[tuple[str, str]] = field(default_factory=list)
    predictions: object = None  # engine.labels.predictions.ModelRecord of the predictions on the rows

    @property
    def store(self):
        return self.project.store


def db_path_for(root: Path, db_dir: Path | None) -> Path | None:
    """Database file for `root` inside `db_dir` (tests, demos, read-only shares); None = store default."""
    return None if db_dir is None else db_path_in(Path(db_dir), root)


def _system_folders() -> set[Path]:
    """Folders that hold a system or a user's whole home, never a data set of cells."""
    names = ["/", "/usr", "/etc", "/bin", "/sbin", "/lib", "/var", "/opt", "/proc", "/sys", "/dev", "/boot",
             "/home", "/Users", "/System", "/Library", "/Applications", "/Volumes", "/private", "/tmp"]
    if sys.platform == "win32":
        drive = os.environ.get("SystemDrive", "C:") + "\\"
        names += [drive, os.environ.get("SystemRoot", drive + "Windows"), drive + "Program Files",
                  drive + "Program Files (x86)", drive + "ProgramData", drive + "Users"]
    out = set()
    for name in [*names, str(Path.home())]:
        try:
            out.add(Path(name).resolve())
        except OSError:
            pass
    return out


def count_files(root: Path, limit: int | None = None) -> int:
    """Files under `root` (hidden folders and links to folders skipped), counting stops above `limit`."""
    limit = LARGE_FOLDER if limit is None else limit
    count, todo = 0, [root]
    while todo and count <= limit:
        try:
            with os.scandir(todo.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            if not entry.name.startswith("."):
                                todo.append(entry.path)
                        else:
                            count += 1
                    except OSError:
                        continue
                    if count > limit:
                        break
        except OSError:
            continue
    return count


def folder_concern(root: Path, limit: int | None = None) -> str | None:
    """Why opening `root` deserves a question first (a system or home folder, more than `limit`
    files), or None. Cheap: the count stops at the limit."""
    limit = LARGE_FOLDER if limit is None else limit
    try:
        resolved = Path(root).expanduser().resolve()
    except OSError:
        return None
    if resolved in _system_folders() or resolved.parent == resolved:
        return (f"{resolved} looks like a system or home folder, not a folder of cell images. Indexing it "
                "reads every image file below it and can take very long.")
    if count_files(resolved, limit) > limit:
        return (f"{resolved} holds more than {limit:,} files. Indexing reads every image once and can take "
                "a long time.")
    return None


# -- who else has the folder open ---------------------------------------------------------------
LOCK_NAME = "lock.json"


def _holder(token: str) -> dict:
    try:
        user = getpass.getuser()
    except Exception:  # no user name in the environment
        user = "unknown"
    return {"user": user, **process_marker(), "window": token,
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _holders_at(path: Path, token: str) -> list[dict]:
    """The live holders recorded in `path` other than `token` (a dead process on this host is
    stale; one on another host cannot be checked and counts)."""
    try:
        holders = json.loads(path.read_text(encoding="utf-8"))
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
    home = getattr(store, "home", None)
    if home is not None:
        dirs.append(Path(home).parent)
    return dirs


def take_lock(store, token: str) -> tuple[Path | None, list[dict]]:
    """Record this window as a holder of the store's data set (`lock.json` beside its database; a
    read-only folder is left as it is). Returns (the lock file written or None, the other live holders)."""
    others = [h for d in lock_dirs(store) for h in _holders_at(d / LOCK_NAME, token)]
    if store.read_only:
        return None, others
    path = Path(store.db_path).parent / LOCK_NAME
    try:
        _write_locks(path, [*_holders_at(path, token), _holder(token)])
    except OSError as exc:
        log.info("no lock written at %s: %s", path, exc)
        return None, others
    return path, others


def release_lock(path: Path | None, token: str) -> None:
    """Remove this window's entry from `path` (the file goes once nobody holds it)."""
    if path is None or not path.is_file():
        return
    try:
        _write_locks(path, _holders_at(path, token))
    except OSError as exc:
        log.info("lock %s not released: %s", path, exc)


def _write_locks(path: Path, holders: list[dict]) -> None:
    from engine.utils.files import atomic_write_text

    if holders:
        atomic_write_text(path, json.dumps(holders, indent=1))
    else:
        path.unlink(missing_ok=True)


def describe_holders(holders: list[dict]) -> str:
    return "; ".join(f"{h.get('user', '?')} on host {h.get('host', '?')} (process {h.get('pid')}) since "
                     f"{h.get('since', '?')}" for h in holders)


def load_dataset(root: Path, labels: Path | None, db_path: Path | None, progress=None) -> LoadedDataset:
    """Runs on a pool thread: scan + store + rows. Never touches Qt objects."""
    from engine.labels.project import open_dataset  # imported here: the first open is the slow path anyway

    project = open_dataset(root, labels, progress=progress, db_path=db_path)
    try:
        current = {p: s.current for p, s in project.store.states().items()}
        rows = rows_from_scan(project.scan, current)
        for row in rows:
            row.name_key()  # natural-sort keys are cached on the row: build them here, not in the GUI
        # The data set's class set (engine.labels.classes): stable number keys, stored colours.
        classes = project.classes
        problems = [(p.path, p.reason) for p in project.scan.problems]
        shown = _stored_predictions(project.store, rows)
        return LoadedDataset(project.root, project, rows, classes, project.scan.patients, problems, shown)
    except BaseException:
        project.close()
        raise


def _stored_predictions(store, rows):
    """Put the active model's stored predictions on the rows (reopening shows them at once)."""
    from ..models.predictions import apply_predictions, load_stored
    from ..models.runs_catalog import RunsCatalog

    try:
        result = load_stored(store, RunsCatalog(store).active_model_file())
    except OSError as exc:  # an unreadable model file: open the folder without its predictions
        log.warning("stored predictions not loaded: %s", exc)
        return None
    if result is None:
        return None
    apply_predictions({r.path: r for r in rows}, result.model.classes, result.paths, result.probs)
    return result.model


class DatasetController(QObject):
    """Opens folders and holds the current `LoadedDataset` (closing the previous store)."""

    loading = Signal(str)  # folder
    progress = Signal(int, int)  # files checked, files total
    opened = Signal(object)  # LoadedDataset
    failed = Signal(str, str)  # folder, message
    warned = Signal(str)  # a warning for the user from opening (engine.utils.logs.warn)
    cancelled = Signal(str)  # folder: the user stopped indexing it (nothing was kept)

    def __init__(self, runner: TaskRunner, *, db_dir: Path | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self._runner = runner
        self._db_dir = Path(db_dir) if db_dir else None
        self.current: LoadedDataset | None = None
        self.others: list[dict] = []  # other windows / programs that have the open folder open too
        self._token = f"{os.getpid()}-{id(self):x}"
        self._lock: Path | None = None
        self._worker = None
        self._loading_root: str | None = None

    @property
    def busy(self) -> bool:
        return self._runner.busy(LOAD_KEY)

    def open(self, folder: str | os.PathLike, labels: str | os.PathLike | None = None) -> None:
        root = Path(folder).expanduser()
        try:
            root = root.resolve()
        except OSError:
            pass
        if not root.is_dir():
            why = " (it does not exist)" if not root.exists() else ", or it cannot be read"
            self.failed.emit(str(root), f"{root} is not a folder{why}. Choose a folder of cell images "
                             "(File ▸ Open Folder…).")
            return
        worker = self._runner.run(
            load_dataset, root, Path(labels) if labels else None, db_path_for(root, self._db_dir),
            key=LOAD_KEY, progress_arg="progress",
        )
        worker.progress.connect(self._on_progress)
        worker.result.connect(self._on_loaded)
        worker.error.connect(lambda exc, r=str(root): self.failed.emit(r, _describe(exc)))
        worker.warned.connect(self.warned)
        worker.stale_result.connect(lambda loaded, w=worker: self._drop_stale(loaded, w))
        self._worker, self._loading_root = worker, str(root)
        self.loading.emit(str(root))

    def cancel(self) -> bool:
        """Stop indexing the folder being opened; a first open leaves nothing behind (no database,
        no half index: `open_dataset` removes what it made). False when nothing was loading."""
        worker = self._worker
        if worker is None or worker.is_done or not self.busy:
            return False
        worker.cancelled_by_user = True
        worker.discard()
        self._worker = None
        log.info("opening %s cancelled", self._loading_root)
        self.cancelled.emit(self._loading_root or "")
        return True

    def _drop_stale(self, loaded: LoadedDataset, worker) -> None:
        if getattr(worker, "cancelled_by_user", False):
            loaded.store.discard_pending()  # finished just as it was cancelled: keep nothing
        else:
            loaded.project.close()

    def _on_progress(self, value) -> None:
        if isinstance(value, tuple) and len(value) == 2:
            self.progress.emit(int(value[0]), int(value[1]))

    def _on_loaded(self, loaded: LoadedDataset) -> None:
        log.info("opened %s: %d cells, %d unreadable, labels in %s", loaded.root, len(loaded.rows),
                 len(loaded.problems), loaded.store.db_path)
        self.close()
        self._worker = None
        self.current = loaded
        self._lock, self.others = take_lock(loaded.store, self._token)
        if self.others:
            log.info("%s is also open by %s", loaded.root, describe_holders(self.others))
        self.opened.emit(loaded)
        _settle_heap()

    def close(self) -> None:
        release_lock(self._lock, self._token)
        self._lock, self.others = None, []
        if self.current is not None:
            self.current.project.close()
            self.current = None


def _settle_heap() -> None:
    """Exempt the freshly loaded data set from the cyclic garbage collector.

    A 15,000-cell data set is ~100k long-lived objects; each full collection walked them all and
    stalled the GUI for 20-40 ms while scrolling. Frozen objects are still freed by reference
    counting when the next folder replaces them (rows hold no reference cycles). Only the young
    generations are collected first: a full collection (unfreezing everything, torch's objects
    included once it is loaded) took 350 ms, in front of the first paint.
    """
    gc.collect(1)
    gc.freeze()


def _describe(exc: BaseException) -> str:
    """A message for the user: engine errors already say what to do; others get their type."""
    from engine.labels.store import StoreError

    if isinstance(exc, (StoreError, OSError, ValueError)):
        return str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"
