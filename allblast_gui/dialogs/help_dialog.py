"""The Help menu: keyboard shortcuts (printed from `actions.ACTIONS`: the same definitions the
window binds), About, and the log folder (also offered by the training failure dialog)."""
from __future__ import annotations

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView, QDialog, QDialogButtonBox, QHeaderView, QLabel, QMessageBox, QTableWidget,
    QTableWidgetItem, QVBoxLayout, QWidget,
)

from ..actions import ACTIONS, ActionSpec, label_key_text, shortcut_text


def shortcut_rows(classes: list[str], extra: tuple[ActionSpec, ...] = ()) -> list[tuple[str, str, str]]:
    """(group, keys, what) for every action with a shortcut, the features' own (`extra`) too; class
    keys named after `classes`."""
    rows: list[tuple[str, str, str]] = []
    if classes:
        rows += [("Labeling", key, meaning) for key, meaning in label_key_text(classes)]
    for spec in ACTIONS + tuple(extra):
        if not spec.shortcuts or (classes and spec.group == "Labeling"):
            continue
        rows.append((spec.group, shortcut_text(spec), _describe(spec)))
    rows.append(("Grid", "Arrows, Page Up/Down, Home/End", "Move through the cells"))
    rows.append(("Grid", "Shift/Ctrl + click or arrows", "Select several cells (a label key then labels all)"))
    order = ["Labeling", "Review", "Edit", "Grid", "View", "Model", "File", "Help"]
    return sorted(rows, key=lambda r: order.index(r[0]) if r[0] in order else len(order))


def _describe(spec: ActionSpec) -> str:
    return spec.help or spec.text.replace("&", "").rstrip("…")


class HelpDialog(QDialog):
    def __init__(self, classes: list[str], parent: QWidget | None = None, extra: tuple[ActionSpec, ...] = ()) -> None:
        super().__init__(parent)
        self.setWindowTitle("Keyboard Shortcuts")
        rows = shortcut_rows(classes, extra)
        self.table = QTableWidget(len(rows), 3, objectName="shortcutsTable")
        self.table.setHorizontalHeaderLabels(["Group", "Keys", "Action"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        for i, row in enumerate(rows):
            for j, text in enumerate(row):
                self.table.setItem(i, j, QTableWidgetItem(text))
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        note = QLabel("A label key labels the selected cells; with one cell selected the next cell is "
                      "selected afterwards. Several selected cells are relabelled as one undo step.")
        note.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(note)
        layout.addWidget(self.table)
        layout.addWidget(buttons)
        self.resize(640, 560)


def show_about(parent: QWidget) -> None:
    QMessageBox.about(parent, "About allblast",
                      "<b>allblast</b><br>Review and relabel single-cell blood images at keyboard "
                      "speed; labels are kept with their full history in a local database.")


def show_log_folder(parent: QWidget) -> None:
    """Help ▸ Show Log Folder: the user log folder in the file manager (or its path, without one)."""
    from engine.utils.places import user_log_dir

    folder = user_log_dir()
    folder.mkdir(parents=True, exist_ok=True)
    if not QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder))):
        QMessageBox.information(parent, "Log folder", f"The log files are in\n{folder}")
