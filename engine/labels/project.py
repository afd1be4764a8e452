"""Opening a data set: scan it (reusing the cached index) and bring the label store up to date.

The `files` table of the label database remembers what decoding each file told us (`FileCheck`).
Reopening passes it to `engine.data.scan.scan(known=...)`, so files whose size and mtime are
unchanged are not decoded again: reopening 15,000 cells costs a directory walk, not 15,000 decodes.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..data.cells import FileCheck, ScanResult
from ..data.scan import rescan, scan
from .classes import ClassSet, class_set
from .location import BESIDE_DIR, DB_NAME, find_db, user_db_path
from .store import LabelStore, StoreError

log = logging.getLogger(__name__)
_FILE_COLUMNS = "path, size, mtime_ns, digest, problem, width, height"


@dataclass
class Project:
    root: Path
    scan: ScanResult
    store: LabelStore
    added: list[str] = field(default_factory=list)  # files new since the previous open
    removed: list[str] = field(default_factory=list)  # files gone since the previous open
    changed: list[str] = field(default_factory=list)  # same path, different content
    first_open: bool = False  # no index existed: every file counts as added
    labels_file: Path | None = None  # the labels CSV used for original labels, if any
    classes: ClassSet = field(default_factory=ClassSet)  # the class set (folder's classes added)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Project":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_checks(store: LabelStore) -> dict[str, FileCheck]:
    return {r[0]: FileCheck(*r[1:]) for r in store.query(f"SELECT {_FILE_COLUMNS} FROM files")}


def save_checks(store: LabelStore, old: Mapping[str, FileCheck], new: Mapping[str, FileCheck]) -> None:
    """Write only what differs from the stored index, in one transaction."""
    gone = [(p,) for p in old.keys() - new.keys()]
    fresh = [(p, c.size, c.mtime_ns, c.digest, c.problem, c.width, c.height)
             for p, c in new.items() if old.get(p) != c]
    if not gone and not fresh:
        return
    with store.transaction() as conn:
        conn.executemany("DELETE FROM files WHERE path = ?", gone)
        conn.executemany(f"INSERT OR REPLACE INTO files({_FILE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", fresh)


def established(store: LabelStore) -> list[str]:
    """The cells a scan keeps when a file with the same content appears (`scan(prefer=...)`):
    labelled cells first, then every other present cell, oldest first."""
    return [r[0] for r in store.query("SELECT c.path FROM cells c LEFT JOIN labels l ON l.path = c.path "
                                      "WHERE c.present = 1 ORDER BY l.path IS NULL, c.rowid")]


def _labels_file(store: LabelStore, labels) -> Path | None:
    """The explicit labels CSV, remembered so a reopen without one keeps the same original labels."""
    if labels is not None:
        path = Path(labels).expanduser().resolve()
        if store.read_only:
            return path  # used for this open; remembered once the labels live in a writable store
        with store.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('labels_file', ?)", (str(path),))
        return path
    row = store.query("SELECT value FROM meta WHERE key = 'labels_file'")
    if row and Path(row[0][0]).is_file():
        return Path(row[0][0])
    return None


def open_dataset(
    root: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    *,
    patient_regex: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    db_path: str | os.PathLike | None = None,
) -> Project:
    """Scan `root` with the cached index, update the index and the label store, report what moved.

    `labels` names a labels CSV for the original labels; when omitted, the one given at an earlier
    open is used again (if it still exists). A writable folder without a label database gets one
    (`.allblast/project.sqlite`) only with its first label; until then the index is kept in the
    user cache folder. Raises `StoreError` when the database is unusable,
    `NotADirectoryError` / `LabelFileError` for a bad folder or labels file.
    """
    started = time.perf_counter()
    # Nothing is written into the folder until its first label: a folder only opened or browsed
    # keeps its index in the user cache folder (LabelStore.pending).
    store = LabelStore.open(root, db_path=db_path, defer=True)
    try:
        labels_file = _labels_file(store, labels)
        known = load_checks(store)
        result = scan(store.data_root, labels_file, patient_regex=patient_regex, known=known, progress=progress,
                      prefer=established(store))
        if not store.read_only:  # a read-only store is shown as it is; the scan fills in what it lacks
            save_checks(store, known, result.checks)
            store.sync_cells(result.cells)
        classes = class_set(store, result.classes)  # the folder's own classes join the set (stable keys)
    except BaseException:  # cancelled or failed: a first open leaves no half index behind
        store.discard_pending()
        raise
    new = result.checks
    added = [p for p in new if p not in known]
    removed = sorted(p for p in known if p not in new)
    changed = [p for p in new if p in known
               and (known[p].digest, known[p].problem) != (new[p].digest, new[p].problem)]
    log.info("opened %s in %.2f s: %d cells, %d problems, %d added, %d removed, %d changed (labels: %s)",
             store.data_root, time.perf_counter() - started, len(result.cells), len(result.problems),
             len(added), len(removed), len(changed), store.db_path)
    return Project(store.data_root, result, store, added, removed, changed, first_open=not known,
                   labels_file=labels_file, classes=classes)


def apply_expert_labels(result: ScanResult, states) -> tuple[ScanResult, int]:
    """The scan with every cell's label replaced by the expert's current label (`states`: path ->
    LabelState, from `LabelStore.states()`). Returns (new scan, cells whose label differs).

    Cells the expert marked unsure or cleared keep that label; splits leave them out of training.
    """
    from dataclasses import replace

    cells, changed = [], 0
    for cell in result.cells:
        state = states.get(cell.path)
        if state is not None and state.current != cell.label:
            cell = replace(cell, label=state.current, label_source="expert")
            changed += 1
        cells.append(cell)
    return replace(result, cells=cells), changed


def with_expert_labels(result: ScanResult, *, db_path: str | os.PathLike | None = None) -> tuple[ScanResult, int]:
    """`apply_expert_labels` with the states read from the data set's label database, which must
    exist already (it is looked up, never created)."""
    db = Path(db_path).expanduser() if db_path else find_db(result.root)
    if db is None or not db.is_file():
        where = db or f"{result.root / BESIDE_DIR / DB_NAME} and {user_db_path(result.root)}"
        raise StoreError(f"no expert labels for {result.root} yet (looked for {where}): label cells in "
                         "allblast or with `allblast-engine labels`, or leave out --expert-labels")
    # The folder's own database is opened where it lives (read-only when this user cannot write the
    # folder, or its user-data copy when one was made); any other is opened as given.
    own = not db_path and db == result.root / BESIDE_DIR / DB_NAME
    with LabelStore.open(result.root, db_path=None if own else db) as store:
        keep = established(store)
        rank = {p: i for i, p in enumerate(keep)}
        # A copy that sorts before a labelled cell was kept by this scan: scan again keeping the cell.
        if any(rank.get(dup, len(rank)) < rank.get(kept, len(rank)) for dup, kept in result.duplicates.items()):
            result = rescan(result, keep)
        return apply_expert_labels(result, store.states())
