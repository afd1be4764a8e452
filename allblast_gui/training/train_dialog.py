"""Model ▸ Train Model…: every setting of a run, what it will train on, and what would stop it.

The dialog builds an `engine.learn.config.TrainConfig` and asks `engine.learn.preflight` (again,
shortly after every change) what the run would use and what blocks it; Start stays disabled while
anything does. The backbone list says for each choice whether ImageNet weights are on this
computer, looked up off the GUI thread by a WeightsCache (the session's; "checking…" until it
answers, and Start waits for the answer); its "ImageNet Weights…" button asks for the manager. The
last settings are remembered (Prefs).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QAbstractItemView, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout, QGroupBox, QHBoxLayout,
    QHeaderView, QLabel, QSpinBox, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)

from engine.learn.config import MAX_IMG_SIZE, MIN_IMG_SIZE, TrainConfig
from engine.learn.device import device_choices
from engine.learn.preflight import Preflight, check_training
from engine.learn.recipes import RECIPES as RECIPE_SETTINGS, recipe_config
from engine.learn.weights import default_img_size, find_weights
from engine.workspace.catalog import new_run_name

from ..weights_cache import WeightsCache
from ..workers import TaskRunner
from .model_box import ModelBox, weights_state

RECIPES = (("allblast", "allblast (default; see README, Recipes)"),
           ("paper", "paper (the published notebook exactly)"))

SPLITS = (
    ("patient", "By patient (honest: no patient in two splits)"),
    ("image", "Image-level: the paper's protocol: the same patient in training and validation (leaky)"),
    ("folds", "C-NMC folds as given (fold_0, fold_1 train; last fold validates)"),
)
MONITORS = (("val_loss", "validation loss"), ("val_accuracy", "validation accuracy"),
            ("val_weighted_f1", "validation weighted F1"))
PREFLIGHT_DELAY_MS = 150


class TrainDialog(QDialog):
    def __init__(self, scan, runs_root: Path, saved: dict | None = None, parent: QWidget | None = None,
                 weights_lookup: Callable = find_weights, *, weights: WeightsCache | None = None,
                 open_weights_manager: Callable[[], object] | None = None) -> None:
        """`weights`: the session's cache; without one the dialog keeps its own, which runs
        `weights_lookup` on a thread of its own (tests pass a fake lookup)."""
        super().__init__(parent)
        self.setObjectName("trainDialog")
        self.setWindowTitle("Train Model")
        self._scan, self._runs_root = scan, Path(runs_root)
        self._own_runner = None if weights is not None else TaskRunner(self, max_threads=1)
        self._weights = weights if weights is not None else WeightsCache(self._own_runner, weights_lookup, self)
        self._weights.updated.connect(self._on_weights)
        self.preflight: Preflight | None = None
        self._size_edited = False

        # -- model --------------------------------------------------------------------------------
        self.model_box = box = ModelBox(self._weights, open_weights_manager)
        self.backbone, self.weights_status, self.weights_manager = box.backbone, box.weights_status, box.weights_manager
        self.weights_auto, self.weights_file_radio, self.weights_none = (box.weights_auto, box.weights_file_radio,
                                                                         box.weights_none)
        self.weights_file, self._weights_group = box.weights_file, box.weights_group

        # -- settings -----------------------------------------------------------------------------
        self.img_size = QSpinBox(objectName="trainImgSize", minimum=MIN_IMG_SIZE, maximum=MAX_IMG_SIZE, singleStep=16,
                                 suffix=" px")
        self.epochs = QSpinBox(objectName="trainEpochs", minimum=1, maximum=1000)
        self.batch_size = QSpinBox(objectName="trainBatchSize", minimum=2, maximum=4096)
        self.lr = QDoubleSpinBox(objectName="trainLr", decimals=6, minimum=1e-6, maximum=1.0, singleStep=1e-4)
        self.recipe = QComboBox(objectName="trainRecipe")
        for key, text in RECIPES:
            self.recipe.addItem(text, key)
        self.split = QComboBox(objectName="trainSplit")
        for key, text in SPLITS:
            self.split.addItem(text, key)
        self.ask_every = QSpinBox(objectName="trainAskEvery", minimum=0, maximum=1000, specialValueText="never")
        self.monitor = QComboBox(objectName="trainMonitor")
        for key, text in MONITORS:
            self.monitor.addItem(text, key)
        self.device = QComboBox(objectName="trainDevice")
        for key, text in device_choices():
            self.device.addItem(text, key)
        self.seed = QSpinBox(objectName="trainSeed", minimum=0, maximum=2**31 - 1)

        settings_box = QGroupBox("Training")
        form2 = QFormLayout(settings_box)
        form2.addRow("Recipe", self.recipe)
        form2.addRow("Image size", self.img_size)
        form2.addRow("Epochs", self.epochs)
        form2.addRow("Batch size", self.batch_size)
        form2.addRow("Learning rate (Adamax)", self.lr)
        form2.addRow("Split", self.split)
        form2.addRow("Ask to continue every", self.ask_every)
        form2.addRow("Best epoch by", self.monitor)
        form2.addRow("Device", self.device)
        form2.addRow("Seed", self.seed)

        # -- labels used and problems -------------------------------------------------------------
        self.counts = QTableWidget(0, 3, objectName="trainCounts")
        self.counts.setHorizontalHeaderLabels(["Class", "Cells", "Patients"])
        self.counts.verticalHeader().setVisible(False)
        self.counts.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.counts.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.left_out = QLabel(objectName="trainLeftOut")
        self.left_out.setWordWrap(True)
        self.run_label = QLabel(objectName="trainRunDir")
        self.run_label.setWordWrap(True)
        self.run_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.problems = QLabel(objectName="trainProblems")
        self.problems.setWordWrap(True)
        self.problems.setStyleSheet("color: #B00020")
        self.warnings = QLabel(objectName="trainWarnings")
        self.warnings.setWordWrap(True)
        self.warnings.setStyleSheet("color: #8C6D00")
        labels_box = QGroupBox("Labels used: the expert's current labels")
        lb = QVBoxLayout(labels_box)
        lb.addWidget(self.counts)
        lb.addWidget(self.left_out)
        lb.addWidget(self.run_label)

        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.start_button = self.buttons.addButton("Start Training", QDialogButtonBox.ButtonRole.AcceptRole)
        self.start_button.setObjectName("trainStart")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)

        left = QVBoxLayout()
        left.addWidget(box)
        left.addWidget(settings_box)
        right = QVBoxLayout()
        right.addWidget(labels_box, 1)
        right.addWidget(self.problems)
        right.addWidget(self.warnings)
        columns = QHBoxLayout()
        columns.addLayout(left, 3)
        columns.addLayout(right, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(columns)
        layout.addWidget(self.buttons)

        self._timer = QTimer(self, singleShot=True, interval=PREFLIGHT_DELAY_MS)
        self._timer.timeout.connect(self.refresh)
        self._fill_backbones()
        self.set_values(saved or {})
        self._connect()
        self.refresh()
        self.resize(980, 620)

    # ---- values ---------------------------------------------------------------------------------
    def _fill_backbones(self, extra: str | None = None) -> None:
        self.model_box.fill(extra)

    def _on_weights(self) -> None:
        """Answers arrived (or the weights changed): the marks and the checks follow."""
        self.model_box.mark()
        self.refresh()

    def weights_checked(self) -> bool:
        """Whether every listed backbone's weights have been looked up."""
        return self.model_box.checked()

    def set_values(self, v: dict) -> None:
        """Fill the form from remembered settings (TrainConfig field names)."""
        d = TrainConfig()
        name = v.get("backbone", d.backbone)
        if self.backbone.findData(name) < 0:
            self._fill_backbones(name)
        self.backbone.setCurrentIndex(max(0, self.backbone.findData(name)))
        if v.get("weights"):
            self.weights_file.setText(v["weights"])
            self.weights_file_radio.setChecked(True)
        elif v.get("pretrained", True) is False:
            self.weights_none.setChecked(True)
        else:
            self.weights_auto.setChecked(True)
        size = v.get("img_size")
        self._size_edited = bool(size)
        self.img_size.setValue(int(size) if size else self._default_size())
        self.epochs.setValue(int(v.get("epochs", d.epochs)))
        self._select(self.recipe, v.get("recipe", "allblast"))
        recipe = RECIPE_SETTINGS[self.recipe.currentData()]
        self.batch_size.setValue(int(v.get("batch_size", recipe["batch_size"])))
        self.lr.setValue(float(v.get("lr", recipe["lr"])))
        self._select(self.split, v.get("split", d.split))
        self.ask_every.setValue(int(v.get("ask_every", d.ask_every)))
        self._select(self.monitor, v.get("monitor", d.monitor))
        self._select(self.device, v.get("device", d.device))
        self.seed.setValue(int(v.get("seed", d.seed)))

    @staticmethod
    def _select(combo: QComboBox, data) -> None:
        index = combo.findData(data)
        combo.setCurrentIndex(index if index >= 0 else 0)

    def _default_size(self) -> int:
        try:
            return default_img_size(self.backbone.currentData())
        except ValueError:
            return 224

    def config(self) -> TrainConfig:
        source = self._weights_group.checkedButton()
        weights_file = self.weights_file.text().strip() if source is self.weights_file_radio else ""
        return recipe_config(
            self.recipe.currentData(),
            backbone=self.backbone.currentData(),
            weights=weights_file or None,
            pretrained=source is not self.weights_none,
            img_size=self.img_size.value() if self._size_edited else None,
            epochs=self.epochs.value(), batch_size=self.batch_size.value(), lr=self.lr.value(),
            ask_every=self.ask_every.value(), device=self.device.currentData(), seed=self.seed.value(),
            split=self.split.currentData(), monitor=self.monitor.currentData(),
        )

    def values(self) -> dict:
        """What to remember (TrainConfig fields the dialog sets)."""
        c = self.config()
        keys = ("backbone", "weights", "pretrained", "img_size", "epochs", "batch_size", "lr", "ask_every",
                "device", "seed", "split", "monitor", "recipe")
        return {k: getattr(c, k) for k in keys}

    # ---- reacting ---------------------------------------------------------------------------------
    def _connect(self) -> None:
        self.backbone.currentIndexChanged.connect(self._on_backbone)
        self.img_size.valueChanged.connect(self._on_size_edited)
        for w in (self.epochs, self.batch_size, self.ask_every, self.seed):
            w.valueChanged.connect(self._timer.start)
        self.lr.valueChanged.connect(self._timer.start)
        for combo in (self.recipe, self.split, self.monitor, self.device):
            combo.currentIndexChanged.connect(self._timer.start)
        self.recipe.currentIndexChanged.connect(self._on_recipe)
        self._weights_group.buttonToggled.connect(lambda *_: self._timer.start())
        self.weights_file.textChanged.connect(lambda *_: self._timer.start())

    def _on_backbone(self) -> None:
        if not self._size_edited:
            self.img_size.blockSignals(True)
            self.img_size.setValue(self._default_size())
            self.img_size.blockSignals(False)
        self._timer.start()

    def _on_recipe(self) -> None:
        """A recipe brings its own batch size and learning rate (both stay editable)."""
        recipe = RECIPE_SETTINGS[self.recipe.currentData()]
        self.batch_size.setValue(recipe["batch_size"])
        self.lr.setValue(recipe["lr"])

    def _on_size_edited(self) -> None:
        self._size_edited = self.img_size.value() != self._default_size()
        self._timer.start()

    def refresh(self) -> Preflight:
        """Recount and recheck now (the dialog also does it shortly after every change)."""
        self._timer.stop()
        config = self.config()
        self._weights.request([config.backbone])
        found, status, _, _ = weights_state(self._weights, config.backbone)
        self.weights_status.setText(f"ImageNet weights: {status}")
        device_ok = self.device.currentData() in {k for k, _ in device_choices()}
        report = check_training(self._scan, config, self._runs_root, weights_found=found, device_ok=device_ok)
        # Weights not looked up yet: Start waits for the answer (_on_weights checks again).
        self._checking = found is None and config.pretrained and not config.weights
        # Named when training starts (RunsCatalog.new_run_dir), after the backbone chosen here.
        self.run_label.setText(f"Run folder: a new {self._runs_root / new_run_name(config.backbone, '<date>-<time>')}")
        self.preflight = report
        self.counts.setRowCount(len(report.classes))
        for i, c in enumerate(report.classes):
            for j, text in enumerate((c.name, f"{c.cells:,}", "no ids" if c.patients is None else f"{c.patients:,}")):
                item = QTableWidgetItem(text)
                if j:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.counts.setItem(i, j, item)
        self.left_out.setText(f"{report.n_cells:,} cells train, validate and test. Left out: {report.unsure:,} "
                              f"unsure and {report.unlabeled:,} unlabeled cells.")
        self.problems.setText("\n".join(f"• {p}" for p in report.problems))
        self.problems.setVisible(bool(report.problems))
        self.warnings.setText("\n".join(f"• {w}" for w in report.warnings))
        self.warnings.setVisible(bool(report.warnings))
        self.start_button.setEnabled(report.ok and not self._checking)
        return report

    def accept(self) -> None:
        if self.refresh().ok and not self._checking:  # the settings may have changed within the debounce delay
            super().accept()

    def done(self, result: int) -> None:
        try:  # a closed dialog no longer follows the session's cache
            self._weights.updated.disconnect(self._on_weights)
        except (RuntimeError, TypeError):
            pass
        if self._own_runner is not None:
            self._own_runner.shutdown()
        super().done(result)
