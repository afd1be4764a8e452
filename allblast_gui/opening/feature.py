"""Opening folders: File ▸ Open Folder… and Open Recent, a dropped folder, the question before a
system folder or a very large one is indexed, Cancel (Esc) while it is, what the window says
about the folder once it is open (open elsewhere too, empty, read-only) and "Continue in a Copy".

The folder itself is read on a pool thread (`DatasetController`); once it is loaded this feature
hands it to the session, and every other feature shows it from there.
"""
from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import QFileDialog, QMessageBox

from engine.workspace.lock import describe_holders

from ..feature import Feature
from . import notices
from .dataset import DatasetController, LoadedDataset
from .folders import folder_concern

log = logging.getLogger(__name__)


class OpeningFeature(Feature):
    name = "opening"
    message_ms = 10_000

    def __init__(self, session, window) -> None:
        super().__init__(session, window)
        self.datasets = DatasetController(session.runner, db_dir=session.db_dir, parent=self)
        self.recent_menu = None
        self.also_open_box = self.empty_box = self.read_only_box = None  # the last ones shown
        # Esc cancels indexing, as the status bar's Cancel does; only while a folder is being
        # indexed: otherwise Esc belongs to the other widgets.
        self.cancel_shortcut = QShortcut(QKeySequence(Qt.Key.Key_Escape), window, self.cancel_open)
        self.cancel_shortcut.setEnabled(False)
        d, s = self.datasets, self.status
        d.loading.connect(self._on_loading)
        d.progress.connect(s.show_progress)
        d.opened.connect(self._on_opened)
        d.failed.connect(self._on_failed)
        d.warned.connect(lambda text: s.showMessage(text, 15000))
        s.cancelRequested.connect(self.cancel_open)

    def handlers(self) -> dict:
        return {"open": self.ask_open}

    def bind(self, actions, menus) -> None:
        self.recent_menu = menus["@recent"]
        self.recent_menu.aboutToShow.connect(self._fill_recent)

    # ---- opening --------------------------------------------------------------------------------
    def ask_open(self) -> None:
        start = (self.session.prefs.recent_folders() or [str(Path.home())])[0]
        folder = QFileDialog.getExistingDirectory(self.window, "Open a folder of cell images", start)
        if folder:
            self.open_folder(folder)

    def open_folder(self, folder: str | Path, labels: str | Path | None = None) -> None:
        """Open a folder of cells; a system or home folder, or one of more than 20,000 files, is
        opened only when the user says so (indexing it could take very long)."""
        path = Path(folder).expanduser()
        concern = folder_concern(path) if path.is_dir() else None
        if concern is not None and not self._confirm_open(concern):
            self.status.showMessage(f"Not opened: {path}", 10000)
            return
        self.datasets.open(folder, labels)

    def _confirm_open(self, concern: str) -> bool:
        if self.session.unattended:  # --exit-after: nobody would answer; the log says what was done
            log.warning("%s Opening it without asking: the script runs unattended (--exit-after) and names "
                        "this folder.", concern)
            return True
        if self.session.quiet:
            return True  # a script asked for this folder itself
        answer = QMessageBox.question(
            self.window, "Open this folder?", f"{concern}\n\nOpen and index it anyway?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def cancel_open(self) -> bool:
        """Stop indexing the folder being opened (Esc, the status bar's Cancel); nothing is kept."""
        self.cancel_shortcut.setEnabled(False)
        if not self.datasets.cancel():
            return False
        self.status.hide_progress()
        self.status.showMessage("Opening cancelled: nothing was kept", 10000)
        self.session.openFailed.emit("opening cancelled")
        return True

    def _on_loading(self, root: str) -> None:
        self.status.showMessage(f"Opening {root}…")
        self.cancel_shortcut.setEnabled(True)

    def _on_opened(self, ds: LoadedDataset) -> None:
        s = self.status
        s.hide_progress()
        self.cancel_shortcut.setEnabled(False)
        self.session.prefs.add_recent(ds.root)
        self.session.set_dataset(ds)  # every feature shows it now, in the order they were mounted
        # Until the first label the index waits in the user cache: show where labels will be kept.
        s.set_db(ds.store.location, getattr(ds.store, "home", None) or ds.store.db_path)
        # Short: the status bar's permanent counts sit on the same line. Longer notes (no patient
        # ids, ...) are tooltips in the data set tree. Who else has it open: a window of the app or a
        # command of allblast-engine alike (engine.workspace.lock names a command by its program).
        others = describe_holders(self.datasets.others) if self.datasets.others else ""
        notes = [f"{len(ds.problems)} unreadable files"] if ds.problems else []
        notes += list(getattr(ds.store, "notes", [])) + ([f"also open by {others}"] if others else [])
        s.showMessage(" · ".join([f"Opened {ds.root.name}", *notes]), 15000)
        boxes = []
        if others:
            self.also_open_box = notices.also_open_box(self.window, ds.root, others)
            boxes.append(self.also_open_box)
        if not ds.rows and not ds.problems:
            self.empty_box = notices.empty_folder_box(self.window, ds.root)
            boxes.append(self.empty_box)
        if ds.store.read_only:
            self.read_only_box = notices.read_only_box(self.window, ds.root, ds.store.db_path, self.continue_in_copy)
            boxes.append(self.read_only_box)
        for box in boxes if not self.session.quiet else ():
            box.open()

    def continue_in_copy(self) -> Path | None:
        """Seed a user-data copy of the open read-only folder's database, then reopen the folder on it."""
        from engine.labels.connection import seed_copy
        from engine.labels.errors import StoreError
        from engine.labels.location import user_db_path

        ds = self.datasets.current
        if ds is None or not ds.store.read_only:
            return None
        target = user_db_path(ds.root)  # where locate_db looks for a copy of a read-only folder's store
        try:
            if not target.exists():
                seed_copy(ds.store.db_path, target)
        except StoreError as exc:
            QMessageBox.warning(self.window, "No copy made", str(exc))
            return None
        self.open_folder(ds.root)
        return target

    def _on_failed(self, folder: str, message: str) -> None:
        self.status.hide_progress()
        self.cancel_shortcut.setEnabled(False)
        self.session.prefs.remove_recent(folder)  # Open Recent lists folders that open
        self.status.showMessage(f"Could not open {folder}", 10000)
        self.session.openFailed.emit(message)
        if not self.session.quiet:  # a script gets the error itself
            QMessageBox.warning(self.window, "Could not open the folder", message)

    def _fill_recent(self) -> None:
        menu = self.recent_menu
        menu.clear()
        for folder in self.session.prefs.recent_folders():
            menu.addAction(folder, lambda f=folder: self.open_folder(f))
        if menu.isEmpty():
            menu.addAction("(none yet)").setEnabled(False)
        else:
            menu.addSeparator()
            menu.addAction("Clear List", self.session.prefs.clear_recent)

    def shutdown(self) -> None:
        self.datasets.close()  # last of all (features shut down in reverse): the store goes
