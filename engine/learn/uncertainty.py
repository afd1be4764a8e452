"""How sure a model is, per cell: the one definition of top class, margin and entropy (numpy only,
so the window can use it without importing torch)."""
from __future__ import annotations

import numpy as np


def summarise(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(argmax, top probability, margin = top1 - top2, entropy in nats) of (N, C) probabilities.
    A small margin means the model hesitated between two classes; entropy 0 is certain, ln C uniform."""
    probs = np.asarray(probs, dtype=np.float32).reshape(len(probs), -1)
    if len(probs) == 0:
        empty = np.zeros(0, np.float32)
        return np.zeros(0, np.int64), empty, empty, empty
    order = np.sort(probs, axis=1)
    top = order[:, -1]
    margin = top - (order[:, -2] if probs.shape[1] > 1 else 0.0)
    p = probs.astype(np.float64)
    entropy = -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(1)
    return probs.argmax(1), top, margin.astype(np.float32), entropy.astype(np.float32)


__all__ = ["summarise"]
