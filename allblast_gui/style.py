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

CLASS_PALETTE = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#F0E442",  # yellow
    "#8C564B",  # brown (Tableau)
    "#17BECF",  # cyan (Tableau)
    "#BCBD22",  # olive (Tableau)
    "#9467BD",  # purple (Tableau)
    "#1F77B4",  # dark blue (Tableau)
    "#2CA02C",  # green (Tableau)
)
UNSURE_COLOR = "#E69F00"  # Okabe-Ito orange: "look again"
UNLABELED_COLOR = "#9E9E9E"  # grey: no decision yet
PROBLEM_COLOR = "#B00020"  # a file that cannot be shown
DISAGREE_COLOR = "#C2185B"  # the model's class differs from the expert's label


def label_color(label: str | None, classes: Sequence[str]) -> QColor:
    """The colour of a label. Classes outside `classes` still get a stable colour."""
    if label is None:
        return QColor(UNLABELED_COLOR)
    if label == UNSURE:
        return QColor(UNSURE_COLOR)
    try:
        i = list(classes).index(label)
    except ValueError:
        # crc32, not hash(): the same label keeps its colour across runs (hash() is salted).
        i = len(classes) + zlib.crc32(label.encode("utf-8"))
    if i < len(CLASS_PALETTE):
        return QColor(CLASS_PALETTE[i])
    # More classes than the palette: spread further hues evenly (golden-angle steps).
    return QColor.fromHsv(int((i * 137.508) % 360), 170, 200)


def label_text(label: str | None) -> str:
    if label is None:
        return "unlabeled"
    return label


def is_unsure(label: str | None) -> bool:
    return label == UNSURE
