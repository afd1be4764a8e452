"""Typed events that training and prediction yield, and the continue decision.

Training and prediction are generators: `fit(...)` yields these frozen dataclasses and a driver
(the CLI's loop, or the GUI's worker thread) reacts to them. When `fit` yields `AskContinue` the
driver answers with `generator.send(Continue(n))` or `generator.send(Halt())`; a plain `next()`
(sending None) counts as Halt, so an unattended driver can never train forever. Cancellation is
`engine.utils.jobs.CancelToken`; warnings for the user are `engine.utils.logs.warn`, not events.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


# ---- decisions sent into a training generator ------------------------------------------------
@dataclass(frozen=True, slots=True)
class Continue:
    epochs: int = 5


@dataclass(frozen=True, slots=True)
class Halt:
    pass


Decision = Continue | Halt


# ---- events ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Message:
    """Progress worth a line in the log: an LR halving, early stopping, a checkpoint written."""

    text: str


@dataclass(frozen=True, slots=True)
class TrainingStarted:
    run_dir: str
    device: str
    classes: tuple[str, ...]
    n_train: int
    n_val: int
    n_test: int
    split_protocol: str
    start_epoch: int
    max_epochs: int
    weights_source: str


@dataclass(frozen=True, slots=True)
class BatchProgress:
    phase: str  # "train" | "val" | "predict"
    epoch: int
    batch: int  # 1-based
    n_batches: int
    loss: float | None = None
    accuracy: float | None = None
    lr: float | None = None
    images_per_s: float | None = None


@dataclass(frozen=True, slots=True)
class EpochEnd:
    epoch: int  # 1-based
    train: dict[str, float]
    val: dict[str, float]
    lr: float
    is_best: bool
    seconds: float
    stalls: int = 0


@dataclass(frozen=True, slots=True)
class AskContinue:
    """Halt, or continue for N more epochs? Answer with generator.send(Continue(n) | Halt())."""

    epoch: int
    best_epoch: int
    best_metric: float
    suggested_epochs: int


@dataclass(frozen=True, slots=True)
class TrainingFinished:
    run_dir: str
    reason: str  # completed | halted | early-stopped | cancelled
    epochs_run: int
    best_epoch: int
    best_metrics: dict[str, float]
    test_metrics: dict[str, Any] | None = None
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class TrainingFailed:
    """A failure with a message that says what to do; saved checkpoints are kept."""

    message: str
    kind: str = "error"  # out-of-memory | nan-loss | data | weights | error
    run_dir: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PredictProgress:
    done: int
    total: int
    images_per_s: float | None = None


@dataclass(frozen=True, slots=True)
class PredictedBatch:
    """Results as they come: the cells of one batch and their (calibrated) probabilities."""

    paths: tuple[str, ...]
    probs: Any  # np.ndarray (len(paths), n_classes) float32, columns in the model's class order
    # np.ndarray (len(paths), num_features) float16: each cell's pooled backbone feature
    # (engine.learn.embeddings); None when the backend gives none (an older ONNX export)
    embeddings: Any = None
