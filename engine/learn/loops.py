"""One pass over a loader: `train_one_epoch` and `validate`, plus the LR plateau schedule.

Free functions with an explicit device and autocast, like timm's: each is a generator that yields
throttled `BatchProgress` events and returns a metric dict, so `fit` and benchmarks can drive
them alike (`engine.utils.jobs.drain` runs one without a driver).
"""
from __future__ import annotations

import math
import time
from collections.abc import Generator

import numpy as np
import torch
import torch.nn.functional as F

from ..data.dataset import to_model_input
from ..utils.jobs import CancelToken
from .device import autocast
from .events import BatchProgress

PROGRESS_INTERVAL_S = 0.25  # BatchProgress at most ~4 per second: drivers redraw, never flood


class NonFiniteLoss(RuntimeError):
    def __init__(self, phase: str, epoch: int, batch: int):
        super().__init__(f"the {phase} loss became NaN/inf at epoch {epoch}, batch {batch}")
        self.phase, self.epoch, self.batch = phase, epoch, batch


class Plateau:
    """The notebook's LR schedule: no improvement for `patience` epochs -> lr *= factor and one
    more stall; an improvement resets the stalls; `max_stalls` stalls in a row -> stop."""

    def __init__(self, mode: str, patience: int = 1, factor: float = 0.5, max_stalls: int = 3):
        self.mode, self.patience, self.factor, self.max_stalls = mode, patience, factor, max_stalls
        self.best: float | None = None
        self.bad_epochs = 0
        self.stalls = 0

    def step(self, value: float, optimizer) -> bool:
        """Record one epoch's value; return True when it is the best so far."""
        if self.best is None or (value < self.best if self.mode == "min" else value > self.best):
            self.best, self.bad_epochs, self.stalls = value, 0, 0
            return True
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            self.bad_epochs = 0
            self.stalls += 1
            for group in optimizer.param_groups:
                group["lr"] *= self.factor
        return False

    @property
    def should_stop(self) -> bool:
        return self.stalls >= self.max_stalls

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_epochs": self.bad_epochs, "stalls": self.stalls}

    def load_state_dict(self, d: dict) -> None:
        self.best, self.bad_epochs, self.stalls = d["best"], int(d["bad_epochs"]), int(d["stalls"])


def class_weights(targets, n_classes: int) -> torch.Tensor:
    """Inverse class frequency, scaled so a balanced set gets weight 1 (C-NMC is 2:1 all:hem)."""
    counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=n_classes).astype(np.float64)
    w = len(targets) / (n_classes * np.maximum(counts, 1))
    return torch.tensor(w, dtype=torch.float32)


class DataWait:
    """Seconds the host spent waiting for the loader: when it nears an epoch's time, the loader
    (decoding, augmentation, too few workers), not the model, sets the pace."""

    def __init__(self) -> None:
        self.seconds = 0.0


def device_batches(loader, spec, device, channels_last: bool, cancel: CancelToken | None,
                   wait: DataWait | None = None, pad_to: int | None = None, batches=None):
    """(1-based batch number, normalised input, targets) on the device; the cancel token is
    checked before every batch, so a cancel costs at most the batch in progress.

    `pad_to` (evaluation on a GPU) fills a short last batch with zero images up to that size, so
    every batch has the one shape whose kernels are already chosen; the caller keeps only the
    first `len(targets)` outputs. Eval-mode outputs are per image, so padding changes none.
    `batches`: an iterator already started on `loader` (its workers began decoding earlier)."""
    batches = iter(loader) if batches is None else batches
    i = 0
    while True:
        t = time.perf_counter()
        try:
            x, y, _ = next(batches)
        except StopIteration:
            return
        if wait is not None:
            wait.seconds += time.perf_counter() - t
        i += 1
        if cancel is not None:
            cancel.raise_if_cancelled()
        if pad_to is not None and x.shape[0] < pad_to:
            x = torch.cat([x, x.new_zeros((pad_to - x.shape[0], *x.shape[1:]))])
        yield i, to_model_input(x, spec, device, channels_last), y.to(device, non_blocking=True)


def train_one_epoch(model, loader, loss_fn, optimizer, device, spec, *, epoch: int = 1,
                    autocast_dtype=None, scaler=None, channels_last: bool = False,
                    cancel: CancelToken | None = None, scheduler=None, first_update: int = 0,
                    ema=None, reduce=None, batches=None) -> Generator[BatchProgress, None, dict]:
    """One pass over `loader`; yields throttled BatchProgress, returns {loss, accuracy, images,
    seconds, images_per_s, data_seconds (waiting for the loader)}. Loss/accuracy accumulate on the
    device and are read only when reported, so the GPU is not synchronised every batch.

    `scheduler` (timm's, stepped per update like timm's train.py: `first_update` is the number of
    updates before this epoch) and `ema` (timm's ModelEmaV3) are optional. `reduce` (DDP) sums a
    tensor over the ranks: the returned loss and accuracy are then those of all ranks' images.
    `batches`: see `device_batches`."""
    model.train()
    n_batches = len(loader)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen, t0, last_report = 0, time.perf_counter(), 0.0
    wait = DataWait()
    for i, x, y in device_batches(loader, spec, device, channels_last, cancel, wait, batches=batches):
        with autocast(device, autocast_dtype):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if ema is not None:
            ema.update(getattr(model, "module", model), step=first_update + i)  # DDP: the inner model
        if scheduler is not None:
            scheduler.step_update(num_updates=first_update + i)
        loss_sum += loss.detach() * y.shape[0]
        correct += (logits.detach().argmax(1) == y).sum()
        seen += y.shape[0]
        now = time.perf_counter()
        if i == 1 or i == n_batches or now - last_report >= PROGRESS_INTERVAL_S:
            last_report = now
            mean_loss = loss_sum.item() / seen
            if not math.isfinite(mean_loss):
                raise NonFiniteLoss("training", epoch, i)
            yield BatchProgress("train", epoch, i, n_batches, mean_loss, correct.item() / seen,
                                optimizer.param_groups[-1]["lr"], seen / max(now - t0, 1e-9))
    seconds = time.perf_counter() - t0
    if reduce is not None:
        totals = reduce(torch.stack([loss_sum.float(), correct.float(),
                                     torch.tensor(float(seen), device=device)]))
        loss_sum, correct, seen = totals[0], totals[1], int(totals[2].item())
    mean_loss = loss_sum.item() / max(seen, 1)
    if not math.isfinite(mean_loss):
        raise NonFiniteLoss("training", epoch, n_batches)
    return {"loss": mean_loss, "accuracy": float(correct.item()) / max(seen, 1), "images": seen,
            "seconds": seconds, "images_per_s": seen / max(seconds, 1e-9), "data_seconds": wait.seconds}


def validate(model, loader, device, spec, *, epoch: int = 1, phase: str = "val", autocast_dtype=None,
             channels_last: bool = False, cancel: CancelToken | None = None,
             outputs: bool = False, tta: bool = False, gather=None,
             pad_to: int | None = None, batches=None) -> Generator[BatchProgress, None, dict]:
    """Evaluate without gradients; returns {loss (unweighted CE), accuracy, weighted_f1, macro_f1,
    balanced_accuracy, n} (+ "y_true", "y_pred", "probs", "logits" arrays when `outputs`).

    `tta` averages the probabilities of inference's 4 dihedral views (the logits returned are their
    log). `gather` (DDP) concatenates a tensor over the ranks, which each validated a shard."""
    from sklearn.metrics import balanced_accuracy_score, f1_score

    model.eval()
    n_batches = len(loader)
    loss_sum, ys, logit_batches = 0.0, [], []
    t0 = last_report = time.perf_counter()
    for i, x, y in device_batches(loader, spec, device, channels_last, cancel, pad_to=pad_to, batches=batches):
        # inference mode is thread-local: it must not stay on while this generator is suspended
        # at a yield, or the driver's thread (and whatever it runs next) inherits it.
        with torch.inference_mode(), autocast(device, autocast_dtype):
            if tta:
                from .inference import tta_views  # the views inference uses, so test and predict agree

                views = tta_views(x)
                p = model(torch.cat(views)).float().softmax(1).view(len(views), x.shape[0], -1).mean(0)
                logits = p.clamp_min(1e-12).log()[: len(y)]
            else:
                logits = model(x).float()[: len(y)]
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            ys.append(y.cpu())
            logit_batches.append(logits.cpu())
        now = time.perf_counter()
        if i == n_batches or now - last_report >= PROGRESS_INTERVAL_S:
            last_report = now
            yield BatchProgress(phase, epoch, i, n_batches,
                                images_per_s=sum(len(t) for t in ys) / max(now - t0, 1e-9))
    if gather is not None:  # every rank takes part, even one with an empty shard
        n_classes = len(spec.classes)
        ys = [gather(torch.cat(ys) if ys else torch.zeros(0, dtype=torch.int64))]
        logit_batches = [gather(torch.cat(logit_batches) if logit_batches else torch.zeros(0, n_classes))]
        loss_sum = float(gather(torch.tensor([loss_sum], dtype=torch.float64)).sum())
    if not ys or not len(ys[0]):
        return {"n": 0}
    y_true = torch.cat(ys).numpy()
    all_logits = torch.cat(logit_batches)
    p = all_logits.softmax(1).numpy()
    y_pred = p.argmax(1)
    n = len(y_true)
    if not math.isfinite(loss_sum):
        raise NonFiniteLoss(phase, epoch, n_batches)
    out = {"loss": loss_sum / n, "accuracy": float((y_true == y_pred).mean()),
           "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
           "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
           "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)), "n": n}
    if outputs:
        out.update(y_true=y_true, y_pred=y_pred, probs=p, logits=all_logits.numpy())
    return out
