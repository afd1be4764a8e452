"""A training run's curves as plain Python: one point per epoch per curve, plus the running
per-batch training loss. The dashboard draws from this; nothing here knows Qt.

Fed either live (`add_epoch`, `add_batch` from engine events) or from a run folder's
metrics.jsonl (`from_records`), so a resumed run's curves continue where they were.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# Curves, by name: (section of an epoch record, key).
EPOCH_CURVES = {
    "train_loss": ("train", "loss"), "val_loss": ("val", "loss"),
    "train_accuracy": ("train", "accuracy"), "val_accuracy": ("val", "accuracy"),
    "val_weighted_f1": ("val", "weighted_f1"),
}


@dataclass
class TrainingHistory:
    epochs: list[int] = field(default_factory=list)
    curves: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in EPOCH_CURVES})
    lr: list[float] = field(default_factory=list)
    best: list[bool] = field(default_factory=list)
    stalls: list[int] = field(default_factory=list)
    batch_x: list[float] = field(default_factory=list)  # fractional epoch (epoch 1, batch 5/10 -> 0.5)
    batch_loss: list[float] = field(default_factory=list)  # running mean training loss in the epoch

    @classmethod
    def from_records(cls, records: Iterable[dict[str, Any]]) -> "TrainingHistory":
        """From metrics.jsonl lines (engine.learn.run_folder.RunDir.read_metrics)."""
        history = cls()
        for r in records:
            history.add_epoch(int(r["epoch"]), r.get("train", {}), r.get("val", {}), float(r.get("lr", math.nan)),
                              bool(r.get("is_best")), int(r.get("stalls", 0)))
        return history

    def add_epoch(self, epoch: int, train: dict, val: dict, lr: float, is_best: bool, stalls: int = 0) -> None:
        if self.epochs and epoch <= self.epochs[-1]:  # a resumed run repeats nothing, but be safe
            self._truncate(epoch - 1)
        parts = {"train": train or {}, "val": val or {}}
        self.epochs.append(epoch)
        for name, (part, key) in EPOCH_CURVES.items():
            value = parts[part].get(key)
            self.curves[name].append(float(value) if isinstance(value, (int, float)) else math.nan)
        self.lr.append(lr)
        self.best.append(is_best)
        self.stalls.append(stalls)

    def add_batch(self, epoch: int, batch: int, n_batches: int, loss: float | None) -> None:
        if loss is None or n_batches <= 0:
            return
        self.batch_x.append(epoch - 1 + batch / n_batches)
        self.batch_loss.append(float(loss))

    def _truncate(self, last_epoch: int) -> None:
        keep = sum(1 for e in self.epochs if e <= last_epoch)
        del self.epochs[keep:], self.lr[keep:], self.best[keep:], self.stalls[keep:]
        for values in self.curves.values():
            del values[keep:]
        kept_batches = sum(1 for x in self.batch_x if x <= last_epoch)
        del self.batch_x[kept_batches:], self.batch_loss[kept_batches:]

    @property
    def best_epoch(self) -> int | None:
        marked = [e for e, b in zip(self.epochs, self.best) if b]
        return marked[-1] if marked else None

    def lr_halvings(self) -> list[int]:
        """Epochs after which the learning rate went down."""
        return [self.epochs[i] for i in range(1, len(self.lr)) if self.lr[i] < self.lr[i - 1]]

    def __len__(self) -> int:
        return len(self.epochs)

    def summary(self, last: int, monitor: str) -> dict[str, Any]:
        """The last `last` epochs for the continue dialog: rows, best, current LR and the trend of
        the monitored metric (improving / flat / worsening over those epochs)."""
        rows = []
        for i in range(max(0, len(self.epochs) - last), len(self.epochs)):
            rows.append({"epoch": self.epochs[i], "lr": self.lr[i], "best": self.best[i],
                         **{name: values[i] for name, values in self.curves.items()}})
        key = monitor if monitor in self.curves else "val_loss"
        values = [r[key] for r in rows if not math.isnan(r[key])]
        trend = "flat"
        if len(values) >= 2:
            change = values[-1] - values[0]
            scale = max(abs(values[0]), 1e-9)
            if abs(change) / scale > 0.01:
                better = change < 0 if key.endswith("loss") else change > 0
                trend = "improving" if better else "worsening"
        return {"rows": rows, "monitor": key, "trend": trend, "lr": self.lr[-1] if self.lr else None,
                "best_epoch": self.best_epoch,
                "best_value": next((self.curves[key][i] for i in range(len(self.epochs) - 1, -1, -1)
                                    if self.best[i]), None)}
