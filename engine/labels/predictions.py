"""Per-cell model outputs kept with the labels, so the app shows them again at once.

Rows are keyed by the model file's sha256 and the cell's path: predicting again with the same model
replaces its rows; another model keeps its own. Probabilities are float32 bytes in the model's
class order (already calibrated with the model's temperature). Plain SQLite and numpy: nothing
here knows how the numbers were made.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .db import now_utc
from .store import LabelStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelRecord:
    sha256: str
    path: str
    name: str
    classes: tuple[str, ...]
    temperature: float
    tta: bool
    predicted_at: str

    @property
    def short(self) -> str:
        return self.sha256[:8]


@dataclass
class StoredPredictions:
    model: ModelRecord
    paths: list[str]
    probs: np.ndarray  # (N, C) float32, columns in model.classes order


def begin(store: LabelStore, model: ModelRecord) -> None:
    """Record the model about to predict; its earlier predictions are replaced (one transaction)."""
    with store.transaction() as conn:
        conn.execute("DELETE FROM predictions WHERE model = ?", (model.sha256,))
        conn.execute("INSERT OR REPLACE INTO models(sha256, path, name, classes, temperature, tta, predicted_at) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (model.sha256, model.path, model.name, json.dumps(list(model.classes)), float(model.temperature),
                      int(model.tta), model.predicted_at or now_utc()))


def add(store: LabelStore, sha256: str, paths: Sequence[str], probs: np.ndarray) -> None:
    """Store one batch of results (one transaction)."""
    probs = np.ascontiguousarray(probs, dtype=np.float32)
    with store.transaction() as conn:
        conn.executemany("INSERT OR REPLACE INTO predictions(model, path, probs) VALUES (?, ?, ?)",
                         [(sha256, p, row.tobytes()) for p, row in zip(paths, probs)])


def model(store: LabelStore, sha256: str) -> ModelRecord | None:
    rows = store.query("SELECT sha256, path, name, classes, temperature, tta, predicted_at FROM models "
                       "WHERE sha256 = ?", (sha256,))
    return _record(rows[0]) if rows else None


def models(store: LabelStore) -> list[ModelRecord]:
    rows = store.query("SELECT sha256, path, name, classes, temperature, tta, predicted_at FROM models "
                       "ORDER BY predicted_at DESC")
    return [_record(r) for r in rows]


def load(store: LabelStore, sha256: str) -> StoredPredictions | None:
    """Every stored result of one model (None when it never predicted here)."""
    record = model(store, sha256)
    if record is None:
        return None
    rows = store.query("SELECT path, probs FROM predictions WHERE model = ?", (sha256,))
    n = len(record.classes)
    probs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), n) if rows else \
        np.zeros((0, n), np.float32)
    return StoredPredictions(record, [r[0] for r in rows], probs.copy())


def _record(row) -> ModelRecord:
    sha, path, name, classes, temperature, tta, at = row
    return ModelRecord(sha, path, name, tuple(json.loads(classes)), float(temperature), bool(tta), at)
