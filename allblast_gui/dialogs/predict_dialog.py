"""Model ▸ Predict…: which model predicts the open folder, with test-time augmentation or not,
in batches suited to the device."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (
    QButtonGroup, QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout,
    QLabel, QLineEdit, QPushButton, QRadioButton, QSpinBox, QVBoxLayout, QWidget,
)

DEFAULT_BATCH = {"cpu": 32, "cuda": 128}


def default_batch_size(device: str) -> int:
    import torch

    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return DEFAULT_BATCH["cuda" if cuda else "cpu"]


class PredictDialog(QDialog):
    def __init__(self, active_model: Path | None, active_name: str, parent: QWidget | None = None) -> None:
        from engine.learn.device import device_choices

        super().__init__(parent)
        self.setObjectName("predictDialog")
        self.setWindowTitle("Predict")
        self.use_active = QRadioButton(f"Active model: {active_name}" if active_model else "Active model: none yet "
                                       "(train one, or choose a model file)", objectName="predictActive")
        self.use_file = QRadioButton("Model file:", objectName="predictFileRadio")
        group = QButtonGroup(self)
        group.addButton(self.use_active)
        group.addButton(self.use_file)
        self.file = QLineEdit(objectName="predictFile")
        self.file.setPlaceholderText("a model.pt from a run folder")
        browse = QPushButton("Choose…")
        browse.clicked.connect(self._browse)
        self.file.textChanged.connect(lambda _t: self.use_file.setChecked(True))
        self.use_active.setEnabled(active_model is not None)
        (self.use_active if active_model is not None else self.use_file).setChecked(True)
        self._active = active_model
        self.tta = QCheckBox("Test-time augmentation: average over 4 flips and rotations (4x slower)",
                             objectName="predictTta")
        self.device = QComboBox(objectName="predictDevice")
        for key, text in device_choices():
            self.device.addItem(text, key)
        self.batch = QSpinBox(objectName="predictBatch", minimum=1, maximum=4096)
        self.batch.setValue(default_batch_size("auto"))
        self.device.currentIndexChanged.connect(lambda _i: self.batch.setValue(default_batch_size(self.device.currentData())))
        note = QLabel("The model's class and probability appear on each tile as the cells are done; the results "
                      "are kept with the labels. A model file chosen here becomes the active model.")
        note.setWordWrap(True)
        file_row = QHBoxLayout()
        file_row.addWidget(self.use_file)
        file_row.addWidget(self.file, 1)
        file_row.addWidget(browse)
        form = QFormLayout()
        form.addRow("Device", self.device)
        form.addRow("Batch size", self.batch)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.start_button = buttons.addButton("Predict", QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.use_active)
        layout.addLayout(file_row)
        layout.addWidget(self.tta)
        layout.addLayout(form)
        layout.addWidget(note)
        layout.addWidget(buttons)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Model file", str(Path.home()), "allblast model (*.pt);;All (*)")
        if path:
            self.file.setText(path)

    def model_path(self) -> Path | None:
        if self.use_active.isChecked():
            return self._active
        text = self.file.text().strip()
        return Path(text).expanduser() if text else None

    def options(self) -> dict:
        return {"tta": self.tta.isChecked(), "batch_size": self.batch.value(), "device": self.device.currentData()}
