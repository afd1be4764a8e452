"""The next cells to label and a cell's look-alikes, from a model's stored predictions and
embeddings (engine.labels.predictions): what `allblast-engine suggest`, Label ▸ Next Cells to Label
and Find Similar share. Nothing is predicted again when the model's results are stored;
`ensure_stored` predicts (and stores) only what is missing.
"""
from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.cells import UNSURE
from ..labels import predictions as stored
from ..learn.embeddings import similar as nearest
from ..learn.suggest import DEFAULT_BATCH, suggest
from ..learn.uncertainty import summarise

log = logging.getLogger(__name__)

AMONG = ("unlabelled", "unreviewed", "all")  # which cells a suggestion may pick


@dataclass
class SuggestedBatch:
    """Cells to label, in the order to label them."""

    model: stored.ModelRecord
    strategy: str
    among: str
    paths: list[str]
    probs: np.ndarray  # (n, C) float32, the model's, columns in model.classes order
    candidates: int  # how many cells it chose from

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def predicted(self) -> list[str]:
        return [self.model.classes[i] for i in self.probs.argmax(1)] if len(self.paths) else []

    def rows(self, patients: Mapping[str, str | None] | None = None) -> tuple[list[str], list[list[str]]]:
        """The CSV's header and rows: the `predict` columns, then rank (1 = label first) and strategy."""
        classes = self.model.classes
        _, _, margin, entropy = summarise(self.probs)
        header = ["path", "patient", "predicted", *[f"p_{c}" for c in classes], "margin", "entropy", "rank",
                  "strategy"]
        patients = patients or {}
        out = [[p, patients.get(p) or "", pred, *[f"{v:.6f}" for v in probs], f"{m:.6f}", f"{e:.6f}", str(rank),
                self.strategy]
               for rank, (p, pred, probs, m, e) in enumerate(zip(self.paths, self.predicted, self.probs, margin,
                                                                 entropy), start=1)]
        return header, out


def unlabelled_paths(states: Mapping) -> set[str]:
    """Cells without an expert label: no label at all, or only the data set's own (a folder's or a
    labels file's), never set by a person in allblast. `states`: LabelStore.states()."""
    return {p for p, s in states.items() if s.current is None or s.annotator is None}


def labelled_paths(states: Mapping) -> set[str]:
    """Cells whose current label is a class (what a round trains on; unsure ones are not)."""
    return {p for p, s in states.items() if s.current is not None and s.current != UNSURE}


def suggest_stored(store, sha256: str, *, n: int = DEFAULT_BATCH, strategy: str = "margin",
                   candidates: Collection[str] | None = None, among: str = "unlabelled", seed: int = 0
                   ) -> SuggestedBatch:
    """A batch from the model `sha256`'s stored predictions. `candidates` (paths; None = every cell
    the model predicted that is present) are the cells it may pick; the labelled present cells (a
    class as current label) are the ones `diverse` counts as covered. Raises ValueError when the
    model has no stored predictions here, or `diverse` has no stored embeddings."""
    preds = stored.load(store, sha256)
    if preds is None or not len(preds.paths):
        raise ValueError(f"model {sha256[:8]} has no stored predictions for this folder: predict it first")
    states = store.states()
    present = [i for i, p in enumerate(preds.paths) if p in states]
    paths = [preds.paths[i] for i in present]
    probs = preds.probs[present]
    embeddings = None
    if strategy == "diverse":
        emb = stored.load_embeddings(store, sha256, paths)
        if emb is None:
            raise ValueError(f"model {sha256[:8]} has no stored cell embeddings here (predicted by an older "
                             "allblast): predict the folder again, or choose another strategy")
        embeddings = emb
    allowed = set(candidates) if candidates is not None else set(paths)
    cand = np.array([p in allowed for p in paths], bool)
    done = labelled_paths(states)
    lab = np.array([p in done for p in paths], bool)
    batch = suggest(probs, n=n, strategy=strategy, candidates=cand, embeddings=embeddings, labelled=lab, seed=seed)
    picks = batch.indices.tolist()
    log.info("suggested %d of %d %s cells (%s, model %s)", len(picks), int(cand.sum()), among, strategy,
             sha256[:8])
    return SuggestedBatch(preds.model, strategy, among, [paths[i] for i in picks], probs[picks], int(cand.sum()))


def similar_stored(store, sha256: str, path: str, k: int = 24,
                   candidates: Collection[str] | None = None) -> list[tuple[str, float]]:
    """The `k` cells most like `path` by the cosine of the model's stored embeddings (centred on the
    folder's mean), most similar first: [(path, similarity)]. Raises ValueError when the model has
    no stored embeddings here, or none for `path`."""
    got = stored.load_embeddings(store, sha256)
    if got is None:
        raise ValueError(f"model {sha256[:8]} has no stored cell embeddings here: predict the folder again")
    paths, emb = got
    states = store.states()
    keep = [i for i, p in enumerate(paths) if p in states]
    paths, emb = [paths[i] for i in keep], emb[keep]
    try:
        query = paths.index(path)
    except ValueError:
        raise ValueError(f"{path} has no stored embedding for model {sha256[:8]}: predict the folder again") from None
    mask = None if candidates is None else np.array([p in set(candidates) for p in paths], bool)
    idx, sims = nearest(emb, query, k, candidates=mask)
    return [(paths[i], float(s)) for i, s in zip(idx, sims)]


def needs_prediction(store, sha256: str, paths: Collection[str], *, embeddings: bool = True) -> list[str]:
    """The cells of `paths` the model has no stored prediction (or, with `embeddings`, no stored
    embedding) for."""
    preds = stored.load(store, sha256)
    have = set(preds.paths) if preds is not None else set()
    if embeddings and have:
        got = stored.load_embeddings(store, sha256)
        have &= set(got[0]) if got is not None else set()
    return [p for p in paths if p not in have]


def model_sha(model_path: str | Path) -> str:
    from ..utils.files import sha256_file

    return sha256_file(model_path)


__all__ = ["AMONG", "SuggestedBatch", "labelled_paths", "model_sha", "needs_prediction", "similar_stored",
           "suggest_stored", "unlabelled_paths"]
