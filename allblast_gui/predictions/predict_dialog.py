"""Model ▸ Predict…: which model predicts the open folder, with test-time augmentation or not,
in batches suited to the device, through which inference backend and at which precision."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from PySide6.QtWidgets import (
    QButtonGroup, QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout,
    QLabel, QLineEdit, QPushButton, QRadioButton, QSpinBox, QVBoxLayout, QWidget,
)

DEFAULT_BATCH = {"cpu": 32, "cuda": 128}
BACKEND_TEXT = {
    "auto": "Auto (OpenVINO on the CPU when it runs here, else torch; torch on a GPU)",
    "torch": "torch (CPU or GPU)",
    "openvino": "OpenVINO (CPU)",
    "onnxruntime": "ONNX Runtime (CPU, f32)",
}
PRECISION_TEXT = {"f32": "f32 (agrees with training)", "bf16": "bf16 (faster where the CPU has it)",
                  "f16": "f16 (GPU, or a CPU that has it)"}
_PACKAGE = {"openvino": "openvino", "onnxruntime": "onnxruntime"}


def backend_installed(backend: str) -> bool:
    """Whether a backend's package is there (found, not imported: the dialog opens at once)."""
    package = _PACKAGE.get(backend)
    return package is None or importlib.util.find_spec(package) is not None


def default_batch_size(device: str) -> int:
    import torch

    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return DEFAULT_BATCH["cuda" if cuda else "cpu"]


class PredictDialog(QDialog):
    def __init__(self, active_model: Path | None, active_name: str, parent: QWidget | None = None, *,
                 backend: str = "auto", precision: str = "f32") -> None:
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
        self.backend = QComboBox(objectName="predictBackend")
        for key, text in BACKEND_TEXT.items():
            installed = backend_installed(key)
            missing = ' (not installed: pip install "allblast[fast]")'
            self.backend.addItem(text if installed else text + missing, key)
            if not installed:  # shown, so the user learns it exists, but not choosable
                self.backend.model().item(self.backend.count() - 1).setEnabled(False)
        self.backend.setCurrentIndex(max(0, self.backend.findData(backend if backend_installed(backend) else "auto")))
        self.precision = QComboBox(objectName="predictPrecision")
        for key, text in PRECISION_TEXT.items():
            self.precision.addItem(text, key)
        self.precision.setCurrentIndex(max(0, self.precision.findData(precision)))
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
        form.addRow("Backend", self.backend)
        form.addRow("Precision", self.precision)
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
        return {"tta": self.tta.isChecked(), "batch_size": self.batch.value(), "device": self.device.currentData(),
                "backend": self.backend.currentData(), "precision": self.precision.currentData()}
