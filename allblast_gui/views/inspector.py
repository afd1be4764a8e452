"""The cell inspector (right dock): the full-resolution cell with zoom and pan, its facts, its
label history from the store, and the predictions section (filled once a model has run).

The image is decoded on a pool thread (a QImage, which is thread-safe); only the GUI thread makes
the QPixmap. Moving through cells quickly makes earlier loads stale, so only the latest is shown.
"""
from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPainter, QPixmap, QWheelEvent
from PySide6.QtWidgets import (
    QAbstractItemView, QFormLayout, QGraphicsPixmapItem, QGraphicsScene, QGraphicsView, QGroupBox,
    QHeaderView, QLabel, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)

from engine.data.imaging import read_rgb
from ..models.cell_rows import CellRow
from ..models.thumbnails import rgb_to_qimage
from ..style import label_text
from ..workers import TaskRunner

LOAD_KEY = "inspector-image"
log = logging.getLogger(__name__)
ZOOM_STEP = 1.25


def load_qimage(abspath: str) -> QImage:
    """Pool thread: decode the file at full resolution (raises ImageReadError with the reason)."""
    return rgb_to_qimage(read_rgb(abspath))


class ImageView(QGraphicsView):
    """Wheel or +/- zooms around the cursor, dragging pans; a new cell is fitted to the view."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("inspectorImage")
        self._scene = QGraphicsScene(self)
        self._item = QGraphicsPixmapItem()
        self._item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        self._scene.addItem(self._item)
        self.setScene(self._scene)
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setBackgroundBrush(Qt.GlobalColor.black)  # C-NMC cells are segmented onto black
        self.setMinimumSize(200, 200)
        self._fitted = True
        self._text = self._scene.addText("")
        self._text.setDefaultTextColor(Qt.GlobalColor.lightGray)

    def set_pixmap(self, pixmap: QPixmap | None, message: str = "") -> None:
        self._item.setPixmap(pixmap if pixmap is not None else QPixmap())
        self._text.setPlainText(message)
        rect = self._item.boundingRect() if pixmap is not None else self._text.boundingRect()
        self._scene.setSceneRect(rect)
        self.fit()

    def has_image(self) -> bool:
        return not self._item.pixmap().isNull()

    def zoom_factor(self) -> float:
        return self.transform().m11()

    def fit(self) -> None:
        self.resetTransform()
        if self.has_image():
            self.fitInView(self._item, Qt.AspectRatioMode.KeepAspectRatio)
        self._fitted = True

    def zoom(self, factor: float) -> None:
        new = self.zoom_factor() * factor
        if 0.05 <= new <= 40:
            self.scale(factor, factor)
            self._fitted = False

    def wheelEvent(self, event: QWheelEvent) -> None:
        steps = event.angleDelta().y() / 120
        if steps:
            self.zoom(ZOOM_STEP ** steps)
        event.accept()

    def keyPressEvent(self, event) -> None:
        if event.key() in (Qt.Key.Key_Plus, Qt.Key.Key_Equal):
            self.zoom(ZOOM_STEP)
        elif event.key() == Qt.Key.Key_Minus:
            self.zoom(1 / ZOOM_STEP)
        else:
            super().keyPressEvent(event)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if self._fitted:
            self.fit()  # keep a fitted cell fitted when the dock is resized


class Inspector(QWidget):
    def __init__(self, runner: TaskRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("inspector")
        self._runner = runner
        self._root: Path | None = None
        self._store = None
        self._row: CellRow | None = None

        self.image = ImageView(self)
        self.fields: dict[str, QLabel] = {}
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        for key, caption in (("name", "File"), ("patient", "Patient"), ("size", "Size"),
                             ("original", "Original"), ("current", "Current")):
            label = QLabel("—", objectName=f"inspector_{key}")
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            label.setWordWrap(True)
            form.addRow(caption, label)
            self.fields[key] = label

        # Three columns fit the dock; the source (keyboard, batch, import, undo) is in the tooltip.
        self.history = QTableWidget(0, 3, objectName="inspectorHistory")
        self.history.setHorizontalHeaderLabels(["When", "Who", "Change"])
        self.history.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.history.setWordWrap(False)
        self.history.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.history.verticalHeader().setVisible(False)
        self.history.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.history.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.history.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        header = self.history.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        history_box = QGroupBox("Label history")
        QVBoxLayout(history_box).addWidget(self.history)

        self.predictions = QLabel("No predictions for this cell", objectName="inspectorPredictions")
        self.predictions.setWordWrap(True)
        predictions_box = QGroupBox("Predictions")
        QVBoxLayout(predictions_box).addWidget(self.predictions)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.image, 3)
        layout.addLayout(form)
        layout.addWidget(history_box, 1)
        layout.addWidget(predictions_box)
        self.show_cell(None)

    def set_context(self, root: Path | None, store) -> None:
        self._root, self._store = root, store
        self.show_cell(None)

    def current_path(self) -> str | None:
        return self._row.path if self._row is not None else None

    def show_cell(self, row: CellRow | None) -> None:
        same = row is not None and self._row is not None and row.path == self._row.path
        self._row = row
        self.refresh()
        if same:
            return
        if row is None or self._root is None:
            self.image.set_pixmap(None, "Select a cell" if self._root is not None else "")
            return
        self.image.set_pixmap(None, "Loading…")
        worker = self._runner.run(load_qimage, str(self._root / row.path), key=LOAD_KEY)
        worker.result.connect(lambda img, p=row.path: self._on_image(p, img))
        worker.error.connect(lambda exc, p=row.path: self._on_image(p, None, str(exc)))

    def _on_image(self, path: str, image: QImage | None, error: str = "") -> None:
        if self._row is None or self._row.path != path:
            return
        if image is None or image.isNull():
            self.image.set_pixmap(None, f"Cannot show this file:\n{error or 'empty image'}")
        else:
            self.image.set_pixmap(QPixmap.fromImage(image))

    def refresh(self) -> None:
        """Re-read the facts and history of the shown cell (after a label change)."""
        row = self._row
        values = dict.fromkeys(self.fields, "—")
        if row is not None:
            values.update(
                name=row.name,
                patient=row.patient or "—",
                size=f"{row.width} × {row.height} px" if row.width else "—",
                original=label_text(row.original),
                current=label_text(row.current) + (" (changed)" if row.changed else ""),
            )
            if row.problem:
                values["size"] = f"unreadable: {row.problem}"
        for key, text in values.items():
            self.fields[key].setText(text)
            self.fields[key].setToolTip(row.path if key == "name" and row else "")
        self._fill_history()

    def _fill_history(self) -> None:
        changes = []
        if self._row is not None and self._store is not None and not self._row.problem:
            try:
                changes = self._store.history(self._row.path)
            except Exception as exc:  # a locked/closed store must not break browsing
                log.warning("history of %s unavailable: %s", self._row.path, exc, exc_info=exc)
                changes = []
                self.history.setToolTip(f"History unavailable: {exc}")
        self.history.setRowCount(len(changes))
        for i, ch in enumerate(reversed(changes)):  # newest first
            cells = (_local_time(ch.changed_at), ch.annotator, f"{label_text(ch.old)} → {label_text(ch.new)}")
            tip = f"{ch.changed_at} UTC\n{ch.annotator}: {cells[2]}\nvia {ch.source}"
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(tip)
                self.history.setItem(i, j, item)
        if not changes:
            self.history.setRowCount(1)
            self.history.setItem(0, 0, QTableWidgetItem("No changes yet"))


def _local_time(iso_utc: str) -> str:
    """'2026-11-25T17:31:22.123+00:00' -> '11-25 18:31' in the reviewer's time zone (short: the
    dock is narrow; the full UTC stamp is in the tooltip)."""
    try:
        return datetime.fromisoformat(iso_utc).astimezone().strftime("%m-%d %H:%M")
    except (TypeError, ValueError):
        return str(iso_utc)[:16]
