"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half of one."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path in the same folder; on success fsync it and os.replace it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a run folder is shared like any file
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not supported on this platform (Windows)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def folder_writable(path: str | os.PathLike, *, create: bool = False) -> bool:
    """Whether a file can be written in the folder `path`: the one writability probe. Tried, not
    guessed from modes (root ignores permission bits; read-only mounts and ACLs do not show in
    them, so `os.access` is not asked): a temporary file is created and removed.

    Without `create` nothing is left behind: a missing folder is judged by its nearest existing
    parent (could it be created?). With `create` the folder is made first (only for a folder the
    caller writes to anyway)."""
    try:
        _probe(Path(path).expanduser(), create=create)
    except OSError:
        return False
    return True


def check_writable_dir(path: str | os.PathLike) -> Path:
    """Create `path` if needed and prove it is writable (`folder_writable`), or raise with what to do."""
    path = Path(path).expanduser()
    try:
        _probe(path, create=True)
    except OSError as exc:
        raise PermissionError(
            f"cannot write to {path} ({exc.strerror or exc}); choose a folder you can write to"
        ) from exc
    return path


def _probe(folder: Path, *, create: bool) -> None:
    """Write and remove a temporary file in `folder` (or its nearest existing parent); OSError if not."""
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    probe_dir = folder.absolute()
    while not probe_dir.exists():
        if probe_dir.parent == probe_dir:
            raise FileNotFoundError(errno.ENOENT, "no existing parent folder", str(folder))
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(probe_dir))
    fd, name = tempfile.mkstemp(prefix=".allblast-write-test-", dir=probe_dir)
    os.close(fd)
    try:
        os.unlink(name)
    except OSError:
        pass


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_disk_full(exc: BaseException) -> bool:
    """An OS error that says the disk (or the user's quota) is full."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_full_message(path: str | os.PathLike, detail: object) -> str:
    """The one wording of "the disk is full" for the user (label store, exports)."""
    return f"the disk holding {path} is full ({detail}); free some space and try again"
