"""The Runs dock's commands over the session's catalog: list the open folder's runs (those made
here and those added from elsewhere), show a saved run's curves in the Training dock, add a run
folder, make one the active model (the session announces it: the grid shows its predictions), and
the first model of a folder becomes its active model by itself.

Listing reads every run's config, model card and metrics: that runs on a pool thread (a folder of
many runs, or one on a network drive, froze the window at every epoch's end), and the panel is
filled when the list comes back (`refreshed`). The database reads (added runs, the active model)
stay on the GUI thread, where the store's connection lives."""
from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QFileDialog, QMessageBox

from engine.learn.run_folder import RunDir

from .history import TrainingHistory
from .runs_panel import RunsPanel

log = logging.getLogger(__name__)


class RunsDock(QObject):
    message = Signal(str)
    refreshed = Signal()  # the panel shows the runs as they were when the last refresh began

    def __init__(self, session, controller, dashboard, window) -> None:
        super().__init__(window)
        self.session, self.controller, self.dashboard, self.window = session, controller, dashboard, window
        self._select_after: Path | None = None  # select this run once the list in flight has it
        self.panel = RunsPanel()
        self.panel.runSelected.connect(self._show_run)
        self.panel.activateRequested.connect(self.set_active)
        self.panel.addRequested.connect(lambda: self.add_run())
        self.panel.refreshRequested.connect(self.refresh_runs)
        self.panel.reportRequested.connect(session.modelReportRequested)
        session.activeModelChanged.connect(lambda _model: self.refresh_runs())

    @property
    def catalog(self):
        return self.session.catalog

    def refresh_runs(self) -> None:
        """List the runs again on a pool thread; the panel follows when they come back."""
        if self.catalog is None:
            self.panel.set_runs([], None)
            self.refreshed.emit()
            return
        try:
            listing, active = self.catalog.listing(), self.catalog.active()
        except Exception as exc:  # noqa: BLE001 - an unreadable database must not break the panel
            log.warning("could not list the runs: %s", exc, exc_info=exc)
            return
        training = self.controller.run_dir if self.controller.running else None
        worker = self.session.runner.run(listing, key="runs-list")  # a newer refresh makes this one stale
        worker.result.connect(lambda runs: self._show_runs(runs, active, training))
        worker.error.connect(lambda exc: log.warning("could not list the runs: %s", exc))

    def _show_runs(self, runs, active, training) -> None:
        self.panel.set_runs(runs, active, training=training)
        if self._select_after is not None and self.panel.select_run(self._select_after):
            self._select_after = None
        self.refreshed.emit()

    def select_run(self, path: Path) -> None:
        """Select a run in the panel now, or as soon as the list in flight shows it."""
        self._select_after = None if self.panel.select_run(path) else Path(path).resolve()

    def _shows_live(self, path: Path) -> bool:
        """The dashboard shows this run's live curves (the batch-loss curve included, which the
        saved metrics lack): a re-selection after a refresh must not replace them."""
        return self.controller.run_dir == path and self.dashboard.history is self.controller.history

    def _show_run(self, path: Path | None) -> None:
        if path is None or (self.controller.running and self.controller.run_dir == path) or self._shows_live(path):
            return
        if self.controller.running:
            self.message.emit("Training in progress: the dashboard shows the live run")
            return
        # its metrics.jsonl is read on a pool thread; a newer selection makes this one stale
        worker = self.session.runner.run(lambda: TrainingHistory.from_records(RunDir(path).read_metrics()),
                                         key="run-curves")
        worker.result.connect(lambda history: self._show_saved(path, history))
        worker.error.connect(lambda exc: self.message.emit(f"Cannot show the curves of {path.name}: {exc}"))

    def _show_saved(self, path: Path, history: TrainingHistory) -> None:
        if not self.controller.running and self.panel.selected_path() == path and not self._shows_live(path):
            self.dashboard.show_history(history, f"{path.name} (saved run)")

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
        self.select_run(summary.path)
        return summary.path

    def set_active(self, path: Path) -> None:
        """Make a run the active model: the session announces it (the Runs dock marks it, the grid
        shows its stored predictions)."""
        try:
            self.session.set_active_model(path)
        except (OSError, ValueError) as exc:
            self._warn("Cannot use this run", str(exc))
            return
        self.message.emit(f"Active model: {Path(path).name}")

    def offer_as_active(self, run_dir: Path) -> None:
        """The first model of a folder becomes its active model, so Predict works at once; a later
        one never replaces the expert's choice silently."""
        if self.catalog is None or not (run_dir / "model.pt").is_file():
            return
        if self.catalog.active() is None:
            self.set_active(run_dir)
            self.dashboard.add_log(f"{run_dir.name} is now the active model (Model ▸ Predict uses it)")
        elif self.catalog.active() != run_dir:
            self.dashboard.add_log("to predict with this model, select it in the Runs panel and press Set Active Model")

    def _warn(self, title: str, text: str) -> None:
        QMessageBox.warning(self.window, title, text)
