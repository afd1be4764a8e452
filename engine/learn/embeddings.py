"""Cell embeddings: the pooled backbone feature of each cell, kept from every prediction pass.

A prediction runs the backbone anyway; its pooled output (the head's input,
`CellClassifier.embed`) is kept with the probabilities, as float16, keyed like them by the model
file's sha256 (`engine.labels.predictions`). Sampling the next cells to label
(`engine.learn.suggest`) and finding a cell's look-alikes read them back: nothing is computed
again. With a TTA pass the embedding is the mean of the views' features.

Size: one float16 per backbone feature, so `bytes_per_cell` is 2 x num_features (Lite0: 1,280
features, 2,560 bytes; B3: 1,536, 3,072 bytes) plus the database row's key.

Similarity is the cosine of embeddings centred on the mean of the set compared (a folder's
cells): max-pooled ReLU features are all positive, so uncentred cosines crowd near 1 and rank
look-alikes less sharply. numpy only: the window uses this without torch.
"""
from __future__ import annotations

import numpy as np

EMBEDDING_DTYPE = np.float16
_F16_MAX = float(np.finfo(np.float16).max)


def as_stored(features) -> np.ndarray:
    """(N, D) features as stored: float16, C-contiguous (values beyond float16's range clipped)."""
    x = np.asarray(features, dtype=np.float32)
    return np.ascontiguousarray(np.clip(x, -_F16_MAX, _F16_MAX).astype(EMBEDDING_DTYPE))


def bytes_per_cell(dim: int) -> int:
    """Bytes of one stored embedding (the vector alone; the database adds its row key)."""
    return int(dim) * np.dtype(EMBEDDING_DTYPE).itemsize


def to_bytes(row: np.ndarray) -> bytes:
    return as_stored(np.asarray(row).reshape(1, -1)).tobytes()


def from_bytes(blobs: list[bytes], dim: int | None = None) -> np.ndarray:
    """Stored vectors back as an (N, D) float16 array."""
    if not blobs:
        return np.zeros((0, dim or 0), EMBEDDING_DTYPE)
    flat = np.frombuffer(b"".join(blobs), dtype=EMBEDDING_DTYPE)
    d = dim or len(blobs[0]) // np.dtype(EMBEDDING_DTYPE).itemsize
    return flat.reshape(len(blobs), d).copy()


def unit(embeddings: np.ndarray, center: np.ndarray | None | bool = True) -> np.ndarray:
    """float32 rows of length 1 after subtracting `center` (True: the rows' mean; False/None: none).
    A zero row stays zero (similar to nothing)."""
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), not {x.shape}")
    if center is True:
        x = x - x.mean(0, keepdims=True) if len(x) else x
    elif center is not None and center is not False:
        x = x - np.asarray(center, dtype=np.float32).reshape(1, -1)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def similar(embeddings: np.ndarray, query: int, k: int = 24, *, candidates: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """The `k` rows most similar to row `query` (cosine of centred embeddings), most similar
    first, the query itself excluded: (indices, similarities). `candidates` (bool mask) limits
    where to look."""
    u = unit(embeddings)
    if not 0 <= query < len(u):
        raise IndexError(f"cell {query} of {len(u)}")
    sims = u @ u[query]
    mask = np.ones(len(u), bool) if candidates is None else np.asarray(candidates, bool).copy()
    mask[query] = False
    idx = np.flatnonzero(mask)
    if not len(idx) or k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    k = min(k, len(idx))
    part = idx[np.argpartition(-sims[idx], k - 1)[:k]] if k < len(idx) else idx
    order = part[np.lexsort((part, -sims[part]))]  # ties: lower index first (deterministic)
    return order.astype(np.int64), sims[order].astype(np.float32)


def pairwise_cosine(embeddings: np.ndarray, center: np.ndarray | None | bool = None) -> np.ndarray:
    """The cosine of every pair of distinct rows (upper triangle, flattened): how alike a batch is.
    `center` as in `unit` (the folder's mean, to compare batches of one folder alike)."""
    u = unit(embeddings, center)
    s = u @ u.T
    return s[np.triu_indices(len(u), 1)]


__all__ = ["EMBEDDING_DTYPE", "as_stored", "bytes_per_cell", "from_bytes", "pairwise_cosine", "similar",
           "to_bytes", "unit"]
