"""File ▸ Export Report…: what the case report covers (the folder, one patient, the selection),
the class whose fraction it states, how many cells per class it shows, who signs, and where it goes."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (
    QButtonGroup, QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout,
    QLineEdit, QPushButton, QRadioButton, QSpinBox, QVBoxLayout, QWidget,
)


class ReportDialog(QDialog):
    def __init__(self, *, patients: list[str], selection: int, classes: list[str], positive: str | None,
                 reviewer: str, default_path: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("reportDialog")
        self.setWindowTitle("Export Case Report")
        self.folder = QRadioButton("The whole folder", objectName="reportFolder")
        self.patient = QRadioButton("One patient:", objectName="reportPatientRadio")
        self.selection = QRadioButton(f"The selected cells ({selection})", objectName="reportSelection")
        group = QButtonGroup(self)
        for b in (self.folder, self.patient, self.selection):
            group.addButton(b)
        self.folder.setChecked(True)
        self.patient_combo = QComboBox(objectName="reportPatient")
        self.patient_combo.addItems(patients)
        self.patient.setEnabled(bool(patients))
        self.patient_combo.setEnabled(bool(patients))
        self.patient_combo.currentIndexChanged.connect(lambda _i: self.patient.setChecked(True))
        self.selection.setEnabled(selection > 0)
        self.positive = QComboBox(objectName="reportPositive")
        self.positive.addItem("none", None)
        for c in classes:
            self.positive.addItem(c, c)
        if positive in classes:
            self.positive.setCurrentIndex(self.positive.findData(positive))
        self.per_class = QSpinBox(objectName="reportPerClass", minimum=0, maximum=48)
        self.per_class.setValue(8)
        self.reviewer = QLineEdit(reviewer, objectName="reportReviewer")
        self.path = QLineEdit(str(default_path), objectName="reportPath")
        browse = QPushButton("Choose…")
        browse.clicked.connect(self._browse)
        self.open_after = QCheckBox("Open the report when it is written", objectName="reportOpen")
        self.open_after.setChecked(True)

        patient_row = QHBoxLayout()
        patient_row.addWidget(self.patient)
        patient_row.addWidget(self.patient_combo, 1)
        path_row = QHBoxLayout()
        path_row.addWidget(self.path, 1)
        path_row.addWidget(browse)
        form = QFormLayout()
        form.addRow("Fraction of", self.positive)
        form.addRow("Cells shown per class", self.per_class)
        form.addRow("Reviewer", self.reviewer)
        form.addRow("File (.pdf or .html)", path_row)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.write_button = buttons.addButton("Write Report", QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self.path.textChanged.connect(self._check)
        layout = QVBoxLayout(self)
        layout.addWidget(self.folder)
        layout.addLayout(patient_row)
        layout.addWidget(self.selection)
        layout.addLayout(form)
        layout.addWidget(self.open_after)
        layout.addWidget(buttons)
        self._check()

    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Write the report to", self.path.text(),
                                              "PDF (*.pdf);;HTML, one file (*.html)")
        if path:
            self.path.setText(path)

    def _check(self) -> None:
        self.write_button.setEnabled(Path(self.path.text().strip()).suffix.lower() in (".pdf", ".html"))

    def scope(self) -> str:
        if self.patient.isChecked():
            return f"patient:{self.patient_combo.currentText()}"
        return "selection" if self.selection.isChecked() else "folder"

    def options(self) -> dict:
        return {"scope": self.scope(), "positive": self.positive.currentData(), "per_class": self.per_class.value(),
                "reviewer": self.reviewer.text().strip(), "open_after": self.open_after.isChecked()}
