"""Who and when: the annotator and the time stamp written with every change to a label database."""
from __future__ import annotations

import getpass
import logging
from datetime import datetime, timezone

log = logging.getLogger(__name__)


def default_annotator() -> str:
    try:
        return getpass.getuser() or "unknown"
    except Exception:  # no user name in the environment (containers, some Windows services)
        log.debug("no user name from the environment", exc_info=True)
        return "unknown"


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


__all__ = ["default_annotator", "now_utc"]
