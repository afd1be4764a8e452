"""What a case report says: the differential (expert against model), what the review changed and
left open, which cells to show, and which model spoke. Plain data; rendering is elsewhere.

The same builder serves the CLI (cells from the label database) and the app (cells from the grid's
rows), so a report of the same folder says the same numbers whichever made it.
"""
from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..cases.wilson import MIN_COUNT, Fraction
from ..data.cells import UNSURE
from ..labels.predictions import disagrees
from ..utils.natsort import natural_key
from .model_info import ModelInfo

MONTAGE_PER_CLASS = 8
LIST_LIMIT = 40  # cells named one by one in a review list; the count is always complete


@dataclass(frozen=True)
class CaseCell:
    """One cell as the report sees it: labels, and the model's answer when it has one."""

    path: str
    patient: str | None
    original: str | None
    current: str | None  # the expert's label now: a class, UNSURE, or None (unlabeled)
    predicted: str | None = None
    probability: float | None = None
    margin: float | None = None
    model_classes: tuple[str, ...] | None = None  # the predicting model's classes (None: not known)

    @property
    def changed(self) -> bool:
        return self.current != self.original

    @property
    def disagrees(self) -> bool:
        return disagrees(self.current, self.predicted, self.model_classes)


@dataclass
class ClassCount:
    name: str
    expert: int
    expert_pct: float | None
    model: int | None
    model_pct: float | None


@dataclass
class MontageCell:
    path: str
    caption: str
    disagrees: bool


@dataclass(frozen=True)
class SignatureLine:
    """A signature block of a signed report: who, when, and what (the labels' digest)."""

    signer: str
    when: str  # '2024-05-01 14:03 UTC'
    digest: str  # sha256 of the case's cells and labels (engine.cases.digest)
    n_cells: int
    model: str | None  # the active model's sha256
    seq: int = 1
    required: int = 1


@dataclass(frozen=True)
class AmendmentLine:
    path: str
    old: str | None
    new: str | None
    reason: str
    annotator: str
    when: str


@dataclass
class CaseReport:
    title: str
    scope: str  # "folder", "patient 7", "selection of 12 cells"
    data_root: str
    reviewer: str
    date: str
    n_cells: int
    classes: list[str]
    counts: list[ClassCount]
    labelled: int  # cells with a class (not unsure, not unlabeled): the differential's denominator
    unsure: int
    unlabeled: int
    predicted: int  # cells with a model answer: the model column's denominator
    positive: str | None
    positive_line: str
    changed: list[CaseCell]
    unsure_cells: list[CaseCell]
    disagreements: list[CaseCell]
    montage: dict[str, list[MontageCell]]
    model: ModelInfo | None
    patients: list[str] = field(default_factory=list)
    list_limit: int = LIST_LIMIT
    counted: Fraction | None = None  # the positive class's cells of the cells counted (with a class)
    ci_line: str = ""  # its 95% Wilson interval, in words
    few_cells: str = ""  # the warning when fewer than MIN_COUNT cells were counted
    status: str = ""  # a case's sign-off status: signed, amended, awaiting 2nd signature ('' unsigned)
    status_line: str = ""
    signatures: list[SignatureLine] = field(default_factory=list)
    amendments: list[AmendmentLine] = field(default_factory=list)  # since the case was last signed


def _pct(n: int, total: int) -> float | None:
    return n / total if total else None


def _doubt(cell: CaseCell) -> float:
    return cell.margin if cell.margin is not None and not math.isnan(cell.margin) else math.inf


def build_case_report(cells: Sequence[CaseCell], classes: Sequence[str], *, data_root: str | Path,
                      scope: str = "folder", reviewer: str = "", positive: str | None = None,
                      model: ModelInfo | None = None, per_class: int = MONTAGE_PER_CLASS,
                      date: str | None = None) -> CaseReport:
    """The case report of `cells` (the folder, one patient, or a selection)."""
    classes = list(classes)
    extra = sorted({c.current for c in cells if c.current not in (None, UNSURE)} - set(classes), key=natural_key)
    classes += extra  # a label outside the class list is still counted, never dropped
    expert = Counter(c.current for c in cells)
    with_model = [c for c in cells if c.predicted is not None]
    model_counts = Counter(c.predicted for c in with_model)
    labelled = sum(expert[k] for k in classes)
    counts = [ClassCount(k, expert[k], _pct(expert[k], labelled),
                         model_counts[k] if with_model else None,
                         _pct(model_counts[k], len(with_model)) if with_model else None) for k in classes]
    if positive not in classes:
        positive = None
    line, ci_line, counted = "", "", None
    if positive is not None:
        row = next(c for c in counts if c.name == positive)
        line = f"{positive} fraction: expert {_fmt(row.expert_pct)} ({row.expert} of {labelled} labelled cells)"
        if with_model:
            line += f"; model {_fmt(row.model_pct)} ({row.model} of {len(with_model)} predicted cells)"
        counted = Fraction(row.expert, labelled)
        if labelled:
            low, high = counted.interval
            ci_line = (f"{positive}: {row.expert} of {labelled} cells counted, {counted.value:.1%} "
                       f"(95% confidence interval {low:.1%}–{high:.1%}, Wilson)")
    few = ""
    if labelled < MIN_COUNT:
        few = (f"Only {labelled} cells were counted (fewer than {MIN_COUNT}): the percentages are imprecise; "
               "read them with their confidence interval.")
    montage: dict[str, list[MontageCell]] = {}
    for k in classes:
        members = [c for c in cells if c.current == k]
        # doubtful first when the model has spoken, else in name order (a stable, checkable choice)
        members.sort(key=lambda c: (_doubt(c), natural_key(c.path)))
        montage[k] = [MontageCell(c.path, _caption(c), c.disagrees) for c in members[:per_class]]
    patients = sorted({c.patient for c in cells if c.patient is not None}, key=natural_key)
    return CaseReport(
        title="Case report", scope=scope, data_root=str(data_root), reviewer=reviewer,
        date=date or time.strftime("%Y-%m-%d %H:%M"), n_cells=len(cells), classes=classes, counts=counts,
        labelled=labelled, unsure=expert[UNSURE], unlabeled=expert[None], predicted=len(with_model),
        positive=positive, positive_line=line,
        changed=sorted((c for c in cells if c.changed), key=lambda c: natural_key(c.path)),
        unsure_cells=sorted((c for c in cells if c.current == UNSURE), key=lambda c: natural_key(c.path)),
        disagreements=sorted((c for c in cells if c.disagrees), key=lambda c: (_doubt(c), natural_key(c.path))),
        montage=montage, model=model, patients=patients, counted=counted, ci_line=ci_line, few_cells=few)


def _caption(c: CaseCell) -> str:
    name = c.path.rpartition("/")[2]
    if c.predicted is None:
        return name
    mark = "≠ " if c.disagrees else ""
    return f"{name}\n{mark}{c.predicted} {c.probability:.0%}" if c.probability is not None else name


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


__all__ = ["AmendmentLine", "CaseCell", "CaseReport", "ClassCount", "MontageCell", "SignatureLine", "build_case_report",
           "MONTAGE_PER_CLASS"]
