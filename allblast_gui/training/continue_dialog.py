"""The paper's "halt or continue?" every N epochs, as a dialog that does not block the window.

It shows the last N epochs (losses, accuracy, weighted F1, learning rate), the best epoch and its
value, the current learning rate and the trend of the monitored metric, and offers "Halt" or
"Continue for [N] more epochs". It is opened with `open()`: the engine waits for the answer while
the curves and the rest of the window stay live.
"""
from __future__ import annotations

import math

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView, QDialog, QHBoxLayout, QHeaderView, QLabel, QPushButton, QSpinBox, QTableWidget,
    QTableWidgetItem, QVBoxLayout, QWidget,
)

COLUMNS = (("epoch", "Epoch"), ("train_loss", "Train loss"), ("val_loss", "Val loss"),
           ("train_accuracy", "Train acc"), ("val_accuracy", "Val acc"), ("val_weighted_f1", "Val F1"),
           ("lr", "LR"))
MONITOR_TEXT = {"val_loss": "validation loss", "val_accuracy": "validation accuracy",
                "val_weighted_f1": "validation weighted F1", "train_loss": "training loss",
                "train_accuracy": "training accuracy"}


def _cell(key: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if key == "epoch":
        return str(value)
    if key == "lr":
        return f"{value:.2e}"
    return f"{value:.4f}"


class ContinueDialog(QDialog):
    decided = Signal(object)  # int (more epochs) or None (halt)

    def __init__(self, summary: dict, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("continueDialog")
        self.setWindowTitle("Continue training?")
        self.setWindowModality(Qt.WindowModality.WindowModal)
        self._answered = False
        monitor = MONITOR_TEXT.get(summary.get("monitor"), summary.get("monitor", ""))
        best_value = summary.get("best_value")
        best = (f"Best so far: epoch {summary.get('best_epoch')}, {monitor} "
                f"{_cell('x', best_value)}" if summary.get("best_epoch") else "No best epoch yet")
        lr = summary.get("lr")
        headline = QLabel(
            f"<b>Epoch {summary.get('epoch')} done.</b> {best}.<br>"
            f"Learning rate now {_cell('lr', lr)}; over the last {len(summary.get('rows', []))} epochs the "
            f"{monitor} is <b>{summary.get('trend', 'flat')}</b>.", objectName="continueHeadline")
        headline.setWordWrap(True)
        rows = summary.get("rows", [])
        self.table = QTableWidget(len(rows), len(COLUMNS), objectName="continueTable")
        self.table.setHorizontalHeaderLabels([c[1] for c in COLUMNS])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        for i, row in enumerate(rows):
            for j, (key, _) in enumerate(COLUMNS):
                item = QTableWidgetItem(_cell(key, row.get(key)))
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if row.get("epoch") == summary.get("best_epoch"):
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                self.table.setItem(i, j, item)
        self.epochs = QSpinBox(objectName="continueEpochs", minimum=1, maximum=1000)
        self.epochs.setValue(int(summary.get("suggested_epochs") or 5))
        self.halt_button = QPushButton("Halt", objectName="continueHalt")
        self.halt_button.setToolTip("Stop here: the best epoch's model is kept")
        self.continue_button = QPushButton("Continue", objectName="continueGo")
        self.continue_button.setDefault(True)
        self.halt_button.clicked.connect(lambda: self._decide(None))
        self.continue_button.clicked.connect(lambda: self._decide(self.epochs.value()))
        buttons = QHBoxLayout()
        buttons.addWidget(self.halt_button)
        buttons.addStretch(1)
        buttons.addWidget(QLabel("Continue for"))
        buttons.addWidget(self.epochs)
        buttons.addWidget(QLabel("more epochs"))
        buttons.addWidget(self.continue_button)
        layout = QVBoxLayout(self)
        layout.addWidget(headline)
        layout.addWidget(self.table, 1)
        layout.addLayout(buttons)
        self.resize(640, 120 + 30 * max(3, len(rows)))

    def _decide(self, epochs: int | None) -> None:
        if not self._answered:
            self._answered = True
            self.decided.emit(epochs)
        self.done(QDialog.DialogCode.Accepted if epochs else QDialog.DialogCode.Rejected)

    def reject(self) -> None:  # Esc or the window's close button: halt, never leave the engine waiting
        if not self._answered:
            self._decide(None)
        else:
            super().reject()
