"""The training dashboard (a dock): live pyqtgraph curves, progress, a Stop button and a log.

Curves are created once and fed with `setData` from the controller's `TrainingHistory`, at most
every REDRAW_MS (a dirty flag and one timer, as in pyqtgraph's scrolling-plot examples), so a
flood of batch events never turns into a flood of repaints. The same widget shows a finished run
from its metrics.jsonl when the Runs panel selects one. Until there is a run to show (a new folder,
the demo on a first start) it shows a short empty state with a Train button instead of empty plots;
a plot without data shows no axis values (a default range read as 2e+00..6e+00 learning rates).
"""
from __future__ import annotations

import math
import time

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QProgressBar, QPushButton, QSizePolicy, QSplitter,
    QStackedWidget, QVBoxLayout, QWidget,
)

from ..style import CLASS_PALETTE
from .history import TrainingHistory

REDRAW_MS = 100  # at most ~10 redraws a second
AXIS_WIDTH, AXIS_HEIGHT = 48, 28  # px: room for "1e-03" and "0.75", and for the epoch numbers
TRAIN_COLOR, VAL_COLOR, F1_COLOR, BATCH_COLOR = CLASS_PALETTE[0], CLASS_PALETTE[1], CLASS_PALETTE[2], "#9E9E9E"


class RateAxis(pg.AxisItem):
    """A learning-rate axis: the curve is drawn as log10(lr), the ticks read as rates (1e-03)."""

    def tickStrings(self, values, scale, spacing):  # noqa: N802 (pyqtgraph API)
        return [f"{10 ** v:.0e}" for v in values]


def _fmt_duration(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "–"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


EMPTY_TEXT = {
    "no-folder": "<b>No training yet.</b> Open a folder of cells (File ▸ Open Folder…) to train a model on it.",
    "no-run": "<b>No training yet in this folder.</b> Label cells (or keep the folder's own labels), then train "
              "a model: its loss, accuracy and learning rate appear here, epoch by epoch.",
    "no-run-shown": "<b>{n} training runs in this folder.</b> Select one in the Runs panel to see its curves, or "
                    "train a new model.",
}


class TrainingDashboard(QWidget):
    stopRequested = Signal()
    trainRequested = Signal()  # the empty state's Train button

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("trainingDashboard")
        self.history = TrainingHistory()
        self._dirty: str | bool = False  # False, "batches" or "all"
        self._planned_epochs = 0
        self._epoch_started = 0.0
        self._epoch_times: list[float] = []
        self.redraws = 0  # for tests: how often the curves were redrawn

        self.title = QLabel("No training yet: Model ▸ Train Model… (Ctrl+T)", objectName="dashboardTitle")
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.title.setWordWrap(True)  # a long run description must not widen the window
        self.title.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.progress = QProgressBar(objectName="dashboardProgress")
        self.progress.setFormat("Epoch %v of %m")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.stats = QLabel("", objectName="dashboardStats")
        self.stats.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.stop_button = QPushButton("Stop", objectName="dashboardStop")
        self.stop_button.setToolTip("Stop after the current batch; the best and last checkpoints are kept")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stopRequested)

        self.plots = pg.GraphicsLayoutWidget()
        self.plots.setObjectName("dashboardPlots")
        self.plots.setMinimumHeight(190)  # three readable plots, even in a short dock
        self.plots.setBackground("w")
        self.loss_plot = self._plot("Loss", 0)
        self.acc_plot = self._plot("Accuracy / weighted F1", 1)
        self.lr_plot = self._plot("Learning rate (log scale)", 2, axisItems={"left": RateAxis("left")})
        self.acc_plot.setYRange(0, 1, padding=0.02)
        def line(color, dash=False):
            return pg.mkPen(color, width=2, style=Qt.PenStyle.DashLine if dash else Qt.PenStyle.SolidLine)

        dot = {"symbol": "o", "symbolSize": 5}
        self.curves = {
            "batch_loss": self.loss_plot.plot(pen=pg.mkPen(BATCH_COLOR, width=1)),
            "train_loss": self.loss_plot.plot(pen=line(TRAIN_COLOR), symbolBrush=TRAIN_COLOR, **dot),
            "val_loss": self.loss_plot.plot(pen=line(VAL_COLOR), symbolBrush=VAL_COLOR, **dot),
            "train_accuracy": self.acc_plot.plot(pen=line(TRAIN_COLOR), symbolBrush=TRAIN_COLOR, **dot),
            "val_accuracy": self.acc_plot.plot(pen=line(VAL_COLOR), symbolBrush=VAL_COLOR, **dot),
            "val_weighted_f1": self.acc_plot.plot(pen=line(F1_COLOR, dash=True), symbol="t", symbolSize=6,
                                                  symbolBrush=F1_COLOR),
            "lr": self.lr_plot.plot(pen=line("#444444"), **dot),
        }
        # One legend for all three plots, outside them: a legend inside a small plot hides curves.
        self.legend = QLabel(
            f"<span style='color:{TRAIN_COLOR}'>━ train</span> &nbsp; <span style='color:{VAL_COLOR}'>━ "
            f"validation</span> &nbsp; <span style='color:{BATCH_COLOR}'>━ training loss, running mean per "
            f"batch</span> &nbsp; <span style='color:{F1_COLOR}'>╍ validation weighted F1</span> &nbsp; "
            "<span style='color:#009E73'>┆ best epoch</span>", objectName="dashboardLegend")
        # The best epoch: a dashed line on every plot, moved (never re-created) as it changes.
        self.best_lines = [pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen("#009E73", width=1.5,
                                                                                 style=Qt.PenStyle.DashLine),
                                           label="best", labelOpts={"position": 0.92, "color": "#009E73"})
                           for _ in range(3)]
        for plot, line in zip((self.loss_plot, self.acc_plot, self.lr_plot), self.best_lines):
            plot.addItem(line)
            line.hide()

        self.log = QListWidget(objectName="dashboardLog")
        self.log.setWordWrap(True)
        self.log.setMinimumWidth(220)

        top = QHBoxLayout()
        top.addWidget(self.progress, 2)
        top.addWidget(self.stats, 3)
        top.addWidget(self.stop_button)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.plots)
        split.addWidget(self.log)
        split.setStretchFactor(0, 4)
        split.setStretchFactor(1, 1)
        curves = QWidget(objectName="dashboardCurves")
        layout = QVBoxLayout(curves)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addLayout(top)
        layout.addWidget(self.legend)
        layout.addWidget(split, 1)

        self.empty_text = QLabel(objectName="dashboardEmptyText")
        self.empty_text.setWordWrap(True)
        self.empty_text.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_text.setMaximumWidth(560)  # a short paragraph, not one line across the window
        self.train_button = QPushButton("Train Model…", objectName="dashboardTrain")
        self.train_button.setToolTip("Model ▸ Train Model… (Ctrl+T)")
        self.train_button.clicked.connect(self.trainRequested)
        empty = QWidget(objectName="dashboardEmpty")
        empty_layout = QVBoxLayout(empty)
        empty_layout.addStretch(1)
        text_row = QHBoxLayout()  # centred, at most 560 px wide: a label's own alignment would shrink it
        text_row.addStretch(1)
        text_row.addWidget(self.empty_text, 10)
        text_row.addStretch(1)
        empty_layout.addLayout(text_row)
        empty_layout.addWidget(self.train_button, 0, Qt.AlignmentFlag.AlignHCenter)
        empty_layout.addStretch(2)

        self.pages = QStackedWidget()
        self.pages.addWidget(empty)
        self.pages.addWidget(curves)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(4, 4, 4, 4)
        outer.addWidget(self.pages)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.show_empty("no-folder")
        self._show_axes()

        self._timer = QTimer(self, interval=REDRAW_MS)
        self._timer.timeout.connect(self._redraw_if_dirty)
        self._timer.start()

    def _plot(self, title: str, col: int, **kwargs):
        plot = self.plots.addPlot(row=0, col=col, title=title, **kwargs)
        plot.showGrid(x=True, y=True, alpha=0.25)
        plot.setLabel("bottom", "epoch")
        plot.setMouseEnabled(x=False, y=False)
        plot.hideButtons()
        # Axes of a fixed size: a tick label growing by a digit as the range moves would otherwise
        # lay the whole layout out again and repaint all three plots, on every redraw.
        plot.getAxis("left").setWidth(AXIS_WIDTH)
        plot.getAxis("bottom").setHeight(AXIS_HEIGHT)
        for side in ("left", "bottom"):
            plot.getAxis(side).setStyle(autoExpandTextSpace=False)
        return plot

    # ---- what to show ---------------------------------------------------------------------------
    def show_empty(self, state: str, runs: int = 0) -> None:
        """No run to show: `state` is a key of EMPTY_TEXT ("no-folder", "no-run", "no-run-shown")."""
        self.empty_text.setText(EMPTY_TEXT[state].format(n=runs))
        self.train_button.setEnabled(state != "no-folder")
        self.pages.setCurrentIndex(0)

    def is_empty(self) -> bool:
        return self.pages.currentIndex() == 0

    def show_history(self, history: TrainingHistory, title: str) -> None:
        """Show a run's curves (a finished run, or a live one being started or resumed)."""
        self.pages.setCurrentIndex(1)
        self.history = history
        self.title.setText(title)
        self._planned_epochs = max(len(history), 1)
        self.progress.setRange(0, self._planned_epochs)
        self.progress.setValue(len(history))
        self._epoch_times = []
        self.mark_dirty()
        self._redraw_if_dirty()

    def mark_dirty(self, batches_only: bool = False) -> None:
        """Redraw at the next tick: only the running batch-loss curve, or everything."""
        if not batches_only:
            self._dirty = "all"
        elif not self._dirty:
            self._dirty = "batches"

    def set_running(self, running: bool) -> None:
        self.stop_button.setEnabled(running)
        self.stop_button.setText("Stop")
        if not running:
            self.stats.setText(self.stats.text().split(" · ETA")[0])

    def set_stopping(self) -> None:
        self.stop_button.setEnabled(False)
        self.stop_button.setText("Stopping…")
        self.add_log("Stopping after the current batch; checkpoints are kept")

    def set_planned_epochs(self, n: int) -> None:
        self._planned_epochs = max(1, n)
        self.progress.setRange(0, self._planned_epochs)

    def add_log(self, text: str, *, kind: str = "info") -> None:
        item = QListWidgetItem(f"{time.strftime('%H:%M:%S')}  {text}")
        item.setToolTip(text)
        if kind == "warning":
            item.setForeground(pg.mkColor("#B00020"))
        elif kind == "best":
            item.setForeground(pg.mkColor("#007A5A"))
        self.log.addItem(item)
        self.log.scrollToBottom()

    def log_lines(self) -> list[str]:
        return [self.log.item(i).toolTip() for i in range(self.log.count())]

    # ---- live updates ---------------------------------------------------------------------------
    def on_epoch_started(self, epoch: int) -> None:
        self._epoch_started = time.monotonic()
        self.progress.setValue(epoch - 1)

    def on_batch(self, phase: str, epoch: int, batch: int, n_batches: int, images_per_s: float | None) -> None:
        if phase == "train" and batch == 1:
            self.on_epoch_started(epoch)
        rate = f" · {images_per_s:.0f} img/s" if images_per_s else ""
        eta = ""
        if phase == "train" and n_batches and self._epoch_started:
            done = batch / n_batches
            elapsed = time.monotonic() - self._epoch_started
            per_epoch = (sum(self._epoch_times) / len(self._epoch_times)) if self._epoch_times else elapsed / done
            left = per_epoch * (1 - done) + per_epoch * max(0, self._planned_epochs - epoch)
            eta = f" · ETA {_fmt_duration(left)}"
        what = "batch" if phase == "train" else f"{phase} batch"
        self.stats.setText(f"epoch {epoch}: {what} {batch}/{n_batches}{rate}{eta}")
        if phase == "train":
            self.mark_dirty(batches_only=True)

    def on_epoch_end(self, epoch: int, seconds: float) -> None:
        self._epoch_times.append(seconds)
        self.progress.setValue(epoch)
        self.mark_dirty()

    # ---- drawing --------------------------------------------------------------------------------
    def _redraw_if_dirty(self) -> None:
        if not self._dirty:
            return
        everything, self._dirty = self._dirty == "all", False
        self.redraws += 1
        h = self.history
        # A batch point changes one curve of one plot; repainting all three costs the GUI thread
        # tens of milliseconds on a slow CPU.
        self.curves["batch_loss"].setData(h.batch_x, h.batch_loss)
        if not everything:
            self._show_axes((self.loss_plot,))
            return
        x = [float(e) for e in h.epochs]
        for name, values in h.curves.items():
            self.curves[name].setData(x, values, connect="finite")
        log_lr = [math.log10(v) if v and v > 0 else math.nan for v in h.lr]
        self.curves["lr"].setData(x, log_lr, connect="finite")
        finite = [v for v in log_lr if math.isfinite(v)]
        if finite:  # at least a decade of room: a constant rate sits mid-plot, halvings step down
            self.lr_plot.setYRange(min(finite) - 0.6, max(finite) + 0.4, padding=0)
        self._show_axes()
        best = h.best_epoch
        for line in self.best_lines:
            if best is None:
                line.hide()
            else:
                line.setValue(best)
                line.show()

    def _show_axes(self, plots=None) -> None:
        """Axis values only on a plot that has data: an empty plot's default range means nothing."""
        for plot in plots or (self.loss_plot, self.acc_plot, self.lr_plot):
            has_data = any(_has_points(item) for item in plot.listDataItems())
            for side in ("left", "bottom"):
                axis = plot.getAxis(side)
                if axis.style["showValues"] != has_data:  # a change of style lays the plot out again
                    axis.setStyle(showValues=has_data)


def _has_points(item) -> bool:
    _, y = item.getData()
    return y is not None and len(y) > 0 and bool(np.isfinite(np.asarray(y, dtype=float)).any())
