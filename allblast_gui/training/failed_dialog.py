"""Why a training run failed, and the ways out, as buttons.

Each kind of `TrainingFailed` gets the choices that fix it: missing ImageNet weights offer a
weights file, the bundled Lite0 or training from scratch; out of memory offers a smaller batch or
image; a NaN loss a lower learning rate. A choice emits `retry` with the changed `TrainConfig`
(a new run; the failed run's folder keeps its checkpoints and says it failed).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFileDialog, QMessageBox, QWidget

from engine.learn.config import TrainConfig
from engine.learn.events import TrainingFailed
from engine.learn.weights import LITE0

TITLES = {
    "weights": "No ImageNet weights for this backbone",
    "out-of-memory": "Out of memory",
    "nan-loss": "The loss became NaN",
    "disk-full": "The disk is full",
    "not-writable": "The run folder cannot be written",
    "data": "Training cannot start with these cells",
    "error": "Training failed",
}


class TrainingFailedDialog(QMessageBox):
    retry = Signal(object)  # TrainConfig
    showLogRequested = Signal()

    def __init__(self, failed: TrainingFailed, config: TrainConfig | None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("trainingFailedDialog")
        self.setIcon(QMessageBox.Icon.Warning)
        self.setWindowTitle("Training stopped")
        self.setText(f"<b>{TITLES.get(failed.kind, 'Training failed')}</b>")
        self.setInformativeText(failed.message)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.failed, self.config = failed, config
        self.choices: dict[str, object] = {}  # objectName -> button, for scripts and tests
        c = config
        if c is not None and failed.kind == "weights":
            self._add("failedChooseWeights", "Choose Weights File…", self._choose_file)
            self._add("failedUseLite0", f"Use Bundled {LITE0}",
                      lambda: self.retry.emit(replace(c, backbone=LITE0, weights=None, pretrained=True, img_size=None)))
            self._add("failedFromScratch", "Train From Scratch",
                      lambda: self.retry.emit(replace(c, weights=None, pretrained=False)))
        elif c is not None and failed.kind == "out-of-memory":
            if c.batch_size > 2:
                self._add("failedSmallerBatch", f"Retry With Batch Size {c.batch_size // 2}",
                          lambda: self.retry.emit(replace(c, batch_size=c.batch_size // 2)))
            size = c.img_size or 0
            if size >= 96:
                smaller = max(64, int(size * 0.75) // 32 * 32)
                self._add("failedSmallerImage", f"Retry At {smaller} px",
                          lambda: self.retry.emit(replace(c, img_size=smaller)))
        elif c is not None and failed.kind == "nan-loss":
            self._add("failedLowerLr", f"Retry With Learning Rate {c.lr / 10:g}",
                      lambda: self.retry.emit(replace(c, lr=c.lr / 10)))
        elif failed.kind == "error":
            self._add("failedShowLog", "Show Log Folder", self.showLogRequested.emit)
        self.addButton(QMessageBox.StandardButton.Close if self.choices else QMessageBox.StandardButton.Ok)

    def _add(self, name: str, text: str, action) -> None:
        button = self.addButton(text, QMessageBox.ButtonRole.AcceptRole)
        button.setObjectName(name)
        button.clicked.connect(action)
        self.choices[name] = button

    def _choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.parentWidget(), "ImageNet weights for the backbone",
                                              str(Path.home()), "Weights (*.pth *.pt *.bin *.safetensors);;All files (*)")
        if path and self.config is not None:
            self.retry.emit(replace(self.config, weights=path, pretrained=True))
