"""Cases in the window: the Cases dock (engine.cases.summary over the session's label store and the
shown model's predictions), a click that shows a case's cells in the grid, the per-cell review mark
on the rows (`CellRow.reviewed`: the tiles' ✓), and Sign Off… (Ctrl+Shift+S), whose report is drawn
on a worker thread.

It hears the session (a folder opened, labels or review marks changed, predictions shown) and
recounts at most every REFRESH_MS; it tells the session which rows' review marks changed
(`reviewMarksChanged`: the review feature repaints them) and which cells to show (`caseRequested`).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import QMessageBox

from engine.cases.cases import NO_PATIENT, Case
from engine.cases.records import set_two_person, two_person
from engine.cases.review import ModelView, snapshot
from engine.cases.summary import CaseSummary, summarize
from engine.labels.signed import FOLDER, PATIENT

from ..actions import ActionSpec
from ..feature import BOTTOM, Dock, Feature
from ..workers import TaskRunner
from .panel import CasesPanel

log = logging.getLogger(__name__)
REFRESH_MS = 300


def model_view(record, rows) -> ModelView | None:
    """The shown model's answers, from the rows (what the grid's "≠" says)."""
    if record is None:
        return None
    return ModelView(record.sha256, tuple(record.classes), {r.path: r.pred for r in rows if r.pred is not None},
                     record.name)


def sign_case(store, case: Case, signer: str, record, active: Path | None, classes: list[str],
              positive: str | None, root: Path, per_class: int = 8):
    """On a worker: sign `case` (engine.cases.signoff.sign) and draw its report with the shared
    page renderer. Returns (Signature, report path)."""
    from engine.cases.review import model_view as stored_view
    from engine.cases.signoff import sign
    from engine.labels import predictions as stored
    from engine.report.model_info import ModelInfo, model_info
    from engine.report.signed import signed_case_report, store_case_cells
    from engine.utils.files import sha256_file

    if "torch" in sys.modules:  # the window's warm-up may be importing it right now: wait until it is done, or
        import torch  # noqa: F401  scipy (under the page renderer's imports) peeks at a half-imported torch
    from ..report.render import write_report

    preds = stored.load(store, record.sha256) if record is not None else None
    model = stored_view(preds)
    if model is None and active is not None and Path(active).is_file():
        model = ModelView(sha256_file(active), (), {})  # the active model has not predicted here
    info = None
    if record is not None:
        try:
            info = model_info(record.path, sha256=record.sha256)
        except FileNotFoundError:
            info = ModelInfo(path=record.path, name=record.name, sha256=record.sha256, classes=list(record.classes))

    def write(path: Path, draft) -> None:
        cells = store_case_cells(store, case.paths, preds)
        report = signed_case_report(draft, cells, classes, data_root=root, positive=positive,
                                    model=info if any(c.predicted for c in cells) else None, per_class=per_class)
        write_report(path, report)

    signature = sign(store, case, signer=signer, model=model, write_report=write)
    return signature, Path(store.db_path).parent / signature.report


class CasesFeature(Feature):
    name = "cases"
    signed = Signal(object)  # (Signature, report path)
    own_actions = (
        ("&Review", ActionSpec("sign_off_case", "&Sign Off Case…", ("Ctrl+Shift+S",), "Review",
                               "Sign the chosen case: refused, with what is missing, while a cell is unreviewed or "
                               "a disagreement is open; writes the signed case report")),
        ("&Review", ActionSpec("show_cases", "&Cases", (), "Review",
                               "Per case: cells, reviewed, open disagreements, differential, blast % (95% CI), "
                               "status")),
    )

    def __init__(self, session, window) -> None:
        super().__init__(session, window)
        self.panel = CasesPanel()
        self.runner = TaskRunner(self, max_threads=1)
        self.dialog = None
        self.summaries: list[CaseSummary] = []
        self.last_signature = None
        self.last_error: str | None = None
        self.failure_box = None
        self._dock = self.make_dock("casesDock", "Cases", self.panel)
        self._timer = QTimer(self, singleShot=True, interval=REFRESH_MS)
        self._timer.timeout.connect(self.refresh)
        s = session
        s.datasetChanged.connect(lambda _ds: self.refresh())
        for signal in (s.labelsChanged, s.reviewsChanged, s.predictionsChanged, s.classesChanged):
            signal.connect(lambda *_a: self.schedule_refresh())
        s.predictionsFinished.connect(self.schedule_refresh)
        self.panel.caseClicked.connect(self.show_case)
        self.panel.signRequested.connect(lambda summary: self.open_sign_off(summary.key if summary else None))
        self.panel.twoPersonToggled.connect(self._set_two_person)

    def docks(self) -> list[Dock]:
        return [Dock("cases", self._dock, BOTTOM, 280, 160, action="show_cases")]

    def handlers(self) -> dict:
        return {"sign_off_case": lambda: self.open_sign_off()}

    # ---- counting -------------------------------------------------------------------------------
    def schedule_refresh(self) -> None:
        self._timer.start()

    def model(self) -> ModelView | None:
        return model_view(self.session.predictions, self.session.rows())

    def refresh(self) -> list[CaseSummary]:
        """Recount every case now; mark each row's review state (the tiles' ✓)."""
        self._timer.stop()
        ds = self.session.dataset
        if ds is None:
            self.summaries = []
            self.panel.set_rows([], None, "")
            return []
        model = self.model()
        try:
            snap = snapshot(ds.store, model)
            self.summaries = summarize(ds.store, list(ds.classes), model=model, positive=ds.classes.positive,
                                       snap=snap)
            self.panel.set_two_person(two_person(ds.store))
        except Exception as exc:  # a locked or closed store must not break the window
            log.warning("cases not counted: %s", exc, exc_info=exc)
            self.message.emit(f"Cases not counted: {exc}")
            return self.summaries
        changed = []
        for row in self.session.rows():
            kind = snap.kinds.get(row.path)
            if row.reviewed != kind:
                row.reviewed = kind
                changed.append(row.path)
        if changed:
            self.session.reviewMarksChanged.emit(changed)
        record = self.session.predictions
        text = f"model {record.name} ({record.short})" if record is not None else "no model shown"
        self.panel.set_rows(self.summaries, ds.classes.positive, text)
        if self.dialog is not None:
            self.dialog.set_summaries(self.summaries)
        return self.summaries

    def summary(self, key: str) -> CaseSummary | None:
        return next((s for s in self.summaries if s.key == key), None)

    # ---- showing a case -------------------------------------------------------------------------
    def show_case(self, summary: CaseSummary) -> None:
        """The grid shows the case's cells: a patient's, a sub-folder's, or every cell."""
        key = summary.key
        if key.startswith(PATIENT) and key != NO_PATIENT:
            self.session.caseRequested.emit(key[len(PATIENT):], "")
        elif key.startswith(FOLDER) and key != FOLDER:
            self.session.caseRequested.emit(None, key[len(FOLDER):].rstrip("/") + "/")
        else:
            self.session.caseRequested.emit(None, "")
        self.message.emit(f"{summary.title}: {summary.cells} cells, {summary.reviewed} reviewed, "
                          f"{summary.open_disagreements} open; {summary.status}")

    # ---- signing --------------------------------------------------------------------------------
    def _set_two_person(self, on: bool) -> None:
        ds = self.session.dataset
        if ds is None:
            return
        try:
            set_two_person(ds.store, on)
        except Exception as exc:  # read-only: the box says why
            self.panel.set_two_person(not on)
            QMessageBox.warning(self.window, "Setting not saved", str(exc))
            return
        self.message.emit("Two-person sign-off " + ("on: a second signature by another person completes a case"
                                                    if on else "off"))
        self.refresh()

    def open_sign_off(self, key: str | None = None):
        from .signoff_dialog import SignOffDialog

        if self.session.dataset is None:
            self.message.emit("Open a folder of cells first")
            return None
        self.refresh()
        if not self.summaries:
            self.message.emit("No cases in this folder")
            return None
        chosen = key or (self.panel.selected().key if self.panel.selected() else None) or self._case_of_current()
        record = self.session.predictions
        dialog = SignOffDialog(self.summaries, chosen, self.session.annotator,
                               two_person=two_person(self.session.dataset.store),
                               model_text=f"{record.name} (sha256 {record.short})" if record else "none shown",
                               parent=self.window)
        dialog.signRequested.connect(self.sign)
        dialog.finished.connect(lambda _r: setattr(self, "dialog", None))
        self.dialog = dialog
        dialog.open()
        return dialog

    def _case_of_current(self) -> str | None:
        paths = self.session.selected_paths()
        if not paths:
            return None
        return next((s.key for s in self.summaries if paths[0] in s.case.paths), None)

    @property
    def busy(self) -> bool:
        return self.runner.busy("sign")

    def sign(self, key: str, signer: str):
        """Sign the case `key` as `signer` on a worker; returns the worker (its `result`: the
        signature and the report's path). A refusal comes back as `error` (SignOffRefused)."""
        ds = self.session.dataset
        if ds is None:
            raise RuntimeError("open a folder of cells first")
        if self.busy:
            raise RuntimeError("a case is being signed already")
        summary = self.summary(key) or next((s for s in self.refresh() if s.key == key), None)
        if summary is None:
            raise ValueError(f"{key!r} is no case of this folder")
        self.last_signature = self.last_error = None
        self.message.emit(f"Signing {summary.title}…")
        worker = self.runner.run(sign_case, ds.store, summary.case, signer, self.session.predictions,
                                 self.session.active_model, list(ds.classes), ds.classes.positive, ds.root, key="sign")
        worker.result.connect(self._signed)
        worker.error.connect(self._refused)
        return worker

    def _signed(self, result) -> None:
        signature, report = result
        self.last_signature = signature
        done = "signed" if signature.seq >= signature.required else \
            f"signature {signature.seq} of {signature.required} given"
        self.message.emit(f"{signature.title} {done} by {signature.signer}: {report}")
        self.session.reviewsChanged.emit(None)
        self.refresh()
        if self.dialog is not None:
            self.dialog.signed(signature, report)
        self.signed.emit(result)

    def _refused(self, exc) -> None:
        from engine.cases.signoff import SignOffRefused

        self.last_error = str(exc) or type(exc).__name__
        if isinstance(exc, SignOffRefused):
            self.message.emit(str(exc))
            if self.dialog is not None:
                self.dialog.refused(exc.headline, exc.missing)
            return
        if self.dialog is not None:
            self.dialog.refused(self.last_error, [])
        if not self.session.quiet:
            box = QMessageBox(QMessageBox.Icon.Warning, "Not signed", self.last_error, parent=self.window)
            box.setObjectName("signOffFailedBox")
            self.failure_box = box
            box.open()

    def shutdown(self) -> bool:
        self._timer.stop()
        return self.runner.shutdown(timeout_ms=60_000)
