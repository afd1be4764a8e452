"""GUI test fixtures: isolated settings and databases, and a check that no thread outlives a test.

Every window is built with its QSettings in an ini file under tmp_path, its label databases and
thumbnail cache under tmp_path, so tests never read or write the user's settings or anything in
../shared/data. After each test, open windows are closed and every thread pool must be idle and
the Python thread count back where it started (a dangling worker fails the test).
"""
from __future__ import annotations

import gc
import shutil
import threading
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings, QThreadPool
from PySide6.QtWidgets import QApplication, QMessageBox

THREAD_GRACE_S = 5.0
_WINDOWS_MADE: list[bool] = []  # whether the running test made a window (make_window)


def _python_threads() -> set[threading.Thread]:
    # Dummy threads are Python's view of Qt pool threads that once ran Python code; CPython 3.11
    # never forgets them, so they are checked through the pools (waitForDone) instead.
    return {t for t in threading.enumerate() if not isinstance(t, threading._DummyThread)}


@pytest.fixture(autouse=True)
def no_dangling_threads(qapp):
    before = _python_threads()
    _WINDOWS_MADE.clear()
    yield
    if _WINDOWS_MADE:
        # The test's windows (closed by qtbot by now) are freed here, on the GUI thread: left to the
        # cyclic collector, they could be freed by a later test's worker thread, where Qt deadlocks
        # against the GUI thread (the app runs the collector on the GUI thread only: app.py).
        _WINDOWS_MADE.clear()
        gc.collect()
    _check_threads(before)


def _check_threads(before: set[threading.Thread]) -> None:
    assert QThreadPool.globalInstance().waitForDone(10_000), "the global QThreadPool still runs work"
    deadline = time.monotonic() + THREAD_GRACE_S
    while True:
        QApplication.processEvents()
        extra = _python_threads() - before
        if not extra or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not extra, f"threads left running after the test: {sorted(t.name for t in extra)}"


@pytest.fixture
def settings_path(tmp_path, monkeypatch) -> Path:
    """Ini file for the window's settings; default-constructed QSettings also land under tmp_path."""
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    for scope in (QSettings.Scope.UserScope, QSettings.Scope.SystemScope):
        QSettings.setPath(QSettings.Format.IniFormat, scope, str(tmp_path / "qsettings"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))  # store fallback location
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return tmp_path / "settings.ini"


@pytest.fixture
def make_window(qtbot, tmp_path, settings_path):
    """Factory: a shown MainWindow with isolated settings; all are closed and checked at teardown."""
    from allblast_gui.main_window import MainWindow

    made = []

    def make(*, db_dir: Path | None = None, annotator: str | None = "tester", default_store: bool = False):
        """`default_store`: the database where a user's would be (beside the folder, or the user
        data folder), not in a test folder. `annotator=None`: as a first start, no name set."""
        window = MainWindow(
            settings=QSettings(str(settings_path), QSettings.Format.IniFormat),
            db_dir=None if default_store else db_dir or tmp_path / "db",
            annotator=annotator,
            thumbnail_cache=tmp_path / "thumbs",
        )
        qtbot.addWidget(window)
        window.show()
        qtbot.waitExposed(window)
        window.activateWindow()
        made.append(window)
        _WINDOWS_MADE.append(True)
        return window

    yield make
    for window in made:
        if window.isVisible():
            window.close()
        assert window.runner.pool.waitForDone(10_000), "a window's worker pool still runs work"


@pytest.fixture
def window(make_window):
    return make_window()


@pytest.fixture(scope="session")
def indexed_db(tmp_path_factory):
    """Build each shared data set's index once per session (decoding 2,000 JPEGs takes a while);
    tests get a copy in their own db dir, so the first open in a test is a fast reopen."""
    from allblast_gui.opening.dataset import db_path_for
    from engine.labels.project import open_dataset

    cache = tmp_path_factory.mktemp("indexed-db")

    def copy_into(root: Path, db_dir: Path) -> Path:
        root = Path(root).resolve()
        built = db_path_for(root, cache)
        if not built.exists():
            open_dataset(root, db_path=built).close()
        target = db_path_for(root, db_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built, target)
        return target

    return copy_into


def open_and_wait(qtbot, window, folder, *, timeout=120_000, labels=None):
    """Open `folder` in `window` and wait until the grid shows it; returns the LoadedDataset."""
    with qtbot.waitSignal(window.datasetOpened, timeout=timeout) as blocker:
        window.open_folder(folder, labels)
    return blocker.args[0]


@pytest.fixture
def warnings_shown(monkeypatch):
    """Record QMessageBox.warning/critical instead of blocking on a modal box."""
    shown: list[tuple[str, str]] = []

    def record(_parent, title, text, *args, **kwargs):
        shown.append((title, text))
        return QMessageBox.StandardButton.Ok

    monkeypatch.setattr(QMessageBox, "warning", record)
    monkeypatch.setattr(QMessageBox, "critical", record)
    return shown
