"""The review window: composition only. Each part does its own job -
DatasetController (opening folders off the GUI thread), ReviewController (label keys, undo),
CellListModel + CellGridView (the thumbnails), FilterBar, DatasetTree, Inspector, StatusPanel,
TrainingUI (training, its dashboard and the Runs panel), the Python console -
and this class wires their signals together and owns the menus and remembered settings.
"""
from __future__ import annotations

import logging
from pathlib import Path

from allblast_resources import resource_path
from PySide6.QtCore import QSettings, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QCloseEvent, QDesktopServices, QDragEnterEvent, QDropEvent, QIcon
from PySide6.QtWidgets import (
    QDockWidget, QFileDialog, QInputDialog, QMainWindow, QMessageBox, QVBoxLayout, QWidget,
)

from . import actions as act
from .classes_ui import ClassesUI
from .controllers.dataset import DatasetController, LoadedDataset, describe_holders, folder_concern
from .controllers.review import ReviewController
from .dialogs import label_io
from .dialogs.help_dialog import HelpDialog
from .models.cell_list_model import CellListModel
from .models.thumbnails import ThumbnailLoader
from .panels.console import ConsolePanel
from .predictions_ui import PredictionsUI
from .reports_ui import ReportsUI
from .scripting import ScriptApp
from .settings import MAX_TILE, MIN_TILE, TILE_STEP, Prefs
from .style import class_key
from .training_ui import TrainingUI
from .views.cell_grid import CellGridView
from .views.dataset_tree import DatasetTree
from .views.filter_bar import FilterBar
from .views.inspector import Inspector
from .views.status_bar import StatusPanel
from .workers import TaskRunner

ICON = resource_path("icons", "allblast.svg")
log = logging.getLogger(__name__)


class MainWindow(QMainWindow):
    datasetOpened = Signal(object)  # LoadedDataset, once the grid shows it
    datasetFailed = Signal(str)  # message

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
        self.thumbnails = ThumbnailLoader(cache_dir=thumbnail_cache, parent=self)
        self.model = CellListModel(self.thumbnails, self)
        self.grid = CellGridView()
        self.grid.setModel(self.model)
        self.grid.setTileSize(self.prefs.tile_size())
        self.filter_bar = FilterBar()
        central = QWidget()
        box = QVBoxLayout(central)
        box.setContentsMargins(0, 0, 0, 0)
        box.setSpacing(0)
        box.addWidget(self.filter_bar)
        box.addWidget(self.grid, 1)
        self.setCentralWidget(central)
        self.tree = DatasetTree()
        self.inspector = Inspector(self.runner)
        self.review = ReviewController(self.model, self.grid, self)
        self.training = TrainingUI(self, self.prefs)
        self.predictions = PredictionsUI(self)
        self.reports = ReportsUI(self)
        self.classes = ClassesUI(self)
        self.script_app = ScriptApp(self)
        self.console = ConsolePanel(self.script_app)
        self.quitting_from_script = False  # app.quit(): close without asking
        self.docks = {
            "data": self._dock("datasetDock", "Data Set", self.tree, Qt.DockWidgetArea.LeftDockWidgetArea, 250),
            "cell": self._dock("inspectorDock", "Cell", self.inspector, Qt.DockWidgetArea.RightDockWidgetArea, 340),
            "dashboard": self._dock("dashboardDock", "Training", self.training.dashboard,
                                    Qt.DockWidgetArea.BottomDockWidgetArea, 340, Qt.Orientation.Vertical),
            "runs": self._dock("runsDock", "Runs", self.training.runs, Qt.DockWidgetArea.BottomDockWidgetArea, 340,
                               Qt.Orientation.Vertical),
            "patients": self._dock("patientsDock", "Patients", self.predictions.patients,
                                   Qt.DockWidgetArea.BottomDockWidgetArea, 340, Qt.Orientation.Vertical),
            "console": self._dock("consoleDock", "Python Console", self.console,
                                  Qt.DockWidgetArea.BottomDockWidgetArea, 260, Qt.Orientation.Vertical),
        }
        self.tabifyDockWidget(self.docks["dashboard"], self.docks["runs"])
        self.tabifyDockWidget(self.docks["runs"], self.docks["patients"])
        self.tabifyDockWidget(self.docks["patients"], self.docks["console"])
        self.docks["dashboard"].raise_()
        self.docks["console"].hide()
        self.status = StatusPanel()
        self.setStatusBar(self.status)

        self.datasets = DatasetController(self.runner, db_dir=db_dir, parent=self)
        self.review.set_annotator(self.prefs.annotator())
        self.actions = act.build_actions(self, self._handlers())
        self.recent_menu = act.build_menus(self.menuBar(), self.actions)["@recent"]
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        self._connect()
        self.set_label_actions([])
        self._on_undo_state(False, False)
        self._on_training_running(False)
        self._on_predicting(False)
        self.status.set_annotator(self.review.annotator)
        self.resize(1400, 900)
        geometry, state = self.prefs.geometry()
        if geometry is not None:
            self.restoreGeometry(geometry)
        if state is not None:
            self.restoreState(state)
        else:  # first start: room for the curves (a saved layout keeps the user's own sizes)
            QTimer.singleShot(0, lambda: self.resizeDocks([self.docks["dashboard"]], [340], Qt.Orientation.Vertical))

    def _dock(self, name: str, title: str, widget: QWidget, area, size: int,
              orientation=Qt.Orientation.Horizontal) -> QDockWidget:
        dock = QDockWidget(title, self, objectName=name)
        dock.setWidget(widget)
        if orientation == Qt.Orientation.Horizontal:
            widget.setMinimumWidth(size // 2)
        else:
            widget.setMinimumHeight(size // 2)
        self.addDockWidget(area, dock)
        self.resizeDocks([dock], [size], orientation)
        return dock

    def _handlers(self) -> dict:
        r, image = self.review, self.inspector.image
        handlers = {
            "open": self.ask_open, "import": lambda: self.import_labels(),
            "export_generic": lambda: self.export_labels("generic"),
            "export_cnmc": lambda: self.export_labels("cnmc"),
            "export_history": lambda: self.export_labels("history"),
            "export_report": lambda: self.reports.open_export_dialog(),
            "quit": self.close, "undo": r.undo, "redo": r.redo, "select_all": self.select_all,
            "find": self.filter_bar.focus_search, "annotator": self.ask_annotator,
            "bigger": lambda: self.change_tile_size(+TILE_STEP), "smaller": lambda: self.change_tile_size(-TILE_STEP),
            "zoom_in": lambda: image.zoom(1.25), "zoom_out": lambda: image.zoom(0.8), "zoom_fit": image.fit,
            "shortcuts": self.show_shortcuts, "about": self.show_about, "log_folder": self.show_log_folder,
            "train": self.training.open_train_dialog, "stop_training": self.training.stop,
            "show_dashboard": lambda: self.show_dock("dashboard"), "show_runs": lambda: self.show_dock("runs"),
            "console": lambda: self.show_dock("console"), "add_run": lambda: self.training.add_run(),
            "predict": self.predictions.open_predict_dialog, "stop_predict": self.predictions.controller.cancel,
            "show_patients": lambda: self.show_dock("patients"), "accept_prediction": r.accept_prediction,
            "saliency": self.inspector.toggle_saliency,
            "label_unsure": r.label_unsure, "label_clear": r.label_clear, "classes": lambda: self.classes.open_dialog(),
            "actual_size": image.actual_size,
            "brighter": lambda: self.step_display(brightness=+1), "darker": lambda: self.step_display(brightness=-1),
            "more_contrast": lambda: self.step_display(contrast=+1),
            "less_contrast": lambda: self.step_display(contrast=-1),
            "gamma_up": lambda: self.step_display(gamma=+1), "gamma_down": lambda: self.step_display(gamma=-1),
            "auto_contrast": self.auto_contrast, "reset_display": self.reset_display,
            "patient_on_tiles": lambda: self.set_patient_on_tiles(self.actions["patient_on_tiles"].isChecked()),
        }
        for i in range(1, act.MAX_CLASS_KEYS + 1):
            handlers[f"label_{i}"] = lambda n=i: r.label_class(n)
        return handlers

    def _connect(self) -> None:
        d, s = self.datasets, self.status
        d.loading.connect(lambda root: s.showMessage(f"Opening {root}…"))
        d.progress.connect(s.show_progress)
        d.opened.connect(self._on_opened)
        d.failed.connect(self._on_failed)
        d.warned.connect(lambda text: s.showMessage(text, 15000))
        self.filter_bar.filterChanged.connect(self._on_filter)
        self.tree.classRequested.connect(self.filter_bar.show_class)
        self.tree.patientRequested.connect(self.filter_bar.show_patient)
        self.tree.allRequested.connect(self.filter_bar.show_all)
        self.tree.changedRequested.connect(lambda: self.filter_bar.set_changed_only(True))
        self.tree.cellRequested.connect(self._reveal)
        self.grid.currentCellChanged.connect(self.inspector.show_cell)
        self.grid.selectionCountChanged.connect(lambda _n: self._update_counts())
        self.review.labelsChanged.connect(self._on_labels_changed)
        self.review.message.connect(lambda text: s.showMessage(text, 5000))
        self.review.failed.connect(self._warn)
        self.review.ask_annotator = self._ask_first_annotator
        self.review.undoStateChanged.connect(self._on_undo_state)
        t = self.training
        t.message.connect(lambda text: s.showMessage(text, 15000))
        t.controller.runningChanged.connect(self._on_training_running)
        t.controller.started.connect(lambda _e: self.show_dock("dashboard"))
        t.activeModelChanged.connect(lambda path: self.predictions.controller.show_model(path))
        p = self.predictions
        p.message.connect(lambda text: s.showMessage(text, 15000))
        self.reports.message.connect(lambda text: s.showMessage(text, 15000))
        self.classes.message.connect(lambda text: s.showMessage(text, 8000))
        p.progress.connect(lambda done, total: s.hide_progress() if done < 0 else s.show_progress(done, total))
        p.controller.runningChanged.connect(self._on_predicting)
        self.tree.disagreeRequested.connect(lambda: self.filter_bar.set_disagree_only(True))
        self.actions["patient_on_tiles"].setCheckable(True)
        self.actions["patient_on_tiles"].setEnabled(False)
        self.datasetOpened.connect(self._on_display_dataset)

    # -- opening ---------------------------------------------------------------------------------
    def open_folder(self, folder: str | Path, labels: str | Path | None = None) -> None:
        """Open a folder of cells; a system or home folder, or one of more than 20,000 files, is
        opened only when the user says so (indexing it could take very long)."""
        self._wire_safe_opening()
        path = Path(folder).expanduser()
        concern = folder_concern(path) if path.is_dir() else None
        if concern is not None and not self._confirm_open(concern):
            self.status.showMessage(f"Not opened: {path}", 10000)
            return
        self.datasets.open(folder, labels)

    def _confirm_open(self, concern: str) -> bool:
        if self.quitting_from_script or self.script_app.waiting:
            return True  # a script asked for this folder itself
        answer = QMessageBox.question(
            self, "Open this folder?", f"{concern}\n\nOpen and index it anyway?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def _wire_safe_opening(self) -> None:
        """Cancel (status bar button, Esc) while a folder is indexed; wired once."""
        if getattr(self, "_cancel_shortcut", None) is not None:
            return
        from PySide6.QtGui import QKeySequence, QShortcut

        self._cancel_shortcut = QShortcut(QKeySequence(Qt.Key.Key_Escape), self, self.cancel_open)
        self._cancel_shortcut.setEnabled(False)  # Esc belongs to the other widgets when nothing loads
        self.status.cancelRequested.connect(self.cancel_open)
        self.datasets.loading.connect(lambda _root: self._cancel_shortcut.setEnabled(True))

    def cancel_open(self) -> bool:
        """Stop indexing the folder being opened (Esc, the status bar's Cancel); nothing is kept."""
        if getattr(self, "_cancel_shortcut", None) is not None:
            self._cancel_shortcut.setEnabled(False)
        if not self.datasets.cancel():
            return False
        self.status.hide_progress()
        self.status.showMessage("Opening cancelled: nothing was kept", 10000)
        self.datasetFailed.emit("opening cancelled")
        return True

    def ask_open(self) -> None:
        start = (self.prefs.recent_folders() or [str(Path.home())])[0]
        folder = QFileDialog.getExistingDirectory(self, "Open a folder of cell images", start)
        if folder:
            self.open_folder(folder)

    def _on_opened(self, ds: LoadedDataset) -> None:
        self.status.hide_progress()
        if getattr(self, "_cancel_shortcut", None) is not None:
            self._cancel_shortcut.setEnabled(False)
        self.thumbnails.reset()
        self.inspector.set_context(ds.root, ds.store)  # before the rows: selecting shows a cell
        self.model.set_rows(ds.root, ds.rows, ds.classes)
        self.filter_bar.set_choices(ds.classes, ds.patients)  # emits the (reset) filter
        self.tree.set_dataset(ds.root.name, ds.rows, ds.classes, ds.patients, ds.problems,
                              notes=list(getattr(ds.project.scan, "notes", [])))
        self.review.set_store(ds.store, ds.classes)
        self.training.set_dataset(ds)
        self.predictions.set_dataset(ds)
        self.set_label_actions(ds.classes)
        # Until the first label the index waits in the user cache: show where labels will be kept.
        self.status.set_db(ds.store.location, getattr(ds.store, "home", None) or ds.store.db_path)
        self.prefs.add_recent(ds.root)
        self.setWindowTitle(f"{ds.root.name} — allblast")
        if self.model.visible_count():
            self.grid.select_path(self.model.cell_at(0).path)
        self.inspector.show_cell(self.grid.current_cell())
        self.grid.setFocus()
        # Short: the status bar's permanent counts sit on the same line. Longer notes (no patient
        # ids, ...) are tooltips in the data set tree.
        notes = [f"{len(ds.problems)} unreadable files"] if ds.problems else []
        notes += list(getattr(ds.store, "notes", []))
        if self.datasets.others:
            notes.append(f"also open by {describe_holders(self.datasets.others)}")
        self.status.showMessage(" · ".join([f"Opened {ds.root.name}", *notes]), 15000)
        self._update_counts()
        self.datasetOpened.emit(ds)
        quiet = self.quitting_from_script or self.script_app.waiting
        if self.datasets.others:
            self._tell_also_open(ds, quiet)
        if not ds.rows and not ds.problems:
            self._explain_empty(ds, quiet)
        if ds.store.read_only:
            self._offer_copy(ds)

    def _tell_also_open(self, ds: LoadedDataset, quiet: bool) -> None:
        """Another window or program has this folder open: say who (non-blocking; SQLite keeps
        concurrent label changes safe, each window shows the other's after a refresh)."""
        self.also_open_box = box = QMessageBox(
            QMessageBox.Icon.Information, "Folder open elsewhere too",
            f"{ds.root} is also open by {describe_holders(self.datasets.others)}.\n\nBoth can label: every "
            "change is saved at once, but you may label the same cells twice. Coordinate with them.",
            QMessageBox.StandardButton.Ok, self)
        box.setObjectName("alsoOpenBox")
        if not quiet:
            box.open()

    def _explain_empty(self, ds: LoadedDataset, quiet: bool) -> None:
        """An empty (or wrong) folder: say what allblast expects."""
        self.empty_box = box = QMessageBox(
            QMessageBox.Icon.Information, "No cell images here",
            f"No cell images were found in {ds.root}.\n\n"
            "allblast opens a folder of single-cell images (bmp, png, jpg, tif), laid out as:\n"
            " • C-NMC: fold_0/all/UID_11_3_1_all.bmp and fold_0/hem/UID_H10_4_2_hem.bmp (classes all and "
            "hem in fold_N folders; the patient id, 11 or H10, in the file name)\n"
            " • class folders: one folder per class (e.g. basophil/, neutrophil/, …) holding its images\n"
            " • any folder of images with a labels CSV (path,label[,patient]; allblast --labels FILE.csv)\n\n"
            "Choose the folder that holds them with File ▸ Open Folder…",
            QMessageBox.StandardButton.Ok, self)
        box.setObjectName("emptyFolderBox")
        if not quiet:
            box.open()

    def _offer_copy(self, ds: LoadedDataset) -> None:
        """A read-only folder with its own labels: they are shown; labelling needs a writable copy."""
        self.read_only_box = box = QMessageBox(
            QMessageBox.Icon.Information, "Labels are read-only here",
            f"{ds.root} cannot be written by you. Its labels are shown (from {ds.store.db_path}), but "
            "changes cannot be saved there.\n\nContinue in a copy in your user data folder? The copy "
            "starts with every label and its history; the folder's own database is left as it is.",
            parent=self)
        box.setObjectName("readOnlyBox")
        copy = box.addButton("Continue in a Copy", QMessageBox.ButtonRole.AcceptRole)
        box.addButton("Only Look", QMessageBox.ButtonRole.RejectRole)
        box.buttonClicked.connect(lambda button: button is copy and self.continue_in_copy())
        if not (self.quitting_from_script or self.script_app.waiting):
            box.open()

    def continue_in_copy(self) -> Path | None:
        """Seed a user-data copy of the open read-only folder's database, then reopen the folder on it."""
        from engine.labels.db import StoreError, seed_copy, user_db_path

        ds = self.datasets.current
        if ds is None or not ds.store.read_only:
            return None
        target = user_db_path(ds.root)  # where locate_db looks for a copy of a read-only folder's store
        try:
            if not target.exists():
                seed_copy(ds.store.db_path, target)
        except StoreError as exc:
            self._warn("No copy made", str(exc))
            return None
        self.open_folder(ds.root)
        return target

    def _on_failed(self, folder: str, message: str) -> None:
        self.status.hide_progress()
        if getattr(self, "_cancel_shortcut", None) is not None:
            self._cancel_shortcut.setEnabled(False)
        self.prefs.remove_recent(folder)  # Open Recent lists folders that open
        self.status.showMessage(f"Could not open {folder}", 10000)
        self.datasetFailed.emit(message)
        if not (self.quitting_from_script or self.script_app.waiting):  # a script gets the error itself
            self._warn("Could not open the folder", message)

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for folder in self.prefs.recent_folders():
            self.recent_menu.addAction(folder, lambda f=folder: self.open_folder(f))
        if self.recent_menu.isEmpty():
            self.recent_menu.addAction("(none yet)").setEnabled(False)
        else:
            self.recent_menu.addSeparator()
            self.recent_menu.addAction("Clear List", self.prefs.clear_recent)

    # -- reacting to the parts -------------------------------------------------------------------
    def _on_filter(self, flt) -> None:
        keep = self.grid.current_path()
        self.model.set_filter(flt)
        if keep is not None and self.model.row_of(keep) is not None:
            self.grid.select_path(keep)
        elif self.model.visible_count():
            self.grid.select_path(self.model.cell_at(0).path)
        self._update_counts()

    def _on_labels_changed(self, changes: dict) -> None:
        self.refresh_counts()
        self.predictions.patients.schedule_refresh()
        if self.inspector.current_path() in changes:
            self.inspector.refresh()

    def refresh_counts(self) -> None:
        """Recount the tree and the status bar from the rows (labels or predictions changed)."""
        self.tree.update_counts(self.model.all_rows())
        self._update_counts()

    def refilter(self) -> None:
        """Apply the filter bar's filter again (new numbers for a doubt sort)."""
        self._on_filter(self.filter_bar.current_filter())

    def _on_undo_state(self, can_undo: bool, can_redo: bool) -> None:
        self.actions["undo"].setEnabled(can_undo)
        self.actions["redo"].setEnabled(can_redo)

    def _update_counts(self) -> None:
        # Cells are the readable ones, as the data set tree counts them; unreadable files (the
        # tree's "Unreadable files", duplicates included) are counted apart.
        rows = self.model.all_rows()
        readable = [r for r in rows if not r.problem]
        changed = sum(1 for r in readable if r.current != r.original)
        ds = self.datasets.current
        unreadable = len(ds.problems) if ds is not None else len(rows) - len(readable)
        self.status.set_counts(len(readable), self.model.visible_count(), self.grid.selection_count(), changed,
                               unreadable)

    def _reveal(self, path: str) -> None:
        if self.model.row_of(path) is None:
            self.filter_bar.show_all()
        self.grid.select_path(path)

    def set_label_actions(self, classes) -> None:
        """Label ▸ 1-9 from the class set's stable number keys."""
        for i in range(1, act.MAX_CLASS_KEYS + 1):
            action = self.actions[f"label_{i}"]
            name = next((c for c in classes if class_key(classes, c) == i), None)
            action.setText(f"{i}  {name}" if name else f"Class {i}")
            action.setVisible(name is not None or not classes)
            action.setEnabled(name is not None)
        self.actions["classes"].setEnabled(self.datasets.current is not None)
        for name in ("label_unsure", "label_clear", "import", "export_generic", "export_cnmc", "export_history"):
            self.actions[name].setEnabled(bool(classes) or self.datasets.current is not None)

    # -- commands --------------------------------------------------------------------------------
    def export_labels(self, kind: str, path: str | Path | None = None) -> str | None:
        return self._file_command(lambda store: label_io.export_labels(self, store, kind, path))

    def import_labels(self, path: str | Path | None = None, *, add_classes: bool | None = None) -> str | None:
        """File ▸ Import Labels…; `add_classes` answers the new-classes question (scripts, tests)."""
        def run(store):
            if not self.review.ensure_annotator():  # an import is labelling too: never an anonymous one
                self.status.showMessage("Not imported: the annotator's name is needed (Edit ▸ Set Annotator…)", 8000)
                raise label_io.Cancelled()
            summary, report = label_io.import_labels(self, store, self.review.annotator, path, add_classes)
            if report.added_classes:
                self.classes.refresh()  # (rereads the rows too)
            else:
                self.review.reload_from_store()
            return summary
        return self._file_command(run)

    def _file_command(self, run) -> str | None:
        if self.datasets.current is None:
            self.status.showMessage("Open a folder first", 5000)
            return None
        try:
            summary = run(self.datasets.current.store)
        except label_io.Cancelled:
            return None
        except Exception as exc:  # StoreError, LabelFileError, OSError: all are the user's to fix
            log.warning("labels file command failed: %s", exc, exc_info=exc)
            self._warn("Labels file", str(exc))
            return None
        self.status.showMessage(summary, 15000)
        return summary

    def select_all(self) -> None:
        self.model.fetch_all()  # the grid fetches rows lazily; "all" means every visible cell
        self.grid.selectAll()

    def ask_annotator(self, prompt: str = "Name recorded with every label change:") -> str | None:
        """Edit ▸ Set Annotator… (and the first label when no name was ever set); the name given,
        or None when cancelled."""
        name, ok = QInputDialog.getText(self, "Annotator", prompt, text=self.review.annotator)
        if ok and name.strip():
            self.set_annotator(name.strip())
            return name.strip()
        return None

    def _ask_first_annotator(self) -> str | None:
        if self.script_app.unattended:  # --script ... --exit-after: no one is there to answer a dialog
            log.warning("not labelled: no annotator name; start allblast with --annotator NAME")
            return None
        return self.ask_annotator("Who is labelling? Your name is recorded with every label change\n"
                                  "(Edit ▸ Set Annotator… changes it later):")

    def set_annotator(self, name: str) -> None:
        self.prefs.set_annotator(name)
        self.review.set_annotator(name)
        self.status.set_annotator(name)

    # -- seeing the cell (display only: files are never changed) -----------------------------------
    def set_display(self, display) -> None:
        """Brightness, contrast, gamma and auto contrast for the tiles and the inspector."""
        self.model.set_display(display)
        self.inspector.set_display(self.model.display())
        self.status.showMessage("Display: " + ("as in the files" if display.is_identity() else display.describe())
                                + " (files unchanged)", 5000)

    def step_display(self, **steps: int) -> None:
        self.set_display(self.model.display().adjusted(**steps))

    def reset_display(self) -> None:
        """Back to the files' own pixels; the folder's auto contrast is forgotten too."""
        ds = self.datasets.current
        if ds is not None:
            self.prefs.set_auto_levels(ds.root, None)
        self.set_display(type(self.model.display())())

    def auto_contrast(self) -> tuple[int, int] | None:
        """Stretch the data set's 1st-99th intensity percentiles, measured on the thumbnails in
        memory (a sample spread over the folder), to the full range; remembered per folder."""
        from .models.thumbnails import auto_levels

        levels = auto_levels(self.model.sample_images())
        if levels is None:
            self.status.showMessage("Auto contrast: no thumbnails to measure yet (or they are flat)", 5000)
            return None
        ds = self.datasets.current
        if ds is not None:
            self.prefs.set_auto_levels(ds.root, levels)
        self.set_display(self.model.display().with_levels(levels))
        return levels

    def set_patient_on_tiles(self, on: bool) -> None:
        self.actions["patient_on_tiles"].setChecked(on)
        self.model.set_patient_on_tiles(on)

    def _on_display_dataset(self, ds) -> None:
        """A folder's own auto contrast comes back with it; brightness/contrast/gamma stay."""
        self.actions["patient_on_tiles"].setEnabled(bool(ds.patients))
        self.model.set_patient_on_tiles(self.actions["patient_on_tiles"].isChecked() and bool(ds.patients))
        display = self.model.display().with_levels(self.prefs.auto_levels(ds.root))
        self.model.set_display(display)
        self.inspector.set_display(self.model.display())

    def change_tile_size(self, delta: int) -> None:
        size = max(MIN_TILE, min(MAX_TILE, self.model.tile_size() + delta))
        self.grid.setTileSize(size)
        self.prefs.set_tile_size(size)

    def show_shortcuts(self) -> None:
        HelpDialog(self.review.classes, self).exec()

    def show_about(self) -> None:
        QMessageBox.about(self, "About allblast",
                          "<b>allblast</b><br>Review and relabel single-cell blood images at keyboard "
                          "speed; labels are kept with their full history in a local database.")

    def show_dock(self, name: str) -> None:
        dock = self.docks[name]
        dock.show()
        dock.raise_()

    def _on_predicting(self, running: bool) -> None:
        self.actions["stop_predict"].setEnabled(running)
        self.actions["predict"].setEnabled(not running)

    def _on_training_running(self, running: bool) -> None:
        self.actions["stop_training"].setEnabled(running)
        self.actions["train"].setEnabled(not running)

    def show_log_folder(self) -> None:
        from engine.utils.logs import user_log_dir

        folder = user_log_dir()
        folder.mkdir(parents=True, exist_ok=True)
        if not QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder))):
            QMessageBox.information(self, "Log folder", f"The log files are in\n{folder}")

    def _warn(self, title: str, text: str) -> None:
        QMessageBox.warning(self, title, text)

    # -- window events ---------------------------------------------------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if _dropped_folder(event) is not None:
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        folder = _dropped_folder(event)
        if folder is not None:
            event.acceptProposedAction()
            self.open_folder(folder)

    def closeEvent(self, event: QCloseEvent) -> None:
        if not self.quitting_from_script and not self.training.confirm_close():
            event.ignore()  # keep training
            return
        self.training.shutdown()  # stops within a batch, checkpoints complete, no thread left
        self.predictions.shutdown()
        self.reports.shutdown()
        self.prefs.save_geometry(self.saveGeometry(), self.saveState())
        self.prefs.sync()
        self.runner.shutdown()
        self.thumbnails.shutdown(10_000)
        self.datasets.close()
        super().closeEvent(event)


def _dropped_folder(event) -> Path | None:
    urls = event.mimeData().urls() if event.mimeData().hasUrls() else []
    for url in urls:
        if isinstance(url, QUrl) and url.isLocalFile() and Path(url.toLocalFile()).is_dir():
            return Path(url.toLocalFile())
    return None
