"""A round of the expert loop that keeps the model's backbone: the head learns again on the
stored embeddings of every labelled cell, and the folder is predicted again from its stored
embeddings. No image is read and no backbone runs, so a round takes seconds on a CPU (a full
training run from ImageNet takes minutes to hours): the "continue from the active model" start
of Keep Learning (engine.workspace.loop). What the benchmark measured is in the README.

The head is `CellClassifier`'s (BatchNorm, Linear 256, ReLU, Dropout 0.45, Linear C), trained
afresh from the seed at each round with Adamax, class-weighted cross-entropy and a fixed number of
updates: the validation split (patient-disjoint where patients exist) is never trained on; it
reports each epoch, and fits the calibration temperature when it holds 20 cells or more.
"""
from __future__ import annotations

import math
import time
from collections.abc import Generator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..utils.jobs import CancelToken
from .events import EpochEnd
from .head_round import VAL_FRACTION, HeadSettings, round_split  # noqa: F401  (the round's API in one import)

MIN_CALIBRATION_CELLS = 20  # as a training run's (engine.learn.evaluation)
MAX_REPORTS = 20  # a round's curve points at most


@dataclass
class HeadFit:
    state: dict  # the head's tensors, keyed as in CellClassifier ("head.0.weight", ...)
    history: list = field(default_factory=list)  # per epoch: the metrics.jsonl record
    temperature: float = 1.0
    calibration: dict | None = None
    val: dict = field(default_factory=dict)  # the final head's validation metrics (empty: no validation)
    seconds: float = 0.0


@contextmanager
def one_thread():
    """torch on one thread around a head's small matrix products (no yield inside): on a busy
    2-core CPU two threads made them ten times slower (OpenMP's threads waiting on each other)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def make_head(n_features: int, n_classes: int, hidden: int = 256, dropout: float = 0.45) -> nn.Sequential:
    """The head of `CellClassifier`, alone (its state dict's keys without the "head." prefix)."""
    return nn.Sequential(nn.BatchNorm1d(n_features), nn.Linear(n_features, hidden), nn.ReLU(inplace=True),
                         nn.Dropout(dropout), nn.Linear(hidden, n_classes))


def head_logits(head: nn.Module, embeddings: np.ndarray, batch: int = 8192) -> np.ndarray:
    """(N, C) float32 logits of the head on stored embeddings (eval mode)."""
    head.eval()
    out = []
    with torch.inference_mode(), one_thread():
        for start in range(0, len(embeddings), batch):
            x = torch.from_numpy(np.asarray(embeddings[start:start + batch], dtype=np.float32))
            out.append(head(x).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, head[-1].out_features), np.float32)


def probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, np.float64) / float(temperature)
    z -= z.max(1, keepdims=True)
    p = np.exp(z)
    return (p / p.sum(1, keepdims=True)).astype(np.float32)


def _metrics(logits: np.ndarray, y: np.ndarray) -> dict:
    from sklearn.metrics import f1_score

    if not len(y):
        return {}
    logp = torch.log_softmax(torch.from_numpy(np.asarray(logits, np.float32)), 1)
    loss = float(nn.functional.nll_loss(logp, torch.from_numpy(np.asarray(y, np.int64))))
    pred = np.asarray(logits).argmax(1)
    return {"loss": loss, "accuracy": float((pred == y).mean()),
            "weighted_f1": float(f1_score(y, pred, average="weighted", zero_division=0)), "n": int(len(y))}


def fit_head_iter(embeddings: np.ndarray, targets: np.ndarray, n_classes: int, *,
                  val: tuple[np.ndarray, np.ndarray] | None = None, settings: HeadSettings | None = None,
                  hidden: int = 256, dropout: float = 0.45, cancel: CancelToken | None = None
                  ) -> Generator[EpochEnd, None, HeadFit]:
    """Train a fresh head on (embeddings, targets); yields an EpochEnd per epoch, returns HeadFit."""
    s = settings or HeadSettings()
    t0 = time.perf_counter()
    x = torch.from_numpy(np.asarray(embeddings, np.float32))
    y = torch.from_numpy(np.asarray(targets, np.int64))
    if len(x) < 2:
        raise ValueError("a round needs at least two labelled training cells")
    g = torch.Generator().manual_seed(int(s.seed))
    torch.manual_seed(int(s.seed))
    head = make_head(x.shape[1], n_classes, hidden, dropout)
    weight = None
    if s.class_weights:
        counts = np.bincount(np.asarray(targets, np.int64), minlength=n_classes).astype(np.float64)
        weight = torch.tensor(len(targets) / (n_classes * np.maximum(counts, 1)), dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    opt = torch.optim.Adamax(head.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    batch = min(s.batch_size, len(x))
    per_epoch = max(1, len(x) // batch)  # a lone last sample is dropped (BatchNorm needs two)
    epochs = max(1, math.ceil(s.updates / per_epoch))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * per_epoch)
    history: list = []
    vx, vy = (np.asarray(val[0], np.float32), np.asarray(val[1], np.int64)) if val is not None and len(val[1]) else \
        (None, None)
    # A small set makes hundreds of passes: they are reported (curves, metrics.jsonl, EpochEnd) in at
    # most MAX_REPORTS blocks, each an "epoch" of the round's curves.
    per_report = max(1, math.ceil(epochs / MAX_REPORTS))
    reports = math.ceil(epochs / per_report)
    done = 0
    for report in range(1, reports + 1):
        if cancel is not None:
            cancel.raise_if_cancelled()
        te = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        for _ in range(min(per_report, epochs - done)):
            done += 1
            with one_thread():
                head.train()
                order = torch.randperm(len(x), generator=g)
                for b in range(per_epoch):
                    sel = order[b * batch:(b + 1) * batch]
                    logits = head(x[sel])
                    loss = loss_fn(logits, y[sel])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    loss_sum += float(loss.detach()) * len(sel)
                    correct += int((logits.argmax(1) == y[sel]).sum())
                    seen += len(sel)
                    time.sleep(0)  # hand the GIL over: the window's label keys never wait on a round
        with one_thread():
            vm = _metrics(head_logits(head, vx), vy) if vx is not None else {}
        train = {"loss": loss_sum / seen, "accuracy": correct / seen, "images": seen}
        lr = opt.param_groups[0]["lr"]
        last = report == reports
        record = {"epoch": report, "lr": lr, "train": train, "val": vm, "is_best": last, "stalls": 0,
                  "seconds": time.perf_counter() - te, "time": time.time()}
        history.append(record)
        yield EpochEnd(report, train, vm, lr, last, record["seconds"], 0)
    state = {f"head.{k}": v.detach().clone() for k, v in head.state_dict().items()}
    fit = HeadFit(state, history, seconds=time.perf_counter() - t0)
    if vx is not None:
        logits = head_logits(head, vx)
        fit.val = _metrics(logits, vy)
        if len(vy) >= MIN_CALIBRATION_CELLS:
            from .calibration import calibrate

            fit.calibration = calibrate(logits, vy)
            fit.temperature = float(fit.calibration["temperature"])
        else:
            fit.calibration = {"skipped": f"only {len(vy)} validation cells ({MIN_CALIBRATION_CELLS} needed)",
                               "n": int(len(vy))}
    return fit


def fit_head(*args, **kwargs) -> HeadFit:
    from ..utils.jobs import drain

    return drain(fit_head_iter(*args, **kwargs))


def load_head(state: dict, n_features: int, n_classes: int, hidden: int = 256, dropout: float = 0.45) -> nn.Module:
    head = make_head(n_features, n_classes, hidden, dropout)
    head.load_state_dict({k[len("head."):]: v for k, v in state.items() if k.startswith("head.")})
    return head.eval()


__all__ = ["HeadFit", "HeadSettings", "MIN_CALIBRATION_CELLS", "VAL_FRACTION", "fit_head", "fit_head_iter",
           "head_logits", "load_head", "make_head", "one_thread", "probabilities", "round_split"]
