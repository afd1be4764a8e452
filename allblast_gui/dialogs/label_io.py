"""Import Labels… and Export Labels…: file dialogs around the store's CSV functions.

Each function returns a one-line summary for the status bar, or raises with a message that says
what went wrong (the window shows it in a message box). Tests pass `path` and skip the dialog.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QFileDialog, QWidget

from engine.labels.csv_io import export_csv, import_csv

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
    report = import_csv(store, path, annotator=annotator)
    parts = [f"Imported {Path(path).name}: {report.applied:,} labels changed, {report.unchanged:,} unchanged"]
    if report.missing:
        parts.append(f"{len(report.missing):,} rows name images not in this folder")
    if report.problems:
        first = report.problems[0]
        parts.append(f"{len(report.problems):,} rows unusable (e.g. {first[0]}: {first[1]})")
    return ", ".join(parts), report
