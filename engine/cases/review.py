"""What 'reviewed' means, per cell, and which disagreements with the active model are open.

A cell is reviewed when the expert
  - set its class (a label change by a person: keyboard, batch, CLI or script; an import or a class
    rename by itself is not a review, a rename keeps one),
  - accepted the model's prediction as its label ("accepted"),
  - confirmed the label shown (engine.labels.reviews.confirm: "confirmed"), or
  - marked it unsure with a note ("unsure + note").
Merely viewing a cell does not count; an unlabeled cell is never reviewed. A disagreement (the one
rule: engine.labels.predictions.disagrees) is open until the expert accepts the model's class,
relabels the cell to it, or keeps the label with a reason (engine.labels.reviews.keep).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from ..data.cells import UNSURE
from ..labels import reviews as marks
from ..labels.predictions import StoredPredictions, disagrees
from ..labels.store import ACCEPTED_PREDICTION

SET, ACCEPTED, CONFIRMED, UNSURE_NOTE = "set", "accepted", "confirmed", "unsure + note"
REVIEW_KINDS = (SET, ACCEPTED, CONFIRMED, UNSURE_NOTE)
_NOT_A_REVIEW = ("csv-import",)  # labels from a file: data, not an expert's look at the cell
_KEEPS_A_REVIEW = ("class-edit",)  # a rename relabels reviewed and unreviewed cells alike


@dataclass(frozen=True)
class ModelView:
    """The active model's answers: its sha256, classes and predicted class per cell."""

    sha256: str
    classes: tuple[str, ...]
    predicted: Mapping[str, str] = field(default_factory=dict)
    name: str = ""

    @property
    def short(self) -> str:
        return self.sha256[:8]


def model_view(preds: StoredPredictions | None) -> ModelView | None:
    """A model's stored predictions as its top class per cell."""
    if preds is None:
        return None
    best = np.argmax(preds.probs, axis=1) if len(preds.paths) else []
    classes = tuple(preds.model.classes)
    return ModelView(preds.model.sha256, classes, {p: classes[int(k)] for p, k in zip(preds.paths, best)},
                     preds.model.name)


def review_kinds(current: Mapping[str, str | None], changes: Iterable[tuple[str, str | None, str]],
                 confirmations: Mapping[str, marks.Confirmation]) -> dict[str, str | None]:
    """path -> how its current label was reviewed (REVIEW_KINDS), or None: not reviewed.

    `changes`: (path, new, source) of the label changes in force, oldest first
    (engine.labels.reviews.effective_changes)."""
    by_person: dict[str, str | None] = {}  # path -> the source of the change in force that a person made
    for path, _new, source in changes:
        if source in _KEEPS_A_REVIEW:
            continue
        by_person[path] = None if source in _NOT_A_REVIEW else source
    out: dict[str, str | None] = {}
    for path, label in current.items():
        kind = None
        if label is not None and label != UNSURE and by_person.get(path):
            kind = ACCEPTED if by_person[path].startswith(ACCEPTED_PREDICTION) else SET
        mark = confirmations.get(path)
        if kind is None and mark is not None and mark.label == label and label is not None:
            if label != UNSURE:
                kind = ACCEPTED if mark.source.startswith(ACCEPTED_PREDICTION) else CONFIRMED
            elif mark.note:
                kind = UNSURE_NOTE
        out[path] = kind
    return out


@dataclass
class ReviewSnapshot:
    """A folder's review state at one moment: current labels, review kinds, the model's answers and
    the kept disagreements (read once; cases are computed from it)."""

    current: dict[str, str | None]
    patients: dict[str, str | None]
    kinds: dict[str, str | None]
    model: ModelView | None
    kept: dict[str, marks.Resolution]  # path -> kept disagreement with `model` (latest)
    notes: dict[str, str] = field(default_factory=dict)  # path -> the latest note (unsure, confirm)

    def reviewed(self, path: str) -> bool:
        return self.kinds.get(path) is not None

    def predicted(self, path: str) -> str | None:
        return self.model.predicted.get(path) if self.model is not None else None

    def disagrees(self, path: str) -> bool:
        if self.model is None:
            return False
        return disagrees(self.current.get(path), self.model.predicted.get(path), self.model.classes)

    def open_disagreement(self, path: str) -> bool:
        """The model disagrees, and the expert has not kept this label against it with a reason."""
        if not self.disagrees(path):
            return False
        kept = self.kept.get(path)
        return kept is None or kept.label != self.current.get(path)


def snapshot(store, model: ModelView | None, *, present_only: bool = True) -> ReviewSnapshot:
    """The review state of `store`'s cells (present ones), judged against `model`."""
    where = " WHERE c.present = 1" if present_only else ""
    rows = store.query("SELECT c.path, c.patient, CASE WHEN l.path IS NULL THEN c.original ELSE l.label END "
                       f"FROM cells c LEFT JOIN labels l ON l.path = c.path{where} ORDER BY c.rowid")
    current = {p: lb for p, _, lb in rows}
    patients = {p: pt for p, pt, _ in rows}
    confirmations = marks.confirmations(store)
    kinds = review_kinds(current, marks.effective_changes(store), confirmations)
    kept = {p: r for (p, _m), r in marks.resolutions(store, model.sha256).items()} if model is not None else {}
    notes = {p: c.note for p, c in confirmations.items() if c.note and c.label == current.get(p)}
    return ReviewSnapshot(current, patients, kinds, model, kept, notes)


__all__ = ["ACCEPTED", "CONFIRMED", "ModelView", "REVIEW_KINDS", "ReviewSnapshot", "SET", "UNSURE_NOTE",
           "model_view", "review_kinds", "snapshot"]
