"""Opening a data set folder off the GUI thread, and owning the open one.

`open_dataset` decodes every file on a first open (minutes for 15,000 cells), so it runs in a
worker together with building the grid rows; the GUI thread only receives the finished
`LoadedDataset`. Opening another folder while one is loading makes the first load stale: its
result is dropped and its label store closed. While a folder is open this window is an entry of
its lock (engine.workspace.lock), as a command of `allblast-engine` that writes labels is; the
other holders, windows and commands alike, are in `others`.
"""
from __future__ import annotations

import gc
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from engine.labels.classes import ClassSet
from engine.labels.location import db_path_in
from engine.workspace.lock import describe_holders, release_lock, take_lock

from ..cells.rows import CellRow, rows_from_scan
from ..workers import TaskRunner

LOAD_KEY = "open-dataset"
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
    from engine.workspace.predict_store import active_predictions

    from ..cells.predictions import apply_predictions

    try:
        result = active_predictions(store)
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
