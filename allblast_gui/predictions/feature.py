"""Predictions in the window: Model ▸ Predict…, the results streaming onto the rows, which model's
predictions the rows show (the session's active model), Grad-CAM for the Cell dock, and the
Patients dock (expert and model counts per patient).

Every engine call runs on the PredictionController's threads. This feature changes the rows'
predictions and says so through the session (`predictionsChanged`, `predictionsArrived`,
`predictionsFinished`); the review feature redraws the grid from there.
"""
from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QMessageBox

from engine.workspace.catalog import model_file

from ..feature import BOTTOM, Dock, Feature
from .controller import PredictionController
from .patients_panel import PatientsPanel

log = logging.getLogger(__name__)


class PredictionsFeature(Feature):
    name = "predictions"

    def __init__(self, session, window) -> None:
        super().__init__(session, window)
        self.controller = PredictionController(self)
        self.patients = PatientsPanel()
        self.dialog = None  # the open PredictDialog
        self.failure_box = None
        self.actions: dict = {}
        self._setting_active = False  # predict() makes its model active: its results replace the rows'
        self._on_shown_done = None  # what set_active_model waits for
        self._dock = self.make_dock("patientsDock", "Patients", self.patients)
        c, s = self.controller, session
        c.arrived.connect(s.predictionsArrived)
        c.shownChanged.connect(self._on_shown)
        c.progress.connect(lambda done, total, _rate: self.status.show_progress(done, total))
        c.finished.connect(self._on_finished)
        c.failed.connect(self._on_failed)
        c.notice.connect(self.message)  # at once; and again with the result (_on_finished)
        c.runningChanged.connect(self._on_running)
        c.saliencyReady.connect(s.saliencyReady)
        c.saliencyFailed.connect(s.saliencyFailed)
        s.saliencyRequested.connect(c.saliency)
        s.datasetChanged.connect(self._on_dataset)
        s.classesChanged.connect(lambda _what: self._show_patients_of(s.dataset))
        s.labelsChanged.connect(lambda _changes: self.patients.schedule_refresh())
        s.activeModelChanged.connect(self._on_active_model)
        self.patients.patientRequested.connect(s.patientRequested)

    def docks(self) -> list[Dock]:
        return [Dock("patients", self._dock, BOTTOM, 280, 180, action="show_patients")]

    def handlers(self) -> dict:
        return {"predict": self.open_predict_dialog, "stop_predict": self.controller.cancel}

    def bind(self, actions, menus) -> None:
        self.actions = actions
        self._on_running(False)

    # ---- the open data set and its model --------------------------------------------------------
    @property
    def dataset(self):
        return self.session.dataset

    def _on_dataset(self, dataset) -> None:
        self._show_patients_of(dataset)
        self.controller.set_dataset(dataset)  # its rows carry the active model's stored predictions

    def _show_patients_of(self, dataset) -> None:
        self.patients.set_source(self.session.rows, dataset.classes)

    def active_model(self) -> Path | None:
        return self.session.active_model

    def set_active_model(self, path, on_done=None) -> None:
        """Make a run folder or model file the active model and show its stored predictions."""
        self._on_shown_done = on_done
        try:
            self.session.set_active_model(path)  # -> _on_active_model
        finally:
            self._on_shown_done = None

    def _on_active_model(self, model) -> None:
        if not self._setting_active:
            self.controller.show_model(model, self._on_shown_done)

    # ---- predicting -------------------------------------------------------------------------------
    def open_predict_dialog(self):
        from .predict_dialog import PredictDialog  # torch: loaded when first needed

        if self.dataset is None:
            self.message.emit("Open a folder of cells first")
            return None
        if self.controller.running:
            self.message.emit("A prediction is running already")
            return None
        active = self.active_model()
        backend, precision = self.session.prefs.inference()
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
        self.session.prefs.set_inference(options["backend"], options["precision"])
        self.predict(path, **options)

    def predict(self, model_path, *, tta: bool = False, batch_size: int = 32, device: str = "auto",
                backend: str | None = None, precision: str | None = None) -> None:
        """`backend` / `precision`: None = the ones last chosen in the Predict dialog (settings)."""
        path = model_file(model_path)
        if path is None:
            raise FileNotFoundError(f"{model_path} is not a model file or a run folder with a model.pt")
        active = self.active_model()
        if active is None or Path(active).resolve() != path.resolve():
            self._setting_active = True  # predictions shown are the active model's: these, as they come
            try:
                self.session.set_active_model(path)
            finally:
                self._setting_active = False
        chosen_backend, chosen_precision = self.session.prefs.inference()
        self.controller.predict(path, tta=tta, batch_size=batch_size, device=device,
                                backend=backend or chosen_backend, precision=precision or chosen_precision)

    # ---- reacting -------------------------------------------------------------------------------
    def _on_shown(self, record) -> None:
        self.session.set_predictions(record)  # the rows (every one may have changed) are redrawn
        if not self.controller.running:  # a prediction starting: its counts come when it is done
            self.patients.schedule_refresh()
        ds = self.dataset
        if record is not None and ds is not None:
            unknown = sorted(set(ds.classes) - set(record.classes))
            if unknown:
                self.message.emit(f"The model {record.name} knows {', '.join(record.classes)}; this folder's "
                                  f"{', '.join(unknown)} cells can only be predicted as one of those (they never "
                                  "count as disagreements)")

    def _on_finished(self, predictions) -> None:
        self.status.hide_progress()
        # Each recount over every row in its own turn of the event loop: no single long stall.
        QTimer.singleShot(0, self.patients.refresh)
        self.session.predictionsFinished.emit()
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

    def _on_running(self, running: bool) -> None:
        if self.actions:
            self.actions["stop_predict"].setEnabled(running)
            self.actions["predict"].setEnabled(not running)

    def _on_failed(self, message: str) -> None:
        self.status.hide_progress()
        self._warn("Prediction failed", message)

    def _warn(self, title: str, text: str) -> None:
        box = QMessageBox(QMessageBox.Icon.Warning, title, text, parent=self.window)
        box.setObjectName("predictionFailedBox")
        self.failure_box = box
        box.open()

    def shutdown(self) -> bool:
        return self.controller.shutdown()
