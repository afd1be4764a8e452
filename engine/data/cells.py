"""The records a scan produces: `Cell`, `Problem`, `FileCheck` and `ScanResult`.

A label is a class name, `UNSURE` (an expert's "look again"), or None (unlabeled); `parse_label`
reads one as written (the reserved words `unsure`, `?`, `none`, `unlabeled` mean the last two).
Only cells with a class name take part in training and scoring (`is_trainable`).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..utils.natsort import natural_key

UNSURE = "unsure"  # an expert's "not sure, look again": a label, but never a training target
# Reserved words: each means the same in a class folder's name, a labels CSV, `labels set` and
# `labels import`, and none of them can name a class (case is ignored).
UNSURE_WORDS = (UNSURE, "?")
UNLABELED_WORDS = ("none", "unlabeled", "unlabelled")
RESERVED_WORDS = frozenset(UNSURE_WORDS + UNLABELED_WORDS)


def parse_label(text: str | None) -> str | None:
    """A label as written by a user or a data set: a class name (stripped), `UNSURE` for an unsure
    word, None for nothing or an unlabeled word."""
    if text is None:
        return None
    text = text.strip()
    folded = text.casefold()
    if not text or folded in UNLABELED_WORDS:
        return None
    return UNSURE if folded in UNSURE_WORDS else text


def is_trainable(label: str | None) -> bool:
    """A class name: not unlabeled, not unsure."""
    return label is not None and label != UNSURE


def trainable(cells: Iterable["Cell"]) -> list["Cell"]:
    """Cells that can be trained or scored on."""
    return [c for c in cells if is_trainable(c.label)]


@dataclass(frozen=True, slots=True)
class Cell:
    """One single-cell image. `path` is relative to the data root, with `/` separators."""

    path: str
    label: str | None  # original label from the data set; None = unlabeled
    patient: str | None  # subject / slide id; None when the layout does not say
    label_source: str = "none"  # folder | cnmc-csv | csv | none
    fold: str | None = None
    size: int = 0
    mtime_ns: int = 0
    width: int = 0
    height: int = 0

    @property
    def group(self) -> str:
        """What a split must keep together: the patient, or the image itself when unknown."""
        return self.patient if self.patient is not None else f"image:{self.path}"

    @property
    def name(self) -> str:
        return self.path.rpartition("/")[2]


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class FileCheck:
    """What decoding a file once told us; reused while size and mtime are unchanged."""

    size: int
    mtime_ns: int
    digest: str | None
    problem: str | None
    width: int = 0
    height: int = 0


@dataclass
class ScanResult:
    root: Path
    cells: list[Cell]
    problems: list[Problem] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # label-file rows whose image is absent
    checks: dict[str, FileCheck] = field(default_factory=dict)
    label_files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # duplicate file -> the file with the same content that was kept (also listed in `problems`)
    duplicates: dict[str, str] = field(default_factory=dict)
    options: dict = field(default_factory=dict)  # the scan's own arguments, so `scan.rescan` can redo it

    @property
    def classes(self) -> list[str]:
        return sorted({c.label for c in self.cells if c.label is not None})

    def class_counts(self) -> dict[str, int]:
        counts = Counter(c.label for c in self.cells if c.label is not None)
        return {k: counts[k] for k in sorted(counts)}

    @property
    def patients(self) -> list[str]:
        return sorted({c.patient for c in self.cells if c.patient is not None}, key=natural_key)

    @property
    def by_patient(self) -> bool:
        """True when every labelled cell has a patient id, so splits can keep patients apart."""
        return bool(self.cells) and all(c.patient is not None for c in self.cells)

    @property
    def unlabeled(self) -> int:
        return sum(1 for c in self.cells if c.label is None)

    def patient_class_counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, Counter] = {}
        for c in self.cells:
            out.setdefault(c.patient or "(none)", Counter())[c.label or "(unlabeled)"] += 1
        return {p: dict(sorted(v.items())) for p, v in sorted(out.items(), key=lambda kv: natural_key(kv[0]))}

    def to_json(self) -> dict:
        return {
            "root": str(self.root),
            "cells": len(self.cells),
            "classes": self.class_counts(),
            "unlabeled": self.unlabeled,
            "patients": self.patients,
            "by_patient": self.by_patient,
            "per_patient": self.patient_class_counts(),
            "folds": dict(sorted(Counter(c.fold for c in self.cells if c.fold).items())),
            "label_files": self.label_files,
            "problems": [asdict(p) for p in self.problems],
            "missing": self.missing,
            "notes": self.notes,
        }
