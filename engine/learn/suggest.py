"""Which cells the expert should label next: a batch chosen from a model's stored predictions.

Strategies (`STRATEGIES`), each over the candidate cells (those without an expert label, or all
not yet reviewed; the caller says which) and returning them in the order to label:

- `margin`: smallest top-1 minus top-2 probability first (the model hesitates between two classes).
- `entropy`: highest entropy first (the model spreads its belief over many classes).
- `diverse`: uncertainty-weighted k-center greedy on the cells' embeddings (Sener & Savarese 2018),
  the weight a hard one as in Zhdanov's diverse mini-batch sampling (2019): only the `PREFILTER` x n
  most doubtful candidates (smallest margin) are eligible, and among them each pick is the cell
  farthest (cosine distance) from every labelled or already picked cell, so a batch covers the
  doubts instead of taking twenty near-copies of one; with class balance over the predicted
  classes (each class's share of the batch as equal as its eligible cells allow, so a rare class
  the model confuses is still asked about). Chosen on bench_loop.py (README): a soft weight
  (uncertainty x distance over every candidate) and wider or no prefilters did worse.
- `random`: a uniform draw (the baseline the benchmark measures against).

numpy only (scikit-learn is not needed for k-center greedy, which is a running minimum), so
the window can call it without torch. Deterministic for a given seed; ties go to the lower index.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .embeddings import unit
from .uncertainty import summarise

STRATEGIES = ("margin", "entropy", "diverse", "random")
DEFAULT_BATCH = 24
PREFILTER = 2  # diverse: the eligible cells are the 2n most doubtful candidates
_CHUNK = 4096  # rows of centres per matrix product when measuring distances to the labelled cells


@dataclass
class Suggestion:
    indices: np.ndarray  # (n,) int64 rows of `probs`, in the order to label
    strategy: str
    margin: np.ndarray  # (n,) float32 of those rows
    entropy: np.ndarray  # (n,) float32
    predicted: np.ndarray  # (n,) int64 class index

    def __len__(self) -> int:
        return len(self.indices)


def suggest(probs: np.ndarray, *, n: int = DEFAULT_BATCH, strategy: str = "margin",
            candidates: np.ndarray | None = None, embeddings: np.ndarray | None = None,
            labelled: np.ndarray | None = None, seed: int = 0, balance: bool = True) -> Suggestion:
    """Pick up to `n` rows of `probs` (N, C) among `candidates` (bool mask; None = every row).

    `embeddings` (N, D) is needed by `diverse`; `labelled` (bool mask) names the rows already
    labelled, which `diverse` treats as covered (it looks away from them). Raises ValueError for an
    unknown strategy or `diverse` without embeddings."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    probs = np.asarray(probs, dtype=np.float32)
    N = len(probs)
    cand = np.ones(N, bool) if candidates is None else np.asarray(candidates, bool)
    if cand.shape != (N,):
        raise ValueError(f"candidates mask of {cand.shape} for {N} rows")
    pred, _, margin, entropy = summarise(probs) if N else (np.zeros(0, np.int64),) * 4
    idx = np.flatnonzero(cand)
    n = max(0, min(int(n), len(idx)))
    if n == 0:
        picks = np.zeros(0, np.int64)
    elif strategy == "random":
        picks = np.random.default_rng(seed).choice(idx, size=n, replace=False)
    elif strategy == "margin":
        picks = idx[np.lexsort((idx, margin[idx]))][:n]
    elif strategy == "entropy":
        picks = idx[np.lexsort((idx, -entropy[idx]))][:n]
    else:
        if embeddings is None or len(embeddings) != N:
            raise ValueError("the diverse strategy needs each cell's embedding; predict the folder again with "
                             "this version of allblast to store them")
        eligible = idx[np.lexsort((idx, margin[idx]))][:PREFILTER * n]  # the most doubtful, ties by index
        picks = _diverse(np.asarray(embeddings), eligible, n,
                         None if labelled is None else np.flatnonzero(np.asarray(labelled, bool)),
                         pred, probs.shape[1], balance)
    picks = np.asarray(picks, np.int64)
    return Suggestion(picks, strategy, margin[picks].astype(np.float32), entropy[picks].astype(np.float32),
                      pred[picks].astype(np.int64))


def class_quota(counts: np.ndarray, n: int) -> np.ndarray:
    """Split `n` picks over classes with `counts` candidates as equally as they allow: each class
    gets at most its candidates, and what a small class cannot take goes to the others (water
    filling; a remainder to the classes with the most candidates left)."""
    counts = np.asarray(counts, np.int64)
    quota = np.zeros_like(counts)
    left = min(int(n), int(counts.sum()))
    while left > 0:
        open_ = np.flatnonzero(quota < counts)
        room = counts[open_] - quota[open_]
        share = left // len(open_)
        if share == 0:  # fewer picks left than classes with room: one each to the roomiest
            quota[open_[np.lexsort((open_, -room))[:left]]] += 1
            break
        add = np.minimum(room, share)
        quota[open_] += add
        left -= int(add.sum())
    return quota


def _diverse(embeddings: np.ndarray, idx: np.ndarray, n: int, labelled: np.ndarray | None, pred: np.ndarray,
             n_classes: int, balance: bool) -> np.ndarray:
    """k-center greedy over the eligible rows `idx`, the labelled rows as centres, with class quotas."""
    mean = np.asarray(embeddings, np.float32).mean(0)  # the folder's centre: cosines of centred features
    u = unit(embeddings[idx], mean)
    dist = np.full(len(idx), 2.0, np.float32)  # cosine distance to the nearest centre (2: none yet)
    if labelled is not None and len(labelled):
        for start in range(0, len(labelled), _CHUNK):
            centres = unit(embeddings[labelled[start:start + _CHUNK]], mean)
            dist = np.minimum(dist, 1.0 - (u @ centres.T).max(1))
    dist = np.clip(dist, 0.0, 2.0)
    cls = pred[idx]
    quota = (class_quota(np.bincount(cls, minlength=n_classes), n) if balance
             else np.full(n_classes, n, np.int64))
    free = np.ones(len(idx), bool)
    picks = []
    for _ in range(n):
        score = np.where(free & (quota[cls] > 0), dist, -1.0)
        j = int(np.argmax(score))  # ties: the most doubtful (idx is in margin order)
        if score[j] < 0:
            break
        picks.append(idx[j])
        free[j] = False
        quota[cls[j]] -= 1
        dist = np.minimum(dist, 1.0 - u @ u[j])
    return np.asarray(picks, np.int64)


__all__ = ["DEFAULT_BATCH", "PREFILTER", "STRATEGIES", "Suggestion", "class_quota", "suggest"]
