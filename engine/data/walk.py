"""The walk of a folder tree: every image file under it, symlinked folders followed once.

Files with an image extension the decoder reads are found; image formats it does not read are
listed as problems (never skipped in silence), and so are link loops and dangling links. Nothing is
opened or decoded here (`engine.data.scan` does that).
"""
from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

from .cells import Problem
from .imaging import IMAGE_EXTENSIONS, is_image_name


# Folders the scan never enters: our own store, hidden folders, OS clutter.
_SKIP_DIRS = re.compile(r"^(\..*|__MACOSX|\$RECYCLE\.BIN|System Volume Information)$")
# Image formats a cell may come in that the decoder does not read: listed as problems, never
# skipped in silence.
UNSUPPORTED_EXTENSIONS = frozenset({".gif", ".webp", ".jfif", ".jpe", ".heic", ".heif", ".avif", ".jp2", ".jxl"})
_READS = ", ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))


def unsupported_image(name: str) -> str | None:
    """The reason a file named `name` is an image this scan cannot read, or None."""
    dot = name.rfind(".")
    ext = name[dot:].lower() if dot > 0 else ""
    if ext not in UNSUPPORTED_EXTENSIONS:
        return None
    return f"unsupported image format {ext} (skipped); allblast reads {_READS}: convert it to one of those (e.g. png)"


def walk_images(root: Path, problems: list[Problem] | None = None) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime_ns) of every file with an image extension, sorted.

    Symlinked folders are followed and their cells are named through the link. Each real folder is
    walked once: plain folders first, then links in path order, so a link never displaces the
    folder itself. Links that loop, point to a folder already walked, or dangle are appended to
    `problems` (if given) and not followed.

    Plain strings rather than Path objects: a 15,000-file reopen is dominated by path handling.
    """
    root_real = os.path.realpath(root)
    walk = _Walk(root_real, problems if problems is not None else [])
    stack = [(str(root), "", root_real)]
    while stack or walk.links:
        if not stack:
            stack.extend(walk.follow_next_link())
            continue
        folder, prefix, real = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue  # an unreadable sub-folder; its files are simply not visible
        for entry in entries:
            stack.extend(walk.visit(entry, prefix + entry.name, real))
    walk.found.sort()
    return walk.found


class _Walk:
    """The state of one `walk_images`: what was found, which real folders were walked, the links
    still to follow."""

    def __init__(self, root_real: str, problems: list[Problem]):
        self.root_real = root_real
        self.problems = problems
        self.found: list[tuple[str, int, int]] = []
        self.seen: dict[str, str] = {root_real: ""}  # real folder -> relative path it was walked as
        self.links: list[tuple[str, str, str]] = []  # (rel, path, real parent) of folder links

    def visit(self, entry: os.DirEntry, rel: str, parent_real: str) -> list[tuple[str, str, str]]:
        """Record one directory entry; returns the (path, prefix, real path) of a folder to walk."""
        try:
            if entry.is_dir(follow_symlinks=False):
                real = os.path.join(parent_real, entry.name)
                if _SKIP_DIRS.match(entry.name) or not self._first_visit(real, rel, parent_real):
                    return []
                return [(entry.path, rel + "/", real)]
            if entry.is_symlink():
                if not _SKIP_DIRS.match(entry.name):
                    self._link(entry, rel, parent_real)
            elif is_image_name(entry.name) and entry.is_file():
                st = entry.stat()
                self.found.append((rel, st.st_size, st.st_mtime_ns))
            elif (why := unsupported_image(entry.name)) and entry.is_file():
                self.problems.append(Problem(rel, why))
        except OSError:
            pass  # vanished or unreadable meanwhile: not visible, as an unreadable folder
        return []

    def _link(self, entry: os.DirEntry, rel: str, parent_real: str) -> None:
        try:
            st = os.stat(entry.path)  # follows the link
        except FileNotFoundError:
            self.problems.append(Problem(rel, f"broken link: its target {_link_target(entry.path)} does not exist"))
            return
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                self.problems.append(Problem(rel, "link loop: the chain of links never reaches a file (not followed)"))
            else:
                self.problems.append(Problem(rel, f"link not followed: {exc.strerror or exc}"))
            return
        if stat.S_ISDIR(st.st_mode):
            self.links.append((rel, entry.path, parent_real))
        elif stat.S_ISREG(st.st_mode) and is_image_name(entry.name):
            self.found.append((rel, st.st_size, st.st_mtime_ns))
        elif stat.S_ISREG(st.st_mode) and (why := unsupported_image(entry.name)):
            self.problems.append(Problem(rel, why))

    def follow_next_link(self) -> list[tuple[str, str, str]]:
        """Resolve the first pending folder link (in path order, so results do not depend on
        the order the file system lists entries in); returns it to walk unless it was seen."""
        self.links.sort(reverse=True)
        rel, path, parent_real = self.links.pop()
        real = os.path.realpath(path)
        return [(path, rel + "/", real)] if self._first_visit(real, rel, parent_real) else []

    def _first_visit(self, real: str, rel: str, parent_real: str) -> bool:
        """Register a real folder about to be walked; False (and a problem) when it loops back to
        where it lies, contains the scanned folder, or was walked already under another path."""
        if _within(parent_real, real) or _within(self.root_real, real):
            shown = self.seen.get(real)
            where = f"back to {shown or 'the scanned folder'}" if shown is not None else f"to {real}, which contains it"
            self.problems.append(Problem(rel, f"link loop: points {where} (not followed)"))
            return False
        if real in self.seen:
            self.problems.append(Problem(rel, f"link to a folder already scanned as {self.seen[real]} (not followed)"))
            return False
        self.seen[real] = rel
        return True


def _within(path: str, folder: str) -> bool:
    """`path` is `folder` or lies inside it (both real paths)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _link_target(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "(unreadable)"
