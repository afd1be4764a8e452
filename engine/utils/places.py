"""The user's folders for allblast: one home, one `appauthor` choice.

Every per-user folder the engine and the app use comes from here, so the label databases, the
caches, the logs, the reports and the downloaded weights agree on one place per platform (on
Windows `appauthor=False` means `%LOCALAPPDATA%\\allblast\\...`, without a vendor folder). The XDG
variables (XDG_DATA_HOME, XDG_CACHE_HOME, XDG_STATE_HOME ...) move them on Linux, as platformdirs
reads them at call time; the tests point XDG_CACHE_HOME (and ALLBLAST_TEST_CACHE) at a temporary
folder that way.
"""
from __future__ import annotations

from pathlib import Path

import platformdirs

APP_NAME = "allblast"
APP_AUTHOR = False  # no vendor folder on Windows: %LOCALAPPDATA%\allblast, not ...\<author>\allblast


def user_data_dir() -> Path:
    """Per-user data: label databases of read-only folders (`projects/`), the demo data, weights."""
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=APP_AUTHOR))


def user_cache_dir() -> Path:
    """Per-user cache: pending label indexes, the inference cache, thumbnails; safe to delete."""
    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=APP_AUTHOR))


def user_log_dir() -> Path:
    """Where the app keeps its log files: ~/.local/state/allblast/log on Linux."""
    return Path(platformdirs.user_log_dir(APP_NAME, appauthor=APP_AUTHOR))


def user_documents_dir() -> Path:
    """The default folder for what the user writes on purpose (reports): Documents/allblast."""
    return Path(platformdirs.user_documents_dir()) / APP_NAME


def user_weights_dir() -> Path:
    """Pretrained backbone weights the user downloaded for allblast."""
    return user_data_dir() / "weights"


__all__ = ["APP_AUTHOR", "APP_NAME", "user_cache_dir", "user_data_dir", "user_documents_dir",
           "user_log_dir", "user_weights_dir"]
