"""The Cases dock: one row per case (engine.cases.summary), the two-person setting, and Sign Off….
A click on a case shows its cells in the grid (through the session)."""
from __future__ import annotations

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from engine.cases.summary import AMENDED_STATUS, AWAITING, OPEN, READY, SIGNED, TAMPERED_STATUS, CaseSummary

from ..views.tables import row_table

_Index = QModelIndex | QPersistentModelIndex
STATUS_COLORS = {OPEN: "#6b6b6b", READY: "#1f6fb2", AWAITING: "#8a5a00", SIGNED: "#1b7a3a",
                 AMENDED_STATUS: "#b35900", TAMPERED_STATUS: "#b00020"}
STATUS_TIPS = {
    OPEN: "cells to review, or disagreements with the model open",
    READY: "every cell reviewed, nothing open: it can be signed (Ctrl+Shift+S)",
    AWAITING: "signed once; the two-person rule needs a second signature by another person",
    SIGNED: "signed; labels and report are as signed",
    AMENDED_STATUS: "changed since it was signed (each change with its reason): it needs a new signature",
    TAMPERED_STATUS: "labels or the signed report changed outside allblast: `allblast-engine cases verify` says what",
}


class CaseTableModel(QAbstractTableModel):
    COLUMNS = ("Case", "Cells", "Reviewed", "Open", "Differential", "{pos} (95% CI)", "Status")

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.rows: list[CaseSummary] = []
        self.positive: str | None = None

    def set_rows(self, rows: list[CaseSummary], positive: str | None) -> None:
        self.beginResetModel()
        self.rows, self.positive = list(rows), positive
        self.endResetModel()

    def rowCount(self, parent: _Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation != Qt.Orientation.Horizontal:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return self.COLUMNS[section].format(pos=self.positive or "positive class")
        if role == Qt.ItemDataRole.ToolTipRole:
            return ("", "cells of the case", "cells whose class the expert set, accepted or confirmed, or marked "
                    "unsure with a note", "disagreements with the active model still open (accept, relabel, or "
                    "keep with a reason)", "cells per class (the class set's order)",
                    "the share of the positive class among the cells with a class, its 95% Wilson interval, and "
                    "the number of cells it rests on", "open, ready, signed, amended, tampered")[section]
        return None

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or not 0 <= index.row() < len(self.rows):
            return None
        s, col = self.rows[index.row()], index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return (s.title, f"{s.cells:,}", f"{s.reviewed:,}", f"{s.open_disagreements:,}", s.differential_text(),
                    s.fraction_text(), s.status)[col]
        if role == Qt.ItemDataRole.ForegroundRole and col == 6:
            return QColor(STATUS_COLORS.get(s.status, "#000000"))
        if role == Qt.ItemDataRole.ToolTipRole:
            if col == 6:
                return STATUS_TIPS.get(s.status, "")
            if col == 5 and s.fraction is not None and s.fraction.too_few:
                return f"only {s.fraction.n} cells counted (fewer than 100): the interval is wide"
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (1, 2, 3):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


class CasesPanel(QWidget):
    caseClicked = Signal(object)  # CaseSummary
    signRequested = Signal(object)  # CaseSummary, or None (the dialog asks)
    twoPersonToggled = Signal(bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("casesPanel")
        self.model = CaseTableModel(self)
        self.table = row_table(self.model, "casesTable")
        self.table.clicked.connect(self._on_clicked)
        self.table.doubleClicked.connect(lambda index: self.signRequested.emit(self._summary(index)))
        self.summary = QLabel(objectName="casesSummary")
        self.model_label = QLabel(objectName="casesModel")
        self.model_label.setStyleSheet("color: #666666")
        self.two_person = QCheckBox("Two-person sign-off", objectName="casesTwoPerson")
        self.two_person.setToolTip("A signing is complete with a second signature by another person (kept with "
                                   "the folder's labels, for everyone who opens it)")
        self.two_person.toggled.connect(self.twoPersonToggled)
        self.sign_button = QPushButton("Sign Off…", objectName="casesSignOff")
        self.sign_button.setToolTip("Sign the selected case (Ctrl+Shift+S): refused, with what is missing, until "
                                    "every cell is reviewed and no disagreement is open")
        self.sign_button.clicked.connect(lambda: self.signRequested.emit(self.selected()))
        top = QHBoxLayout()
        top.addWidget(self.summary, 1)
        top.addWidget(self.model_label)
        top.addWidget(self.two_person)
        top.addWidget(self.sign_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(top)
        layout.addWidget(self.table, 1)

    def set_rows(self, rows: list[CaseSummary], positive: str | None, model_text: str) -> None:
        keep = self.selected()
        self.model.set_rows(rows, positive)
        counts = {}
        for s in rows:
            counts[s.status] = counts.get(s.status, 0) + 1
        order = (OPEN, READY, AWAITING, SIGNED, AMENDED_STATUS, TAMPERED_STATUS)
        self.summary.setText(f"{len(rows)} case{'s' if len(rows) != 1 else ''}: "
                             + ", ".join(f"{counts[k]} {k}" for k in order if counts.get(k)) if rows else
                             "No folder open")
        self.model_label.setText(model_text)
        if keep is not None:
            self.select(keep.key)

    def set_two_person(self, on: bool) -> None:
        self.two_person.blockSignals(True)
        self.two_person.setChecked(on)
        self.two_person.blockSignals(False)

    def _summary(self, index) -> CaseSummary | None:
        return self.model.rows[index.row()] if index.isValid() and index.row() < len(self.model.rows) else None

    def _on_clicked(self, index) -> None:
        summary = self._summary(index)
        if summary is not None:
            self.caseClicked.emit(summary)

    def selected(self) -> CaseSummary | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        return self._summary(rows[0]) if rows else None

    def select(self, key: str) -> bool:
        for i, s in enumerate(self.model.rows):
            if s.key == key:
                self.table.selectRow(i)
                return True
        return False

    def row(self, key: str) -> CaseSummary | None:
        return next((s for s in self.model.rows if s.key == key), None)
