"""Predictions kept with the labels, streamed inference, calibration and Grad-CAM (engine only)."""
from __future__ import annotations

import sqlite3

import cv2
import numpy as np
import pytest
import torch

from engine.labels import predictions as P
from engine.labels.store import SCHEMA_VERSION, LabelStore
from engine.learn.calibration import calibrate, expected_calibration_error, fit_temperature
from engine.learn.events import PredictedBatch, PredictProgress
from engine.learn.inference import predict_iter
from engine.learn.model import build_model
from engine.learn.weights import LITE0


def test_calibration_lowers_the_error_of_an_over_confident_model():
    rng = np.random.default_rng(0)
    n, c = 4000, 3
    labels = rng.integers(0, c, n)
    # The true class gets a moderate edge; then everything is multiplied by 6: over-confident.
    honest = rng.normal(0, 1, (n, c))
    honest[np.arange(n), labels] += 1.2
    logits = honest * 6.0
    report = calibrate(logits, labels)
    assert report["temperature"] > 3  # it undoes most of the x6
    assert report["ece_after"] < report["ece_before"] / 3
    assert report["nll_after"] < report["nll_before"]
    # Argmax, hence every prediction, is unchanged by a temperature.
    scaled = logits / report["temperature"]
    assert (scaled.argmax(1) == logits.argmax(1)).all()


def test_ece_of_a_perfectly_calibrated_toy_is_small_and_of_a_liar_is_large():
    rng = np.random.default_rng(1)
    conf = rng.uniform(0.5, 1.0, 20000)
    correct = rng.uniform(0, 1, 20000) < conf  # right exactly as often as it says
    probs = np.stack([conf, 1 - conf], 1)
    labels = np.where(correct, 0, 1)
    assert expected_calibration_error(probs, labels) < 0.02
    liar = np.stack([np.full(20000, 0.99), np.full(20000, 0.01)], 1)
    assert expected_calibration_error(liar, labels) > 0.2
    assert fit_temperature(np.zeros((1, 2)), np.array([0])) == 1.0


def test_predictions_round_trip_and_a_second_run_replaces_the_first(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    with LabelStore.open(root, db_path=tmp_path / "db.sqlite") as store:
        record = P.ModelRecord("ab" * 32, "/runs/a/model.pt", "run a", ("all", "hem"), 1.7, False, "")
        P.begin(store, record)
        P.add(store, record.sha256, ["c1.png", "c2.png"], np.array([[0.9, 0.1], [0.2, 0.8]], np.float32))
        P.add(store, record.sha256, ["c3.png"], np.array([[0.5, 0.5]], np.float32))
        loaded = P.load(store, record.sha256)
        assert loaded.paths == ["c1.png", "c2.png", "c3.png"]
        np.testing.assert_allclose(loaded.probs, [[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
        assert loaded.model.classes == ("all", "hem") and loaded.model.temperature == 1.7
        P.begin(store, record)  # predicting again with the same model starts afresh
        assert P.load(store, record.sha256).paths == []
        assert P.load(store, "cd" * 32) is None and [m.name for m in P.models(store)] == ["run a"]


def test_a_version_1_database_gains_the_prediction_tables_and_keeps_its_labels(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    db = tmp_path / "db.sqlite"
    from engine.data.cells import Cell

    with LabelStore.open(root, db_path=db) as store:
        store.sync_cells([Cell("c1.png", "all", "1")])
        store.set_label("c1.png", "hem", annotator="Dr. A")
    conn = sqlite3.connect(db)  # make it what allblast 0.1 wrote: schema 1, no prediction tables
    conn.executescript("DROP TABLE embeddings; DROP TABLE predictions; DROP TABLE models; DROP TABLE classes; "
                       "DROP TABLE class_changes; DROP TABLE reviews; DROP TABLE resolutions; DROP TABLE amendments; "
                       "DROP TABLE signoff_cells; DROP TABLE signoffs; PRAGMA user_version = 1;")
    conn.close()
    with LabelStore.open(root, db_path=db) as store:
        assert store.state("c1.png").current == "hem" and store.history("c1.png")[0].annotator == "Dr. A"
        assert store.query("PRAGMA user_version")[0][0] == SCHEMA_VERSION
        assert P.models(store) == []


def test_predict_streams_every_batch_and_the_temperature_softens_without_changing_classes(cnmc_dir):
    torch.manual_seed(0)
    model, spec, _ = build_model(LITE0, ["all", "hem"], pretrained=False, img_size=64)
    cells = [p.relative_to(cnmc_dir).as_posix() for p in sorted((cnmc_dir / "training_data").rglob("*.bmp"))]

    def run(temperature):
        gen = predict_iter(model, spec, cnmc_dir, cells, device="cpu", batch_size=4, temperature=temperature)
        batches = []
        while True:
            try:
                event = next(gen)
            except StopIteration as stop:
                return batches, stop.value
            assert isinstance(event, (PredictedBatch, PredictProgress))
            if isinstance(event, PredictedBatch):
                batches.append(event)

    batches, preds = run(1.0)
    assert [p for b in batches for p in b.paths] == preds.paths == cells and len(batches) == 4
    np.testing.assert_allclose(np.concatenate([b.probs for b in batches]), preds.probs)
    _, hot = run(5.0)
    assert hot.predicted == preds.predicted
    assert hot.probs.max(1).mean() < preds.probs.max(1).mean()


def squares(n: int, size: int, rng) -> tuple[list[np.ndarray], list[int], list[tuple[int, int, int]]]:
    """Noise images with one bright square at a random place; its colour is the class.

    The square spans more than two cells of the last feature map (stride 32), so the map's own
    resolution cannot decide the test: with 56-pixel squares, the misses all fell within half a
    cell (16 px) of the square."""
    images, labels, boxes = [], [], []
    for i in range(n):
        img = rng.integers(30, 90, (size, size, 3), dtype=np.uint8)
        side = size // 3
        x, y = (int(v) for v in rng.integers(0, size - side, 2))
        label = i % 2
        img[y:y + side, x:x + side] = (240, 40, 40) if label == 0 else (40, 40, 240)
        images.append(img)
        labels.append(label)
        boxes.append((x, y, side))
    return images, labels, boxes


@pytest.mark.slow
def test_grad_cam_peaks_on_the_square_that_decides_the_class(tmp_path):
    from engine.data.cells import Cell, ScanResult
    from engine.learn.fit import TrainConfig, fit
    from engine.learn.model import load_model
    from engine.learn.saliency import grad_cam, hot_spot

    rng = np.random.default_rng(0)
    size = 224  # a 7 x 7 last feature map: fine enough to point at a 56-pixel square
    train_images, train_labels, _ = squares(256, size, rng)
    cells = []
    for i, (img, label) in enumerate(zip(train_images, train_labels)):
        cls = ("red", "blue")[label]
        (tmp_path / "data" / cls).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "data" / cls / f"s{i}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        cells.append(Cell(f"{cls}/s{i}.png", cls, None))
    scan = ScanResult(tmp_path / "data", cells)
    config = TrainConfig(backbone=LITE0, img_size=size, epochs=3, batch_size=16, ask_every=0, device="cpu",
                         split="image", workers=0, val_fraction=0.1, test_fraction=0.0)
    events = list(fit(scan, tmp_path / "run", config))
    assert type(events[-1]).__name__ == "TrainingFinished", events[-1]
    model, spec, extras = load_model(tmp_path / "run" / "model.pt")

    test_images, test_labels, boxes = squares(40, size, rng)
    hits, right = 0, 0
    for img, label, (x, y, side) in zip(test_images, test_labels, boxes):
        cam, index, probs = grad_cam(model, spec, img)
        assert cam.shape == img.shape[:2] and 0 <= cam.min() and cam.max() <= 1
        right += spec.classes[index] == ("red", "blue")[label]
        py, px = hot_spot(cam)
        hits += x <= px < x + side and y <= py < y + side
        assert all(p.requires_grad is True for p in model.parameters()) and all(
            p.grad is None for p in model.parameters())  # the weights are untouched
    assert right >= 36, right  # it learned the colours
    assert hits >= 36, f"heat-map peak on the square in {hits} of 40 images"
