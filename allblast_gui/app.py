"""`allblast [FOLDER]`: start the review window (the console script declared in pyproject)."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

ORG, APP = "allblast", "allblast"
DB_DIR_ENV = "ALLBLAST_DB_DIR"  # put label databases here instead of beside the images
log = logging.getLogger(__name__)


def _qt_message_to_log(mode, context, message: str) -> None:
    """Qt's own warnings (qWarning and friends) go to the same log as ours."""
    from PySide6.QtCore import QtMsgType

    level = {QtMsgType.QtDebugMsg: logging.DEBUG, QtMsgType.QtInfoMsg: logging.INFO,
             QtMsgType.QtWarningMsg: logging.WARNING}.get(mode, logging.ERROR)
    logging.getLogger("qt").log(level, "%s", message)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="allblast", description="Review and relabel single-cell blood images.")
    p.add_argument("folder", nargs="?", help="folder of cell images to open (C-NMC, PBC class folders, ...)")
    p.add_argument("--annotator", metavar="NAME", help="name recorded with every label change (remembered)")
    p.add_argument("--labels", metavar="CSV", help="labels CSV with the original labels (C-NMC or path,label)")
    p.add_argument("--db-dir", metavar="DIR", default=os.environ.get(DB_DIR_ENV) or None,
                   help=f"keep label databases in DIR (default: beside the images, or the user data "
                        f"folder when that is read-only; env {DB_DIR_ENV})")
    p.add_argument("--settings", metavar="INI", help="use this settings file instead of the user's (demos, tests)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more detail on the terminal")
    args = p.parse_args(argv)
    if args.labels and not args.folder:
        p.error("--labels needs a FOLDER")
    if args.folder and not Path(args.folder).expanduser().is_dir():
        p.error(f"{args.folder} is not a folder")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    from engine.utils.logs import setup_logging, user_log_dir

    # A rotating file in the user log folder (Help > Show Log Folder) keeps every traceback.
    setup_logging(verbosity=args.verbose, log_file=user_log_dir() / "allblast.log", rotate=True)
    # Qt is imported only after the arguments are fine, so `allblast --help` is instant.
    from PySide6.QtCore import QCoreApplication, QSettings, qInstallMessageHandler
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication

    from .main_window import ICON, MainWindow
    from .workers import install_warning_hook

    qInstallMessageHandler(_qt_message_to_log)
    install_warning_hook()
    log.info("allblast starting: %s", sys.argv)

    QCoreApplication.setOrganizationName(ORG)
    QCoreApplication.setApplicationName(APP)
    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "allblast"])
    app.setWindowIcon(QIcon(str(ICON)))
    settings = QSettings(args.settings, QSettings.Format.IniFormat) if args.settings else None
    window = MainWindow(settings=settings, db_dir=Path(args.db_dir) if args.db_dir else None,
                        annotator=args.annotator)
    window.show()
    window.activateWindow()  # without a window manager (kiosk, Xvfb) nothing else gives it focus
    if args.folder:
        window.open_folder(args.folder, args.labels)
    code = app.exec()
    return int(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
