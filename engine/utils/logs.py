"""Logging and user-facing warnings: one setup for the CLI and the app, one warning channel.

Every module logs through `logging.getLogger(__name__)`. Things the *user* should read (a leaky
split, a class with few patients, rows skipped by an export) are `AllblastWarning`s raised with
`warn()`: the CLI prints them as `warning: ...` lines, the GUI's workers forward them as a
signal, and both also log them. Engine code never decides how a warning is shown.
"""
from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import warnings
from pathlib import Path

from .places import user_log_dir  # noqa: F401 - where the app keeps its log (engine.utils.places)

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(threadName)s]: %(message)s"
LOG_FILE_BYTES = 2 * 1024 * 1024
LOG_FILE_BACKUPS = 5


class AllblastWarning(UserWarning):
    """A message for the user (not a programming error); the text says what it means."""


def warn(text: str) -> None:
    """Warn the user. Shown every time, not once per call site as Python's warnings are: a second
    training run with the same leaky split must say so again (a fresh registry per call)."""
    caller = sys._getframe(1)
    warnings.warn_explicit(text, AllblastWarning, caller.f_code.co_filename, caller.f_lineno,
                           module=caller.f_globals.get("__name__"), registry={})


def warning_text(message: Warning | str) -> str:
    return str(message.args[0]) if isinstance(message, Warning) and message.args else str(message)


def setup_logging(*, verbosity: int = 0, log_file: str | os.PathLike | None = None,
                  rotate: bool = False, console: bool = True) -> logging.Logger:
    """Configure the root logger once for a program (the CLI's main, or the app's).

    Console: warnings and errors by default, `-v` info, `-vv` debug. The log file (if any) always
    gets debug detail, tracebacks included; `rotate` keeps it bounded (the app's long-lived log).
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_allblast", False):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(logging.DEBUG)
    if console:
        stream = _ConsoleHandler(sys.stderr)
        stream.setLevel(logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG)
        stream.setFormatter(_ConsoleFormatter())
        _mark(root, stream)
    if log_file is not None:
        path = Path(log_file).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        if rotate:
            handler: logging.Handler = logging.handlers.RotatingFileHandler(
                path, maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILE_BACKUPS, encoding="utf-8")
        else:
            handler = logging.FileHandler(path, encoding="utf-8")
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        _mark(root, handler)
    # Third-party chatter (PIL plugin discovery, matplotlib fonts) stays out of debug logs.
    for noisy in ("PIL", "matplotlib", "urllib3", "filelock", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return root


def route_warnings_to_logging() -> None:
    """Warnings become log records, shown on the console as one `warning: text` line: an
    AllblastWarning (logger "allblast") every time, even under `-W ignore` or `-W error` (it is a
    message for the user, not a Python warning to filter); another library's warning (logger
    "py.warnings") as its first line and category, where it was raised going to the log file only.
    Idempotent; the GUI's workers wrap this hook to forward warnings."""
    if getattr(warnings.showwarning, "_allblast", False):
        return
    previous = warnings.showwarning
    warnings.filterwarnings("always", category=AllblastWarning)

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, AllblastWarning):
            USER_LOG.warning("%s", warning_text(message))
        elif file is not None:  # written to a file someone chose: as Python would
            previous(message, category, filename, lineno, file, line)
        else:
            text = warning_text(message).strip()
            first = text.splitlines()[0] if text else category.__name__
            _log.debug("%s:%s: %s: %s", filename, lineno, category.__name__, text)
            PY_WARNINGS_LOG.warning("%s (%s)", first, category.__name__)

    show._allblast = True  # type: ignore[attr-defined]
    warnings.showwarning = show


USER_LOG = logging.getLogger("allblast")  # messages meant for the user, as well as the log
PY_WARNINGS_LOG = logging.getLogger("py.warnings")  # other libraries' warnings (logging.captureWarnings' name)
_log = logging.getLogger(__name__)


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """Python's own display of a warning, where no hook of ours is installed (a script using the
    engine, a worker process): an AllblastWarning still reads `warning: text`, without file:line."""
    if isinstance(category, type) and issubclass(category, AllblastWarning):
        return f"warning: {warning_text(message)}\n"
    return _python_format_warning(message, category, filename, lineno, line)


_python_format_warning = warnings.formatwarning
if not getattr(warnings.formatwarning, "_allblast", False):
    _format_warning._allblast = True  # type: ignore[attr-defined]
    warnings.formatwarning = _format_warning


class _ConsoleHandler(logging.StreamHandler):
    """Prints through tqdm.write, so a log line lands above the CLI's progress bars, not in them."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging must never raise; the handler reports it
            self.handleError(record)


class _ConsoleFormatter(logging.Formatter):
    """`warning: text` on a terminal (what users read); details and tracebacks go to the log file."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def _mark(root: logging.Logger, handler: logging.Handler) -> None:
    handler._allblast = True  # type: ignore[attr-defined]  # ours: replaced by the next setup
    root.addHandler(handler)
