"""Per patient (or slide): cells, expert counts, the model's counts, and the share of one class.

A patient-level reading is a fraction (the blast share), not a single cell; this is the table a
hematologist checks it in, expert against model. Plain Python over the grid's rows.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.data.cells import is_trainable
from engine.labels.classes import guess_positive, positive_class
from engine.utils.natsort import natural_key

from ..cells.rows import CellRow

WHOLE_FOLDER = "(whole folder)"
NO_PATIENT = "(no patient id)"


@dataclass
class PatientRow:
    patient: str  # a patient id, WHOLE_FOLDER, or NO_PATIENT
    cells: int
    expert: Counter = field(default_factory=Counter)  # current labels that are classes
    predicted: Counter = field(default_factory=Counter)  # the model's classes
    filter_value: str | None = None  # what the grid's patient filter takes (None: every cell)

    def expert_fraction(self, positive: str) -> float | None:
        n = sum(self.expert.values())
        return self.expert[positive] / n if n else None

    def model_fraction(self, positive: str) -> float | None:
        n = sum(self.predicted.values())
        return self.predicted[positive] / n if n else None


def summarize_patients(rows: Sequence[CellRow]) -> list[PatientRow]:
    """One row per patient in natural order; a folder without patient ids is one row."""
    readable = [r for r in rows if not r.problem]
    any_patient = any(r.patient is not None for r in readable)
    groups: dict[str, PatientRow] = {}
    for r in readable:
        if any_patient:
            key = r.patient if r.patient is not None else NO_PATIENT
            value = r.patient
        else:
            key, value = WHOLE_FOLDER, None
        row = groups.get(key)
        if row is None:
            row = groups[key] = PatientRow(key, 0, filter_value=value)
        row.cells += 1
        if is_trainable(r.current):
            row.expert[r.current] += 1
        if r.pred is not None:
            row.predicted[r.pred] += 1
    return sorted(groups.values(), key=lambda p: (p.patient == NO_PATIENT, natural_key(p.patient)))


def default_positive(classes: Sequence[str]) -> str | None:
    """The class whose share matters: the data set's positive class (C-NMC's `all`, the blast
    fraction; engine.labels.classes.positive_class), else the first."""
    positive = positive_class(classes) if hasattr(classes, "positive") else guess_positive(classes)
    return positive or (classes[0] if classes else None)


def write_patient_csv(path, rows: Sequence[PatientRow], classes: Sequence[str], positive: str | None) -> None:
    """The Patients table as a CSV (spreadsheet-safe: engine.utils.csvsafe)."""
    from engine.utils.csvsafe import write_csv

    pos = [f"{positive} expert fraction", f"{positive} model fraction"] if positive else []
    header = ["patient", "cells", *pos, *[f"{c} {who}" for c in classes for who in ("expert", "model")]]

    def share(v):
        return "" if v is None else f"{v:.6f}"

    write_csv(path, header, ([r.patient, r.cells,
                              *([share(r.expert_fraction(positive)), share(r.model_fraction(positive))] if positive else []),
                              *[n for c in classes for n in (r.expert[c], r.predicted[c])]] for r in rows))
