"""Opening a data set folder off the GUI thread, and owning the open one.

`open_dataset` decodes every file on a first open (minutes for 15,000 cells), so it runs in a
worker together with building the grid rows; the GUI thread only receives the finished
`LoadedDataset`. Opening another folder while one is loading makes the first load stale: its
result is dropped and its label store closed.
"""
from __future__ import annotations

import gc
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from engine.data.cells import UNSURE
from engine.labels.db import db_path_in
from ..models.cell_rows import CellRow, rows_from_scan
from ..workers import TaskRunner

LOAD_KEY = "open-dataset"
log = logging.getLogger(__name__)


@dataclass
class LoadedDataset:
    root: Path
    project: object  # engine.index.Project
    rows: list[CellRow]
    classes: list[str]
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
        # Number keys follow this order; labels the store knows beyond the scan's classes (e.g.
        # from an imported CSV) still get a key.
        extra = {r.current for r in rows if r.current not in (None, UNSURE)}
        classes = sorted(set(project.scan.classes) | extra)
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

    def __init__(self, runner: TaskRunner, *, db_dir: Path | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self._runner = runner
        self._db_dir = Path(db_dir) if db_dir else None
        self.current: LoadedDataset | None = None

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
            self.failed.emit(str(root), f"{root} is not a folder, or it cannot be read.")
            return
        worker = self._runner.run(
            load_dataset, root, Path(labels) if labels else None, db_path_for(root, self._db_dir),
            key=LOAD_KEY, progress_arg="progress",
        )
        worker.progress.connect(self._on_progress)
        worker.result.connect(self._on_loaded)
        worker.error.connect(lambda exc, r=str(root): self.failed.emit(r, _describe(exc)))
        worker.warned.connect(self.warned)
        worker.stale_result.connect(lambda loaded: loaded.project.close())
        self.loading.emit(str(root))

    def _on_progress(self, value) -> None:
        if isinstance(value, tuple) and len(value) == 2:
            self.progress.emit(int(value[0]), int(value[1]))

    def _on_loaded(self, loaded: LoadedDataset) -> None:
        log.info("opened %s: %d cells, %d unreadable, labels in %s", loaded.root, len(loaded.rows),
                 len(loaded.problems), loaded.store.db_path)
        self.close()
        self.current = loaded
        self.opened.emit(loaded)
        _settle_heap()

    def close(self) -> None:
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
