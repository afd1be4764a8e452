"""What a writer may replace. Every command and window that writes a file asks here first.

Never the label database (or anything else inside a `.allblast/` folder: the database, its WAL,
the runs' bookkeeping), never an existing image; any other existing file only when the user said
so (`--force` on the command line, the save dialog's own confirmation in the app). The writes
themselves stay atomic (engine.utils.files).
"""
from __future__ import annotations

import os
from pathlib import Path

from ..data.imaging import IMAGE_EXTENSIONS
from .location import BESIDE_DIR, DB_NAME


class OutputRefused(ValueError):
    """Writing there would destroy data; the message says where to write instead."""


def check_output(path: str | os.PathLike, *, force: bool = False, what: str = "output",
                 folder: bool = False) -> Path:
    """The resolved `path`, or OutputRefused when writing it could destroy an expert's work.
    `folder`: `path` is a folder to write files into (a training run): never a folder of images."""
    p = Path(path).expanduser()
    resolved = p.resolve()
    if BESIDE_DIR in resolved.parts or resolved.name.startswith(DB_NAME):
        raise OutputRefused(f"refusing to write the {what} to {p}: that is allblast's label database or its "
                            f"folder ({BESIDE_DIR}/); choose a {'folder' if folder else 'file'} elsewhere")
    if folder:
        if resolved.is_dir() and any(f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file() for f in resolved.iterdir()):
            raise OutputRefused(f"refusing to write the {what} into {p}: it holds cell images, and outputs never go "
                                "among them; choose another folder")
        return resolved
    if resolved.is_dir():
        raise OutputRefused(f"{p} is a folder: give a file name for the {what}")
    if resolved.exists():
        if resolved.suffix.lower() in IMAGE_EXTENSIONS:
            raise OutputRefused(f"refusing to write the {what} over the image {p}: images are never modified; "
                                "choose another file name")
        if not force:
            raise OutputRefused(f"{p} exists; choose another file name, or add --force to replace it")
    return resolved


__all__ = ["OutputRefused", "check_output"]
