"""The Train dialog's Model box: the backbone list and where its ImageNet weights come from.

Each backbone says whether its weights are on this computer, from a WeightsCache (looked up off
the GUI thread, issue 28: "checking…" until it answers); one without them is marked (warning
icon, red) before anyone presses Start. "ImageNet Weights…" asks for the weights manager.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor, QIcon
from PySide6.QtWidgets import (
    QButtonGroup, QComboBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QPushButton,
    QRadioButton, QStyle, QVBoxLayout, QWidget,
)

from engine.learn.weights import OFFERED_BACKBONES

BACKBONES = OFFERED_BACKBONES  # the same list as `allblast-engine weights list` and the weights manager
CHECKING = "checking…"
NO_WEIGHTS = "no ImageNet weights"
MISSING = QColor("#B00020")
UNKNOWN = QColor("#808080")


class WeightsState(NamedTuple):
    found: bool | None  # None: still being looked up
    text: str  # the source in words, "checking…", or why there is none
    path: str | None = None
    error: bool = False  # the look-up itself failed (a name timm does not know)


def weights_state(cache, name: str) -> WeightsState:
    try:
        answer = cache.get(name)
    except Exception as exc:  # noqa: BLE001 - the look-up's own error, said in one line
        return WeightsState(False, (str(exc).splitlines() or [type(exc).__name__])[0], error=True)
    if answer is None:
        return WeightsState(None, CHECKING)
    return WeightsState(answer.found, answer.text, answer.path)


def mark_backbones(combo: QComboBox, cache, warning: QIcon) -> None:
    """Every item's text, tooltip, icon and colour from what the cache knows now."""
    for i in range(combo.count()):
        name = combo.itemData(i)
        state = weights_state(cache, name)
        missing = state.found is False
        combo.setItemText(i, f"{name}  —  {NO_WEIGHTS if missing and not state.error else state.text}")
        tip = f"{state.text}: {state.path}" if state.path else state.text
        if missing:
            tip += " (Model ▸ ImageNet Weights… imports or fetches them)"
        combo.setItemData(i, tip, Qt.ItemDataRole.ToolTipRole)
        combo.setItemData(i, warning if missing else QIcon(), Qt.ItemDataRole.DecorationRole)
        colour = MISSING if missing else UNKNOWN if state.found is None else None
        combo.setItemData(i, QBrush(colour) if colour is not None else None, Qt.ItemDataRole.ForegroundRole)


class ModelBox(QGroupBox):
    def __init__(self, cache, open_weights_manager: Callable[[], object] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__("Model", parent)
        self.cache = cache
        self.backbone = QComboBox(objectName="trainBackbone")
        self.weights_status = QLabel(objectName="trainWeightsStatus")
        self.weights_status.setWordWrap(True)
        self.weights_manager = QPushButton("ImageNet Weights…", objectName="trainWeightsManager")
        self.weights_manager.setToolTip("Where each backbone's ImageNet weights come from; import a file or fetch them")
        self.weights_manager.setVisible(open_weights_manager is not None)
        if open_weights_manager is not None:
            self.weights_manager.clicked.connect(lambda: open_weights_manager())
        self.weights_auto = QRadioButton("Automatic (ImageNet weights on this computer)", objectName="trainWeightsAuto")
        self.weights_file_radio = QRadioButton("File:", objectName="trainWeightsFileRadio")
        self.weights_none = QRadioButton("None: train from scratch (much less accurate)", objectName="trainWeightsNone")
        self.weights_group = QButtonGroup(self)
        for b in (self.weights_auto, self.weights_file_radio, self.weights_none):
            self.weights_group.addButton(b)
        self.weights_file = QLineEdit(objectName="trainWeightsFile")
        self.weights_file.setPlaceholderText("a timm/torch .pth or .safetensors file")
        browse = QPushButton("Choose…", objectName="trainWeightsBrowse")
        browse.clicked.connect(self.browse)

        # The button beside the list, the status on a row of its own: a word-wrapped label in a
        # row with a button was laid out a line too short and lost its first line's top.
        backbone_row = QHBoxLayout()
        backbone_row.addWidget(self.backbone, 1)
        backbone_row.addWidget(self.weights_manager)
        file_row = QHBoxLayout()
        file_row.addWidget(self.weights_file_radio)
        file_row.addWidget(self.weights_file, 1)
        file_row.addWidget(browse)
        weights = QVBoxLayout()
        weights.addWidget(self.weights_auto)
        weights.addLayout(file_row)
        weights.addWidget(self.weights_none)
        form = QFormLayout(self)
        form.addRow("Backbone", backbone_row)
        form.addRow("", self.weights_status)
        form.addRow("ImageNet weights", weights)

    def fill(self, extra: str | None = None) -> None:
        """The offered backbones (and `extra`, a remembered other one), their weights asked for."""
        self.backbone.blockSignals(True)
        self.backbone.clear()
        names = list(BACKBONES) + ([extra] if extra and extra not in BACKBONES else [])
        for name in names:
            self.backbone.addItem(name, name)
        self.cache.request(names)  # answered on a pool thread: the cache's `updated`
        self.mark()
        self.backbone.blockSignals(False)

    def mark(self) -> None:
        mark_backbones(self.backbone, self.cache, self.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning))

    def checked(self) -> bool:
        """Whether every listed backbone's weights have been looked up."""
        return all(self.cache.known(self.backbone.itemData(i)) for i in range(self.backbone.count()))

    def browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "ImageNet weights for the backbone", str(Path.home()),
                                              "Weights (*.pth *.pt *.bin *.safetensors);;All files (*)")
        if path:
            self.weights_file.setText(path)
            self.weights_file_radio.setChecked(True)
