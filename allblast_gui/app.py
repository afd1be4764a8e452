"""`allblast [FOLDER]`: start the review window (the console script declared in pyproject)."""
from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from pathlib import Path

ORG, APP = "allblast", "allblast"
DB_DIR_ENV = "ALLBLAST_DB_DIR"  # put label databases here instead of beside the images
WARM_UP_DELAY_MS = 1500
log = logging.getLogger(__name__)


def _qt_message_to_log(mode, context, message: str) -> None:
    """Qt's own warnings (qWarning and friends) go to the same log as ours."""
    from PySide6.QtCore import QtMsgType

    level = {QtMsgType.QtDebugMsg: logging.DEBUG, QtMsgType.QtInfoMsg: logging.INFO,
             QtMsgType.QtWarningMsg: logging.WARNING}.get(mode, logging.ERROR)
    if "propagateSizeHints" in message:  # the offscreen/virtual-screen platforms' harmless notice
        level = logging.DEBUG
    logging.getLogger("qt").log(level, "%s", message)


def parse_args(argv: list[str], *, check_folder: bool = True) -> argparse.Namespace:
    """`check_folder=False` (what `main` does): a FOLDER that is missing or not a folder is left to
    the window, which says so in a message box where the user looks, not only on a terminal."""
    p = argparse.ArgumentParser(prog="allblast", description="Review and relabel single-cell blood images.")
    p.add_argument("folder", nargs="?", help="folder of cell images to open (C-NMC, PBC class folders, ...)")
    p.add_argument("--annotator", metavar="NAME", help="name recorded with every label change (remembered)")
    p.add_argument("--labels", metavar="CSV", help="labels CSV with the original labels (C-NMC or path,label)")
    p.add_argument("--db-dir", metavar="DIR", default=os.environ.get(DB_DIR_ENV) or None,
                   help=f"keep label databases in DIR (default: beside the images, or the user data "
                        f"folder when that is read-only; env {DB_DIR_ENV})")
    p.add_argument("--settings", metavar="INI", help="use this settings file instead of the user's (demos, tests)")
    p.add_argument("--script", metavar="FILE.py", help="run a Python script once the folder is open, with `app` "
                   "in scope (docs/scripting.md)")
    p.add_argument("--exit-after", action="store_true", help="with --script: quit when the script ends (exit "
                   "status 1 if it raised, else 0)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more detail on the terminal")
    args = p.parse_args(argv)
    if args.labels and not args.folder:
        p.error("--labels needs a FOLDER")
    if args.exit_after and not args.script:
        p.error("--exit-after needs --script FILE.py")
    if args.script and not Path(args.script).expanduser().is_file():
        p.error(f"script {args.script} does not exist")
    if check_folder and args.folder and not Path(args.folder).expanduser().is_dir():
        p.error(f"{args.folder} is not a folder")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else list(argv), check_folder=False)
    if args.folder and not Path(args.folder).expanduser().is_dir():  # the window says it too
        print(f"allblast: {args.folder} is not a folder", file=sys.stderr)
    from engine.utils.logs import setup_logging
    from engine.utils.places import user_log_dir

    # A rotating file in the user log folder (Help > Show Log Folder) keeps every traceback.
    setup_logging(verbosity=args.verbose, log_file=user_log_dir() / "allblast.log", rotate=True)
    # Qt is imported only after the arguments are fine, so `allblast --help` is instant.
    from PySide6.QtCore import QCoreApplication, QSettings, QTimer, qInstallMessageHandler
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication

    from .demo import first_run_folder
    from .main_window import ICON, MainWindow
    from .settings import Prefs
    from .workers import gui_thread_collector, install_warning_hook

    from engine.utils.jobs import WORKER_PRELOAD, set_worker_start_method

    qInstallMessageHandler(_qt_message_to_log)
    install_warning_hook()
    # DataLoader workers start from a small fork server, never by forking this large process (a
    # fork stalls the GUI thread for its whole length); it imports the decoding stack once.
    set_worker_start_method("forkserver", preload=WORKER_PRELOAD)
    log.info("allblast starting: %s", sys.argv)

    QCoreApplication.setOrganizationName(ORG)
    QCoreApplication.setApplicationName(APP)
    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "allblast"])
    app.setWindowIcon(QIcon(str(ICON)))
    # Python's cyclic collector only on the GUI thread: run from a worker thread it can free a
    # window's Qt objects there, and Qt then deadlocks against the GUI thread (pyqtgraph's remedy).
    gc_on_gui_thread = gui_thread_collector()
    settings = QSettings(args.settings, QSettings.Format.IniFormat) if args.settings else None
    recent = Prefs(settings).recent_folders()  # none yet: a first run (the demo folder opens)
    window = MainWindow(settings=settings, db_dir=Path(args.db_dir) if args.db_dir else None,
                        annotator=args.annotator)
    window.show()
    window.activateWindow()  # without a window manager (kiosk, Xvfb) nothing else gives it focus
    # after the first paint: torch, timm and the prediction backend of the user's settings
    QTimer.singleShot(WARM_UP_DELAY_MS, window.preload)
    folder = args.folder
    if not folder and (demo := first_run_folder(recent)) is not None:
        folder = str(demo)  # a new user sees cells at once
    if args.script:
        _run_script_when_ready(window, args, folder)
    if folder:
        window.open_folder(folder, args.labels)
    try:
        code = app.exec()
    finally:
        gc_on_gui_thread.timer.stop()
        gc.enable()  # main() may run again in this process (tests): leave the collector as found
    log.info("allblast exits with status %s", code)
    return int(code)


def _run_script_when_ready(window, args: argparse.Namespace, folder: str | None) -> None:
    """--script: run once the folder (FOLDER, or the first run's demo) is open (at once without a
    folder); --exit-after: then quit."""
    from PySide6.QtCore import QTimer

    api = window.script_app
    # --exit-after: nobody is there to answer a dialog; the window asks nothing (the session says
    # so to every feature), and a large folder on the command line is opened without asking.
    api.unattended = bool(args.exit_after)

    def run() -> None:
        try:
            window.run_script(args.script)  # a traceback shows in the console (and the log)
        finally:
            if args.exit_after:
                api.quit()

    def opened(_ds) -> None:
        disconnect()
        QTimer.singleShot(0, run)

    def failed(message: str) -> None:
        disconnect()
        log.error("--script not run: the folder did not open: %s", message)
        api.failed = True
        if args.exit_after:
            api.quit()

    def disconnect() -> None:
        window.datasetOpened.disconnect(opened)
        window.datasetFailed.disconnect(failed)

    if folder:
        window.datasetOpened.connect(opened)
        window.datasetFailed.connect(failed)
    else:
        QTimer.singleShot(0, run)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
