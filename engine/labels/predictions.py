"""Per-cell model outputs kept with the labels, so the app shows them again at once.

Rows are keyed by the model file's sha256 and the cell's path: predicting again with the same model
replaces its rows; another model keeps its own. Probabilities are float32 bytes in the model's
class order (already calibrated with the model's temperature). Plain SQLite and numpy: nothing
here knows how the numbers were made.

Each cell's embedding (the model's pooled backbone feature, engine.learn.embeddings) is kept beside
its probabilities, as float16 bytes, in the `embeddings` table: 2 bytes per feature (Lite0: 2,560
per cell). A model whose backbone is another's (a Keep Learning round) shares that model's rows
(`share_embeddings`) instead of a copy of them.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from ..data.cells import UNSURE
from .stamps import now_utc
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


def disagrees(current: str | None, predicted: str | None, model_classes: Collection[str] | None = None) -> bool:
    """Whether the model disagrees with the expert's label: the one rule of the grid's "≠" badge,
    its "Disagrees with label" filter and the reports' disagreement lists.

    It does when it predicted a class other than the cell's current label, and that label is a
    class the model knows (`model_classes`, its classes). An unsure or unlabeled cell never
    disagrees (the model has nothing to disagree with), nor does one labelled with a class the model
    was not trained on (it could not have said it). `model_classes` None: the model's classes are not
    known, every class label counts."""
    if predicted is None or current is None or current == UNSURE or current == predicted:
        return False
    return model_classes is None or current in model_classes


EMBEDDING_DTYPE = np.float16  # as engine.learn.embeddings stores them


def begin(store: LabelStore, model: ModelRecord, *, keep: bool = False) -> None:
    """Record the model about to predict; its earlier predictions (and embeddings) are replaced
    (one transaction). `keep`: they stay, and the new rows add to them (predicting only the cells
    that lack them)."""
    with store.transaction() as conn:
        if not keep:
            conn.execute("DELETE FROM predictions WHERE model = ?", (model.sha256,))
            conn.execute("DELETE FROM embeddings WHERE model = ?", (model.sha256,))
        shares = None if not keep else conn.execute("SELECT embeddings_from FROM models WHERE sha256 = ?",
                                                      (model.sha256,)).fetchone()
        conn.execute("INSERT INTO models(sha256, path, name, classes, temperature, tta, predicted_at, embeddings_from) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(sha256) DO UPDATE SET path = excluded.path, "
                     "name = excluded.name, classes = excluded.classes, temperature = excluded.temperature, "
                     "tta = excluded.tta, predicted_at = excluded.predicted_at, "
                     "embeddings_from = excluded.embeddings_from",
                     (model.sha256, model.path, model.name, json.dumps(list(model.classes)), float(model.temperature),
                      int(model.tta), model.predicted_at or now_utc(), shares[0] if shares else None))


def add(store: LabelStore, sha256: str, paths: Sequence[str], probs: np.ndarray,
        embeddings: np.ndarray | None = None) -> None:
    """Store one batch of results, with each cell's embedding when given (one transaction)."""
    probs = np.ascontiguousarray(probs, dtype=np.float32)
    with store.transaction() as conn:
        conn.executemany("INSERT OR REPLACE INTO predictions(model, path, probs) VALUES (?, ?, ?)",
                         [(sha256, p, row.tobytes()) for p, row in zip(paths, probs)])
        if embeddings is not None and len(paths):
            emb = np.ascontiguousarray(embeddings, dtype=EMBEDDING_DTYPE)
            conn.execute("INSERT INTO embeddings(model, paths, vecs) VALUES (?, ?, ?)",
                         (sha256, json.dumps(list(paths)), emb.tobytes()))


def share_embeddings(store: LabelStore, sha256: str, source: str) -> None:
    """Model `sha256` uses the stored embeddings of model `source` (the same backbone): a Keep
    Learning round's model, whose head alone is new. Follows `source`'s own sharing."""
    with store.transaction() as conn:
        row = conn.execute("SELECT embeddings_from FROM models WHERE sha256 = ?", (source,)).fetchone()
        origin = row[0] if row and row[0] else source
        conn.execute("DELETE FROM embeddings WHERE model = ?", (sha256,))
        conn.execute("UPDATE models SET embeddings_from = ? WHERE sha256 = ?", (origin, sha256))


def load_embeddings(store: LabelStore, sha256: str, paths: Sequence[str] | None = None):
    """The stored embeddings of a model (its own, or those it shares): `(paths, (N, D) float16)`,
    or, given `paths`, a (len(paths), D) array in that order (None when any of them has none).
    None when the model has none here (it predicted before embeddings were kept)."""
    row = store.query("SELECT embeddings_from FROM models WHERE sha256 = ?", (sha256,))
    if not row:
        return None
    owner = row[0][0] or sha256
    batches = store.query("SELECT paths, vecs FROM embeddings WHERE model = ? ORDER BY id", (owner,))
    if not batches:
        return None
    names: list[str] = []
    blobs: list[bytes] = []
    for listed, vecs in batches:
        names.extend(json.loads(listed))
        blobs.append(vecs)
    flat = np.frombuffer(b"".join(blobs), dtype=EMBEDDING_DTYPE)
    matrix = flat.reshape(len(names), len(flat) // max(len(names), 1))
    where = {p: i for i, p in enumerate(names)}  # a cell stored twice: its latest batch
    if paths is None:
        keep = sorted(where.values())
        return [names[i] for i in keep], matrix[keep].copy()
    wanted = list(paths)
    if any(p not in where for p in wanted):
        return None
    return matrix[[where[p] for p in wanted]].copy()


def embedding_bytes(store: LabelStore) -> tuple[int, int]:
    """(cells, bytes of their vectors) in the embeddings table: what the embeddings cost on disk."""
    n, size = store.query("SELECT COALESCE(SUM(json_array_length(paths)), 0), COALESCE(SUM(LENGTH(vecs)), 0) "
                          "FROM embeddings")[0]
    return int(n), int(size)


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
