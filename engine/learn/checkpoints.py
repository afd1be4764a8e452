"""Reading and writing torch checkpoint files: model.pt, last.pt, ImageNet weights files.

Reading is always `weights_only` (a file from someone else must not be able to run code), and a
file torch cannot load becomes one ValueError line that says what the file is and what to do,
never torch's advice to load it unsafely with `weights_only=False`. A file of a newer format
version says it comes from a newer allblast.

Writing is atomic (engine.utils.files) and goes through a Python file object, so that a full disk
is the OSError (ENOSPC) it is: given a path, torch's own writer reports it as
"[enforce fail at inline_container.cc:672] . unexpected pos ...", which names no cause.

torch is imported by the functions only: the app lists runs without it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..utils.files import atomic_path

MODEL_FILE = "model file"
CHOOSE_MODEL = "choose the model.pt of an allblast run folder"


def load_checkpoint(path: str | os.PathLike, *, what: str = MODEL_FILE, choose: str = CHOOSE_MODEL) -> Any:
    """The file's contents (tensors, numbers, strings, containers). Raises ValueError with one
    line for a file that is no checkpoint or holds anything else; OSError and MemoryError as
    they are (missing, unreadable, too large: those say what they are)."""
    import torch

    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a file that is no checkpoint
        raise ValueError(not_loadable(path, exc, what, choose)) from exc


def not_loadable(path: Path, exc: BaseException, what: str = MODEL_FILE, choose: str = CHOOSE_MODEL) -> str:
    """One line for a file torch cannot load: what it is, what to do."""
    if "weights_only" in str(exc) or "Weights only load failed" in str(exc):
        return (f"{path} is not an allblast {what} (it holds Python objects, which are not loaded because "
                f"that could run code); {choose}")
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        head = b""
    if head.startswith(b"PK"):  # a zip archive, as torch.save writes: cut short or damaged
        return f"{path} is a damaged or truncated {what} (it cannot be read); copy it again or {choose}"
    return f"{path} is not an allblast {what} (not a PyTorch checkpoint); {choose}"


def check_format(found: Any, expected: str, path: str | os.PathLike, what: str = MODEL_FILE,
                 choose: str = CHOOSE_MODEL) -> None:
    """`expected` is "family/N" (allblast.model/1): a file of the same family and a higher N was
    written by a newer allblast, and is said to be; anything else is not such a file."""
    if found == expected:
        return
    family, _, version = expected.rpartition("/")
    if isinstance(found, str) and found.startswith(family + "/"):
        newer = found[len(family) + 1:]
        if newer.isdigit() and int(newer) > int(version):
            raise ValueError(f"{path} was written by a newer allblast ({what} format {found}; this version reads "
                             f"{expected}): update allblast to use it")
    raise ValueError(f"{path} is not an allblast {what} (format {expected}); {choose}")


def save_checkpoint(obj: Any, path: str | os.PathLike) -> None:
    """torch.save, atomically: a reader (or a crash) sees the old file or the new one."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)


__all__ = ["CHOOSE_MODEL", "MODEL_FILE", "check_format", "load_checkpoint", "not_loadable", "save_checkpoint"]
