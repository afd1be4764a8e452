"""A folder's cells for a case report, from its label database (labels, stored predictions) when it
has one, else from the scan alone. Looking the database up creates nothing: a report never
leaves a `.allblast/` folder in a data folder that had none."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from ..data.cells import UNSURE
from ..data.scan import scan
from ..labels import classes as C
from ..labels import predictions as stored
from ..labels.classes import ClassSet
from ..labels.location import find_db
from ..labels.store import LabelStore, default_annotator
from ..learn.uncertainty import summarise
from ..utils.natsort import natural_key
from .case import CaseCell

log = logging.getLogger(__name__)


def cells_with_predictions(cells, states: dict | None, preds: stored.StoredPredictions | None) -> list[CaseCell]:
    """Join scanned cells, their label states (path -> LabelState) and a model's stored results."""
    by_path: dict[str, tuple[str, float, float]] = {}
    if preds is not None and len(preds.paths):
        best, top, margin, _ = summarise(preds.probs)
        for k, path in enumerate(preds.paths):
            by_path[path] = (preds.model.classes[best[k]], float(top[k]), float(margin[k]))
    out = []
    for c in cells:
        st = states.get(c.path) if states else None
        original, current = (st.original, st.current) if st is not None else (c.label, c.label)
        pred = by_path.get(c.path)
        out.append(CaseCell(c.path, c.patient, original, current, *(pred or (None, None, None)),
                            model_classes=preds.model.classes if pred else None))
    return out


def folder_cells(root: str | Path, model_sha256: str | None = None) -> tuple[list[CaseCell], list[str], str]:
    """(cells, classes, reviewer) of a data folder: current expert labels and, when `model_sha256`
    has predicted here, its stored predictions. The reviewer is the last annotator of a change."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder")
    db = find_db(root)
    states, preds, reviewer, labels_file = None, None, "", None
    if db is not None:
        store = LabelStore.open(root, db_path=db)
        try:
            remembered = store.meta("labels_file")  # the labels CSV the folder was opened with
            labels_file = Path(remembered) if remembered and Path(remembered).is_file() else None
            states = store.states()
            preds = stored.load(store, model_sha256) if model_sha256 else None
            changes = store.all_changes()
            reviewer = changes[-1].annotator if changes else ""
        finally:
            store.close()
    result = scan(root, labels_file)
    cells = cells_with_predictions(result.cells, states, preds)
    classes = sorted({c.current for c in cells if c.current is not None and c.current != UNSURE}
                     | set(result.classes), key=natural_key)
    if preds is not None:
        classes += [k for k in preds.model.classes if k not in classes]
    return cells, classes, reviewer or default_annotator()


def folder_class_set(root: str | Path, names: Sequence[str]) -> ClassSet:
    """The class set of a data folder (its positive class included): the stored one when it has a
    label database and classes there, else the one a folder of these class `names` starts with."""
    root = Path(root).expanduser().resolve()
    db = find_db(root)
    if db is not None:
        store = LabelStore.open(root, db_path=db)
        try:
            kept = C.load(store)
        finally:
            store.close()
        if len(kept):
            return kept
    return C.from_names(names)


__all__ = ["cells_with_predictions", "folder_cells", "folder_class_set"]
