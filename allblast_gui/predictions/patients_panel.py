"""The Patients panel (a dock): per patient or slide, cells, expert and model counts per class,
and the share of a chosen class (the blast fraction for C-NMC), expert against model, as a table
and a small bar chart. Clicking a patient filters the grid."""
from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox, QFileDialog, QHBoxLayout, QLabel, QMessageBox, QPushButton, QSplitter, QVBoxLayout, QWidget,
)

from engine.labels.outputs import OutputRefused, check_output

from ..style import CLASS_PALETTE
from ..views.tables import row_table
from .patient_summary import PatientRow, default_positive, summarize_patients, write_patient_csv

_Index = QModelIndex | QPersistentModelIndex
EXPERT_COLOR, MODEL_COLOR = CLASS_PALETTE[0], CLASS_PALETTE[1]
REFRESH_MS = 300  # labelling at keyboard speed recounts at most ~3 times a second


def _pct(value) -> str:
    return "–" if value is None else f"{value:.1%}"


class PatientTableModel(QAbstractTableModel):
    """Patient, cells, the share of the chosen class (expert, model), then one column per class
    with "expert / model" counts."""

    FIXED = ("Patient", "Cells", "{pos}: expert", "{pos}: model")

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.rows: list[PatientRow] = []
        self.classes: list[str] = []
        self.positive: str | None = None

    def set_rows(self, rows: list[PatientRow], classes: list[str], positive: str | None) -> None:
        self.beginResetModel()
        self.rows, self.classes, self.positive = rows, list(classes), positive
        self.endResetModel()

    def rowCount(self, parent: _Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.FIXED) + len(self.classes)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation != Qt.Orientation.Horizontal:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            if section < len(self.FIXED):
                return self.FIXED[section].format(pos=self.positive or "class")
            return self.classes[section - len(self.FIXED)]
        if role == Qt.ItemDataRole.ToolTipRole and section >= len(self.FIXED):
            return "cells the expert labelled as this class / cells the model put in it"
        return None

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or not 0 <= index.row() < len(self.rows):
            return None
        r, col = self.rows[index.row()], index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            pos = self.positive
            if col >= len(self.FIXED):
                c = self.classes[col - len(self.FIXED)]
                model = r.predicted[c] if sum(r.predicted.values()) else "–"
                return f"{r.expert[c]} / {model}"
            return (r.patient, f"{r.cells:,}", _pct(r.expert_fraction(pos)) if pos else "–",
                    _pct(r.model_fraction(pos)) if pos else "–")[col]
        if role == Qt.ItemDataRole.TextAlignmentRole and col > 0:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


class PatientsPanel(QWidget):
    patientRequested = Signal(object)  # patient id, or None for every cell

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("patientsPanel")
        self.positive = QComboBox(objectName="patientsPositive")
        self.positive.setToolTip("The class whose share per patient is compared (for C-NMC: all, the blasts)")
        self.model = PatientTableModel(self)
        # a wide last class column would read as an empty gap
        self.table = row_table(self.model, "patientsTable", stretch_last=False)
        self.table.clicked.connect(self._on_clicked)
        self.chart = pg.PlotWidget(background="w")
        self.chart.setObjectName("patientsChart")
        self.chart.setMinimumWidth(220)
        self.chart.setMouseEnabled(x=False, y=False)
        self.chart.hideButtons()
        self.chart.setYRange(0, 1, padding=0.02)
        self.chart.showGrid(y=True, alpha=0.25)
        self.expert_bars = pg.BarGraphItem(x=[], height=[], width=0.38, brush=EXPERT_COLOR)
        self.model_bars = pg.BarGraphItem(x=[], height=[], width=0.38, brush=MODEL_COLOR)
        self.chart.addItem(self.expert_bars)
        self.chart.addItem(self.model_bars)
        self.legend = QLabel(f"<span style='color:{EXPERT_COLOR}'>■ expert</span> &nbsp; "
                             f"<span style='color:{MODEL_COLOR}'>■ model</span>")
        top = QHBoxLayout()
        top.addWidget(QLabel("Share of"))
        top.addWidget(self.positive)
        top.addWidget(self.legend)
        top.addStretch(1)
        self.export_button = QPushButton("Export CSV…", objectName="patientsExport")
        self.export_button.setToolTip("Write this table as a CSV (patients, counts, the class share)")
        self.export_button.clicked.connect(lambda: self.export_csv())
        top.addWidget(self.export_button)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.table)
        split.addWidget(self.chart)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(top)
        layout.addWidget(split, 1)
        self._rows_source = None
        self._classes: list[str] = []
        self._stale = True
        self._timer = QTimer(self, singleShot=True, interval=REFRESH_MS)
        self._timer.timeout.connect(self.refresh)
        self.positive.currentIndexChanged.connect(lambda _i: self.refresh())

    def set_source(self, rows_source, classes: list[str]) -> None:
        """`rows_source()` -> the grid's rows; `classes` of the open folder."""
        self._rows_source, self._classes = rows_source, list(classes)
        self.positive.blockSignals(True)
        self.positive.clear()
        for c in classes:
            self.positive.addItem(c, c)
        choice = default_positive(classes)
        if choice is not None:
            self.positive.setCurrentIndex(self.positive.findData(choice))
        self.positive.blockSignals(False)
        self.refresh()

    def schedule_refresh(self) -> None:
        if not self._timer.isActive():
            self._timer.start()

    def showEvent(self, event) -> None:  # noqa: N802 (Qt override)
        super().showEvent(event)
        if self._stale:
            self.refresh()

    def refresh(self) -> None:
        """Recount now if the panel is on screen; otherwise when it is shown next."""
        self._timer.stop()
        if not self.isVisible():
            self._stale = True
            return
        self._stale = False
        self.recount()

    def recount(self) -> None:
        rows = summarize_patients(self._rows_source()) if self._rows_source is not None else []
        positive = self.positive.currentData()
        classes = list(self._classes)
        for r in rows:  # classes only the model knows still show in the counts
            classes += [c for c in r.predicted if c not in classes]
        self.model.set_rows(rows, classes, positive)
        x = list(range(len(rows)))
        expert = [r.expert_fraction(positive) or 0.0 for r in rows] if positive else []
        model = [r.model_fraction(positive) or 0.0 for r in rows] if positive else []
        self.expert_bars.setOpts(x=[i - 0.2 for i in x][:len(expert)], height=expert)
        self.model_bars.setOpts(x=[i + 0.2 for i in x][:len(model)], height=model)
        axis = self.chart.getAxis("bottom")
        axis.setTicks([[(i, r.patient) for i, r in enumerate(rows)]])
        self.chart.setXRange(-0.7, max(len(rows) - 0.3, 0.7), padding=0)
        self.chart.setTitle(f"share of {positive}" if positive else "")

    def _on_clicked(self, index: QModelIndex) -> None:
        row = self.model.rows[index.row()]
        self.patientRequested.emit(row.filter_value)

    def export_csv(self, path=None):
        """Write the table (recounted now) to `path`, or to a file the user chooses; returns the path."""
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export the patient table", "patients.csv", "CSV (*.csv)")
            if not path:
                return None
        self.recount()
        try:  # the save dialog confirmed a replace; the database and images are never written
            path = check_output(path, force=True, what="patient table")
            write_patient_csv(path, self.model.rows, self.model.classes, self.model.positive)
        except OutputRefused as exc:
            QMessageBox.warning(self, "Not written", str(exc))
            return None
        except OSError as exc:
            QMessageBox.warning(self, "Not written", f"Cannot write {path}: {exc.strerror or exc}")
            return None
        return path
