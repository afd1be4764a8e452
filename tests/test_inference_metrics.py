"""Prediction (batches, TTA, bad files, cancel, CSV) and the metrics, checked by hand."""
from __future__ import annotations

import csv
import math
import shutil
import warnings

import numpy as np
import pytest
import torch

from engine.data.cells import Cell
from engine.data.scan import scan
from engine.learn.events import PredictedBatch, PredictProgress
from engine.utils.jobs import CancelToken, Cancelled
from engine.learn.inference import Predictions, predict, predict_iter, tta_views
from engine.learn.metrics import classification_metrics, per_patient, score_predictions
from engine.learn.model import build_model


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model, spec, _ = build_model("test_efficientnet", ["all", "hem"], pretrained=False, img_size=64)
    return model, spec


@pytest.fixture()
def cnmc_with_corrupt(cnmc_dir, tmp_path):
    """A few real C-NMC cells plus one truncated BMP that appeared after the scan."""
    res = scan(cnmc_dir / "training_data")
    cells = res.cells[:5]
    for c in cells:
        (tmp_path / c.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(res.root / c.path, tmp_path / c.path)
    bad = "fold_0/all/UID_99_1_1_all.bmp"
    (tmp_path / bad).write_bytes((res.root / cells[0].path).read_bytes()[:3000])
    return tmp_path, cells[:2] + [Cell(bad, "all", "99")] + cells[2:]


def test_predict_reports_bad_files_and_predicts_the_rest(tiny, cnmc_with_corrupt, tmp_path):
    model, spec = tiny
    root, cells = cnmc_with_corrupt
    model.train()
    gen = predict_iter(model, spec, root, cells, device="cpu", batch_size=2)
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            preds = stop.value
            break
    assert all(isinstance(e, (PredictProgress, PredictedBatch)) for e in events)
    progress = [e for e in events if isinstance(e, PredictProgress)]
    assert progress[-1].done == progress[-1].total == 6 and len(progress) == 1 + 3  # start + 3 batches
    assert sum(len(e.paths) for e in events if isinstance(e, PredictedBatch)) == 5  # the corrupt one is not
    assert model.training  # the caller's mode is restored
    assert isinstance(preds, Predictions) and len(preds) == 5
    assert [p.path for p in preds.problems] == [cells[2].path]
    assert preds.problems[0].reason.endswith("truncated BMP file")  # no path, just why
    assert preds.paths == [c.path for c in cells if c.path != cells[2].path]
    assert preds.patients[0] == cells[0].patient
    assert preds.probs.shape == (5, 2) and preds.probs.dtype == np.float32
    np.testing.assert_allclose(preds.probs.sum(1), 1.0, atol=1e-5)
    assert preds.problems and set(preds.predicted) <= {"all", "hem"}

    # Batch size must not change the numbers (eval mode: BN uses running statistics).
    again = predict(model, spec, root, cells, device="cpu", batch_size=5)
    np.testing.assert_allclose(again.probs, preds.probs, atol=1e-5)

    out = tmp_path / "p.csv"
    preds.write_csv(out)
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["path", "patient", "predicted", "p_all", "p_hem", "margin", "entropy"]
    assert rows[0]["path"] == cells[0].path and len(rows) == 5


def test_tta_views_and_probabilities(tiny, cnmc_dir):
    model, spec = tiny
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    views = tta_views(x)
    assert len(views) == 4 and all(v.shape == x.shape for v in views)
    assert len({v.numpy().tobytes() for v in views}) == 4
    cells = [c for c in scan(cnmc_dir / "training_data").cells[:3]]
    plain = predict(model, spec, cnmc_dir / "training_data", cells, device="cpu")
    aug = predict(model, spec, cnmc_dir / "training_data", [c.path for c in cells], device="cpu", tta=True)
    assert aug.probs.shape == (3, 2) and aug.patients == [None] * 3
    np.testing.assert_allclose(aug.probs.sum(1), 1.0, atol=1e-5)
    assert not np.allclose(aug.probs, plain.probs)  # the extra views did contribute


def test_cancel_is_checked_every_batch(tiny, cnmc_dir):
    model, spec = tiny
    cells = scan(cnmc_dir / "training_data").cells[:4]
    token = CancelToken()
    gen = predict_iter(model, spec, cnmc_dir / "training_data", cells, device="cpu", batch_size=1, cancel=token)
    while not (isinstance(event := next(gen), PredictProgress) and event.done == 1):
        pass
    token.cancel()
    with pytest.raises(Cancelled):
        next(gen)


def test_a_suspended_prediction_leaves_the_callers_thread_out_of_inference_mode(tiny, cnmc_dir):
    """Regression: the generator yielded inside torch.inference_mode(), so whatever the driving
    thread ran between two events (or after abandoning the generator) had inference mode on."""
    model, spec = tiny
    cells = scan(cnmc_dir / "training_data").cells[:2]
    gen = predict_iter(model, spec, cnmc_dir / "training_data", cells, device="cpu", batch_size=1)
    while not isinstance(next(gen), PredictedBatch):
        assert not torch.is_inference_mode_enabled()
    assert not torch.is_inference_mode_enabled()
    with torch.no_grad():
        torch.nn.Linear(2, 2).weight.normal_()  # what failed in the next test once a generator was abandoned
    gen.close()


def test_margin_and_entropy():
    p = np.array([[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3]], np.float32)
    preds = Predictions(["a", "b"], [None, "P"], ("x", "y", "z"), p)
    np.testing.assert_allclose(preds.margin, [0.5, 0.0], atol=1e-6)
    h = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1))
    np.testing.assert_allclose(preds.entropy, [h, math.log(3)], atol=1e-5)
    assert preds.predicted[0] == "x"


def test_binary_metrics_by_hand():
    classes = ["all", "hem"]
    y_true = ["all", "all", "all", "hem", "hem"]
    y_pred = ["all", "all", "hem", "hem", "all"]
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7], [0.55, 0.45]])
    m = classification_metrics(y_true, y_pred, classes, probs)
    assert m["n"] == 5 and m["classes"] == classes
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["confusion_matrix"] == [[2, 1], [1, 1]]
    # all: P = 2/3, R = 2/3, F1 = 2/3; hem: P = 1/2, R = 1/2, F1 = 1/2
    assert m["per_class"]["all"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert m["per_class"]["hem"]["f1"] == pytest.approx(0.5)
    assert m["weighted_f1"] == pytest.approx((3 * 2 / 3 + 2 * 0.5) / 5)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.5) / 2)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    # P(hem) ranks: positives 0.7, 0.45 vs negatives 0.1, 0.2, 0.6 -> 5 of 6 pairs ordered
    assert m["roc_auc"] == pytest.approx(5 / 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert classification_metrics(["all"], ["all"], classes, np.array([[0.9, 0.1]]))["roc_auc"] is None


def test_multiclass_metrics_with_absent_class_do_not_warn():
    classes = ["a", "b", "c"]
    y_true = ["a", "a", "b", "b"]  # "c" never occurs in the truth
    y_pred = ["a", "c", "b", "b"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = classification_metrics(y_true, y_pred, classes)
    assert "roc_auc" not in m
    assert m["confusion_matrix"] == [[1, 0, 1], [0, 2, 0], [0, 0, 0]]
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["per_class"]["a"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)
    assert m["weighted_f1"] == pytest.approx((2 * 2 / 3 + 2 * 1.0) / 4)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1.0) / 2)
    with pytest.raises(ValueError, match="not among the classes"):
        classification_metrics(["a"], ["zz"], classes)


def test_per_patient_rows():
    rows = per_patient(["P10", "P2", "P2", None], ["all", "hem", "hem", None], ["all", "hem", "all", "hem"],
                       ["all", "hem"])
    assert [r["patient"] for r in rows] == ["(none)", "P2", "P10"]
    p2 = rows[1]
    assert p2["cells"] == 2 and p2["true"] == {"all": 0, "hem": 2}
    assert p2["predicted"] == {"all": 0.5, "hem": 0.5} and p2["accuracy"] == 0.5
    assert rows[2]["accuracy"] == 1.0 and rows[0]["accuracy"] is None


def test_scoring_20000_predictions_is_linear():
    """Regression: `evaluate` rebuilt the list of predicted classes for every scored cell
    (quadratic: 18 s for 15,000 cells in that line alone). Scoring must grow linearly."""
    import time

    rng = np.random.default_rng(0)
    classes = ("all", "hem")

    def score(n: int) -> tuple[dict, float]:
        """The report for n cells and the best of 3 times (the least disturbed by other work)."""
        preds = Predictions([f"c{i}.bmp" for i in range(n)], [f"P{i % 47}" for i in range(n)], classes,
                            rng.dirichlet([1, 1], n).astype(np.float32))
        truth = {p: classes[i % 2] if i % 10 else None for i, p in enumerate(preds.paths)}
        times = []
        for _ in range(3):
            start = time.perf_counter()
            report = score_predictions(preds.paths, preds.patients, preds.predicted, preds.probs, truth, classes)
            times.append(time.perf_counter() - start)
        return report, min(times)

    n = 20_000
    report, large = score(n)
    assert report["n"] == n - n // 10 and report["skipped"]["unlabeled"] == n // 10
    assert sum(map(sum, report["confusion_matrix"])) == report["n"] and len(report["per_patient"]) == 47
    # Growth, not a wall-clock limit: 4x the cells must cost far less than the 16x a quadratic
    # step costs (the bug: 18 s for 15,000 cells), whatever the machine's speed.
    _, small = score(n // 4)
    assert large / small < 8, f"4x the cells took {large / small:.1f}x the time ({small:.3f} s -> {large:.3f} s)"


def test_a_suspended_validation_leaves_the_callers_thread_out_of_inference_mode(tiny, cnmc_dir):
    from engine.data.dataset import CellDataset, make_loader
    from engine.learn.loops import validate

    model, spec = tiny
    data = scan(cnmc_dir / "training_data")
    ds = CellDataset(data.root, [c.path for c in data.cells[:4]], [spec.classes.index(c.label) for c in data.cells[:4]],
                     img_size=spec.img_size)
    gen = validate(model, make_loader(ds, batch_size=2, shuffle=False, device="cpu", workers=0), "cpu", spec)
    next(gen)
    assert not torch.is_inference_mode_enabled()
    gen.close()
