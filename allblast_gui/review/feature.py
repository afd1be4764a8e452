"""Reviewing cells: the grid and its filter bar (the window's centre), the Data Set tree (left dock)
and the Cell dock (right), the label keys with undo and redo, the annotator's name, the counts in
the status bar, label files (import, export) and how the cells look (`display`).

The grid's rows are the session's: a data set or class set the session announces is shown here
first (this feature is mounted before those that count over the rows), and what other features do
to the rows (predictions streaming in, a model switched) arrives as session signals too.
"""
from __future__ import annotations

import logging

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QInputDialog, QMessageBox, QVBoxLayout, QWidget

from ..actions import MAX_CLASS_KEYS
from ..cells.thumbnails import ThumbnailLoader
from ..feature import LEFT, RIGHT, Dock, Feature
from ..models.cell_list_model import CellListModel
from ..style import class_key
from ..views.cell_grid import CellGridView
from ..views.dataset_tree import DatasetTree
from ..views.filter_bar import FilterBar
from ..views.inspector import Inspector
from .controller import ReviewController
from .display import DisplayControls
from .label_files import LabelFiles

log = logging.getLogger(__name__)
FILE_COMMANDS = ("label_unsure", "label_clear", "import", "export_generic", "export_cnmc", "export_history")


class ReviewFeature(Feature):
    name = "review"
    message_ms = 5_000

    def __init__(self, session, window) -> None:
        super().__init__(session, window)
        self.actions: dict = {}
        self.thumbnails = ThumbnailLoader(cache_dir=session.thumbnail_cache, parent=self)
        self.model = CellListModel(self.thumbnails, self)
        self.grid = CellGridView()
        self.grid.setModel(self.model)
        self.grid.setTileSize(session.prefs.tile_size())
        self.filter_bar = FilterBar()
        self.tree = DatasetTree()
        self.inspector = Inspector(session.runner)
        self.controller = ReviewController(self.model, self.grid, self)
        self.controller.set_annotator(session.annotator)
        self.display = DisplayControls(session, self.model, self.grid, self.inspector, self.status)
        self.files = LabelFiles(session, self.controller, window, self.status)
        self._tree_dock = self.make_dock("datasetDock", "Data Set", self.tree)
        self._cell_dock = self.make_dock("inspectorDock", "Cell", self.inspector)
        self._connect()
        self.status.set_annotator(session.annotator)

    def _connect(self) -> None:
        s, c, tree, bar = self.session, self.controller, self.tree, self.filter_bar
        s.datasetChanged.connect(self._on_dataset)
        s.classesChanged.connect(lambda _what: self._on_classes())
        s.annotatorChanged.connect(self._on_annotator)
        s.predictionsChanged.connect(self._on_predictions_shown)
        s.predictionsArrived.connect(self._on_predictions_arrived)
        s.predictionsFinished.connect(self._on_predictions_finished)
        s.patientRequested.connect(bar.show_patient)
        s.caseRequested.connect(bar.show_case)
        s.reviewMarksChanged.connect(self._on_review_marks)
        s.saliencyReady.connect(self.inspector.show_saliency)
        s.saliencyFailed.connect(self.inspector.saliency_failed)
        self.inspector.saliencyRequested.connect(s.saliencyRequested)
        self.inspector.similarRequested.connect(s.similarRequested)
        s.cellsListed.connect(self.show_list)
        s.provide_selection(self.grid.selected_paths)
        s.ask_annotator = c.ask_annotator = self._ask_first_annotator
        c.ask_text = self.ask_text
        c.reviewsChanged.connect(s.reviewsChanged)
        bar.filterChanged.connect(self._on_filter)
        tree.classRequested.connect(bar.show_class)
        tree.patientRequested.connect(bar.show_patient)
        tree.allRequested.connect(bar.show_all)
        tree.changedRequested.connect(lambda: bar.set_changed_only(True))
        tree.disagreeRequested.connect(lambda: bar.set_disagree_only(True))
        tree.cellRequested.connect(self._reveal)
        self.grid.currentCellChanged.connect(self.inspector.show_cell)
        self.grid.selectionCountChanged.connect(lambda _n: self._update_counts())
        c.labelsChanged.connect(self._on_labels_changed)
        c.message.connect(self.message)
        c.failed.connect(lambda title, text: QMessageBox.warning(self.window, title, text))
        c.undoStateChanged.connect(self._on_undo_state)
        c.classesChanged.connect(s.reload_classes)  # an undo renamed or deleted a class

    # ---- what the window mounts -----------------------------------------------------------------
    def central(self) -> QWidget:
        central = QWidget()
        box = QVBoxLayout(central)
        box.setContentsMargins(0, 0, 0, 0)
        box.setSpacing(0)
        box.addWidget(self.filter_bar)
        box.addWidget(self.grid, 1)
        return central

    def docks(self) -> list[Dock]:
        # The tree is wide enough for a class name with its key and count ("erythroblast [3]  250").
        return [Dock("data", self._tree_dock, LEFT, 270, 220), Dock("cell", self._cell_dock, RIGHT, 340, 260)]

    def handlers(self) -> dict:
        c, image = self.controller, self.inspector.image
        handlers = {
            "undo": c.undo, "redo": c.redo, "select_all": self.select_all, "find": self.filter_bar.focus_search,
            "annotator": self.ask_annotator, "zoom_in": lambda: image.zoom(1.25), "zoom_out": lambda: image.zoom(0.8),
            "zoom_fit": image.fit, "actual_size": image.actual_size, "saliency": self.inspector.toggle_saliency,
            "accept_prediction": c.accept_prediction, "label_unsure": c.label_unsure, "label_clear": c.label_clear,
            "confirm_label": c.confirm,
            **self.display.handlers(), **self.files.handlers(),
        }
        for i in range(1, MAX_CLASS_KEYS + 1):
            handlers[f"label_{i}"] = lambda n=i: c.label_class(n)
        return handlers

    def bind(self, actions, menus) -> None:
        self.actions = actions
        self.display.bind(actions)
        self._set_label_actions([])
        self._on_undo_state(False, False)

    # ---- the label loop, as scripts and tests call it -------------------------------------------
    def label_class(self, number: int) -> None:
        self.controller.label_class(number)

    def undo(self) -> None:
        self.controller.undo()

    def redo(self) -> None:
        self.controller.redo()

    def reload_from_store(self) -> dict:
        return self.controller.reload_from_store()

    @property
    def classes(self):
        return self.controller.classes

    @property
    def annotator(self) -> str:
        return self.controller.annotator

    # ---- the session ----------------------------------------------------------------------------
    def _on_dataset(self, ds) -> None:
        self.thumbnails.reset()
        self.inspector.set_context(ds.root, ds.store)  # before the rows: selecting shows a cell
        self.model.set_rows(ds.root, ds.rows, ds.classes)
        self._show_classes(ds)
        self.display.on_dataset(ds)
        if self.model.visible_count():
            self.grid.select_path(self.model.cell_at(0).path)
        self.inspector.show_cell(self.grid.current_cell())
        self.grid.setFocus()
        self._update_counts()

    def _on_classes(self) -> None:
        """The class set was edited (or an edit undone): every view that shows classes, once."""
        ds = self.session.dataset
        self.model.set_classes(ds.classes)
        self.controller.reload_from_store()  # a rename or delete relabelled cells
        self._show_classes(ds)

    def _show_classes(self, ds) -> None:
        self.filter_bar.set_choices(ds.classes, ds.patients)  # emits the (reset) filter
        self.tree.set_dataset(ds.root.name, self.model.all_rows(), ds.classes, ds.patients, ds.problems,
                              notes=list(getattr(ds.project.scan, "notes", [])))
        self.controller.set_store(ds.store, ds.classes)
        self._set_label_actions(ds.classes)

    def _on_annotator(self, name: str) -> None:
        self.controller.set_annotator(name)
        self.status.set_annotator(name)

    def _on_predictions_shown(self, record) -> None:
        self.model.predictions_changed(None)
        name = f"{record.name} ({record.short})" if record is not None else ""
        self.filter_bar.set_model(name or None, list(record.classes) if record is not None else None)
        self.inspector.set_model_name(name)
        self.controller.model_short = record.short if record is not None else None
        self.controller.model_sha = record.sha256 if record is not None else None
        self.refresh_counts()

    def _on_predictions_arrived(self, paths: list) -> None:
        # Work in proportion to the batch only, while results stream in: the tiles on screen change
        # at once; counts over every row are made when all are done.
        self.model.predictions_changed(paths)
        if self.inspector.current_path() in set(paths):
            self.inspector.refresh()

    def _on_predictions_finished(self) -> None:
        self.refresh_counts()
        QTimer.singleShot(0, self._resort)  # its own turn of the event loop: no single long stall

    def _resort(self) -> None:
        flt = self.filter_bar.current_filter()
        if flt.sort in ("margin", "entropy") or flt.disagree_only or flt.predicted or flt.prob_range:
            self._on_filter(flt)  # the filter reads predictions: apply it to the new numbers

    # ---- the grid -------------------------------------------------------------------------------
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
        if self.inspector.current_path() in changes:
            self.inspector.refresh()
        self.session.labelsChanged.emit(changes)

    def refresh_counts(self) -> None:
        """Recount the tree and the status bar from the rows (labels or predictions changed)."""
        self.tree.update_counts(self.model.all_rows())
        self._update_counts()

    def _update_counts(self) -> None:
        # Cells are the readable ones, as the data set tree counts them; unreadable files (the
        # tree's "Unreadable files", duplicates included) are counted apart.
        rows = self.model.all_rows()
        readable = [r for r in rows if not r.problem]
        changed = sum(1 for r in readable if r.current != r.original)
        ds = self.session.dataset
        unreadable = len(ds.problems) if ds is not None else len(rows) - len(readable)
        self.status.set_counts(len(readable), self.model.visible_count(), self.grid.selection_count(), changed,
                               unreadable)

    def show_list(self, name: str, paths: list) -> None:
        """Only these cells, in this order (a list another feature asked for through the session:
        Suggested, Similar); the first one selected, the grid focused for the label keys."""
        self.filter_bar.show_list(name, paths)
        self.model.fetch_all()
        if self.model.visible_count():
            self.grid.select_path(self.model.cell_at(0).path)
        self.grid.setFocus()

    def _on_review_marks(self, paths) -> None:
        """The cases feature changed rows' review marks (the tiles' ✓)."""
        self.model.review_marks_changed(paths)
        if self.inspector.current_path() in set(paths):
            self.inspector.refresh()

    def _reveal(self, path: str) -> None:
        if self.model.row_of(path) is None:
            self.filter_bar.show_all()
        self.grid.select_path(path)

    def select_all(self) -> None:
        self.model.fetch_all()  # the grid fetches rows lazily; "all" means every visible cell
        self.grid.selectAll()

    def _on_undo_state(self, can_undo: bool, can_redo: bool) -> None:
        if self.actions:
            self.actions["undo"].setEnabled(can_undo)
            self.actions["redo"].setEnabled(can_redo)

    def _set_label_actions(self, classes) -> None:
        """Label ▸ 1-9 from the class set's stable number keys."""
        if not self.actions:
            return
        for i in range(1, MAX_CLASS_KEYS + 1):
            action = self.actions[f"label_{i}"]
            name = next((c for c in classes if class_key(classes, c) == i), None)
            action.setText(f"{i}  {name}" if name else f"Class {i}")
            action.setVisible(name is not None or not classes)
            action.setEnabled(name is not None)
        for name in FILE_COMMANDS:
            self.actions[name].setEnabled(bool(classes) or self.session.dataset is not None)

    # ---- the annotator --------------------------------------------------------------------------
    def ask_annotator(self, prompt: str = "Name recorded with every label change:") -> str | None:
        """Edit ▸ Set Annotator… (and the first label when no name was ever set); the name given,
        or None when cancelled."""
        name, ok = QInputDialog.getText(self.window, "Annotator", prompt, text=self.controller.annotator)
        if ok and name.strip():
            self.session.set_annotator(name.strip())
            return name.strip()
        return None

    def ask_text(self, title: str, prompt: str) -> str | None:
        """A line of text from the reviewer (an amendment's reason, an unsure cell's note); None when
        cancelled, or when nobody is there to answer (a script gives its own)."""
        if self.session.quiet:
            log.warning("not asked (%s): nobody to answer; a script passes reason= or note=", title)
            return None
        text, ok = QInputDialog.getText(self.window, title, prompt)
        return text.strip() if ok and text.strip() else None

    def _ask_first_annotator(self) -> str | None:
        if self.session.unattended:  # --script ... --exit-after: no one is there to answer a dialog
            log.warning("not labelled: no annotator name; start allblast with --annotator NAME")
            return None
        return self.ask_annotator("Who is labelling? Your name is recorded with every label change\n"
                                  "(Edit ▸ Set Annotator… changes it later):")

    def shutdown(self) -> None:
        self.thumbnails.shutdown(10_000)
