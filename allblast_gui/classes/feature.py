"""Class sets: Label ▸ Classes… (the class editor) and what follows an edit.

An edit in the editor is saved at once in the label store; the session then rereads the set and
announces it (`classesChanged`), and every view that shows classes takes it from there: the grid's
tile colours, the tree, the filter bar and the number keys (review), the Patients panel
(predictions). An undo in the window that renames or deletes a class goes the same way, and the
open editor shows it. Nothing here keeps its own copy of the set.
"""
from __future__ import annotations

import logging

from ..feature import Feature

log = logging.getLogger(__name__)


class ClassesFeature(Feature):
    name = "classes"
    message_ms = 8_000

    def __init__(self, session, window) -> None:
        super().__init__(session, window)
        self.dialog = None  # the class editor, once opened
        self.action = None
        self._from_dialog = False  # the editor itself made the change being announced
        session.datasetChanged.connect(self._on_dataset)
        session.classesChanged.connect(self._on_classes)

    def handlers(self) -> dict:
        return {"classes": lambda: self.open_dialog()}

    def bind(self, actions, menus) -> None:
        self.action = actions["classes"]
        self.action.setEnabled(False)  # until a folder is open

    def open_dialog(self):
        """Show the class editor for the open folder (non-modal; returns it, for scripts and tests)."""
        from .dialog import ClassesDialog

        ds = self.session.dataset
        if ds is None:
            self.message.emit("Open a folder first (Ctrl+O)")
            return None
        if self.dialog is not None and self.dialog.store is ds.store:
            self.dialog.reload()
        else:
            if self.dialog is not None:
                self.dialog.close()
            self.dialog = ClassesDialog(ds.store, annotator=self.session.ensure_annotator, parent=self.window)
            self.dialog.changed.connect(self._on_edited)
        self.dialog.show()
        self.dialog.raise_()
        return self.dialog

    def _on_dataset(self, _ds) -> None:
        if self.action is not None:
            self.action.setEnabled(True)

    def _on_edited(self, what: str) -> None:
        self._from_dialog = True
        try:
            self.session.reload_classes(what)
        finally:
            self._from_dialog = False

    def _on_classes(self, what: str) -> None:
        ds = self.session.dataset
        dialog = self.dialog
        if not self._from_dialog and dialog is not None and dialog.isVisible() and dialog.store is ds.store:
            dialog.reload()  # an undo from the window: the open editor shows it
        if what:
            self.message.emit(what)
        log.info("class set of %s: %s", ds.root, list(ds.classes))
