"""Predictions in the window: the engine's `run_prediction` (engine.workspace.predict_store) on a
background thread, results on the tiles as they come, kept in the label database, and Grad-CAM on
demand.

The worker thread loads the model, predicts batch after batch and stores each batch in the label
database (one transaction each); the GUI thread receives the batches, coalesces them (one update of
the rows and the grid every FLUSH_MS) and owns the rows. Which model's predictions are shown is the
active model's (Runs panel, `app.set_active_model`); switching it loads that model's stored
predictions, in the background too.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, QTimer, Signal

from engine.labels import predictions as stored
from engine.learn.events import Message, PredictedBatch, PredictProgress
from engine.utils.jobs import CancelToken
from engine.workspace.predict_store import load_stored, run_prediction

from ..cells.predictions import apply_predictions, clear_predictions
from ..workers import GeneratorWorker, TaskRunner, lower_thread_priority

log = logging.getLogger(__name__)
FLUSH_MS = 100  # at most ~10 grid updates a second while results stream in


def _background(gen):
    """Drive the engine's generator at a lower priority: the GUI thread keeps a core."""
    lower_thread_priority()
    return (yield from gen)


class PredictionController(QObject):
    started = Signal(object)  # ModelRecord
    progress = Signal(int, int, object)  # cells done, total, images/s
    arrived = Signal(list)  # paths whose rows have new predictions
    shownChanged = Signal(object)  # ModelRecord | None: every row's prediction may have changed
    finished = Signal(object)  # engine.learn.inference.Predictions (None when cancelled)
    failed = Signal(str)
    notice = Signal(str)  # one line for the status bar (the backend fell back to torch)
    runningChanged = Signal(bool)
    saliencyReady = Signal(str, object, str)  # path, heat map (H, W) float32, class it explains
    saliencyFailed = Signal(str, str)  # path, message

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._runner = TaskRunner(self, max_threads=1)
        self._saliency_runner = TaskRunner(self, max_threads=1)
        self._rows: dict = {}
        self._dataset = None
        self.shown: stored.ModelRecord | None = None
        self._worker: GeneratorWorker | None = None
        self._token: CancelToken | None = None
        self._buffer: list[tuple[tuple[str, ...], np.ndarray]] = []
        self._flush = QTimer(self, singleShot=True, interval=FLUSH_MS)
        self._flush.timeout.connect(self.flush)
        self._saliency_model: tuple[str, object] | None = None  # (sha, (model, spec, temperature))
        self.last_result = None
        self.last_error: str | None = None
        self.last_notice: str | None = None  # why the last prediction's backend is not the one chosen
        self._t0 = 0.0

    @property
    def running(self) -> bool:
        return self._worker is not None

    # ---- the open data set ------------------------------------------------------------------------
    def set_dataset(self, dataset) -> None:
        """A newly opened folder: its rows already carry the shown model's stored predictions."""
        self.cancel()
        self._dataset = dataset
        self._rows = {r.path: r for r in dataset.rows} if dataset is not None else {}
        self.shown = getattr(dataset, "predictions", None)
        self._saliency_model = None
        self.shownChanged.emit(self.shown)

    def show_model(self, model_path: Path | None, on_done: Callable[[], None] | None = None) -> None:
        """Show the stored predictions of `model_path` (None: none), loaded on a pool thread."""
        ds = self._dataset
        if ds is None:
            return
        worker = self._runner.run(load_stored, ds.store, model_path, key="show")
        worker.result.connect(lambda result: self._show(result, on_done))
        worker.error.connect(lambda exc: self.failed.emit(f"cannot read the stored predictions: {exc}"))

    def _show(self, result, on_done) -> None:
        clear_predictions(self._rows.values())
        if result is not None:
            apply_predictions(self._rows, result.model.classes, result.paths, result.probs)
        self.shown = result.model if result is not None else None
        self.shownChanged.emit(self.shown)
        if on_done is not None:
            on_done()

    # ---- predicting -------------------------------------------------------------------------------
    def predict(self, model_path: Path, *, tta: bool = False, batch_size: int = 32, device: str = "auto",
                backend: str = "auto", precision: str = "f32") -> None:
        ds = self._dataset
        if ds is None:
            raise RuntimeError("open a folder of cells first")
        if self.running:
            raise RuntimeError("a prediction is already running")
        cells = [c for c in ds.project.scan.cells]
        self._token = CancelToken()
        self.last_result, self.last_error, self.last_notice = None, None, None
        worker = GeneratorWorker(_background(run_prediction(ds.store, ds.root, cells, Path(model_path), tta=tta,
                                                            batch_size=batch_size, device=device, cancel=self._token,
                                                            backend=backend, precision=precision)))
        worker.progress.connect(self._on_event)
        worker.result.connect(self._on_result)
        worker.error.connect(self._on_error)
        worker.finished.connect(self._on_done)
        self._worker = worker
        self._t0 = time.monotonic()
        self._runner.submit(worker, key="predict")
        self.runningChanged.emit(True)

    def cancel(self) -> None:
        if self._token is not None:
            self._token.cancel()

    def wait(self, timeout_ms: int = 600_000) -> bool:
        from PySide6.QtCore import QEventLoop

        if not self.running:
            return True
        loop = QEventLoop()
        self.runningChanged.connect(loop.quit)
        QTimer.singleShot(timeout_ms, loop.quit)
        try:
            loop.exec()
        finally:
            self.runningChanged.disconnect(loop.quit)
        return not self.running

    def _on_event(self, event) -> None:
        if isinstance(event, stored.ModelRecord):
            clear_predictions(self._rows.values())  # the grid now shows this model, from scratch
            self.shown = event
            self.shownChanged.emit(event)
            self.started.emit(event)
        elif isinstance(event, PredictedBatch):
            self._buffer.append((event.paths, event.probs))
            if not self._flush.isActive():
                self._flush.start()
        elif isinstance(event, PredictProgress):
            self.progress.emit(event.done, event.total, event.images_per_s)
        elif isinstance(event, Message):
            self.last_notice = event.text
            log.info("%s", event.text)  # the log, and a script's console, have it too
            self.notice.emit(event.text)

    def flush(self) -> None:
        """Put the results received so far on the rows, and say which rows changed."""
        self._flush.stop()
        if not self._buffer or self.shown is None:
            self._buffer.clear()
            return
        paths = [p for batch, _ in self._buffer for p in batch]
        probs = np.concatenate([probs for _, probs in self._buffer])
        self._buffer.clear()
        self.arrived.emit(apply_predictions(self._rows, self.shown.classes, paths, probs))

    def _on_result(self, predictions) -> None:
        self.flush()
        self.last_result = predictions
        log.info("predicted %d cells in %.1f s", len(predictions), time.monotonic() - self._t0)
        self.finished.emit(predictions)

    def _on_error(self, exc: BaseException) -> None:
        self._buffer.clear()
        self.last_error = _describe(exc)
        self.failed.emit(self.last_error)

    def _on_done(self) -> None:
        self.flush()
        if self.last_result is None and self.last_error is None:
            self.finished.emit(None)  # cancelled
        self._worker, self._token = None, None
        self.runningChanged.emit(False)

    # ---- saliency ---------------------------------------------------------------------------------
    def saliency(self, path: str) -> None:
        """Grad-CAM of the shown model's class for one cell, computed on a pool thread."""
        ds, record = self._dataset, self.shown
        if ds is None or record is None:
            self.saliencyFailed.emit(path, "no predictions are shown: predict first (Model ▸ Predict)")
            return
        cached = self._saliency_model if self._saliency_model and self._saliency_model[0] == record.sha256 else None

        def work():
            from engine.data.imaging import read_rgb
            from engine.learn.model import load_model
            from engine.learn.saliency import grad_cam

            loaded = cached[1] if cached else None
            if loaded is None:
                model, spec, _ = load_model(record.path, "cpu")
                loaded = (model, spec)
            model, spec = loaded
            cam, index, _ = grad_cam(model, spec, read_rgb(ds.root / path), temperature=record.temperature)
            return record.sha256, loaded, cam, spec.classes[index]

        worker = self._saliency_runner.run(work, key="saliency")
        worker.result.connect(lambda r, p=path: self._on_saliency(p, r))
        worker.error.connect(lambda exc, p=path: self.saliencyFailed.emit(p, _describe(exc)))

    def _on_saliency(self, path: str, result) -> None:
        sha, loaded, cam, cls = result
        self._saliency_model = (sha, loaded)
        self.saliencyReady.emit(path, cam, cls)

    def shutdown(self) -> bool:
        self.cancel()
        self.wait(60_000)
        return self._runner.shutdown(10_000) and self._saliency_runner.shutdown(30_000)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"the model file is gone: {exc}"
    if isinstance(exc, (ValueError, OSError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
