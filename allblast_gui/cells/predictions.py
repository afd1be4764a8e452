"""A model's output on the grid's rows: set, cleared and summarised in plain Python.

The rows are the one place the window keeps per-cell predictions (tiles, filters, sorts, the
inspector and the patient table all read them); the label database keeps them for the next open
(engine.workspace.predict_store stores and reads them).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from engine.learn.uncertainty import summarise

from .rows import CellRow


def apply_predictions(rows_by_path: Mapping[str, CellRow], classes: Sequence[str], paths: Sequence[str],
                      probs: np.ndarray) -> list[str]:
    """Give each named row its probabilities; returns the paths of rows that were found."""
    classes = tuple(classes)
    probs = np.asarray(probs, dtype=np.float32)
    if not len(paths):
        return []
    best, top, margin, entropy = summarise(probs)
    touched = []
    for k, path in enumerate(paths):
        row = rows_by_path.get(path)
        if row is None:
            continue
        row.probs, row.pred_classes = probs[k], classes
        row.pred, row.pred_p = classes[best[k]], float(top[k])
        row.margin, row.entropy = float(margin[k]), float(entropy[k])
        touched.append(path)
    return touched


def clear_predictions(rows: Iterable[CellRow]) -> list[str]:
    touched = []
    for row in rows:
        if row.pred is not None:
            row.probs, row.pred_classes, row.pred = None, (), None
            row.pred_p = row.margin = row.entropy = math.nan
            touched.append(row.path)
    return touched
