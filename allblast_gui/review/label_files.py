"""File ▸ Import Labels… and Export Labels…: file dialogs around the store's CSV functions.

`LabelFiles` runs the commands on the open folder's store and puts their one-line summary in the
status bar, or shows what went wrong in a message box. The functions below it return that summary
or raise with a message that says what went wrong; tests pass `path` and skip the dialog. A file
that gives one cell different labels is shown to the user, who may let the last row win;
otherwise nothing is imported.
"""
from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtWidgets import QFileDialog, QInputDialog, QMessageBox, QWidget

from engine.data.labelfiles import LabelConflictError
from engine.labels.csv_io import UnknownLabelsError, export_csv, import_csv
from engine.labels.signed import ReasonRequired
from engine.labels.outputs import check_output

from ..workers import collect_warnings

log = logging.getLogger(__name__)
CSV_FILTER = "CSV files (*.csv);;All files (*)"
EXPORTS = {
    "generic": ("Export Labels (generic CSV)", "labels.csv", dict(format="generic")),
    "cnmc": ("Export Labels (C-NMC CSV)", "labels-cnmc.csv", dict(format="cnmc")),
    "history": ("Export Label History", "label-history.csv", dict(history=True)),
}


class Cancelled(Exception):
    """The user closed the file dialog: nothing to report."""


class LabelFiles:
    def __init__(self, session, controller, window: QWidget, status) -> None:
        self.session, self.controller, self.window, self.status = session, controller, window, status

    def handlers(self) -> dict:
        return {"import": lambda: self.import_labels(), "export_generic": lambda: self.export_labels("generic"),
                "export_cnmc": lambda: self.export_labels("cnmc"), "export_history": lambda: self.export_labels("history")}

    def export_labels(self, kind: str, path: str | Path | None = None) -> str | None:
        return self._run(lambda store: export_labels(self.window, store, kind, path))

    def import_labels(self, path: str | Path | None = None, *, add_classes: bool | None = None) -> str | None:
        """File ▸ Import Labels…; `add_classes` answers the new-classes question (scripts, tests)."""
        def run(store):
            if not self.controller.ensure_annotator():  # an import is labelling too: never an anonymous one
                self.status.showMessage("Not imported: the annotator's name is needed (Edit ▸ Set Annotator…)", 8000)
                raise Cancelled()
            summary, report = import_labels(self.window, store, self.controller.annotator, path, add_classes)
            if report.added_classes:
                self.session.reload_classes()  # every view shows the new classes (the rows are reread too)
            else:
                self.controller.reload_from_store()
            return summary
        return self._run(run)

    def _run(self, command) -> str | None:
        ds = self.session.dataset
        if ds is None:
            self.status.showMessage("Open a folder first", 5000)
            return None
        try:
            summary = command(ds.store)
        except Cancelled:
            return None
        except Exception as exc:  # StoreError, LabelFileError, OSError: all are the user's to fix
            log.warning("labels file command failed: %s", exc, exc_info=exc)
            QMessageBox.warning(self.window, "Labels file", str(exc))
            return None
        self.status.showMessage(summary, 15000)
        return summary


def export_labels(parent: QWidget | None, store, kind: str, path: str | Path | None = None) -> str:
    title, default_name, kwargs = EXPORTS[kind]
    if path is None:
        start = str(Path.home() / f"{store.data_root.name}-{default_name}")
        path, _ = QFileDialog.getSaveFileName(parent, title, start, CSV_FILTER)
        if not path:
            raise Cancelled()
    # The save dialog asked before replacing a file; the database and images are never replaced
    # (OutputRefused is a ValueError: the caller shows its one line).
    path = check_output(path, force=True, what="labels CSV")
    with collect_warnings() as notes:  # what the format could not hold, said in the summary
        n = export_csv(store, path, **kwargs)
    summary = f"Wrote {n:,} rows to {path}"
    return summary + (" — " + "; ".join(notes) if notes else "")


def import_labels(parent: QWidget | None, store, annotator: str, path: str | Path | None = None,
                  add_classes: bool | None = None):
    """Returns (summary, ImportReport); the import is one undoable step in the store. Labels that
    are not classes yet are added only when the user says so (`add_classes`: the answer, for tests)."""
    if path is None:
        path, _ = QFileDialog.getOpenFileName(parent, "Import Labels", str(Path.home()), CSV_FILTER)
        if not path:
            raise Cancelled()
    options = dict(last_wins=False, add_classes=False)
    with collect_warnings() as notes:  # "the last row of each was used", when the user chose that
        while True:  # each question answered Yes tries again with that permission
            try:
                report = import_csv(store, path, annotator=annotator, **options)
                break
            except LabelConflictError as exc:
                if options["last_wins"] or not _last_row_wins(parent, exc):
                    raise Cancelled() from exc  # the question said that nothing is imported
                options["last_wins"] = True
            except UnknownLabelsError as exc:
                if options["add_classes"] or not _add_classes(parent, exc, add_classes):
                    raise Cancelled() from exc
                options["add_classes"] = True
            except ReasonRequired as exc:  # the file changes a signed case: an amendment, with a reason
                if options.get("reason"):
                    raise
                reason, ok = QInputDialog.getText(parent, "Amend a signed case",
                                                  f"{exc}.\n\nWhy does this import change it?")
                if not ok or not reason.strip():
                    raise Cancelled() from exc
                options["reason"] = reason.strip()
    parts = [f"Imported {Path(path).name}: {report.applied:,} labels changed, {report.unchanged:,} unchanged"]
    if report.added_classes:
        parts.append(f"new classes {', '.join(report.added_classes)}")
    if report.missing:
        parts.append(f"{len(report.missing):,} rows name images not in this folder")
    if report.problems:
        first = report.problems[0]
        parts.append(f"{len(report.problems):,} rows unusable (e.g. {first[0]}: {first[1]})")
    return ", ".join(parts + notes), report


def _last_row_wins(parent: QWidget | None, conflict: LabelConflictError) -> bool:
    """Ask whether the last of the conflicting rows should win; the safe answer (No) is the default."""
    answer = QMessageBox.question(
        parent, "Conflicting labels",
        f"{conflict}.\n\nImport anyway, with the label of the last row for each of these images? "
        "(No leaves every label as it is.)",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No,
    )
    return answer == QMessageBox.StandardButton.Yes


def _add_classes(parent: QWidget | None, error: UnknownLabelsError, answer: bool | None) -> bool:
    """Ask whether the file's unknown labels become new classes; No (the default) imports nothing."""
    if answer is not None:
        return answer
    reply = QMessageBox.question(
        parent, "Labels that are not classes",
        f"{error}.\n\nAdd {', '.join(error.labels[:10])} as new classes and import the file?",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No,
    )
    return reply == QMessageBox.StandardButton.Yes
