"""Classification metrics (all computed by scikit-learn) and the per-patient summary.

Class order is always the caller's `classes`, so confusion-matrix rows/columns and per-class
entries line up with the model's output columns even when a class is absent from this set.
"""
from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from ..utils.natsort import natural_key


def _check(y_true: Sequence[str], y_pred: Sequence[str], classes: Sequence[str]) -> None:
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    unknown = (set(y_true) | set(y_pred)) - set(classes)
    if unknown:
        raise ValueError(f"labels {sorted(map(str, unknown))} are not among the classes {list(classes)}")


def classification_metrics(y_true: Sequence[str], y_pred: Sequence[str], classes: Sequence[str],
                           probs: np.ndarray | None = None) -> dict:
    """n, accuracy, weighted_f1, macro_f1, balanced_accuracy, per_class, confusion_matrix, classes
    (+ roc_auc for two classes when `probs` (N, C) in `classes` order is given)."""
    classes = list(classes)
    y_true, y_pred = list(y_true), list(y_pred)
    _check(y_true, y_pred, classes)
    out: dict = {"n": len(y_true), "classes": classes}
    if not y_true:
        out.update(accuracy=None, weighted_f1=None, macro_f1=None, balanced_accuracy=None,
                   per_class={c: {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0} for c in classes},
                   confusion_matrix=[[0] * len(classes) for _ in classes])
        if len(classes) == 2:
            out["roc_auc"] = None
        return out
    with warnings.catch_warnings():
        # A class absent from y_true is normal (a small test split); zero_division=0 covers the
        # values, these filters stop sklearn's per-call warning spam about it.
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        warnings.filterwarnings("ignore", message="A single label was found")
        prec, rec, f1, sup = precision_recall_fscore_support(
            y_true, y_pred, labels=classes, zero_division=0)
        out["accuracy"] = float(accuracy_score(y_true, y_pred))
        out["weighted_f1"] = float(f1_score(y_true, y_pred, labels=classes, average="weighted", zero_division=0))
        out["macro_f1"] = float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0))
        out["balanced_accuracy"] = float(balanced_accuracy_score(y_true, y_pred))
    out["per_class"] = {
        c: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for c, p, r, f, s in zip(classes, prec, rec, f1, sup)
    }
    out["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=classes).tolist()
    if len(classes) == 2:
        out["roc_auc"] = _binary_auc(y_true, classes, probs)
    return out


def _binary_auc(y_true: list[str], classes: list[str], probs) -> float | None:
    """AUC of P(classes[1]); undefined (None) without probabilities or with one class present."""
    if probs is None:
        return None
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (len(y_true), 2):
        raise ValueError(f"probs must be (N, 2) for two classes, got {probs.shape}")
    y = np.array([t == classes[1] for t in y_true], dtype=int)
    if y.min() == y.max():
        return None
    return float(roc_auc_score(y, probs[:, 1]))


def per_patient(patients: Sequence[str | None], y_true: Sequence[str | None], y_pred: Sequence[str],
                classes: Sequence[str]) -> list[dict]:
    """One row per patient: how many cells, their true classes, the fraction predicted as each
    class, and the accuracy on that patient's labelled cells (None when none are labelled).

    A patient-level diagnosis looks at the predicted fractions (e.g. share of blast cells), not at
    any single cell, which is why they are reported rather than a single vote.
    """
    if not (len(patients) == len(y_true) == len(y_pred)):
        raise ValueError("patients, y_true and y_pred must have the same length")
    classes = list(classes)
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(patients):
        groups.setdefault(p if p is not None else "(none)", []).append(i)
    rows = []
    for patient, idx in sorted(groups.items(), key=lambda kv: natural_key(kv[0])):
        true = Counter(y_true[i] for i in idx if y_true[i] is not None)
        pred = Counter(y_pred[i] for i in idx)
        labelled = [i for i in idx if y_true[i] is not None]
        acc = (sum(y_true[i] == y_pred[i] for i in labelled) / len(labelled)) if labelled else None
        rows.append({
            "patient": patient,
            "cells": len(idx),
            "true": {c: true.get(c, 0) for c in classes},
            "predicted": {c: pred.get(c, 0) / len(idx) for c in classes},
            "accuracy": acc,
        })
    return rows


def score_predictions(paths: Sequence[str], patients: Sequence[str | None], predicted: Sequence[str],
                      probs: np.ndarray, truth: dict[str, str | None], classes: Sequence[str]) -> dict:
    """Metrics of predictions against known labels (`truth`: path -> label), in one pass.

    Cells whose label is not one of the model's classes are not scored: `skipped` counts the
    unlabeled ones and names the other labels met (unsure, classes the model does not know).
    Raises ValueError when no cell can be scored.
    """
    classes = list(classes)
    wanted = set(classes)
    keep = [i for i, p in enumerate(paths) if truth.get(p) in wanted]
    if not keep:
        raise ValueError(f"no cells carry one of the model's classes {classes}")
    y_true = [truth[paths[i]] for i in keep]
    y_pred = [predicted[i] for i in keep]
    report = classification_metrics(y_true, y_pred, classes, probs=np.asarray(probs)[keep])
    report["per_patient"] = per_patient([patients[i] for i in keep], y_true, y_pred, classes)
    labels = [truth.get(p) for p in paths]
    unknown = Counter(t for t in labels if t is not None and t not in wanted)
    report["skipped"] = {"unlabeled": sum(1 for t in labels if t is None),
                         "unknown_classes": sorted(unknown),
                         "unknown_class_cells": {k: unknown[k] for k in sorted(unknown)}}  # label -> cells
    return report
