"""The demo folder a first start opens: a few C-NMC cells shipped with the installer bundle.

The bundle's `demo/` sits in the installation (read-only, or replaced by the next install), so
the window opens the user's own copy of it in the user data folder: labels made on the demo then
go beside that copy, never into the installation.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

from engine.utils.places import user_data_dir

DEMO_ENV = "ALLBLAST_DEMO_DIR"  # a demo folder to use instead of the bundle's (any installation, tests)
log = logging.getLogger(__name__)


def shipped_demo() -> Path | None:
    """The configured demo folder, else the frozen bundle's `demo/` beside the executables."""
    configured = os.environ.get(DEMO_ENV)
    if configured:
        folder = Path(configured).expanduser()
    elif getattr(sys, "frozen", False):
        folder = Path(sys.executable).resolve().parent / "demo"
    else:
        return None
    return folder if folder.is_dir() else None


def demo_copy(source: Path) -> Path:
    """The user's copy of the demo (user data folder/demo), made once; the source is only read."""
    target = user_data_dir() / "demo"
    if target.is_dir():
        return target
    partial = target.with_name("demo.partial")
    shutil.rmtree(partial, ignore_errors=True)  # left by a start that was cut short
    # copy, not copy2 + modes: the shipped files are read-only, the copy must take labels.
    shutil.copytree(source, partial, copy_function=shutil.copyfile)
    partial.rename(target)
    log.info("demo folder copied from %s to %s", source, target)
    return target


def first_run_folder(recent_folders: list[str]) -> Path | None:
    """The folder to open when the window starts with none: the demo, on a first run only (no
    recent folder), where one is shipped or configured."""
    if recent_folders:
        return None
    source = shipped_demo()
    if source is None:
        return None
    try:
        return demo_copy(source)
    except OSError as exc:  # a full or read-only home: start empty rather than not at all
        log.warning("demo folder not opened: cannot copy %s to the user data folder: %s", source, exc)
        return None
