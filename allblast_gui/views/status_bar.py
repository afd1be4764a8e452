"""The status bar: cell counts, the annotator's name, where the labels are stored, load progress."""
from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QLabel, QProgressBar, QPushButton, QStatusBar, QWidget

LOCATIONS = {"beside": "beside the images", "user-data": "in the user data folder", "custom": "custom location",
             "read-only": "READ-ONLY (the folder cannot be written: changes are not saved)"}


class StatusPanel(QStatusBar):
    cancelRequested = Signal()  # the Cancel button next to the load progress

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("statusPanel")
        self.progress = QProgressBar(objectName="loadProgress")
        self.progress.setMaximumWidth(220)
        self.progress.setFormat("%v / %m files")
        self.progress.hide()
        self.cancel = QPushButton("Cancel", objectName="loadCancel")
        self.cancel.setToolTip("Stop indexing this folder (Esc); nothing is kept")
        self.cancel.clicked.connect(self.cancelRequested)
        self.cancel.hide()
        self.counts = QLabel(objectName="statusCounts")
        self.annotator = QLabel(objectName="statusAnnotator")
        self.db = QLabel(objectName="statusDb")
        self.addPermanentWidget(self.progress)
        self.addPermanentWidget(self.cancel)
        for label in (self.counts, self.annotator, self.db):
            self.addPermanentWidget(label)
        self.set_counts(0, 0, 0, 0)
        self.set_db(None, None)

    def set_counts(self, total: int, visible: int, selected: int, changed: int, unreadable: int = 0) -> None:
        """`total`: readable cells; unreadable files are counted apart, never as cells."""
        broken = f" · {unreadable:,} unreadable" if unreadable else ""
        self.counts.setText(f"{total:,} cells{broken} · {visible:,} shown · {selected:,} selected · {changed:,} changed")

    def set_annotator(self, name: str) -> None:
        self.annotator.setText(f"Annotator: {name}" if name else "Annotator: not set (asked on the first label)")

    def set_db(self, location: str | None, path: object) -> None:
        if path is None:
            self.db.setText("Labels: no folder open")
            self.db.setToolTip("")
        else:
            where = LOCATIONS.get(location or "", location) if location != "custom" else _short(path)
            self.db.setText(f"Labels: {where}")
            self.db.setToolTip(f"Label database: {path}")

    def show_progress(self, done: int, total: int) -> None:
        self.progress.show()
        self.cancel.show()
        self.progress.setMaximum(max(total, 1))
        self.progress.setValue(done)

    def hide_progress(self) -> None:
        self.progress.hide()
        self.cancel.hide()


def _short(path: object, keep: int = 2) -> str:
    """The last `keep` parts of a path: enough to recognise it without eating the status bar."""
    parts = str(path).replace("\\", "/").split("/")
    return ("…/" if len(parts) > keep else "") + "/".join(parts[-keep:])
