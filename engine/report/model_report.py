"""What a model report says about one run folder: the paper's Table 1, made honest.

Data per split (classes, patients), the curves with the best epoch and the learning-rate halvings,
and the evaluation recomputed from the run's own predictions CSV (the test split when there is
one, else the validation split, which is said to be optimistic), so every number in the report
can be checked against a file in the run folder.
"""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..learn.calibration import expected_calibration_error
from ..learn.metrics import classification_metrics, per_patient
from ..learn.run_folder import RunDir
from ..learn.run_list import run_status
from ..utils.csvsafe import unneutralise
from .model_info import ModelInfo, model_info

log = logging.getLogger(__name__)
PARTS = ("train", "val", "test")


@dataclass
class Curves:
    epochs: list[int] = field(default_factory=list)
    train_loss: list[float | None] = field(default_factory=list)
    val_loss: list[float | None] = field(default_factory=list)
    train_accuracy: list[float | None] = field(default_factory=list)
    val_accuracy: list[float | None] = field(default_factory=list)
    val_weighted_f1: list[float | None] = field(default_factory=list)
    lr: list[float | None] = field(default_factory=list)
    best_epoch: int | None = None
    halvings: list[int] = field(default_factory=list)  # epochs that started with a lower learning rate


@dataclass
class Evaluation:
    split: str  # "test" or "val"
    csv_path: str
    n: int
    metrics: dict  # classification_metrics (+ ece)
    per_patient: list[dict]
    optimistic: bool  # evaluated on the split that chose the best epoch


@dataclass
class ModelReport:
    title: str
    run_dir: str
    model: ModelInfo
    config: dict
    classes: list[str]
    counts: dict[str, dict]  # part -> {n, per_class, n_patients, per_patient}
    curves: Curves
    evaluation: Evaluation | None
    card: dict
    date: str = ""


def read_curves(run: RunDir) -> Curves:
    records = [r for r in run.read_metrics() if "epoch" in r]
    out = Curves()
    last_lr = None
    for r in records:
        out.epochs.append(int(r["epoch"]))
        train, val = r.get("train") or {}, r.get("val") or {}
        out.train_loss.append(train.get("loss"))
        out.train_accuracy.append(train.get("accuracy"))
        out.val_loss.append(val.get("loss"))
        out.val_accuracy.append(val.get("accuracy"))
        out.val_weighted_f1.append(val.get("weighted_f1"))
        out.lr.append(r.get("lr"))
        if r.get("is_best"):
            out.best_epoch = int(r["epoch"])
        lr = r.get("lr")
        if lr is not None and last_lr is not None and lr < last_lr * 0.99:
            out.halvings.append(int(r["epoch"]))
        last_lr = lr if lr is not None else last_lr
    return out


def read_predictions_csv(path: Path, classes: list[str]) -> tuple[list[str], list[str | None], list[str], list[str], np.ndarray]:
    """(paths, patients, labels, predicted, probs) of a <split>_predictions.csv; ValueError with
    one line naming the file when it does not fit the model's classes or is damaged."""
    paths, patients, labels, predicted, probs = [], [], [], [], []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                row = {k: unneutralise(v) for k, v in row.items()}
                paths.append(row["path"])
                patients.append(row.get("patient") or None)
                labels.append(row["label"])
                predicted.append(row["predicted"])
                probs.append([float(row[f"p_{c}"]) for c in classes])
    except (KeyError, TypeError, ValueError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path} is damaged or was not written for this model (classes {', '.join(classes)}): "
                         f"{type(exc).__name__} {exc}; train the run again to rewrite it") from None
    unknown = sorted({t for t in labels + predicted if t not in classes})
    if unknown:
        raise ValueError(f"{path} names classes the model does not have ({', '.join(unknown)}); it was not "
                         "written for this model.pt")
    return paths, patients, labels, predicted, np.asarray(probs, dtype=np.float64).reshape(len(paths), len(classes))


def evaluate_run(run: RunDir, classes: list[str]) -> Evaluation | None:
    """Metrics from the run's test predictions (or validation ones when it had no test split)."""
    for part in ("test", "val"):
        path = run.predictions_path(part)
        if not path.is_file():
            continue
        paths, patients, labels, predicted, probs = read_predictions_csv(path, classes)
        if not paths:
            continue
        m = classification_metrics(labels, predicted, classes, probs=probs if len(classes) == 2 else None)
        m["ece"] = expected_calibration_error(probs, np.array([classes.index(t) for t in labels]))
        return Evaluation(part, str(path), len(paths), m, per_patient(patients, labels, predicted, classes),
                          optimistic=part == "val")
    return None


def build_model_report(run_dir: str | Path) -> ModelReport:
    """Read a run folder into a report. Raises FileNotFoundError when it is not one, ValueError
    (one line naming the file) when one of its files is damaged."""
    import time

    from ..learn.model import read_checkpoint  # torch: only when a report is made

    run = RunDir(run_dir)
    if not run.config_path.is_file():
        raise FileNotFoundError(f"{run.path} is not a training run folder (no config.json)")
    if not run.model_path.is_file():
        raise FileNotFoundError(f"{run.path} has no model.pt: the run ended before its first epoch")
    # The model file says what the model is (ValueError, one line naming it, for one that is no
    # model); the card (ValueError naming it when damaged) must describe that model.
    spec, _, _ = read_checkpoint(run.model_path)
    card = run.read_model_card() if run.card_path.is_file() else {}
    classes = list(spec.classes)
    if card.get("classes") and list(card["classes"]) != classes:
        raise ValueError(f"{run.card_path} does not describe {run.model_path.name} (classes {card['classes']} "
                         f"against {classes}): the folder mixes two runs; use a complete run folder")
    info = model_info(run.model_path)
    if card.get("status") == "running":  # a killed run's card says so forever: the process tells
        status, _ = run_status(card, run)
        card = {**card, "status": "running (training now: this report shows it as it stands)" if status == "running"
                else "interrupted (its training process is gone: killed, or out of memory); resume the run"}
    counts = (card.get("split") or {}).get("counts") or {}
    return ModelReport(title="Model report", run_dir=str(run.path), model=info, config=run.read_config(),
                       classes=classes, counts={p: counts.get(p) or {"n": 0, "per_class": {}, "n_patients": 0,
                                                                    "per_patient": {}} for p in PARTS},
                       curves=read_curves(run), evaluation=evaluate_run(run, classes), card=card,
                       date=time.strftime("%Y-%m-%d %H:%M"))


__all__ = ["Curves", "Evaluation", "ModelReport", "build_model_report", "evaluate_run", "read_curves",
           "read_predictions_csv"]
