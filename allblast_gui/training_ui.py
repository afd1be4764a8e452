"""Training inside the window: the Train dialog, the dashboard, the continue dialog, failure
dialogs and the Runs panel, wired to one TrainingController.

The window creates this once and hands it each opened data set. Everything the engine does runs on
the controller's worker thread; this class only reacts on the GUI thread.
"""
from __future__ import annotations

import importlib
import logging
import threading
from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QFileDialog, QMessageBox, QWidget

from engine.learn.config import TrainConfig
from engine.learn.events import EpochEnd, TrainingFailed, TrainingFinished, TrainingStarted
from engine.learn.runs import RunDir
from engine.labels.project import apply_expert_labels

from .controllers.training import TrainingController
from .dialogs.continue_dialog import ContinueDialog
from .dialogs.training_failed import TrainingFailedDialog
from .models.runs_catalog import RunsCatalog
from .models.training_history import TrainingHistory
from .panels.dashboard import TrainingDashboard
from .panels.runs_panel import RunsPanel

log = logging.getLogger(__name__)


def _start_worker_server() -> None:
    from engine.utils.jobs import start_worker_server

    from .controllers.training import lower_thread_priority

    lower_thread_priority()  # the fork server and the workers it forks inherit it
    start_worker_server()  # a separate process: imports torch there while we import it here


def _load_prediction_backend(backend: str) -> None:
    from engine.learn.backends.base import BackendError
    from engine.learn.backends.loader import choose_backend

    try:
        choose_backend(backend, "auto")  # imports OpenVINO when `backend` would run on it
    except BackendError:
        pass  # not installed, or not for this device: the Predict dialog says so when it is used


WARM_UP_STEPS = (  # what Train needs, loaded ahead; each step is one import (or the fork server)
    _start_worker_server,
    lambda: importlib.import_module("engine.learn.fit"),  # torch and the training code
    # engine.learn.model imports timm only when it builds a network: import it here, with the
    # ~1,500 modules it pulls in (torchvision, torch._dynamo, sympy, huggingface_hub), or the
    # training thread did it after Train was pressed and held the GIL for up to 200 ms at a time.
    lambda: importlib.import_module("timm.models"),
    lambda: importlib.import_module("engine.learn.model"),
    lambda: importlib.import_module("engine.learn.weights"),
    lambda: importlib.import_module("sklearn.metrics"),  # the validation metrics (scipy)
)
REASONS = {"completed": "finished", "halted": "halted by the user", "early-stopped": "stopped early (no improvement)",
           "cancelled": "stopped; checkpoints kept"}


class TrainingUI(QObject):
    message = Signal(str)  # a line for the status bar
    runFinished = Signal(object)  # Path of a run that ended (finished, stopped or failed)
    activeModelChanged = Signal(object)  # the model.pt predictions now use

    def __init__(self, window: QWidget, prefs) -> None:
        super().__init__(window)
        self.window, self.prefs = window, prefs
        self.controller = TrainingController(self)
        self.dashboard = TrainingDashboard()
        self.runs = RunsPanel()
        self.catalog: RunsCatalog | None = None
        self.dataset = None  # controllers.dataset.LoadedDataset
        self.train_dialog = None  # the open TrainDialog
        self.continue_dialog: ContinueDialog | None = None
        self.failure_dialog: TrainingFailedDialog | None = None
        self._warm_stop = threading.Event()
        self._connect()

    def _connect(self) -> None:
        c, d = self.controller, self.dashboard
        c.started.connect(self._on_started)
        c.progress.connect(lambda e: d.on_batch(e.phase, e.epoch, e.batch, e.n_batches, e.images_per_s))
        c.epochEnded.connect(self._on_epoch)
        c.message.connect(lambda text: d.add_log(text))
        c.warned.connect(self._on_warned)
        c.askContinue.connect(self._ask)
        c.finished.connect(self._on_finished)
        c.failed.connect(self._on_failed)
        c.runningChanged.connect(self._on_running)
        d.stopRequested.connect(self.stop)
        d.trainRequested.connect(self.open_train_dialog)
        self.runs.runSelected.connect(self._show_run)
        self.runs.resumeRequested.connect(self.resume)
        self.runs.activateRequested.connect(self.set_active)
        self.runs.addRequested.connect(lambda: self.add_run())
        self.runs.refreshRequested.connect(self.refresh_runs)

    def warm_up(self, backend: str | None = None) -> None:
        """Import torch and timm on a pool thread now, so pressing Train does not wait for them,
        and the prediction `backend` the Predict dialog will use (OpenVINO's runtime held the GIL
        for 100-150 ms while it loaded on the prediction thread: the window froze as predicting
        began). Closing the window stops it between imports (`shutdown`): an import still running
        when Python shuts down fails ("can't register atexit after shutdown")."""
        stop = self._warm_stop
        steps = WARM_UP_STEPS + ((lambda: _load_prediction_backend(backend)),) if backend else WARM_UP_STEPS

        def load() -> None:
            for step in steps:
                if stop.is_set():
                    return
                step()

        self.controller._runner.run(load, key="warm-up")

    # ---- data set ---------------------------------------------------------------------------------
    def set_dataset(self, dataset) -> None:
        self.dataset = dataset
        self.catalog = RunsCatalog(dataset.store) if dataset is not None else None
        self.refresh_runs()
        if not self.controller.running:  # no curves of another folder's run, nor empty plots
            runs = self.runs.model.rowCount()
            self.dashboard.show_empty("no-folder" if dataset is None else "no-run-shown" if runs else "no-run", runs)

    def expert_scan(self):
        """The open folder's scan with the expert's current labels (what training uses)."""
        ds = self._require_dataset()
        return apply_expert_labels(ds.project.scan, ds.store.states())[0]

    def _require_dataset(self):
        if self.dataset is None:
            raise RuntimeError("open a folder of cells first")
        return self.dataset

    # ---- starting ---------------------------------------------------------------------------------
    def open_train_dialog(self):
        if self.dataset is None:
            self.message.emit("Open a folder of cells first")
            return None
        if self.controller.running:
            self.message.emit("A training run is in progress: stop it first")
            return None
        from .dialogs.train_dialog import TrainDialog  # torch and timm: loaded when first needed

        saved = self.prefs.train_settings()
        dialog = TrainDialog(self.expert_scan(), self.catalog.root, saved, self.window)
        dialog.accepted.connect(lambda: self._start_from_dialog(dialog))
        dialog.finished.connect(lambda _r: setattr(self, "train_dialog", None))
        self.train_dialog = dialog
        dialog.open()
        return dialog

    def _start_from_dialog(self, dialog) -> None:
        self.prefs.set_train_settings(dialog.values())
        self.start(dialog.config())

    def start(self, config: TrainConfig, *, run_dir: Path | None = None, resume: bool = False) -> Path:
        self._require_dataset()
        run_dir = Path(run_dir) if run_dir is not None else self.catalog.new_run_dir(config.backbone)
        scan = self.expert_scan()
        self.dashboard.log.clear()
        history = TrainingHistory.from_records(RunDir(run_dir).read_metrics()) if resume else TrainingHistory()
        self.dashboard.show_history(history, f"{run_dir.name} · starting…")
        self.dashboard.set_planned_epochs(config.epochs)
        path = self.controller.start(scan, run_dir, config, resume=resume)
        self.dashboard.history = self.controller.history
        self.refresh_runs()
        self.runs.select_run(path)
        return path

    def resume(self, path: Path) -> Path | None:
        """Continue a run from its last.pt: to its planned end, or a few more epochs if it ended."""
        run = RunDir(path)
        if not run.can_resume():
            self._warn("Cannot resume", f"{path} has no checkpoint to resume from (no epoch finished).")
            return None
        saved = TrainConfig.from_dict(run.read_config())
        done = len(run.read_metrics())
        epochs = saved.epochs if done < saved.epochs else done + max(saved.ask_every, 5)
        return self.start(replace(saved, epochs=epochs), run_dir=run.path, resume=True)

    def stop(self) -> None:
        if self.controller.running:
            self.dashboard.set_stopping()
            self.controller.stop()

    # ---- engine events ----------------------------------------------------------------------------
    def _on_started(self, e: TrainingStarted) -> None:
        leaky = " (leaky: the same patient in training and validation)" if e.split_protocol == "image" else ""
        self.dashboard.title.setText(
            f"{Path(e.run_dir).name} · {', '.join(e.classes)} · {e.n_train} train / {e.n_val} val / {e.n_test} "
            f"test cells · {e.split_protocol} split{leaky} · {e.device} · weights: {e.weights_source}")
        self.dashboard.set_planned_epochs(e.max_epochs)
        self.dashboard.add_log(f"training {e.n_train} cells on {e.device}"
                               + (f", resuming after epoch {e.start_epoch}" if e.start_epoch else ""))

    def _on_epoch(self, e: EpochEnd) -> None:
        d = self.dashboard
        d.on_epoch_end(e.epoch, e.seconds)
        h = self.controller.history
        if len(h.lr) >= 2 and h.lr[-1] < h.lr[-2]:
            d.add_log(f"epoch {e.epoch} ran at a halved learning rate, {h.lr[-1]:.2e} (epoch {e.epoch - 1} did "
                      "not improve)")
        if e.is_best:
            d.add_log(f"epoch {e.epoch}: new best ({self.controller.monitor}); wrote model.pt", kind="best")
        d.add_log(f"epoch {e.epoch} done in {e.seconds:.0f} s; wrote last.pt")
        self.refresh_runs()

    def _on_warned(self, text: str) -> None:
        self.dashboard.add_log(f"warning: {text}", kind="warning")
        self.message.emit(f"Training: {text}")

    def _ask(self, summary: dict) -> None:
        dialog = ContinueDialog(summary, self.window)
        dialog.decided.connect(self._answer)
        dialog.finished.connect(lambda _r: setattr(self, "continue_dialog", None))
        self.continue_dialog = dialog
        dialog.open()

    def _answer(self, epochs: int | None) -> None:
        if epochs and self.controller.history.epochs:
            self.dashboard.set_planned_epochs(max(self.dashboard.progress.maximum(),
                                                  self.controller.history.epochs[-1] + epochs))
        self.controller.answer(epochs)

    def _on_finished(self, e: TrainingFinished) -> None:
        text = f"{Path(e.run_dir).name}: {REASONS.get(e.reason, e.reason)} after {e.epochs_run} epochs"
        if e.best_epoch:
            text += f"; best epoch {e.best_epoch}"
        if e.test_metrics and e.test_metrics.get("accuracy") is not None:
            leaky = " (leaky split)" if e.test_metrics.get("leaky") else ""
            text += (f"; test accuracy {e.test_metrics['accuracy']:.3f}, weighted F1 "
                     f"{e.test_metrics['weighted_f1']:.3f}{leaky}")
        self.dashboard.add_log(text, kind="best" if e.reason != "cancelled" else "info")
        self._offer_as_active(Path(e.run_dir))
        self.message.emit(f"Training {REASONS.get(e.reason, e.reason)} after {e.epochs_run} epochs "
                          f"(best epoch {e.best_epoch or '–'}): see the Training dock")

    def _offer_as_active(self, run_dir: Path) -> None:
        """The first model of a folder becomes its active model, so Predict works at once; a later
        one never replaces the expert's choice silently."""
        if self.catalog is None or not (run_dir / "model.pt").is_file():
            return
        if self.catalog.active() is None:
            self.set_active(run_dir)
            self.dashboard.add_log(f"{run_dir.name} is now the active model (Model ▸ Predict uses it)")
        elif self.catalog.active() != run_dir:
            self.dashboard.add_log("to predict with this model, select it in the Runs panel and press Set Active Model")

    def _on_failed(self, e: TrainingFailed) -> None:
        self.dashboard.add_log(f"failed ({e.kind}): {e.message}", kind="warning")
        self._close_continue_dialog()
        dialog = TrainingFailedDialog(e, self.controller.config, self.window)
        dialog.retry.connect(lambda config: self.start(config))
        dialog.showLogRequested.connect(lambda: self.window.show_log_folder())
        dialog.finished.connect(lambda _r: setattr(self, "failure_dialog", None))
        self.failure_dialog = dialog
        dialog.open()

    def _on_running(self, running: bool) -> None:
        self.dashboard.set_running(running)
        self.runs.set_training(running)
        if not running:
            self._close_continue_dialog()
            self.refresh_runs()
            if self.controller.run_dir is not None:
                self.runFinished.emit(self.controller.run_dir)

    def _close_continue_dialog(self) -> None:
        if self.continue_dialog is not None:
            self.continue_dialog.done(0)
            self.continue_dialog = None

    # ---- runs -------------------------------------------------------------------------------------
    def refresh_runs(self) -> None:
        if self.catalog is None:
            self.runs.set_runs([], None)
            return
        try:
            self.runs.set_runs(self.catalog.runs(), self.catalog.active(), training=self.controller.run_dir
                               if self.controller.running else None)
        except Exception as exc:  # noqa: BLE001 - a damaged run folder must not break the panel
            log.warning("could not list the runs: %s", exc, exc_info=exc)

    def _show_run(self, path: Path | None) -> None:
        if path is None or (self.controller.running and self.controller.run_dir == path):
            return
        if self.controller.running:
            self.message.emit("Training in progress: the dashboard shows the live run")
            return
        self.dashboard.show_history(TrainingHistory.from_records(RunDir(path).read_metrics()), f"{path.name} (saved run)")

    def add_run(self, path: str | Path | None = None) -> Path | None:
        if self.catalog is None:
            self.message.emit("Open a folder of cells first")
            return None
        if path is None:
            path = QFileDialog.getExistingDirectory(self.window, "Add a training run folder (with config.json)")
            if not path:
                return None
        try:
            summary = self.catalog.add(path)
        except (OSError, ValueError) as exc:
            self._warn("Not a training run", str(exc))
            return None
        self.refresh_runs()
        self.runs.select_run(summary.path)
        return summary.path

    def set_active(self, path: Path) -> None:
        try:
            self.catalog.set_active(path)
        except (OSError, ValueError) as exc:
            self._warn("Cannot use this run", str(exc))
            return
        self.message.emit(f"Active model: {Path(path).name}")
        self.refresh_runs()
        self.activeModelChanged.emit(self.catalog.active_model_file())

    # ---- closing ----------------------------------------------------------------------------------
    def confirm_close(self) -> bool:
        """Asked when the window closes during training: True to go on closing (training stops)."""
        if not self.controller.running:
            return True
        box = QMessageBox(QMessageBox.Icon.Question, "Training in progress",
                          "A model is training. Stop it and keep its checkpoints (it can be resumed from the "
                          "Runs panel), or keep training?", parent=self.window)
        stop = box.addButton("Stop and Keep Checkpoints", QMessageBox.ButtonRole.AcceptRole)
        box.addButton("Keep Training", QMessageBox.ButtonRole.RejectRole)
        box.setObjectName("closeWhileTrainingBox")
        box.exec()
        return box.clickedButton() is stop

    def shutdown(self) -> bool:
        self._warm_stop.set()
        if self.controller.running:
            self.dashboard.set_stopping()
        ok = self.controller.shutdown()
        # A warm-up import in flight is waited for (a minute at most, on a loaded machine): the
        # interpreter must not shut down under it.
        return self.controller._runner.pool.waitForDone(60_000) and ok

    def _warn(self, title: str, text: str) -> None:
        QMessageBox.warning(self.window, title, text)
