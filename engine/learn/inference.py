"""Batched prediction with optional test-time augmentation, as a cancellable generator.

Unreadable files are reported in `problems` and the rest are still predicted: one bad file among
15,000 must not cost the user the whole run.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..data.cells import Cell, Problem
from ..data.dataset import CellDataset, make_loader, to_model_input
from ..data.imaging import ImageReadError
from ..utils.csvsafe import write_csv
from ..utils.jobs import CancelToken, drain
from ..utils.natsort import natural_key
from .backends.base import Backend
from .backends.torch_backend import TorchBackend
from .embeddings import EMBEDDING_DTYPE, as_stored
from .events import PredictedBatch, PredictProgress
from .uncertainty import summarise


log = logging.getLogger(__name__)


@dataclass
class Predictions:
    paths: list[str]
    patients: list[str | None]
    classes: tuple[str, ...]
    probs: np.ndarray  # (N, C) float32, rows sum to 1, columns in `classes` order
    problems: list[Problem] = field(default_factory=list)
    # per row: the original whose prediction a duplicate file's row copies ("" for a predicted
    # row); None when duplicates were not added (the CSV then has no duplicate_of column)
    duplicate_of: list[str] | None = None
    # (N, D) float16: each row's pooled backbone feature (engine.learn.embeddings); None when the
    # backend gave none
    embeddings: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def predicted(self) -> list[str]:
        """The top class of each row (a new list per call: index it once, not in a loop)."""
        return [self.classes[i] for i in self.probs.argmax(1)] if len(self.probs) else []

    @property
    def margin(self) -> np.ndarray:
        """top-1 minus top-2 probability: small = the model hesitated between two classes."""
        return summarise(self.probs)[2]

    @property
    def entropy(self) -> np.ndarray:
        """Shannon entropy in nats (0 = certain, ln C = uniform)."""
        return summarise(self.probs)[3]

    def with_duplicates(self, duplicates: Mapping[str, str]) -> "Predictions":
        """These predictions plus a row for each duplicate file (path -> its original, as in
        `ScanResult.duplicates`) whose original was predicted: the original's row, copied, with
        `duplicate_of` naming it. Rows stay in path order. A scan skips duplicates; this keeps
        them from silently missing from an output that should list every input."""
        index = {p: i for i, p in enumerate(self.paths)}
        added = [(dup, index[orig], orig) for dup, orig in duplicates.items() if orig in index and dup not in index]
        if not added:
            return self
        rows = list(zip(self.paths, range(len(self.paths)), self.duplicate_of or [""] * len(self.paths))) + added
        rows.sort(key=lambda row: natural_key(row[0]))  # the scan's order, duplicates among the rest
        source = [i for _, i, _ in rows]
        return Predictions([p for p, _, _ in rows], [self.patients[i] for i in source], self.classes,
                           self.probs[source], list(self.problems), [of for _, _, of in rows],
                           None if self.embeddings is None else self.embeddings[source])

    def write_csv(self, path: str | os.PathLike, labels: Sequence[str | None] | None = None) -> None:
        """path, patient, [label,] predicted, p_<class>..., margin, entropy[, duplicate_of]. `labels`
        (the expert's, for an evaluation split) adds the label column; `duplicate_of` is there after
        `with_duplicates`. Text cells are neutralised for spreadsheets."""
        if labels is not None and len(labels) != len(self.paths):
            raise ValueError(f"{len(labels)} labels for {len(self.paths)} predictions")
        label_col = ["label"] if labels is not None else []
        dup_col = ["duplicate_of"] if self.duplicate_of is not None else []
        header = ["path", "patient", *label_col, "predicted", *[f"p_{c}" for c in self.classes], "margin", "entropy",
                  *dup_col]
        labels = labels if labels is not None else [None] * len(self.paths)
        dups = self.duplicate_of if self.duplicate_of is not None else [""] * len(self.paths)
        rows = ([p, pat or "", *([lab or ""] if label_col else []), pred, *[f"{v:.6f}" for v in probs],
                 f"{m:.6f}", f"{e:.6f}", *([dup] if dup_col else [])]
                for p, pat, lab, pred, probs, m, e, dup in zip(self.paths, self.patients, labels, self.predicted,
                                                               self.probs, self.margin, self.entropy, dups))
        write_csv(path, header, rows)


class _PredictDataset(CellDataset):
    """Like CellDataset, but an unreadable file yields a blank image plus its reason."""

    def __getitem__(self, index: int):
        try:
            x, _, i = super().__getitem__(index)
            return x, i, ""
        except ImageReadError as exc:
            reason = str(exc.__cause__ or exc) or "unreadable"  # the decoder's reason, sans path
            return torch.zeros((3, self.img_size, self.img_size), dtype=torch.uint8), index, reason


def tta_views(x: torch.Tensor) -> list[torch.Tensor]:
    """identity, h-flip, v-flip, rot90: four of the eight dihedral views. The other four cost as
    much again on a CPU for a marginal gain; cells have no orientation, so any view is valid."""
    return [x, x.flip(3), x.flip(2), x.rot90(1, (2, 3))]


def predict_iter(
    model: torch.nn.Module | Backend,
    spec,
    root,
    cells: Sequence[Cell | str],
    *,
    device=None,
    batch_size: int = 64,
    tta: bool = False,
    workers: int = 0,
    cancel: CancelToken | None = None,
    temperature: float = 1.0,
    precision: str = "f32",
) -> Generator[PredictProgress | PredictedBatch, None, Predictions]:
    """Yields each batch's results (PredictedBatch) and PredictProgress; returns Predictions
    (StopIteration.value).

    `model` is a torch module (run on `device` in `precision`) or an inference Backend
    (`engine.learn.backends`, which knows its own device and precision). `cells` may be Cell records
    or relative paths. `temperature` (the model's calibration) divides the logits before the
    softmax. Raises Cancelled when `cancel` fires.
    """
    backend = model if isinstance(model, Backend) else TorchBackend(model, device or "cpu", precision)
    device = backend.device
    paths = [c.path if isinstance(c, Cell) else str(c) for c in cells]
    patients = [c.patient if isinstance(c, Cell) else None for c in cells]
    ds = _PredictDataset(root, paths, img_size=spec.img_size, interpolation=spec.interpolation)
    loader = make_loader(ds, batch_size=batch_size, shuffle=False, device=device, workers=workers)

    probs = np.zeros((len(paths), len(spec.classes)), np.float32)
    embeddings: np.ndarray | None = None  # (N, D) float16, made at the first batch that has them
    ok = np.zeros(len(paths), bool)
    problems: list[Problem] = []
    total, done, start = len(paths), 0, time.perf_counter()
    yield PredictProgress(0, total, None)
    with backend.running():
        for xb, idx, reasons in loader:
            if cancel is not None:
                cancel.raise_if_cancelled()
            good = torch.tensor([not r for r in reasons], dtype=torch.bool)
            for i, r in zip(idx.tolist(), reasons):
                if r:
                    problems.append(Problem(paths[i], r))
            if good.any():
                x = to_model_input(xb[good], spec, device, channels_last=backend.channels_last)
                views = tta_views(x) if tta else [x]
                # one forward over all views: bigger batches use the cores better
                logits, emb = backend.logits_and_embeddings(torch.cat(views))
                with torch.no_grad():
                    scaled = logits / float(temperature)
                    p = scaled.softmax(1).view(len(views), -1, logits.shape[1]).mean(0).cpu().numpy()
                    if emb is not None:  # the views' mean: a cell's embedding does not depend on its orientation
                        emb = as_stored(emb.view(len(views), -1, emb.shape[1]).mean(0).cpu().numpy())
                sel = idx[good].numpy()
                probs[sel], ok[sel] = p, True
                if emb is not None:
                    if embeddings is None:
                        embeddings = np.zeros((len(paths), emb.shape[1]), EMBEDDING_DTYPE)
                    embeddings[sel] = emb
                yield PredictedBatch(tuple(paths[i] for i in sel), p, emb)
            done += len(idx)
            elapsed = time.perf_counter() - start
            yield PredictProgress(done, total, done / elapsed if elapsed > 0 else None)
    keep = np.flatnonzero(ok)
    log.info("predicted %d cells in %.1f s (%d unreadable, tta %s, %s)", len(keep), time.perf_counter() - start,
             len(problems), tta, backend.describe())
    return Predictions([paths[i] for i in keep], [patients[i] for i in keep], tuple(spec.classes),
                       probs[keep], problems, embeddings=None if embeddings is None else embeddings[keep])


def predict(model, spec, root, cells, **kwargs) -> Predictions:
    """predict_iter without a driver: just the Predictions."""
    return drain(predict_iter(model, spec, root, cells, **kwargs))


__all__ = ["Predictions", "predict_iter", "predict", "tta_views"]
