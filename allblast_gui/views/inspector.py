"""The cell inspector (right dock): the full-resolution cell with zoom and pan, its facts, its
label history from the store, and the shown model's prediction (a bar per class, margin, entropy)
with a Grad-CAM heat map over the cell on demand (key G).

The image is decoded on a pool thread (a QImage, which is thread-safe); only the GUI thread makes
the QPixmap. Moving through cells quickly makes earlier loads stale, so only the latest is shown.
"""
from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QImage, QPainter, QPixmap, QWheelEvent
from PySide6.QtWidgets import (
    QAbstractItemView, QFormLayout, QFrame, QGraphicsPixmapItem, QGraphicsScene, QGraphicsView, QGroupBox,
    QHeaderView, QLabel, QPushButton, QScrollArea, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)

from engine.data.imaging import read_rgb
from ..cells.rows import CellRow
from ..cells.thumbnails import IDENTITY, Display, adjust_image, rgb_to_qimage
from ..style import label_text
from .prediction_view import PredictionView, heat_map_image
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
        self._overlay = QGraphicsPixmapItem()  # a heat map over the cell (Grad-CAM)
        self._overlay.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        self._scene.addItem(self._overlay)
        self._text = self._scene.addText("")
        self._text.setDefaultTextColor(Qt.GlobalColor.lightGray)

    def set_overlay(self, pixmap: QPixmap | None) -> None:
        """A translucent picture the size of the cell, drawn over it (None removes it)."""
        self._overlay.setPixmap(pixmap if pixmap is not None else QPixmap())

    def has_overlay(self) -> bool:
        return not self._overlay.pixmap().isNull()

    def set_pixmap(self, pixmap: QPixmap | None, message: str = "") -> None:
        self._overlay.setPixmap(QPixmap())
        self._item.setPixmap(pixmap if pixmap is not None else QPixmap())
        self._text.setPlainText(message)
        rect = self._item.boundingRect() if pixmap is not None else self._text.boundingRect()
        self._scene.setSceneRect(rect)
        self.fit()

    def replace_pixmap(self, pixmap: QPixmap) -> None:
        """Same cell, new pixels (display adjustments): zoom, pan and overlay stay."""
        self._item.setPixmap(pixmap)

    def pixmap(self) -> QPixmap:
        return self._item.pixmap()

    def has_image(self) -> bool:
        return not self._item.pixmap().isNull()

    def zoom_factor(self) -> float:
        return self.transform().m11()

    def fit(self) -> None:
        self.resetTransform()
        if self.has_image():
            self.fitInView(self._item, Qt.AspectRatioMode.KeepAspectRatio)
        self._fitted = True

    def actual_size(self) -> None:
        """1:1: one pixel of the image on one pixel of the screen."""
        self.resetTransform()
        ratio = self.devicePixelRatioF() or 1.0
        self.scale(1 / ratio, 1 / ratio)
        self._fitted = False
        if self.has_image():
            self.centerOn(self._item)

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
    saliencyRequested = Signal(str)  # the cell whose heat map to compute
    similarRequested = Signal(str)  # the cell whose look-alikes to list (Find Similar)

    def __init__(self, runner: TaskRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("inspector")
        self._runner = runner
        self._root: Path | None = None
        self._store = None
        self._row: CellRow | None = None
        self._image: QImage | None = None  # the shown cell as decoded; the view shows it adjusted
        self._display = IDENTITY

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

        self.predictions = PredictionView()
        self.predictions.saliency_button.toggled.connect(self._on_saliency_toggled)
        predictions_box = QGroupBox("Prediction")
        QVBoxLayout(predictions_box).addWidget(self.predictions)

        self.similar_button = QPushButton("Find Similar Cells (S)", objectName="inspectorSimilar")
        self.similar_button.setToolTip("The cells that look most like this one (by the active model's embeddings), "
                                       "as a list in the grid: fix a mislabelled cell's look-alikes in one batch")
        self.similar_button.clicked.connect(lambda: self._row is not None and self.similarRequested.emit(self._row.path))

        # Facts, prediction and history scroll under the image: a model with many classes must not
        # make the dock (and the window) taller than the screen.
        details = QWidget()
        box = QVBoxLayout(details)
        box.setContentsMargins(0, 0, 0, 0)
        box.addLayout(form)
        box.addWidget(self.similar_button)
        box.addWidget(predictions_box)
        box.addWidget(history_box, 1)
        self.history.setMinimumHeight(90)
        scroll = QScrollArea(objectName="inspectorDetails")
        scroll.setWidget(details)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.image, 3)
        layout.addWidget(scroll, 4)
        self.show_cell(None)

    def set_context(self, root: Path | None, store) -> None:
        self._root, self._store = root, store
        self.show_cell(None)

    # -- saliency (Grad-CAM) ---------------------------------------------------------------------
    def toggle_saliency(self) -> None:
        self.predictions.saliency_button.toggle()

    @property
    def saliency_on(self) -> bool:
        return self.predictions.saliency_button.isChecked()

    def _on_saliency_toggled(self, on: bool) -> None:
        if not on:
            self.image.set_overlay(None)
            self.predictions.set_saliency_text("")
        elif self._row is not None and not self._row.problem:
            self.predictions.set_saliency_text("computing the heat map…")
            self.saliencyRequested.emit(self._row.path)

    def show_saliency(self, path: str, cam, class_name: str) -> None:
        """The Grad-CAM heat map of `path` (H, W in [0, 1]) over the shown cell."""
        if self._row is None or self._row.path != path or not self.saliency_on:
            return
        self.image.set_overlay(QPixmap.fromImage(heat_map_image(cam)))
        self.predictions.set_saliency_text(f"heat map: where the model saw {class_name}")

    def saliency_failed(self, path: str, message: str) -> None:
        if self._row is not None and self._row.path == path:
            self.predictions.set_saliency_text(f"no heat map: {message}")

    def current_path(self) -> str | None:
        return self._row.path if self._row is not None else None

    def show_cell(self, row: CellRow | None) -> None:
        same = row is not None and self._row is not None and row.path == self._row.path
        self._row = row
        self.refresh()
        if same:
            return
        if row is None or self._root is None:
            self._image = None
            self.image.set_pixmap(None, "Select a cell" if self._root is not None else "")
            return
        self._image = None
        self.image.set_pixmap(None, "Loading…")
        if self.saliency_on and not row.problem:
            self.predictions.set_saliency_text("computing the heat map…")
            self.saliencyRequested.emit(row.path)
        worker = self._runner.run(load_qimage, str(self._root / row.path), key=LOAD_KEY)
        worker.result.connect(lambda img, p=row.path: self._on_image(p, img))
        worker.error.connect(lambda exc, p=row.path: self._on_image(p, None, str(exc)))

    def _on_image(self, path: str, image: QImage | None, error: str = "") -> None:
        if self._row is None or self._row.path != path:
            return
        if image is None or image.isNull():
            self._image = None
            self.image.set_pixmap(None, f"Cannot show this file:\n{error or 'empty image'}")
        else:
            self._image = image
            self.image.set_pixmap(QPixmap.fromImage(adjust_image(image, self._display)))

    def set_display(self, display: Display) -> None:
        """Brightness, contrast, gamma, auto contrast: applied to the shown pixels only (the zoom,
        pan and heat map stay)."""
        if display == self._display:
            return
        self._display = display
        if self._image is not None and self.image.has_image():
            self.image.replace_pixmap(QPixmap.fromImage(adjust_image(self._image, display)))

    def display(self) -> Display:
        return self._display

    def shown_image(self) -> QImage | None:
        """The pixels on screen (adjusted), for tests and scripts."""
        return self.image.pixmap().toImage() if self.image.has_image() else None

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
                current=label_text(row.current) + (" (changed)" if row.changed else "")
                + (f" · reviewed: {row.reviewed}" if row.reviewed else ""),
            )
            if row.problem:
                values["size"] = f"unreadable: {row.problem}"
        for key, text in values.items():
            self.fields[key].setText(text)
            self.fields[key].setToolTip(row.path if key == "name" and row else "")
        self.predictions.show_row(row, self._model_name)
        self._fill_history()

    _model_name = ""

    def set_model_name(self, name: str) -> None:
        """The model whose predictions the rows carry ("" when none is shown)."""
        self._model_name = name
        self.predictions.show_row(self._row, name)

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
