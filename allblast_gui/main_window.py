"""The review window. It composes and does nothing else.

It builds the session (what is open: session.py) and mounts the features of FEATURES in that
order, which is also the order their slots run in when the session announces something. Each
feature gives its docks, its central widget (the review feature's grid) and its menu commands;
the window builds the menus from actions.py, places the docks (one area, one tab group), restores
the saved layout, and on closing asks the features, stops them (last mounted first) and saves the
layout. A new feature is one folder (`allblast_gui/<name>/feature.py`, a `feature.Feature`) and one
line in FEATURES.

The names set in `_expose` (model, grid, datasets, open_folder, ...) are the window's face for
scripts (`app.window`, docs/scripting.md) and tests; no feature uses them.
"""
from __future__ import annotations

import logging
from pathlib import Path

from allblast_resources import resource_path
from PySide6.QtCore import QSettings, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QCloseEvent, QDragEnterEvent, QDropEvent, QIcon
from PySide6.QtWidgets import QMainWindow, QWidget

from . import actions as act
from .cases.feature import CasesFeature
from .classes.feature import ClassesFeature
from .console.feature import ConsoleFeature
from .dialogs.help_dialog import HelpDialog, show_about, show_log_folder
from .feature import BOTTOM, Dock
from .loop.feature import LoopFeature
from .opening.feature import OpeningFeature
from .predictions.feature import PredictionsFeature
from .reports.feature import ReportsFeature
from .review.feature import ReviewFeature
from .scripting import ScriptApp
from .session import Session
from .settings import Prefs
from .training.feature import TrainingFeature
from .views.status_bar import StatusPanel
from .weights.feature import WeightsFeature
from .workers import TaskRunner

ICON = resource_path("icons", "allblast.svg")
log = logging.getLogger(__name__)

# Opening hands a folder to the session; review (the grid's rows) shows it first; the features that
# count over its rows or draw on its tiles come after.
FEATURES = (OpeningFeature, ReviewFeature, ClassesFeature, TrainingFeature, PredictionsFeature, ReportsFeature,
            ConsoleFeature, LoopFeature, CasesFeature, WeightsFeature)


class MainWindow(QMainWindow):
    datasetOpened = Signal(object)  # LoadedDataset, once every feature shows it
    datasetFailed = Signal(str)  # why a folder was not opened ("opening cancelled" too)
    FEATURES = FEATURES

    def __init__(self, *, settings: QSettings | None = None, db_dir: Path | None = None,
                 annotator: str | None = None, thumbnail_cache: Path | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("mainWindow")
        self.setWindowTitle("allblast")
        self.setWindowIcon(QIcon(str(ICON)))
        self.setAcceptDrops(True)
        self.prefs = Prefs(settings)
        if annotator:
            self.prefs.set_annotator(annotator)
        self.runner = TaskRunner(self)
        self.session = Session(self.prefs, self.runner, db_dir=db_dir, thumbnail_cache=thumbnail_cache, parent=self)
        self.status = StatusPanel()  # before the features: they write to it
        self.setStatusBar(self.status)
        self.features = {}
        for feature_class in self.FEATURES:
            feature = feature_class(self.session, self)
            self.features[feature.name] = feature
            setattr(self, feature.name, feature)  # window.review, window.training, ...
            if (central := feature.central()) is not None:
                self.setCentralWidget(central)
        self.docks = self._place_docks()
        own = [(title, spec) for f in self.features.values() for title, spec in f.own_actions]
        self.own_specs = tuple(spec for _, spec in own)  # the features' commands: menus and the F1 table
        self.actions = act.build_actions(self, self._handlers(), act.ACTIONS + self.own_specs)
        menus = act.build_menus(self.menuBar(), self.actions, [(title, spec.name) for title, spec in own])
        for feature in self.features.values():
            feature.bind(self.actions, menus)
        self.script_app = ScriptApp(self, self.session, training=self.training, predictions=self.predictions,
                                    reports=self.reports, classes=self.classes, loop=self.loop,
                                    review=self.review, cases=self.cases)
        self.console.set_app(self.script_app)
        self.session.datasetChanged.connect(self._on_dataset)  # connected last: after every feature
        self.session.openFailed.connect(self.datasetFailed)
        self._expose()
        self._restore_layout()

    def _expose(self) -> None:
        """The window's face for scripts and tests: the features' objects under the names the
        window always had."""
        r, o = self.review, self.opening
        self.model, self.grid, self.filter_bar, self.tree, self.inspector = (r.model, r.grid, r.filter_bar, r.tree,
                                                                             r.inspector)
        self.import_labels, self.export_labels = r.files.import_labels, r.files.export_labels
        self.datasets, self.open_folder, self.continue_in_copy = o.datasets, o.open_folder, o.continue_in_copy
        self._cancel_shortcut = o.cancel_shortcut
        self.set_annotator = self.session.set_annotator

    @property
    def read_only_box(self):
        """The last "Labels are read-only here" box (opening.notices)."""
        return self.opening.read_only_box

    # ---- mounting -------------------------------------------------------------------------------
    def _place_docks(self) -> dict[str, Dock]:
        """Every feature's docks in their areas; the docks of one area are tabs of it (the bottom:
        Training, Runs, Patients, Python Console), the first one in front."""
        docks: dict[str, Dock] = {}
        first: dict[Qt.DockWidgetArea, Dock] = {}
        for feature in self.features.values():
            for dock in feature.docks():
                widget = dock.dock.widget()
                if dock.area == BOTTOM:
                    widget.setMinimumHeight(dock.minimum)
                else:
                    widget.setMinimumWidth(dock.minimum)
                self.addDockWidget(dock.area, dock.dock)
                if dock.area in first:
                    self.tabifyDockWidget(first[dock.area].dock, dock.dock)
                else:
                    first[dock.area] = dock
                docks[dock.name] = dock
        for dock in first.values():
            dock.dock.raise_()
        for dock in docks.values():
            dock.dock.setVisible(dock.visible)
        self._first_docks = list(first.values())
        self._size_docks()
        return docks

    def _size_docks(self) -> None:
        """First-start sizes: the side docks across, the bottom area high (a saved layout keeps the
        user's own)."""
        docks = self._first_docks
        sides = [d for d in docks if d.area != BOTTOM]
        bottom = [d for d in docks if d.area == BOTTOM]
        self.resizeDocks([d.dock for d in sides], [d.size for d in sides], Qt.Orientation.Horizontal)
        self.resizeDocks([d.dock for d in bottom], [d.size for d in bottom], Qt.Orientation.Vertical)

    def _handlers(self) -> dict:
        handlers = {"quit": self.close,
                    "shortcuts": lambda: HelpDialog(self.session.classes, self, self.own_specs).exec(),
                    "about": lambda: show_about(self), "log_folder": lambda: show_log_folder(self)}
        for feature in self.features.values():
            handlers.update(feature.handlers())
        for dock in self.docks.values():
            if dock.action:  # View ▸ Python Console, Model ▸ Runs, ...
                handlers[dock.action] = lambda name=dock.name: self.show_dock(name)
        return handlers

    def _restore_layout(self) -> None:
        self.resize(1400, 900)
        geometry, state = self.prefs.geometry()
        if geometry is not None:
            self.restoreGeometry(geometry)
        if state is not None:
            self.restoreState(state)
        else:  # first start: the sizes again once the window has its own
            QTimer.singleShot(0, self._size_docks)

    # ---- what scripts and the app call ----------------------------------------------------------
    def show_dock(self, name: str) -> None:
        dock = self.docks[name].dock
        dock.show()
        dock.raise_()

    def run_script(self, path: str | Path) -> bool:
        """`allblast --script FILE.py`: run it with `app` in scope (False: it raised; the console shows why)."""
        return self.console.run_script(path)

    def preload(self) -> None:
        """After the first paint: each feature loads what its first use would wait for (torch...)."""
        for feature in self.features.values():
            feature.preload()

    def _on_dataset(self, ds) -> None:
        self.setWindowTitle(f"{ds.root.name} — allblast")
        self.datasetOpened.emit(ds)

    # ---- window events --------------------------------------------------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if _dropped_folder(event) is not None:
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        folder = _dropped_folder(event)
        if folder is not None:
            event.acceptProposedAction()
            self.open_folder(folder)

    def closeEvent(self, event: QCloseEvent) -> None:
        if not self.session.closing and not all(f.confirm_close() for f in self.features.values()):
            event.ignore()  # e.g. keep training
            return
        self.prefs.save_geometry(self.saveGeometry(), self.saveState())
        self.prefs.sync()
        self.runner.shutdown()  # a folder being indexed, the Cell dock's image loads
        for feature in reversed(self.features.values()):  # training waits for its checkpoints; the store closes last
            feature.shutdown()
        super().closeEvent(event)


def _dropped_folder(event) -> Path | None:
    urls = event.mimeData().urls() if event.mimeData().hasUrls() else []
    for url in urls:
        if isinstance(url, QUrl) and url.isLocalFile() and Path(url.toLocalFile()).is_dir():
            return Path(url.toLocalFile())
    return None
