"""Model ▸ ImageNet Weights… (issue 25): the weights manager in the window, over
engine.learn.weights_store (what `allblast-engine weights list | import | fetch` call).

Listing hashes every file, importing reads and copies one, fetching downloads: all run on this
feature's own one-thread runner (a download never waits behind a folder being opened, nor holds
one up), and their outcome comes back by signal. A failure is one red line in the dialog. After a
change the session says `weightsChanged`: its weights cache looks the backbones up again and an
open Train dialog marks its list anew. The Train dialog's "ImageNet Weights…" button reaches this
feature through the session (`weightsManagerRequested`), never by import.
"""
from __future__ import annotations

import logging
from pathlib import Path

from engine.learn.weights_store import fetch_weights, import_weights, list_weights, remove_imported

from ..actions import ActionSpec
from ..feature import Feature
from ..workers import TaskRunner, heavy_import
from .dialog import WeightsDialog

log = logging.getLogger(__name__)
JOB = "weights"


def _after_imports(func, *args):
    """On the runner's thread: torch and timm, which the weights store needs, imported first and
    in turn with the warm-up (two threads importing timm at once can get it half-initialised);
    then the job, which may take long (hashing, a download) without holding the imports up."""
    heavy_import("timm.models")
    return func(*args)


def one_line(exc: BaseException) -> str:
    """An error as the dialog says it: its first line, never a traceback (that is in the log)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class WeightsFeature(Feature):
    name = "weights"
    own_actions = (
        ("&Model", ActionSpec("weights_manager", "ImageNet &Weights…", (), "Model",
                              "Where each backbone's ImageNet weights come from; import a weights file, fetch them "
                              "while online, remove an imported one")),
    )

    def __init__(self, session, window) -> None:
        super().__init__(session, window)
        self.runner = TaskRunner(self, max_threads=1)
        self.dialog: WeightsDialog | None = None
        self.rows: list = []  # the last listing (engine.learn.weights_store.WeightsRow)
        self.last_error: str | None = None
        self._done_text = ""  # what the last change did, said once the table is read again
        self._changed = False  # the job that just ended changed the weights: read the table again
        session.weightsManagerRequested.connect(self.open_dialog)

    def handlers(self) -> dict:
        return {"weights_manager": self.open_dialog}

    @property
    def busy(self) -> bool:
        return self.runner.busy(JOB)

    def open_dialog(self) -> WeightsDialog:
        if self.dialog is None:
            d = self.dialog = WeightsDialog(self.window)
            d.importRequested.connect(self.import_file)
            d.fetchRequested.connect(self.fetch)
            d.removeRequested.connect(self.remove)
            d.refreshRequested.connect(self._refresh_asked)
        self.dialog.open()
        self.dialog.raise_()
        self.dialog.activateWindow()
        if not self.busy:
            self.refresh()
        return self.dialog

    # ---- the jobs (each on the runner's thread) ---------------------------------------------------
    def refresh(self):
        return self._run("Looking for ImageNet weights (reading each file's sha256)…", self._listed, list_weights)

    def import_file(self, path: str, backbone: str | None = None):
        return self._run(f"Checking {Path(path).name} key by key and copying it into the user weights folder…",
                         self._imported, import_weights, path, backbone)

    def fetch(self, backbone: str):
        return self._run(f"Downloading {backbone}'s ImageNet weights into the timm cache…", self._fetched,
                         fetch_weights, backbone)

    def remove(self, backbone: str):
        return self._run(f"Removing {backbone}'s imported weights…", self._removed, remove_imported, backbone)

    def _refresh_asked(self) -> None:
        self._done_text = ""
        self.refresh()

    def _run(self, text: str, done, func, *args):
        if self.busy:
            self.message.emit("The weights manager is busy: wait for it to finish")
            return None
        if func is not list_weights:
            self._done_text = ""
        self.last_error = None
        if self.dialog is not None:
            self.dialog.set_busy(text)
        worker = self.runner.run(_after_imports, func, *args, key=JOB)
        worker.result.connect(done)
        worker.error.connect(self._failed)
        worker.finished.connect(self._finished)
        return worker

    # ---- their outcome (GUI thread) -------------------------------------------------------------------
    def _listed(self, rows) -> None:
        self.rows = list(rows)
        if self.dialog is not None:
            self.dialog.set_rows(self.rows)

    def _imported(self, result) -> None:
        self._change(f"Imported {Path(result.source_path).name} as {result.backbone}'s ImageNet weights "
                     f"(sha256 {result.sha256[:12]}…)")

    def _fetched(self, result) -> None:
        if result.already:
            self._done_text = f"{result.backbone}'s ImageNet weights are in the timm cache already"
        else:
            self._change(f"Fetched {result.backbone}'s ImageNet weights from {result.repo} into the timm cache")

    def _removed(self, removed: list) -> None:
        if removed:
            self._change(f"Removed {', '.join(Path(p).name for p in removed)} from the user weights folder")
        else:
            self._done_text = "Nothing to remove: that backbone has no file in the user weights folder"

    def _change(self, text: str) -> None:
        self._done_text, self._changed = text, True
        self.message.emit(text)
        self.session.weightsChanged.emit()

    def _failed(self, exc: BaseException) -> None:
        self.last_error = one_line(exc)
        self.message.emit(f"ImageNet weights: {self.last_error}")
        if self.dialog is not None:
            self.dialog.show_error(self.last_error)

    def _finished(self) -> None:
        if self._changed:  # the table again, with what changed said once it is read
            self._changed = False
            self.refresh()
        elif self.dialog is not None:
            self.dialog.set_idle(self._done_text)

    def shutdown(self) -> None:
        self.runner.shutdown()
