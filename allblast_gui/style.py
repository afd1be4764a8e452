"""Label colours and texts shared by every view, so a class looks the same everywhere.

Class colours follow the order of the project's classes, drawn from the Okabe-Ito palette
(distinguishable with the common colour-vision deficiencies) and then Tableau 10. Orange/amber
is kept for "unsure" and grey for unlabeled, so neither can be mistaken for a class.
"""
from __future__ import annotations

import zlib
from collections.abc import Sequence

from PySide6.QtGui import QColor

from engine.data.cells import UNSURE
from engine.labels.classes import PALETTE, generated_color

CLASS_PALETTE = PALETTE  # one home: engine.labels.classes (new classes get these colours, stored)
UNSURE_COLOR = "#E69F00"  # Okabe-Ito orange: "look again"
UNLABELED_COLOR = "#9E9E9E"  # grey: no decision yet
PROBLEM_COLOR = "#B00020"  # a file that cannot be shown
DISAGREE_COLOR = "#C2185B"  # the model's class differs from the expert's label


def label_color(label: str | None, classes: Sequence[str]) -> QColor:
    """The colour of a label: the class set's own colour (`ClassSet.color_of`), else by its place in
    `classes`. Classes outside `classes` still get a stable colour."""
    if label is None:
        return QColor(UNLABELED_COLOR)
    if label == UNSURE:
        return QColor(UNSURE_COLOR)
    stored = getattr(classes, "color_of", None)
    if stored is not None and (color := stored(label)):
        return QColor(color)
    try:
        i = list(classes).index(label)
    except ValueError:
        # crc32, not hash(): the same label keeps its colour across runs (hash() is salted).
        i = len(classes) + zlib.crc32(label.encode("utf-8"))
    return QColor(generated_color(i))


def class_key(classes: Sequence[str], name: str) -> int | None:
    """The number key of class `name`: the class set's stable key, else its place (1-9)."""
    key_of = getattr(classes, "key_of", None)
    if key_of is not None:
        return key_of(name)
    names = list(classes)
    return names.index(name) + 1 if name in names and names.index(name) < 9 else None


def label_text(label: str | None) -> str:
    if label is None:
        return "unlabeled"
    return label


def is_unsure(label: str | None) -> bool:
    return label == UNSURE
