"""Training in the window: Model ▸ Train Model…, the Training dock (live curves), the continue
and failure dialogs, and the Runs dock (every run of the folder; which one is the active model).

Everything the engine does runs on the TrainingController's worker thread; this class only reacts
on the GUI thread. The folder's runs and its active model are the session's catalog: a run made
active here is announced by the session, and the predictions feature shows that model's results.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path

from PySide6.QtWidgets import QMessageBox

from engine.learn.config import TrainConfig
from engine.learn.events import EpochEnd, TrainingFailed, TrainingFinished, TrainingStarted
from engine.learn.run_folder import RunDir
from engine.learn.weights import OFFERED_BACKBONES
from engine.labels.project import apply_expert_labels

from ..dialogs.help_dialog import show_log_folder
from ..feature import BOTTOM, Dock, Feature
from . import log_text
from .continue_dialog import ContinueDialog
from .controller import TrainingController
from .dashboard import TrainingDashboard
from .failed_dialog import TrainingFailedDialog
from .history import TrainingHistory
from .runs import RunsDock
from .warm_up import start_warm_up

log = logging.getLogger(__name__)


class TrainingFeature(Feature):
    name = "training"

    def __init__(self, session, window) -> None:
        super().__init__(session, window)
        self.prefs = session.prefs
        self.controller = TrainingController(self)
        self.dashboard = TrainingDashboard()
        self.run_list = RunsDock(session, self.controller, self.dashboard, window)
        self.runs = self.run_list.panel  # the Runs dock's table and buttons
        self.refresh_runs, self.add_run, self.set_active = (self.run_list.refresh_runs, self.run_list.add_run,
                                                            self.run_list.set_active)
        self.actions: dict = {}
        self.train_dialog = None  # the open TrainDialog
        self.continue_dialog: ContinueDialog | None = None
        self.failure_dialog: TrainingFailedDialog | None = None
        self._warm_stop = threading.Event()
        self._dashboard_dock = self.make_dock("dashboardDock", "Training", self.dashboard)
        self._runs_dock = self.make_dock("runsDock", "Runs", self.runs)
        self._connect()

    def _connect(self) -> None:
        c, d = self.controller, self.dashboard
        c.started.connect(self._on_started)
        c.started.connect(lambda _e: (self._dashboard_dock.show(), self._dashboard_dock.raise_()))
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
        self.runs.resumeRequested.connect(self.resume)
        self.run_list.message.connect(self.message)
        self.session.datasetChanged.connect(self._on_dataset)

    # ---- what the window mounts -----------------------------------------------------------------
    def docks(self) -> list[Dock]:
        return [Dock("dashboard", self._dashboard_dock, BOTTOM, 280, 180, action="show_dashboard"),
                Dock("runs", self._runs_dock, BOTTOM, 280, 180, action="show_runs")]

    def handlers(self) -> dict:
        return {"train": self.open_train_dialog, "stop_training": self.stop, "add_run": lambda: self.add_run()}

    def bind(self, actions, menus) -> None:
        self.actions = actions
        self._on_running(False)

    @property
    def catalog(self):
        """The open folder's runs and active model (the session's)."""
        return self.session.catalog

    @property
    def dataset(self):
        return self.session.dataset

    def preload(self) -> None:
        self.warm_up(backend=self.prefs.inference()[0])
        self.session.weights.request(OFFERED_BACKBONES)  # the Train dialog's marks, ready when it opens

    def warm_up(self, backend: str | None = None) -> None:
        """Import torch and timm on a pool thread now, so pressing Train does not wait for them,
        and the prediction `backend` the Predict dialog will use (OpenVINO's runtime held the GIL
        for 100-150 ms while it loaded on the prediction thread: the window froze as predicting
        began). Closing the window stops it between imports (`shutdown`)."""
        start_warm_up(self.controller._runner, self._warm_stop, backend)

    # ---- data set ---------------------------------------------------------------------------------
    def _on_dataset(self, dataset) -> None:
        self.refresh_runs()
        if not self.controller.running:  # no curves of another folder's run, nor empty plots
            runs = self.runs.model.rowCount()
            self.dashboard.show_empty("no-run-shown" if runs else "no-run", runs)

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
        from .train_dialog import TrainDialog  # torch and timm: loaded when first needed

        saved = self.prefs.train_settings()
        dialog = TrainDialog(self.expert_scan(), self.catalog.root, saved, self.window, weights=self.session.weights,
                             open_weights_manager=self.session.weightsManagerRequested.emit)
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
        self.run_list.select_run(path)
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
        self.dashboard.title.setText(log_text.started_title(e))
        self.dashboard.set_planned_epochs(e.max_epochs)
        self.dashboard.add_log(log_text.started_line(e))

    def _on_epoch(self, e: EpochEnd) -> None:
        self.dashboard.on_epoch_end(e.epoch, e.seconds)
        for text, kind in log_text.epoch_lines(e, self.controller.history, self.controller.monitor):
            self.dashboard.add_log(text, kind=kind)
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
        self.dashboard.add_log(log_text.finished_line(e), kind="best" if e.reason != "cancelled" else "info")
        self.run_list.offer_as_active(Path(e.run_dir))
        self.message.emit(log_text.finished_message(e))

    def _on_failed(self, e: TrainingFailed) -> None:
        self.dashboard.add_log(f"failed ({e.kind}): {e.message}", kind="warning")
        self._close_continue_dialog()
        dialog = TrainingFailedDialog(e, self.controller.config, self.window)
        dialog.retry.connect(lambda config: self.start(config))
        dialog.showLogRequested.connect(lambda: show_log_folder(self.window))
        dialog.finished.connect(lambda _r: setattr(self, "failure_dialog", None))
        self.failure_dialog = dialog
        dialog.open()

    def _on_running(self, running: bool) -> None:
        if self.actions:
            self.actions["stop_training"].setEnabled(running)
            self.actions["train"].setEnabled(not running)
        self.dashboard.set_running(running)
        self.runs.set_training(running)
        if not running:
            self._close_continue_dialog()
            self.refresh_runs()

    def _close_continue_dialog(self) -> None:
        if self.continue_dialog is not None:
            self.continue_dialog.done(0)
            self.continue_dialog = None

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
        """Stops within a batch; checkpoints complete, no thread left."""
        self._warm_stop.set()
        if self.controller.running:
            self.dashboard.set_stopping()
        ok = self.controller.shutdown()
        # A warm-up import in flight is waited for (a minute at most, on a loaded machine): the
        # interpreter must not shut down under it.
        return self.controller._runner.pool.waitForDone(60_000) and ok

    def _warn(self, title: str, text: str) -> None:
        QMessageBox.warning(self.window, title, text)
