"""The inspector's prediction section, and the heat-map picture laid over the cell."""
from __future__ import annotations

from PySide6.QtGui import QImage
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from ..cells.rows import CellRow
from ..style import label_color


def heat_map_image(cam) -> QImage:
    """A translucent colour map (turbo) of a [0, 1] map: transparent where the model did not look."""
    import cv2
    import numpy as np

    u8 = np.clip(np.asarray(cam) * 255.0, 0, 255).astype(np.uint8)
    rgb = cv2.cvtColor(cv2.applyColorMap(u8, cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB)
    rgba = np.dstack([rgb, (u8.astype(np.float32) * 0.6).astype(np.uint8)])
    h, w = u8.shape
    return QImage(np.ascontiguousarray(rgba).data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()


class PredictionView(QWidget):
    """The shown model's output for one cell: a bar per class, margin, entropy, the saliency toggle."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("inspectorPredictions")
        self.model_label = QLabel("No model has predicted this folder (Model ▸ Predict, Ctrl+R)",
                                  objectName="predictionModel")
        self.model_label.setWordWrap(True)
        self.bars = QVBoxLayout()
        self.bars.setSpacing(1)
        self.summary = QLabel(objectName="predictionSummary")
        self.summary.setWordWrap(True)
        self.saliency_button = QPushButton("Saliency (G)", objectName="predictionSaliency", checkable=True)
        self.saliency_button.setToolTip("Show where the model looked (Grad-CAM of its class) over the cell")
        self.saliency_text = QLabel(objectName="predictionSaliencyText")
        self.saliency_text.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.model_label)
        layout.addLayout(self.bars)
        layout.addWidget(self.summary)
        row = QHBoxLayout()
        row.addWidget(self.saliency_button)
        row.addWidget(self.saliency_text, 1)
        layout.addLayout(row)
        self._bars: list[QProgressBar] = []

    def show_row(self, row: CellRow | None, model_name: str) -> None:
        while self.bars.count():
            item = self.bars.takeAt(0)
            if item.widget() is not None:
                item.widget().hide()  # gone at once, even before the event loop deletes it
                item.widget().deleteLater()
        self._bars = []
        has = row is not None and row.pred is not None
        self.saliency_button.setEnabled(has)
        if not model_name:
            self.model_label.setText("No model has predicted this folder (Model ▸ Predict, Ctrl+R)")
            self.summary.setText("")
            return
        if not has:
            self.model_label.setText(f"Model {model_name}: no prediction for this cell")
            self.summary.setText("")
            return
        self.model_label.setText(f"Model {model_name}")
        order = sorted(range(len(row.pred_classes)), key=lambda i: -float(row.probs[i]))
        for i in order:
            name, p = row.pred_classes[i], float(row.probs[i])
            bar = QProgressBar(objectName=f"predictionBar_{name}")
            bar.setRange(0, 1000)
            bar.setValue(round(p * 1000))
            bar.setFormat(f"{name}  {p:.1%}")
            bar.setTextVisible(True)
            bar.setMaximumHeight(18)
            color = label_color(name, row.pred_classes).name()
            bar.setStyleSheet(f"QProgressBar {{ text-align: left; padding-left: 4px; }} "
                              f"QProgressBar::chunk {{ background-color: {color}; }}")
            self.bars.addWidget(bar)
            self._bars.append(bar)
        verdict = ("disagrees with the label" if row.disagrees else
                   "agrees with the label" if row.current == row.pred else "")
        self.summary.setText(f"{row.pred} · margin {row.margin:.3f} · entropy {row.entropy:.3f} nats"
                             + (f" · {verdict}" if verdict else ""))

    def bar_texts(self) -> list[str]:
        return [b.format() for b in self._bars]

    def set_saliency_text(self, text: str) -> None:
        self.saliency_text.setText(text)
