"""Reports from the window: File ▸ Export Report… (a case report of the folder, a patient or the
selection) and the Runs dock's Model Report… (asked for through the session). The cells are read
from the session's rows on the GUI thread (a plain copy); numbers, figures and pages are made on a
worker thread; the file opens in the system viewer when asked. Pages are drawn by
`allblast_gui.report` (shared with `allblast-engine report`)."""
from __future__ import annotations

import logging
import math
from pathlib import Path

from PySide6.QtCore import QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QFileDialog, QMessageBox

from engine.labels.classes import guess_positive, positive_class
from engine.report.case import CaseCell

from ..feature import Feature
from ..workers import TaskRunner

log = logging.getLogger(__name__)


def blast_class(classes) -> str | None:
    """The class whose fraction a report states by default: the data set's positive class (blasts,
    C-NMC's `all`; engine.labels.classes.positive_class), else none."""
    return positive_class(classes) if hasattr(classes, "positive") else guess_positive(classes)


def case_cells(rows) -> list[CaseCell]:
    """Plain copies of the grid's rows (safe to hand to a worker thread)."""
    out = []
    for r in rows:
        has = r.pred is not None
        out.append(CaseCell(r.path, r.patient, r.original, r.current, r.pred if has else None,
                            float(r.pred_p) if has and not math.isnan(r.pred_p) else None,
                            float(r.margin) if has and not math.isnan(r.margin) else None,
                            tuple(r.pred_classes) if has else None))  # disagreements as the grid counts them
    return out


def _model_info(record):
    """The report's model: what the card beside the model file says, else what the store recorded."""
    from engine.report.model_info import ModelInfo, model_info

    if record is None:
        return None
    try:
        return model_info(record.path, sha256=record.sha256)
    except FileNotFoundError:  # the model file moved since it predicted: its stored name still says which
        return ModelInfo(path=record.path, name=record.name, sha256=record.sha256, classes=list(record.classes))


def _write_case(path: Path, cells: list[CaseCell], classes: list[str], options: dict, record) -> Path:
    from engine.report.case import build_case_report

    from ..report.render import write_report

    report = build_case_report(cells, classes, data_root=options["root"], scope=options["scope_text"],
                               reviewer=options["reviewer"], positive=options["positive"],
                               model=_model_info(record) if any(c.predicted for c in cells) else None,
                               per_class=options["per_class"])
    return write_report(path, report)


def _write_model(path: Path, run: Path) -> Path:
    from engine.report.model_report import build_model_report

    from ..report.render import write_report

    return write_report(path, build_model_report(run))


class ReportsFeature(Feature):
    name = "reports"
    written = Signal(object)  # Path of a report written
    failed = Signal(str)

    def __init__(self, session, window) -> None:
        super().__init__(session, window)
        self.runner = TaskRunner(self, max_threads=1)
        self.dialog = None
        self.failure_box = None
        self.last_path: Path | None = None
        self.last_error: str | None = None
        session.modelReportRequested.connect(self.ask_model_report)

    def handlers(self) -> dict:
        return {"export_report": lambda: self.open_export_dialog()}

    @property
    def busy(self) -> bool:
        return self.runner.busy("report")

    def _dataset(self):
        return self.session.dataset

    # ---- case report -----------------------------------------------------------------------------
    def open_export_dialog(self):
        from .report_dialog import ReportDialog

        ds = self._dataset()
        if ds is None:
            self.message.emit("Open a folder of cells first")
            return None
        dialog = ReportDialog(patients=list(ds.patients), selection=len(self.session.selected_paths()),
                              classes=list(ds.classes), positive=blast_class(ds.classes),
                              reviewer=self.session.annotator,
                              default_path=self._default_dir() / f"{ds.root.name}-case-report.pdf", parent=self.window)
        dialog.accepted.connect(lambda: self.export_case_report(dialog.path.text().strip(), **dialog.options()))
        dialog.finished.connect(lambda _r: setattr(self, "dialog", None))
        self.dialog = dialog
        dialog.open()
        return dialog

    def _default_dir(self) -> Path:
        return self.session.output_dir()

    def export_case_report(self, path, scope: str = "folder", *, positive: str | None = "auto", per_class: int = 8,
                           reviewer: str | None = None, open_after: bool = False):
        """Write a case report of `scope` ("folder", "patient:<id>", "selection") in the background;
        returns the worker (its `result` is the path). `positive="auto"`: the blasts (`all` for
        C-NMC), else none; None states no fraction."""
        from ..report.render import check_output

        ds = self._dataset()
        if ds is None:
            raise RuntimeError("open a folder of cells first")
        path = check_output(path)
        rows = self.session.rows()
        if scope == "folder":
            scope_text = f"folder {ds.root.name}"
        elif scope == "selection":
            chosen = set(self.session.selected_paths())
            rows = [r for r in rows if r.path in chosen]
            scope_text = f"selection of {len(rows)} cells"
        elif scope.startswith("patient:"):
            patient = scope.partition(":")[2]
            rows = [r for r in rows if r.patient == patient]
            scope_text = f"patient {patient}"
        else:
            raise ValueError(f"scope {scope!r}: expected 'folder', 'patient:<id>' or 'selection'")
        if not rows:
            raise ValueError(f"no cells in {scope_text}: nothing to report")
        if positive == "auto":
            positive = blast_class(ds.classes)
        options = {"root": ds.root, "scope_text": scope_text, "positive": positive, "per_class": per_class,
                   "reviewer": reviewer if reviewer is not None else self.session.annotator}
        record = self.session.predictions
        return self._start(path, _write_case, path, case_cells(rows), list(ds.classes), options, record,
                           open_after=open_after)

    # ---- model report ----------------------------------------------------------------------------
    def ask_model_report(self, run: Path) -> None:
        default = self._default_dir() / f"{Path(run).name}-model-report.pdf"
        path, _ = QFileDialog.getSaveFileName(self.window, "Write the model report to", str(default),
                                              "PDF (*.pdf);;HTML, one file (*.html)")
        if path:
            self.export_model_report(run, path, open_after=True)

    def export_model_report(self, run, path, *, open_after: bool = False):
        from ..report.render import check_output

        return self._start(check_output(path), _write_model, check_output(path), Path(run), open_after=open_after)

    # ---- running ---------------------------------------------------------------------------------
    def _start(self, path: Path, func, *args, open_after: bool):
        if self.busy:
            raise RuntimeError("a report is being written already")
        self.last_path = self.last_error = None
        self.message.emit(f"Writing {path.name}…")
        worker = self.runner.run(func, *args, key="report")
        worker.result.connect(lambda p: self._done(Path(p), open_after))
        worker.error.connect(self._failed)
        return worker

    def _done(self, path: Path, open_after: bool) -> None:
        self.last_path = path
        self.message.emit(f"Report written: {path}")
        self.written.emit(path)
        if open_after:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))

    def _failed(self, exc) -> None:
        message = str(exc) or type(exc).__name__  # the traceback is in the log
        self.last_error = message
        self.failed.emit(message)
        box = QMessageBox(QMessageBox.Icon.Warning, "Report not written", message, parent=self.window)
        box.setObjectName("reportFailedBox")
        self.failure_box = box
        box.open()

    def shutdown(self) -> bool:
        """Waits for a report being written (its file is replaced atomically either way)."""
        return self.runner.shutdown(timeout_ms=60_000)
