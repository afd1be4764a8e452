"""The Runs dock's commands over the session's catalog: list the open folder's runs (those made
here and those added from elsewhere), show a saved run's curves in the Training dock, add a run
folder, make one the active model (the session announces it: the grid shows its predictions), and
the first model of a folder becomes its active model by itself."""
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

    def __init__(self, session, controller, dashboard, window) -> None:
        super().__init__(window)
        self.session, self.controller, self.dashboard, self.window = session, controller, dashboard, window
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
        if self.catalog is None:
            self.panel.set_runs([], None)
            return
        try:
            self.panel.set_runs(self.catalog.runs(), self.catalog.active(), training=self.controller.run_dir
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
        self.panel.select_run(summary.path)
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
