"""Temperature scaling (Guo et al., 2017): one number that makes the probabilities honest.

A fine-tuned network is usually over-confident: it says 0.99 where it is right 90% of the time.
Dividing its logits by a temperature T > 1, fitted on the validation split by minimising the
negative log-likelihood, keeps every prediction (the argmax does not move) and brings the stated
probability closer to the observed accuracy, which the expected calibration error (ECE) measures.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

ECE_BINS = 15
T_BOUNDS = (0.05, 20.0)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Weighted mean |accuracy - confidence| over equal-width confidence bins (top-1)."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    if len(labels) == 0:
        return float("nan")
    confidence = probs.max(1)
    correct = probs.argmax(1) == labels
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    return float(-log_softmax(np.asarray(logits, np.float64) / temperature, axis=1)[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the validation NLL (searched on log T, within T_BOUNDS)."""
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels, np.int64)
    if len(labels) < 2:
        return 1.0
    result = minimize_scalar(lambda log_t: nll(logits, labels, float(np.exp(log_t))),
                             bounds=tuple(np.log(T_BOUNDS)), method="bounded")
    return float(np.exp(result.x)) if result.success else 1.0


def calibrate(logits: np.ndarray, labels: np.ndarray) -> dict:
    """Fit T and report ECE and NLL before and after: what the model card records."""
    t = fit_temperature(logits, labels)
    before, after = softmax(np.asarray(logits, np.float64), axis=1), softmax(np.asarray(logits, np.float64) / t, axis=1)
    return {"temperature": t, "n": int(len(labels)),
            "ece_before": expected_calibration_error(before, labels),
            "ece_after": expected_calibration_error(after, labels),
            "nll_before": nll(logits, labels, 1.0), "nll_after": nll(logits, labels, t)}
