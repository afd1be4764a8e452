"""Predicting a data set and keeping the results with its labels: the model predicts batch after
batch (`engine.learn.inference.predict_iter`) and each batch is stored in the label database
(`engine.labels.predictions`, one transaction each), so the app shows them again at once when the
folder is reopened, and a report reads them.

`run_prediction` is a generator, driven on a worker thread by the app: it yields the
`ModelRecord` first (the predictions now shown are this model's), a `Message` when the backend is
not the one asked for, then the engine's events; it returns the engine's `Predictions`.
`load_stored` and `active_predictions` read them back (a model file's; the active model's).
"""
from __future__ import annotations

import logging
from pathlib import Path

from ..labels import predictions as stored
from ..labels.stamps import now_utc
from ..learn.events import Message, PredictedBatch
from ..utils.files import sha256_file
from ..utils.jobs import CancelToken
from .catalog import RunsCatalog

log = logging.getLogger(__name__)


def model_name(path: Path) -> str:
    """A run's folder name for its model.pt, else the file's name."""
    path = Path(path).resolve()  # "model.pt" given relative to the run folder names that folder
    return path.parent.name if path.name == "model.pt" else path.name


def run_prediction(store, root: Path, cells, model_path: Path, *, tta: bool, batch_size: int, device: str,
                   cancel: CancelToken, backend: str = "auto", precision: str = "f32", keep: bool = False):
    """Predict every cell, storing each batch with its cells' embeddings; yields the ModelRecord,
    a Message when the backend is not the one asked for (OpenVINO missing or unable to start: torch
    predicts), then the engine's events; returns the engine's Predictions. (The app lowers its
    worker thread's priority before driving it.) `keep`: the model's stored results for other cells
    stay (only `cells` are predicted again)."""
    from ..learn.backends.loader import open_predictor
    from ..learn.inference import predict_iter
    from ..learn.model import temperature_of

    predictor = open_predictor(model_path, backend=backend, device=device, precision=precision, data_root=root)
    spec = predictor.spec
    record = stored.ModelRecord(predictor.sha256, str(Path(model_path).resolve()), model_name(model_path),
                                tuple(spec.classes), temperature_of(predictor.extras), tta, now_utc())
    stored.begin(store, record, keep=keep)
    yield record
    if predictor.note:
        yield Message(predictor.note)
    log.info("predicting with %s", predictor.backend.describe())
    gen = predict_iter(predictor.backend, spec, root, cells, batch_size=batch_size, tta=tta, cancel=cancel,
                       temperature=record.temperature)
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if isinstance(event, PredictedBatch):
            stored.add(store, record.sha256, event.paths, event.probs, event.embeddings)
        yield event


def load_stored(store, model_path: Path | None) -> stored.StoredPredictions | None:
    """The stored predictions of a model file in this data set's database (None: there are none).
    Reads the file to hash it: call it off the GUI thread."""
    if model_path is None or not Path(model_path).is_file():
        return None
    return stored.load(store, sha256_file(model_path))


def active_predictions(store) -> stored.StoredPredictions | None:
    """The active model's stored predictions (what a reopened folder shows), or None. Raises
    OSError when its model file cannot be read."""
    return load_stored(store, RunsCatalog(store).active_model_file())


__all__ = ["active_predictions", "load_stored", "model_name", "run_prediction"]
