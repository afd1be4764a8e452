"""Issue 11, item 1 in the window: a read-only folder's own labels are shown, saving is refused
with a clear message, and "Continue in a Copy" carries every label into a writable store.

The window runs in a child process as a user who really cannot write the folder (as root, CI's
user, it drops to `nobody`: root ignores permission bits, so only another user meets a real
read-only folder). The child drives the real MainWindow and prints what it saw as JSON.
"""
from __future__ import annotations

import json
import os
import shutil

import pytest

from engine.data.scan import scan
from engine.labels.store import LabelStore

from unprivileged import make_read_only, run_as_other_user, world_readable_tmp

pytestmark = pytest.mark.shared_data

# Imported before the drop: as `nobody` the standard library (under root's home) cannot be read, so
# every module the window imports, lazily ones included, must be loaded by then.
WINDOW_PRELOAD = (
    "PySide6.QtCore", "PySide6.QtGui", "PySide6.QtWidgets", "allblast_gui.app", "allblast_gui.main_window",
    "encodings.ascii",  # the folder's lock reads /proc/<pid>/stat as ascii
    "pwd",  # the user's name for the lock and the annotator
    "fractions",  # Pillow's TIFF plugin (thumbnails)
)

CHILD = """
    import json
    from pathlib import Path

    from PySide6.QtCore import QEventLoop, QSettings, QTimer
    from PySide6.QtWidgets import QApplication, QMessageBox

    from allblast_gui.main_window import MainWindow

    root, home = Path(sys.argv[1]), Path(sys.argv[2])
    first = sys.argv[3]
    os.environ["QT_QPA_PLATFORM"] = "offscreen"  # headless, whatever the caller's environment
    app = QApplication(["allblast-test"])
    shown = []  # every message box the window asks for, instead of a modal one nobody answers

    def record(kind):
        def box(_parent, title, text, *args, **kwargs):
            shown.append([kind, title, text])
            return QMessageBox.StandardButton.Ok
        return staticmethod(box)

    for kind in ("warning", "critical", "information", "question"):
        setattr(QMessageBox, kind, record(kind))

    def wait_for(signal, action, timeout_ms=60_000):
        \"\"\"Run `action`, then wait for `signal` (its arguments), at most `timeout_ms`; the window's
        datasetFailed ends the wait at once.\"\"\"
        got, failed, loop, timer = [], [], QEventLoop(), QTimer()
        timer.setSingleShot(True)
        timer.timeout.connect(loop.quit)

        def on(*values):
            got.append(values)
            loop.quit()

        def on_failed(message):
            failed.append(message)
            loop.quit()

        signal.connect(on)
        window.datasetFailed.connect(on_failed)
        try:
            action()
            if not got and not failed:
                timer.start(timeout_ms)
                loop.exec()
        finally:
            timer.stop()
            signal.disconnect(on)
            window.datasetFailed.disconnect(on_failed)
        if not got:
            raise RuntimeError(f"failed: {failed[0]}" if failed else f"no {signal} within {timeout_ms} ms")
        return got[0]

    settings = QSettings(str(home / "settings.ini"), QSettings.Format.IniFormat)
    # db_dir=None: the database where a user's would be (the folder's own, or the user data folder).
    window = MainWindow(settings=settings, db_dir=None, annotator="tester", thumbnail_cache=home / "thumbs")
    window.show()
    # Who runs this, and whether it could write the folder (the point of the test: it cannot).
    facts = {"user": [os.geteuid(), os.access(root, os.W_OK), os.access(root / ".allblast", os.W_OK)]}
    try:
        (ds,) = wait_for(window.datasetOpened, lambda: window.open_folder(root))
        box = window.read_only_box
        facts["opened"] = {
            "read_only": ds.store.read_only, "db_path": str(ds.store.db_path), "status": window.status.db.text(),
            "labels": {r.path: r.current for r in window.model.all_rows()},
            "box": [box.objectName(), box.isVisible(), box.text(), [b.text() for b in box.buttons()]],
        }
        box.buttons()[-1].click()  # "Only Look"
        window.grid.select_path(first)
        window.review.label_class(1)  # the "1" key: cannot be saved here
        facts["refused"] = {"shown": list(shown), "label": {r.path: r.current for r in window.model.all_rows()}[first]}
        shown.clear()
        copy = []
        (again,) = wait_for(window.datasetOpened, lambda: copy.append(window.continue_in_copy()))
        facts["copy"] = {
            "returned": str(copy[0]), "read_only": again.store.read_only, "db_path": str(again.store.db_path),
            "status": window.status.db.text(),
            "history": [[c.new, c.annotator] for c in again.store.history(first)],
            "labels": {p: s.current for p, s in again.store.states().items()},
        }
        window.grid.select_path(first)
        window.review.label_class(1)  # saved in the copy this time
        facts["relabelled"] = {"label": again.store.state(first).current, "shown": list(shown),
                               "history": [[c.new, c.annotator] for c in again.store.history(first)]}
    finally:
        window.close()
        facts["closed"] = [not window.isVisible(), window.runner.pool.waitForDone(30_000)]
    print(json.dumps(facts))
"""


def test_a_read_only_folder_shows_its_labels_then_continues_in_a_copy(pbc_dir):
    with world_readable_tmp("ro-window") as base:
        root, home = base / "data", base / "home"
        for cls in ("basophil", "neutrophil"):
            (root / cls).mkdir(parents=True)
            for f in sorted((pbc_dir / cls).iterdir())[:3]:
                shutil.copy(f, root / cls / f.name)
        first = sorted(p.relative_to(root).as_posix() for p in (root / "basophil").iterdir())[0]
        with LabelStore.open(root) as store:  # the folder's own database, by a user who could write it
            store.sync_cells(scan(root).cells)
            store.set_label(first, "neutrophil", annotator="Dr. A")
            originals = {p: s.current for p, s in store.states().items()}
        db = root / ".allblast" / "project.sqlite"
        assert db.is_file()
        make_read_only(root)
        before = db.read_bytes()

        proc = run_as_other_user(CHILD, home, str(root), str(home), first, preload=WINDOW_PRELOAD,
                                 timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        # An exception in a slot or on a pool thread (a module the dropped user cannot read) is printed there.
        assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
        facts = json.loads(proc.stdout.strip().splitlines()[-1])

        uid, *writable = facts["user"]
        assert writable == [False, False] and (uid != 0 or os.geteuid() != 0), facts["user"]
        # Opened: the folder's own labels are shown, read-only, and the copy is offered.
        opened = facts["opened"]
        assert opened["read_only"] is True and opened["db_path"] == str(db)
        assert "READ-ONLY" in opened["status"]
        assert opened["labels"] == originals and opened["labels"][first] == "neutrophil"  # not hidden
        name, visible, text, buttons = opened["box"]
        assert name == "readOnlyBox" and visible and "Continue in a copy" in text
        assert buttons == ["Continue in a Copy", "Only Look"]
        # A label key cannot save here: one clear message, the row keeps its label.
        refused = facts["refused"]
        assert len(refused["shown"]) == 1 and "cannot be saved" in refused["shown"][0][2], refused["shown"]
        assert refused["label"] == "neutrophil"
        # Continue in a copy: writable, in the other user's data folder, with every label and its history.
        copy = facts["copy"]
        assert copy["read_only"] is False and copy["db_path"] == copy["returned"]
        assert copy["db_path"].startswith(str(home / "data")) and "READ-ONLY" not in copy["status"]
        assert copy["labels"] == originals
        assert copy["history"] == [["neutrophil", "Dr. A"]]
        relabelled = facts["relabelled"]
        assert relabelled["label"] == "basophil" and relabelled["shown"] == []
        assert relabelled["history"] == [["neutrophil", "Dr. A"], ["basophil", "tester"]]
        assert facts["closed"] == [True, True]
        # The folder's database is untouched, and nothing was added beside the images.
        assert db.read_bytes() == before
        assert sorted(p.name for p in root.iterdir()) == [".allblast", "basophil", "neutrophil"]
        assert sorted(p.name for p in db.parent.iterdir()) == ["project.sqlite"]
