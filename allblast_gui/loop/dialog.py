"""Model ▸ Keep Learning…: how often a round trains, where it starts from, and how cells are
suggested. Both starting points are offered, and the dialog says which one a round will use."""
from __future__ import annotations

from PySide6.QtWidgets import (
    QButtonGroup, QComboBox, QDialog, QDialogButtonBox, QFormLayout, QGroupBox, QLabel, QRadioButton, QSpinBox,
    QVBoxLayout, QWidget,
)

from engine.learn.suggest import STRATEGIES
from engine.workspace.loop import DEFAULT_START, START_CONTINUE, START_IMAGENET, LoopSettings

CONTINUE_TEXT = "Continue from the active model (fast: seconds a round)"
CONTINUE_MORE = ("Its backbone stays; a new head learns on the stored embeddings of every labelled cell, and the "
                 "folder's predictions are made from them too.")
IMAGENET_TEXT = "Retrain from ImageNet on all labels (minutes to hours a round on a CPU)"
IMAGENET_MORE = "A full training run of the allblast recipe, then the folder predicted again."
WHY_DEFAULT = ("Measured (benchmarks/bench_loop.py, README): on the same 384 PBC labels a continue round reached "
               "0.848 test accuracy in 1.8 s, a retrain 0.863 in 527 s; for the time, continue is better. Retrain "
               "now and then (overnight) for a better backbone.")


class KeepLearningDialog(QDialog):
    def __init__(self, settings: LoopSettings, has_model: bool, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("keepLearningDialog")
        self.setWindowTitle("Keep Learning")
        self.every = QSpinBox(objectName="loopEvery", minimum=1, maximum=100_000, value=int(settings.every))
        self.every.setSuffix(" new labels")
        self.strategy = QComboBox(objectName="loopStrategy")
        for name in STRATEGIES:
            self.strategy.addItem(name, name)
        self.strategy.setCurrentIndex(max(0, self.strategy.findData(settings.strategy)))
        self.strategy.setToolTip("diverse: doubtful cells that do not look alike, over the predicted classes (the "
                                 "benchmark's best); margin: the model hesitates between two classes; entropy: "
                                 "between many; random: a uniform draw")
        self.batch = QSpinBox(objectName="loopBatch", minimum=1, maximum=1000, value=int(settings.batch))
        self.epochs = QSpinBox(objectName="loopEpochs", minimum=1, maximum=1000, value=int(settings.epochs))
        self.continue_radio = QRadioButton(CONTINUE_TEXT, objectName="loopContinue")
        self.imagenet_radio = QRadioButton(IMAGENET_TEXT, objectName="loopImagenet")
        for radio in (self.continue_radio, self.imagenet_radio):
            radio.setStyleSheet("QRadioButton { padding: 2px; }")
        group = QButtonGroup(self)
        group.addButton(self.continue_radio)
        group.addButton(self.imagenet_radio)
        start = settings.start if has_model else START_IMAGENET
        (self.continue_radio if start == START_CONTINUE else self.imagenet_radio).setChecked(True)
        self.continue_radio.setEnabled(has_model)
        if not has_model:
            self.continue_radio.setToolTip("No active model yet: the first round trains one from ImageNet")
        self.uses = QLabel(objectName="loopUses")
        self.uses.setWordWrap(True)
        why = QLabel(f"Default: {DEFAULT_START}. {WHY_DEFAULT}")
        why.setWordWrap(True)
        why.setStyleSheet("color: #555;")
        for radio in (self.continue_radio, self.imagenet_radio):
            radio.toggled.connect(self._say_which)

        starts = QGroupBox("Each round starts from")
        box = QVBoxLayout(starts)
        for radio, more in ((self.continue_radio, CONTINUE_MORE), (self.imagenet_radio, IMAGENET_MORE)):
            box.addWidget(radio)
            note = QLabel(more)
            note.setWordWrap(True)
            note.setContentsMargins(22, 0, 0, 4)
            note.setStyleSheet("color: #555;")
            box.addWidget(note)
        epochs_row = QFormLayout()
        epochs_row.addRow("Epochs of a retrain", self.epochs)
        box.addLayout(epochs_row)
        box.addWidget(why)
        form = QFormLayout()
        form.addRow("Train a round after every", self.every)
        form.addRow("Suggest cells by", self.strategy)
        form.addRow("Cells per suggested batch", self.batch)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Keep Learning")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(starts)
        layout.addWidget(self.uses)
        layout.addWidget(buttons)
        self.setMinimumWidth(620)
        self._say_which()
        self.adjustSize()

    def _say_which(self) -> None:
        s = self.settings()
        where = ("the active model, its backbone kept (seconds a round)" if s.start == START_CONTINUE
                 else f"ImageNet, a full run of {s.epochs} epochs (minutes to hours a round)")
        self.uses.setText(f"<b>Uses:</b> {s.start}: each round learns from {where}; labelling goes on while it "
                          "trains, and labels made meanwhile go into the next round.")

    def settings(self) -> LoopSettings:
        return LoopSettings(every=self.every.value(), start=START_CONTINUE if self.continue_radio.isChecked()
                            else START_IMAGENET, strategy=self.strategy.currentData(), batch=self.batch.value(),
                            epochs=self.epochs.value())
