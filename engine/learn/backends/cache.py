"""Where a model's exported and compiled forms are kept: beside the model file, in
`.allblast-inference/<file>-<sha256[:16]>/`, so the first prediction pays for export and compilation
once and every later one reuses them.

A model file that changes gets a new sha256, hence a new entry; the entries of its older versions
are removed when the new one is made. A folder that is not writable, or one inside the data being
predicted (the user's images get nothing written beside them), sends the cache to the user cache
folder instead, keyed by sha256 alone.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from ...utils.files import folder_writable
from ...utils.places import user_cache_dir

log = logging.getLogger(__name__)

CACHE_FOLDER = ".allblast-inference"


def user_cache_root() -> Path:
    return user_cache_dir() / "inference"


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def cache_entry(model_path: str | os.PathLike, sha256: str, *, data_root: str | os.PathLike | None = None) -> Path:
    """The (created) folder for this model version's exported and compiled files."""
    model_path = Path(model_path)
    beside = model_path.parent / CACHE_FOLDER
    in_data = data_root is not None and _inside(model_path.parent, Path(data_root))
    if not in_data and folder_writable(beside, create=True):
        entry = beside / f"{model_path.name}-{sha256[:16]}"
        _remove_older_versions(beside, model_path.name, entry)
    else:
        log.info("inference cache for %s in the user cache (%s)", model_path,
                 "the model is inside the data folder" if in_data else "its folder is not writable")
        entry = user_cache_root() / sha256[:32]
    entry.mkdir(parents=True, exist_ok=True)
    return entry


def _remove_older_versions(beside: Path, file_name: str, keep: Path) -> None:
    """Entries of earlier versions of the same model file: never used again."""
    for old in beside.iterdir():  # not glob: a file name may hold [ ] * ?
        if old != keep and old.name.startswith(f"{file_name}-") and old.is_dir() and len(old.name) == len(keep.name):
            log.info("removing the inference cache of an earlier version of %s: %s", file_name, old)
            shutil.rmtree(old, ignore_errors=True)


__all__ = ["CACHE_FOLDER", "cache_entry", "user_cache_root"]
