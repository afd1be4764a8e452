"""Plain-Python rows behind the cell grid, and the filter that picks which of them are shown.

No Qt here: the grid model (`models.cell_list_model`) is a thin adapter over a `list[CellRow]` plus the
indices `apply_filter` returns, so filtering and sorting are testable and fast without a GUI.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from engine.data.cells import UNSURE
from engine.labels.predictions import disagrees
from engine.utils.natsort import natural_key

SORT_KEYS = ("name", "patient", "label", "margin", "entropy", "listed")


@dataclass(slots=True)
class CellRow:
    """One cell as the grid shows it. `path` is relative to the data root with `/` (Cell.path).

    Mutable on purpose: relabelling changes `current` in place, so the grid keeps its rows and
    selection.
    """

    path: str
    name: str
    patient: str | None
    original: str | None  # label from the data set (folder / CSV); None = unlabeled
    current: str | None  # label after review; UNSURE, a class name, or None
    problem: str | None = None  # why the file cannot be shown (corrupt, unreadable, ...)
    width: int = 0
    height: int = 0
    mtime_ns: int = 0
    # The shown model's output (cells.predictions sets them): probabilities in `pred_classes`
    # order, and what filters and sorts read from them.
    probs: Any = None  # np.ndarray (C,) float32, or None: no prediction
    pred_classes: tuple[str, ...] = ()
    pred: str | None = None
    pred_p: float = math.nan  # probability of `pred`
    margin: float = math.nan  # top-1 minus top-2: small = doubtful
    entropy: float = math.nan
    # How the expert reviewed the current label (engine.cases.review: set, accepted, confirmed,
    # unsure + note), or None: not reviewed yet. The cases feature keeps it.
    reviewed: str | None = None
    # Sort/search keys, computed once on first use: 15,000 regex splits per re-sort would
    # cost more than the sort itself.
    _name_key: str | None = field(default=None, init=False, repr=False, compare=False)
    _patient_key: str | None = field(default=None, init=False, repr=False, compare=False)
    _haystack: str | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def changed(self) -> bool:
        return self.current != self.original

    @property
    def disagrees(self) -> bool:
        """The model's class differs from the expert's current label (a class the model knows):
        the engine's one rule (engine.labels.predictions.disagrees)."""
        return self.pred is not None and disagrees(self.current, self.pred, self.pred_classes)

    @classmethod
    def from_cell(cls, cell: Any, current: Any = ...) -> CellRow:
        """Row for an `engine.cells.Cell`; `current` defaults to the cell's original label."""
        return cls(
            path=cell.path,
            name=cell.path.rpartition("/")[2],  # PurePosixPath(...).name, without pathlib's cost
            patient=cell.patient,
            original=cell.label,
            current=cell.label if current is ... else current,
            width=cell.width,
            height=cell.height,
            mtime_ns=cell.mtime_ns,
        )

    @classmethod
    def from_problem(cls, path: str, reason: str, mtime_ns: int = 0) -> CellRow:
        """Row for a file the scan could not decode, so the reviewer sees it (with the reason)."""
        return cls(path, PurePosixPath(path).name if path.endswith("/") else path.rpartition("/")[2], None, None, None, problem=reason, mtime_ns=mtime_ns)

    def name_key(self) -> str:
        """Natural name, then the path to break ties between equal names in other folders."""
        if self._name_key is None:
            self._name_key = natural_key(self.name) + "\0" + self.path
        return self._name_key

    def patient_key(self) -> str:
        """Natural patient id; cells without one sort after all patients."""
        if self._patient_key is None:
            self._patient_key = "1" if self.patient is None else "0" + natural_key(self.patient)
        return self._patient_key

    def haystack(self) -> str:
        if self._haystack is None:
            self._haystack = self.path.lower()  # the path ends with the name
        return self._haystack


def rows_from_scan(
    scan: Any,
    current: Mapping[str, str | None] | None = None,
    *,
    include_problems: bool = True,
) -> list[CellRow]:
    """Rows for a `ScanResult`; `current` maps relpath -> reviewed label (e.g. from the store).

    Files that failed to decode become problem rows (placeholder tiles with the reason), except
    duplicates: those decode fine and are skipped on purpose by the scan.
    """
    current = current or {}
    # Inlined CellRow.from_cell: this runs for every cell on each open (15,000+ rows).
    rows = []
    append = rows.append
    for c in scan.cells:
        path, label = c.path, c.label
        append(CellRow(path, path.rpartition("/")[2], c.patient, label,
                       current[path] if path in current else label, None, c.width, c.height, c.mtime_ns))
    if include_problems:
        checks = getattr(scan, "checks", {}) or {}
        for p in scan.problems:
            if p.reason.startswith("duplicate content"):
                continue
            check = checks.get(p.path)
            rows.append(CellRow.from_problem(p.path, p.reason, check.mtime_ns if check else 0))
    return rows


@dataclass(frozen=True)
class CellFilter:
    """What the grid shows. Criteria combine with AND, except `unlabeled_only` and `unsure_only`,
    which combine with OR when both are set ("cells that still need a decision")."""

    classes: frozenset[str] | None = None  # current label in this set (None = any label)
    changed_only: bool = False
    unlabeled_only: bool = False
    unsure_only: bool = False
    patients: frozenset[str] | None = None  # patient in this set; cells without one excluded
    text: str = ""  # case-insensitive substring of the relative path (includes the name)
    disagree_only: bool = False  # the model's class differs from the current label
    predicted: frozenset[str] | None = None  # the model's class in this set
    prob_range: tuple[float, float] | None = None  # probability of the model's class within [lo, hi]
    # A list of cells asked for by name ("Suggested (24)", "Similar to X"): only these, and with
    # sort "listed" in the list's order (the order to label them)
    listed: tuple[str, ...] | None = None
    list_name: str = ""
    sort: str = "name"  # name | patient | label | margin (most doubtful first) | entropy (highest first) | listed


def _label_key(label: str | None) -> str:
    # Classes alphabetically, then "unsure", then unlabeled: the cells needing work come last
    # together instead of being mixed into the class blocks.
    if label is None:
        return "2"
    if label == UNSURE:
        return "1"
    return "0" + label.lower()


def apply_filter(rows: Sequence[CellRow], flt: CellFilter) -> list[int]:
    """Indices into `rows` that pass `flt`, in display order (natural sort, ties by path)."""
    if flt.sort not in SORT_KEYS:
        raise ValueError(f"unknown sort {flt.sort!r}; expected one of {SORT_KEYS}")
    idx: Iterable[int] = range(len(rows))
    position: dict[str, int] = {}
    if flt.listed is not None:
        position = {p: i for i, p in enumerate(flt.listed)}
        idx = [i for i in idx if rows[i].path in position]
    # Each test narrows a plain list; one comprehension per active criterion keeps the common
    # case (one or two criteria) at a few milliseconds for 15,000 rows.
    if flt.classes is not None:
        classes = flt.classes
        idx = [i for i in idx if rows[i].current in classes]
    # An unreadable file has no label either, but it is counted (and shown) as unreadable.
    if flt.unlabeled_only and flt.unsure_only:
        idx = [i for i in idx if (rows[i].current is None and not rows[i].problem) or rows[i].current == UNSURE]
    elif flt.unlabeled_only:
        idx = [i for i in idx if rows[i].current is None and not rows[i].problem]
    elif flt.unsure_only:
        idx = [i for i in idx if rows[i].current == UNSURE]
    if flt.changed_only:
        idx = [i for i in idx if rows[i].current != rows[i].original]
    if flt.patients is not None:
        patients = flt.patients
        idx = [i for i in idx if rows[i].patient in patients]
    text = flt.text.strip().lower()
    if text:
        idx = [i for i in idx if text in rows[i].haystack()]
    if flt.disagree_only:
        idx = [i for i in idx if rows[i].disagrees]
    if flt.predicted is not None:
        predicted = flt.predicted
        idx = [i for i in idx if rows[i].pred in predicted]
    if flt.prob_range is not None:
        lo, hi = flt.prob_range
        idx = [i for i in idx if lo <= rows[i].pred_p <= hi]  # NaN (no prediction) fails both

    if flt.sort == "name":
        key = lambda i: rows[i].name_key()  # noqa: E731
    elif flt.sort == "patient":
        key = lambda i: (rows[i].patient_key(), rows[i].name_key())  # noqa: E731
    elif flt.sort == "margin":  # most doubtful first; cells without a prediction last
        key = lambda i: (_doubt_key(rows[i].margin), rows[i].name_key())  # noqa: E731
    elif flt.sort == "entropy":
        key = lambda i: (_doubt_key(-rows[i].entropy), rows[i].name_key())  # noqa: E731
    elif flt.sort == "listed":  # the list's own order; without a list, by name
        key = lambda i: (position.get(rows[i].path, 0), rows[i].name_key())  # noqa: E731
    else:
        key = lambda i: (_label_key(rows[i].current), rows[i].name_key())  # noqa: E731
    return sorted(idx, key=key)


def _doubt_key(value: float) -> tuple[int, float]:
    return (1, 0.0) if math.isnan(value) else (0, value)
