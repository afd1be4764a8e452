"""Opening folders safely (issue 10), in the window: nothing written before the first label, large
or system folders asked about, cancellable indexing, Open Recent, a second window told, a bad or
empty folder explained in the window."""
from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

from PIL import Image
from PySide6.QtWidgets import QMessageBox

from .conftest import open_and_wait


def make_images(root: Path, per_class: int = 2) -> Path:
    for cls, colour in (("all", (200, 40, 40)), ("hem", (40, 40, 200))):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = Image.new("RGB", (16, 16), colour)
            img.putpixel((i % 16, (i // 16) % 16), (i % 256, 255 - i % 256, (i // 256) % 256))
            img.save(root / cls / f"UID_{i + 1}_1_1_{cls}.png")
    return root


def cache_dbs(tmp_path: Path) -> list[Path]:
    base = tmp_path / "xdg-cache"
    return [p for p in base.rglob("project.sqlite*")] if base.exists() else []


# ------------------------------------------------------------------ 1. nothing written before a label
def test_opening_and_browsing_write_nothing_until_the_first_label(qtbot, make_window, tmp_path):
    root = make_images(tmp_path / "data")
    window = make_window(default_store=True)
    ds = open_and_wait(qtbot, window, root)
    assert len(ds.rows) == 4
    window.grid.select_path("hem/UID_1_1_1_hem.png")  # browsing
    window.grid.select_path("all/UID_2_1_1_all.png")
    assert not (root / ".allblast").exists(), "only opened and browsed: nothing in the data folder"

    window.grid.select_path("all/UID_1_1_1_all.png")
    window.review.label_class(2)  # hem
    beside = root / ".allblast" / "project.sqlite"
    assert beside.is_file()
    conn = sqlite3.connect(beside)
    try:
        assert conn.execute("SELECT path, label FROM labels").fetchall() == [("all/UID_1_1_1_all.png", "hem")]
        assert conn.execute("SELECT COUNT(*) FROM files").fetchone()[0] == 4
        assert conn.execute("SELECT COUNT(*) FROM changes").fetchone()[0] == 1
    finally:
        conn.close()
    window.close()
    again = make_window(default_store=True)
    ds2 = open_and_wait(qtbot, again, root)
    assert {r.path: r.current for r in ds2.rows}["all/UID_1_1_1_all.png"] == "hem"
    assert ds2.store.location == "beside" and ds2.store.db_path == beside.resolve()


def test_an_empty_folder_writes_nothing_and_says_what_is_expected(qtbot, make_window, tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    window = make_window(default_store=True)
    open_and_wait(qtbot, window, root)
    assert list(root.iterdir()) == []
    box = window.findChild(QMessageBox, "emptyFolderBox")
    assert box is not None
    text = box.text()
    assert "fold_0/all" in text and "fold_0/hem" in text and "patient id" in text and "class" in text


# ------------------------------------------------------------------ 2. large or system folders
def test_a_large_folder_is_asked_about_first_default_no(qtbot, make_window, tmp_path, monkeypatch):
    from allblast_gui.opening import folders as dataset

    root = make_images(tmp_path / "data", per_class=3)
    monkeypatch.setattr(dataset, "LARGE_FOLDER", 4)
    asked = []

    def answer(reply):
        def question(parent, title, text, buttons=None, default=None):
            asked.append((text, default))
            return reply
        return question

    window = make_window(default_store=True)
    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.StandardButton.No))
    window.open_folder(root)
    assert len(asked) == 1 and "more than 4 files" in asked[0][0]
    assert asked[0][1] == QMessageBox.StandardButton.No, "No is the default answer"
    assert not window.datasets.busy and window.datasets.current is None
    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.StandardButton.Yes))
    ds = open_and_wait(qtbot, window, root)
    assert len(ds.rows) == 6 and len(asked) == 2


def test_the_home_folder_is_asked_about(qtbot, make_window, tmp_path, monkeypatch):
    home = make_images(tmp_path / "home")
    monkeypatch.setenv("HOME", str(home))
    asked = []
    monkeypatch.setattr(QMessageBox, "question",
                        lambda *a, **k: asked.append(a[2]) or QMessageBox.StandardButton.No)
    window = make_window(default_store=True)
    window.open_folder(home)
    assert asked and "system or home folder" in asked[0]
    assert not window.datasets.busy


def test_counting_stops_at_the_limit(tmp_path):
    from allblast_gui.opening.folders import count_files

    root = make_images(tmp_path / "data", per_class=10)
    assert count_files(root, limit=1000) == 20
    assert count_files(root, limit=5) == 6  # one past the limit, then it stops


# ------------------------------------------------------------------ 3. cancel
def test_cancelling_the_index_leaves_nothing_behind(qtbot, make_window, tmp_path):
    root = make_images(tmp_path / "data", per_class=300)
    window = make_window(default_store=True)
    cancelled = []

    def on_progress(done, total):
        if not cancelled:
            assert window.status.cancel.isVisible()
            window.status.cancel.click()  # the Cancel button next to the progress bar
            cancelled.append(done)

    window.datasets.progress.connect(on_progress)
    with qtbot.waitSignal(window.datasetFailed, timeout=60_000):
        window.open_folder(root)
    assert window.runner.pool.waitForDone(60_000)
    qtbot.wait(50)
    assert cancelled and window.datasets.current is None
    assert not window.status.progress.isVisible() and not window.status.cancel.isVisible()
    assert not (root / ".allblast").exists()
    # A load that finished just as it was cancelled is dropped on the GUI thread: let it run.
    qtbot.waitUntil(lambda: cache_dbs(tmp_path) == [], timeout=10_000)  # no pending index, no half index


def test_escape_cancels_the_index(qtbot, make_window, tmp_path):
    root = make_images(tmp_path / "data", per_class=300)
    window = make_window(default_store=True)
    fired = []

    def on_progress(done, total):
        if not fired:
            fired.append(done)
            shortcut = window._cancel_shortcut
            # The window's Esc shortcut, enabled while indexing (the offscreen platform has no active
            # window to deliver a key press to it, so the shortcut is fired as Qt would).
            assert shortcut.key().toString() == "Esc" and shortcut.isEnabled()
            shortcut.activated.emit()

    window.datasets.progress.connect(on_progress)
    with qtbot.waitSignal(window.datasetFailed, timeout=60_000):
        window.open_folder(root)
    assert window.runner.pool.waitForDone(60_000)
    assert window.datasets.current is None and not (root / ".allblast").exists()
    qtbot.waitUntil(lambda: cache_dbs(tmp_path) == [], timeout=10_000)
    assert not window._cancel_shortcut.isEnabled(), "Esc belongs to the other widgets again"


# ------------------------------------------------------------------ 4. Open Recent
def test_a_folder_that_failed_to_open_is_not_in_open_recent(qtbot, make_window, tmp_path, warnings_shown):
    root = make_images(tmp_path / "data")
    window = make_window()
    open_and_wait(qtbot, window, root)
    assert window.prefs.recent_folders()[0] == str(root.resolve())
    gone = tmp_path / "data"
    for p in sorted(gone.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    gone.rmdir()
    with qtbot.waitSignal(window.datasetFailed, timeout=10_000):
        window.open_folder(gone)
    assert str(gone.resolve()) not in window.prefs.recent_folders()
    assert warnings_shown


# ------------------------------------------------------------------ 5. a second window is told
def test_a_second_window_on_the_same_folder_is_told(qtbot, make_window, tmp_path):
    root = make_images(tmp_path / "data")
    first = make_window(default_store=True)
    open_and_wait(qtbot, first, root)
    second = make_window(default_store=True)
    open_and_wait(qtbot, second, root)
    box = second.findChild(QMessageBox, "alsoOpenBox")
    assert box is not None
    assert socket.gethostname() in box.text() and "also open by" in box.text()
    assert second.datasets.others and first.findChild(QMessageBox, "alsoOpenBox") is None
    second.close()
    first.close()
    third = make_window(default_store=True)
    open_and_wait(qtbot, third, root)
    assert third.datasets.others == [] and third.findChild(QMessageBox, "alsoOpenBox") is None


def test_a_stale_lock_is_ignored(qtbot, make_window, tmp_path):
    from engine.labels.store import LabelStore

    root = make_images(tmp_path / "data")
    LabelStore.open(root).close()  # a folder that holds its store: the lock lives beside it
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = root / ".allblast" / "lock.json"
    lock.write_text(json.dumps([{"user": "Dr. A", "host": socket.gethostname(), "pid": dead.pid,
                                 "since": "2026-01-01T00:00:00+00:00"}]))
    window = make_window(default_store=True)
    open_and_wait(qtbot, window, root)
    assert window.datasets.others == [] and window.findChild(QMessageBox, "alsoOpenBox") is None
    holders = json.loads(lock.read_text())
    assert [h["pid"] for h in holders] == [__import__("os").getpid()]
    window.close()
    assert not lock.exists(), "the lock goes with the last holder"


HOLD = """
import sys
from engine.workspace.lock import held
with held(sys.argv[1], program="allblast-engine labels set"):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_a_folder_held_by_a_command_is_told_as_a_window_is(qtbot, make_window, tmp_path):
    """Issue 23: `allblast-engine labels set` holds the folder while it writes; the window names it
    in the same "also open by" box and status line as another window."""
    from engine.labels.store import LabelStore

    root = make_images(tmp_path / "data")
    LabelStore.open(root).close()  # the command holds a folder that has its database
    command = subprocess.Popen([sys.executable, "-c", HOLD, str(root)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert command.stdout.readline().strip() == "held"
        window = make_window(default_store=True)
        open_and_wait(qtbot, window, root)
        box = window.findChild(QMessageBox, "alsoOpenBox")
        assert box is not None and "also open by" in box.text()
        assert f"process {command.pid}, allblast-engine labels set" in box.text()
        assert "allblast-engine labels set" in window.status.currentMessage()
    finally:
        command.communicate("\n", timeout=30)


# ------------------------------------------------------------------ 6. bad folder argument
def test_a_missing_folder_argument_is_shown_in_the_window(qtbot, make_window, tmp_path, warnings_shown,
                                                          monkeypatch):
    """`allblast /no/such/folder` starts the window, which shows the error (not only stderr)."""
    import allblast_gui.main_window as main_window
    import allblast_gui.workers as workers
    import engine.utils.jobs as jobs
    import engine.utils.logs as logs
    from PySide6.QtWidgets import QApplication

    from allblast_gui import app

    missing = tmp_path / "no" / "such" / "folder"
    made = []

    def window_factory(**kwargs):
        window = make_window()
        made.append(window)
        return window

    monkeypatch.setattr(main_window, "MainWindow", window_factory)
    monkeypatch.setattr(logs, "setup_logging", lambda **kwargs: None)
    monkeypatch.setattr(jobs, "set_worker_start_method", lambda *a, **k: None)
    monkeypatch.setattr(workers, "install_warning_hook", lambda: None)
    monkeypatch.setattr(app, "qInstallMessageHandler", lambda *a: None, raising=False)
    monkeypatch.setattr(QApplication, "exec", lambda self=None: 0)
    monkeypatch.setattr(app, "WARM_UP_DELAY_MS", 24 * 3600 * 1000)  # no background torch import here
    assert app.main([str(missing), "--settings", str(tmp_path / "s.ini")]) == 0
    assert len(made) == 1
    qtbot.waitUntil(lambda: bool(warnings_shown), timeout=10_000)
    title, text = warnings_shown[-1]
    assert str(missing) in text and "does not exist" in text
