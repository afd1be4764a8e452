"""Predictions inside the window: the Predict dialog, streaming results onto the tiles, the shown
model (the active one), the inspector's bars and heat map, accept-prediction, the Patients panel.

The window creates this once; every engine call runs on the PredictionController's threads.
"""
from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import QMessageBox

from .controllers.predictions import PredictionController
from .models.runs_catalog import model_file
from .panels.patients_panel import PatientsPanel

log = logging.getLogger(__name__)


class PredictionsUI(QObject):
    message = Signal(str)
    progress = Signal(int, int)  # cells done, total (the status bar's progress)

    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        self.controller = PredictionController(self)
        self.patients = PatientsPanel()
        self.dialog = None  # the open PredictDialog
        self.dataset = None
        c = self.controller
        c.arrived.connect(self._on_arrived)
        c.shownChanged.connect(self._on_shown)
        c.progress.connect(self._on_progress)
        c.finished.connect(self._on_finished)
        c.failed.connect(self._on_failed)
        c.notice.connect(self.message)  # at once; and again with the result (_on_finished)
        c.saliencyReady.connect(window.inspector.show_saliency)
        c.saliencyFailed.connect(window.inspector.saliency_failed)
        window.inspector.saliencyRequested.connect(c.saliency)
        self.patients.patientRequested.connect(window.filter_bar.show_patient)

    # ---- the open data set ------------------------------------------------------------------------
    def set_dataset(self, dataset) -> None:
        self.dataset = dataset
        self.patients.set_source(self.window.model.all_rows, dataset.classes)
        self.controller.set_dataset(dataset)

    def _catalog(self):
        return self.window.training.catalog

    def active_model(self) -> Path | None:
        catalog = self._catalog()
        return catalog.active_model_file() if catalog is not None else None

    def set_active_model(self, path, on_done=None) -> None:
        """Make a run folder or model file the active model and show its stored predictions."""
        catalog = self._catalog()
        if catalog is None:
            raise RuntimeError("open a folder of cells first")
        catalog.set_active(path)
        self.window.training.refresh_runs()
        self.controller.show_model(model_file(path), on_done)

    # ---- predicting -------------------------------------------------------------------------------
    def open_predict_dialog(self):
        from .dialogs.predict_dialog import PredictDialog  # torch: loaded when first needed

        if self.dataset is None:
            self.message.emit("Open a folder of cells first")
            return None
        if self.controller.running:
            self.message.emit("A prediction is running already")
            return None
        active = self.active_model()
        backend, precision = self.window.prefs.inference()
        dialog = PredictDialog(active, Path(active).parent.name if active else "", self.window, backend=backend,
                               precision=precision)
        dialog.accepted.connect(lambda: self._predict_from(dialog))
        dialog.finished.connect(lambda _r: setattr(self, "dialog", None))
        self.dialog = dialog
        dialog.open()
        return dialog

    def _predict_from(self, dialog) -> None:
        path = dialog.model_path()
        if path is None:
            self._warn("No model", "Choose a model file, or make a run the active model in the Runs panel.")
            return
        options = dialog.options()
        self.window.prefs.set_inference(options["backend"], options["precision"])
        self.predict(path, **options)

    def predict(self, model_path, *, tta: bool = False, batch_size: int = 32, device: str = "auto",
                backend: str | None = None, precision: str | None = None) -> None:
        """`backend` / `precision`: None = the ones last chosen in the Predict dialog (settings)."""
        path = model_file(model_path)
        if path is None:
            raise FileNotFoundError(f"{model_path} is not a model file or a run folder with a model.pt")
        if self.active_model() is None or Path(self.active_model()).resolve() != path.resolve():
            self._catalog().set_active(path)  # predictions shown are the active model's
            self.window.training.refresh_runs()
        chosen_backend, chosen_precision = self.window.prefs.inference()
        self.controller.predict(path, tta=tta, batch_size=batch_size, device=device,
                                backend=backend or chosen_backend, precision=precision or chosen_precision)

    # ---- reacting -------------------------------------------------------------------------------
    def _on_arrived(self, paths: list) -> None:
        # Work in proportion to the batch only, while results stream in: the tiles on screen change
        # at once; counts over every row (tree, status bar, Patients) are made when all are done.
        self.window.model.predictions_changed(paths)
        current = self.window.inspector.current_path()
        if current in set(paths):
            self.window.inspector.refresh()

    def _on_shown(self, record) -> None:
        w = self.window
        w.model.predictions_changed(None)
        name = f"{record.name} ({record.short})" if record is not None else ""
        w.filter_bar.set_model(name or None, list(record.classes) if record is not None else None)
        w.inspector.set_model_name(name)
        w.review.model_short = record.short if record is not None else None
        w.refresh_counts()
        if not self.controller.running:  # a prediction starting: its counts come when it is done
            self.patients.schedule_refresh()
        if record is not None and self.dataset is not None:
            unknown = sorted(set(self.dataset.classes) - set(record.classes))
            if unknown:
                self.message.emit(f"The model {record.name} knows {', '.join(record.classes)}; this folder's "
                                  f"{', '.join(unknown)} cells can only be predicted as one of those (they never "
                                  "count as disagreements)")

    def _on_progress(self, done: int, total: int, rate) -> None:
        self.progress.emit(done, total)

    def _on_finished(self, predictions) -> None:
        self.progress.emit(-1, -1)
        self.window.refresh_counts()
        # Each recount over every row in its own turn of the event loop: no single long stall.
        QTimer.singleShot(0, self.patients.refresh)
        QTimer.singleShot(0, self._resort)
        if predictions is None:
            self.message.emit("Prediction stopped; the cells done so far keep their results")
        else:
            n = len(predictions)
            skipped = len(predictions.problems)
            # A fallback (OpenVINO could not start, torch predicted) stays in the final line: the
            # notice itself is replaced as soon as the first cells are done.
            notice = f" ({self.controller.last_notice})" if self.controller.last_notice else ""
            self.message.emit(f"Predicted {n:,} cells with {self.controller.shown.name}{notice}"
                              + (f"; {skipped} unreadable" if skipped else "")
                              + ". Sort by doubt (smallest margin) to review the uncertain ones first.")

    def _resort(self) -> None:
        flt = self.window.filter_bar.current_filter()
        if flt.sort in ("margin", "entropy") or flt.disagree_only or flt.predicted or flt.prob_range:
            self.window.refilter()  # the filter reads predictions: apply it to the new numbers

    def _on_failed(self, message: str) -> None:
        self.progress.emit(-1, -1)
        self._warn("Prediction failed", message)

    def _warn(self, title: str, text: str) -> None:
        box = QMessageBox(QMessageBox.Icon.Warning, title, text, parent=self.window)
        box.setObjectName("predictionFailedBox")
        self.failure_box = box
        box.open()

    def shutdown(self) -> bool:
        return self.controller.shutdown()
