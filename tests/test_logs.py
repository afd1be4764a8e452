"""Logging and the one channel for user warnings (engine.utils.logs)."""
from __future__ import annotations

import logging
import logging.handlers

import pytest

from engine.utils.logs import (LOG_FILE_BACKUPS, LOG_FILE_BYTES, AllblastWarning, route_warnings_to_logging,
                               setup_logging, warn)


@pytest.fixture
def clean_root():
    root = logging.getLogger()
    before = list(root.handlers), root.level
    yield root
    for h in list(root.handlers):
        if h not in before[0]:
            root.removeHandler(h)
            h.close()
    root.setLevel(before[1])


def test_log_file_rotates_and_keeps_tracebacks(tmp_path, clean_root):
    log_file = tmp_path / "logs" / "allblast.log"
    setup_logging(log_file=log_file, rotate=True, console=False)
    handlers = [h for h in clean_root.handlers if getattr(h, "_allblast", False)]
    assert [type(h) for h in handlers] == [logging.handlers.RotatingFileHandler]
    try:
        raise RuntimeError("disk on fire")
    except RuntimeError:
        logging.getLogger("engine.test").exception("saving failed")
    for h in handlers:
        h.flush()
    text = log_file.read_text()
    assert "saving failed" in text and "RuntimeError: disk on fire" in text and "Traceback" in text
    # Past its size limit the file rotates: allblast.log.1 appears, the newest lines stay in
    # allblast.log, and at most LOG_FILE_BACKUPS old files are kept.
    log = logging.getLogger("engine.test")
    line = "x" * 1000
    for i in range(LOG_FILE_BYTES * (LOG_FILE_BACKUPS + 2) // 1000):
        log.warning("%d %s", i, line)
    for h in handlers:
        h.flush()
    rotated = sorted(p.name for p in log_file.parent.iterdir())
    assert rotated == ["allblast.log"] + [f"allblast.log.{k}" for k in range(1, LOG_FILE_BACKUPS + 1)]
    assert all(p.stat().st_size <= LOG_FILE_BYTES for p in log_file.parent.iterdir())
    assert f"{i} {line}" in log_file.read_text()  # the last line, in the current file
    # A second setup replaces our handlers instead of stacking them (each line logged once).
    setup_logging(log_file=log_file, rotate=True, console=False)
    assert len([h for h in clean_root.handlers if getattr(h, "_allblast", False)]) == 1


def test_user_warnings_print_as_one_line_every_time(capsys, clean_root, monkeypatch):
    import warnings

    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # restored after the test
    setup_logging(console=True)
    route_warnings_to_logging()
    for _ in range(2):
        warn("class hem has only 1 patient: split by image instead")
    err = capsys.readouterr().err
    assert err.count("warning: class hem has only 1 patient: split by image instead\n") == 2
    assert "AllblastWarning" not in err and ".py:" not in err  # no Python warning decoration


def test_allblast_warning_is_a_user_warning():
    with pytest.warns(AllblastWarning, match="leaky"):
        warn("leaky split")
