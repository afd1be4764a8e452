"""The Runs panel (a dock): every training run of the open data set, which one is the active
model, and the commands on a run (show its curves, resume, make active, add one made elsewhere).

`RunsTableModel` is a thin QAbstractTableModel over a list of `engine.learn.run_list.RunSummary`;
the panel never reads run folders itself (the `RunsCatalog` does).
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import (
    QHBoxLayout, QPushButton, QVBoxLayout, QWidget,
)

from engine.learn.run_list import RunSummary

from ..views.tables import row_table

_Index = QModelIndex | QPersistentModelIndex
COLUMNS = ("Active", "Date", "Backbone", "Size", "Split", "Epochs", "Best", "Val acc", "Val F1", "Status", "Loop")
STATUS_COLORS = {"running": "#0072B2", "finished": "#007A5A", "stopped": "#8C6D00", "failed": "#B00020"}


def _metric(summary: RunSummary, key: str) -> str:
    value = summary.best.get(key)
    return f"{value:.3f}" if isinstance(value, (int, float)) else "–"


class RunsTableModel(QAbstractTableModel):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._runs: list[RunSummary] = []
        self._active: Path | None = None

    def set_runs(self, runs: list[RunSummary], active: Path | None) -> None:
        self.beginResetModel()
        # The active model may be a run folder or its model.pt: either marks the run.
        active = active.resolve() if active else None
        self._runs, self._active = list(runs), (active.parent if active and active.is_file() else active)
        self.endResetModel()

    def run_at(self, row: int) -> RunSummary | None:
        return self._runs[row] if 0 <= row < len(self._runs) else None

    def row_of(self, path: Path) -> int | None:
        path = Path(path).resolve()
        return next((i for i, r in enumerate(self._runs) if r.path.resolve() == path), None)

    def runs(self) -> list[RunSummary]:
        return list(self._runs)

    def rowCount(self, parent: _Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._runs)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole):
        run = self.run_at(index.row()) if index.isValid() else None
        if run is None:
            return None
        column = COLUMNS[index.column()]
        active = self._active is not None and run.path.resolve() == self._active
        if role == Qt.ItemDataRole.DisplayRole:
            return {
                "Active": "★" if active else "",
                "Date": run.started, "Backbone": run.backbone,
                "Size": str(run.img_size or "–"),
                "Split": run.split + (" (leaky)" if run.leaky else ""),
                "Epochs": str(run.epochs_run), "Best": str(run.best_epoch or "–"),
                "Val acc": _metric(run, "val_accuracy"), "Val F1": _metric(run, "val_weighted_f1"),
                "Status": run.status if run.status in ("running", "failed") else f"{run.status} ({run.detail})",
                # a Keep Learning round: its loop and round (the rounds of one loop read together)
                "Loop": (f"{(run.loop or {}).get('id', '')} · round {(run.loop or {}).get('round')}"
                         if run.loop else ""),
            }[column]
        if role == Qt.ItemDataRole.ToolTipRole:
            return (f"{run.path}\n{run.status}: {run.detail}" + ("\nactive model" if active else "")
                    + (f"\nKeep Learning: {run.loop_text}" if run.loop else ""))
        if role == Qt.ItemDataRole.ForegroundRole and column == "Status":
            return QColor(STATUS_COLORS.get(run.status, "#000000"))
        if role == Qt.ItemDataRole.ForegroundRole and column == "Split" and run.leaky:
            return QColor("#B00020")
        if role == Qt.ItemDataRole.FontRole and active:
            font = QFont()
            font.setBold(True)
            return font
        if role == Qt.ItemDataRole.TextAlignmentRole and column in ("Active", "Size", "Epochs", "Best", "Val acc",
                                                                   "Val F1"):
            return int(Qt.AlignmentFlag.AlignCenter)
        return None


class RunsPanel(QWidget):
    runSelected = Signal(object)  # Path of the selected run (or None)
    resumeRequested = Signal(object)  # Path
    activateRequested = Signal(object)  # Path
    addRequested = Signal()
    refreshRequested = Signal()
    reportRequested = Signal(object)  # Path of the run whose model report to write

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("runsPanel")
        self.model = RunsTableModel(self)
        self.table = row_table(self.model, "runsTable")
        self.table.selectionModel().currentRowChanged.connect(self._on_current)
        self.table.doubleClicked.connect(lambda index: self.runSelected.emit(self.selected_path()))

        self.add_button = QPushButton("Add Run…", objectName="runsAdd")
        self.add_button.setToolTip("List a run folder made with allblast-engine train (here or on a server)")
        self.resume_button = QPushButton("Resume", objectName="runsResume")
        self.resume_button.setToolTip("Continue training the selected run from its last checkpoint")
        self.active_button = QPushButton("Set Active Model", objectName="runsActivate")
        self.active_button.setToolTip("Predictions use the active model")
        self.report_button = QPushButton("Model Report…", objectName="runsReport")
        self.report_button.setToolTip("A printable report of the selected run: data, curves, confusion matrix, "
                                      "per-class and per-patient metrics, model card (PDF or HTML)")
        self.refresh_button = QPushButton("Refresh", objectName="runsRefresh")
        self.report_button.clicked.connect(lambda: self._emit_for_selection(self.reportRequested))
        self.add_button.clicked.connect(self.addRequested)
        self.refresh_button.clicked.connect(self.refreshRequested)
        self.resume_button.clicked.connect(lambda: self._emit_for_selection(self.resumeRequested))
        self.active_button.clicked.connect(lambda: self._emit_for_selection(self.activateRequested))
        buttons = QHBoxLayout()
        for b in (self.add_button, self.resume_button, self.active_button, self.report_button,
                  self.refresh_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(buttons)
        layout.addWidget(self.table, 1)
        self._update_buttons()

    def set_runs(self, runs: list[RunSummary], active: Path | None, *, training: Path | None = None) -> None:
        keep = self.selected_path()
        self._training = training.resolve() if training else None
        self.model.set_runs(runs, active)
        row = self.model.row_of(keep) if keep is not None else None
        if row is not None:
            self.table.selectRow(row)
        self._update_buttons()

    def select_run(self, path: Path) -> bool:
        row = self.model.row_of(path)
        if row is None:
            return False
        self.table.selectRow(row)
        return True

    def selected_path(self) -> Path | None:
        index = self.table.selectionModel().currentIndex()
        run = self.model.run_at(index.row()) if index.isValid() else None
        return run.path if run is not None else None

    def set_training(self, running: bool) -> None:
        self._running = running
        self._update_buttons()

    def _emit_for_selection(self, signal) -> None:
        path = self.selected_path()
        if path is not None:
            signal.emit(path)

    def _on_current(self, current: QModelIndex, _previous: QModelIndex) -> None:
        self._update_buttons()
        self.runSelected.emit(self.selected_path())

    def _update_buttons(self) -> None:
        run = self.model.run_at(self.table.selectionModel().currentIndex().row())
        running = getattr(self, "_running", False)
        self.resume_button.setEnabled(run is not None and not running and run.status != "running"
                                      and (run.path / "last.pt").is_file())
        self.active_button.setEnabled(run is not None and (run.path / "model.pt").is_file())
        self.report_button.setEnabled(run is not None and run.status != "running" and (run.path / "model.pt").is_file())
