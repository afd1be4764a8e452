"""The random state of a run, saved in last.pt: a resumed run continues the same random stream
(Python's, numpy's, torch's and CUDA's generators)."""
from __future__ import annotations

import random
from typing import Any

import numpy as np


def rng_state() -> dict[str, Any]:
    import torch

    st = np.random.get_state()
    out = {
        "python": random.getstate(),
        "numpy": [st[0], torch.from_numpy(st[1].astype(np.int64)), int(st[2]), int(st[3]), float(st[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    if "python" in state:
        v, internal, gauss = state["python"]
        random.setstate((v, tuple(internal), gauss))
    if "numpy" in state:
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda"])
        except RuntimeError:
            pass  # a different number of GPUs now; the data order is still reproduced


__all__ = ["rng_state", "set_rng_state"]
