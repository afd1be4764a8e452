"""Import Labels… and Export Labels…: file dialogs around the store's CSV functions.

Each function returns a one-line summary for the status bar, or raises with a message that says
what went wrong (the window shows it in a message box). Tests pass `path` and skip the dialog.
A file that gives one cell different labels is shown to the user, who may let the last row win;
otherwise nothing is imported.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QFileDialog, QMessageBox, QWidget

from engine.data.labelfiles import LabelConflictError
from engine.labels.csv_io import export_csv, import_csv
from engine.labels.outputs import check_output

from ..workers import collect_warnings

CSV_FILTER = "CSV files (*.csv);;All files (*)"
EXPORTS = {
    "generic": ("Export Labels (generic CSV)", "labels.csv", dict(format="generic")),
    "cnmc": ("Export Labels (C-NMC CSV)", "labels-cnmc.csv", dict(format="cnmc")),
    "history": ("Export Label History", "label-history.csv", dict(history=True)),
}


class Cancelled(Exception):
    """The user closed the file dialog: nothing to report."""


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


def import_labels(parent: QWidget | None, store, annotator: str, path: str | Path | None = None):
    """Returns (summary, ImportReport); the import is one undoable step in the store."""
    if path is None:
        path, _ = QFileDialog.getOpenFileName(parent, "Import Labels", str(Path.home()), CSV_FILTER)
        if not path:
            raise Cancelled()
    with collect_warnings() as notes:  # "the last row of each was used", when the user chose that
        try:
            report = import_csv(store, path, annotator=annotator)
        except LabelConflictError as exc:
            if not _last_row_wins(parent, exc):
                raise Cancelled() from exc  # the question said that nothing is imported
            report = import_csv(store, path, annotator=annotator, last_wins=True)
    parts = [f"Imported {Path(path).name}: {report.applied:,} labels changed, {report.unchanged:,} unchanged"]
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
