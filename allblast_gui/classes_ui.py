"""Class sets in the window: Label ▸ Classes… and what follows an edit (or its undo).

After any class edit the set is read again from the label store and handed to every view that
shows classes: the grid's tile colours, the data set tree, the filter bar, the number-key actions
and the Patients panel. Rename and delete also relabel cells, so the rows are brought in line with
the store. Nothing here keeps its own copy of the set.
"""
from __future__ import annotations

import logging

from PySide6.QtCore import QObject, Signal

from engine.labels.classes import class_set

log = logging.getLogger(__name__)


class ClassesUI(QObject):
    message = Signal(str)

    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        self.dialog = None
        window.review.classesChanged.connect(self.refresh)

    def open_dialog(self):
        """Show the class editor for the open folder (non-modal; returns it, for scripts and tests)."""
        from .dialogs.classes_dialog import ClassesDialog

        ds = self.window.datasets.current
        if ds is None:
            self.message.emit("Open a folder first (Ctrl+O)")
            return None
        if self.dialog is not None and self.dialog.store is ds.store:
            self.dialog.reload()
        else:
            if self.dialog is not None:
                self.dialog.close()
            self.dialog = ClassesDialog(ds.store, annotator=self._annotator, parent=self.window)
            self.dialog.changed.connect(lambda what: self.refresh(what, from_dialog=True))
        self.dialog.show()
        self.dialog.raise_()
        return self.dialog

    def _annotator(self) -> str | None:
        review = self.window.review
        return review.annotator if review.ensure_annotator() else None

    def refresh(self, what: str = "", *, from_dialog: bool = False) -> None:
        """The store's class set to every view (and the rows to the store's labels)."""
        w = self.window
        ds = w.datasets.current
        if ds is None:
            return
        ds.classes = class_set(ds.store)
        w.model.set_classes(ds.classes)
        w.review.set_store(ds.store, ds.classes)
        w.review.reload_from_store()  # a rename or delete relabelled cells
        w.tree.set_dataset(ds.root.name, w.model.all_rows(), ds.classes, ds.patients, ds.problems,
                           notes=list(getattr(ds.project.scan, "notes", [])))
        w.filter_bar.set_choices(ds.classes, ds.patients)
        w.set_label_actions(ds.classes)
        w.predictions.patients.set_source(w.model.all_rows, ds.classes)
        if not from_dialog and self.dialog is not None and self.dialog.isVisible() and self.dialog.store is ds.store:
            self.dialog.reload()  # an undo from the window: the open editor shows it
        if what:
            self.message.emit(what)
        log.info("class set of %s: %s", ds.root, list(ds.classes))
