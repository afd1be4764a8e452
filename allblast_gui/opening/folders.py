"""Folders that deserve a question before they are indexed: a system or home folder, or one of more
than LARGE_FOLDER files (indexing decodes every image once: minutes to hours). The check is cheap:
counting stops one past the limit."""
from __future__ import annotations

import os
import sys
from pathlib import Path

LARGE_FOLDER = 20_000  # files: more than this and the window asks before indexing


def _system_folders() -> set[Path]:
    """Folders that hold a system or a user's whole home, never a data set of cells."""
    names = ["/", "/usr", "/etc", "/bin", "/sbin", "/lib", "/var", "/opt", "/proc", "/sys", "/dev", "/boot",
             "/home", "/Users", "/System", "/Library", "/Applications", "/Volumes", "/private", "/tmp"]
    if sys.platform == "win32":
        drive = os.environ.get("SystemDrive", "C:") + "\\"
        names += [drive, os.environ.get("SystemRoot", drive + "Windows"), drive + "Program Files",
                  drive + "Program Files (x86)", drive + "ProgramData", drive + "Users"]
    out = set()
    for name in [*names, str(Path.home())]:
        try:
            out.add(Path(name).resolve())
        except OSError:
            pass
    return out


def count_files(root: Path, limit: int | None = None) -> int:
    """Files under `root` (hidden folders and links to folders skipped), counting stops above `limit`."""
    limit = LARGE_FOLDER if limit is None else limit
    count, todo = 0, [root]
    while todo and count <= limit:
        try:
            with os.scandir(todo.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            if not entry.name.startswith("."):
                                todo.append(entry.path)
                        else:
                            count += 1
                    except OSError:
                        continue
                    if count > limit:
                        break
        except OSError:
            continue
    return count


def folder_concern(root: Path, limit: int | None = None) -> str | None:
    """Why opening `root` deserves a question first (a system or home folder, more than `limit`
    files), or None. Cheap: the count stops at the limit."""
    limit = LARGE_FOLDER if limit is None else limit
    try:
        resolved = Path(root).expanduser().resolve()
    except OSError:
        return None
    if resolved in _system_folders() or resolved.parent == resolved:
        return (f"{resolved} looks like a system or home folder, not a folder of cell images. Indexing it "
                "reads every image file below it and can take very long.")
    if count_files(resolved, limit) > limit:
        return (f"{resolved} holds more than {limit:,} files. Indexing reads every image once and can take "
                "a long time.")
    return None
