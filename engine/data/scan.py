"""The scan of a folder of cell images.

A scan walks any folder tree, decides each image's label (class folder, C-NMC labels CSV, generic
CSV, or none) and patient id, checks that every file decodes, and reports bad input instead of
failing on it. Files are only read. The expensive part (decoding every file) can be skipped for
files whose size and mtime match a previous scan's `FileCheck`, which is how the label store's
index makes reopening a large folder fast.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .cells import Cell, FileCheck, Problem, ScanResult
from .imaging import UNEXPECTED, ImageReadError, depends_on_environment, is_image_name, read_rgb_checked
from .labelfiles import LabelFile, find_cnmc_label_files, read_label_file
from .patients import cnmc_class, compile_patient_regex, fold_of, patient_for

log = logging.getLogger(__name__)

# Folders the scan never enters: our own store, hidden folders, OS clutter.
_SKIP_DIRS = re.compile(r"^(\..*|__MACOSX|\$RECYCLE\.BIN|System Volume Information)$")


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


def class_folders(relpaths: Iterable[str]) -> set[str]:
    """Folders (relative) whose name is the class of the images directly inside them.

    A folder is a class folder when its parent holds two or more folders that contain images
    (C-NMC `fold_0/{all,hem}`, PBC's eight classes, `<slide>/<class>/`); a lone folder of images is
    a slide or an unlabeled batch, not a class.
    """
    image_dirs = {p.rpartition("/")[0] for p in relpaths}
    image_dirs.discard("")
    siblings: dict[str, set[str]] = {}
    for d in image_dirs:
        siblings.setdefault(d.rpartition("/")[0], set()).add(d)
    return {d for group in siblings.values() if len(group) >= 2 for d in group}


def _check_file(root: Path, rel: str, size: int, mtime_ns: int, max_pixels: int | None) -> FileCheck:
    try:
        img, digest = read_rgb_checked(root / rel, max_pixels=max_pixels)
    except ImageReadError as exc:
        return FileCheck(size, mtime_ns, None, str(exc))
    except Exception as exc:  # a decoder bug must not end the scan of 15,000 files
        log.exception("decoding %s failed unexpectedly", rel)
        return FileCheck(size, mtime_ns, None, f"{UNEXPECTED}: {exc!r}")
    return FileCheck(size, mtime_ns, digest, None, img.shape[1], img.shape[0])


def _reusable(prev: FileCheck | None, size: int, mtime_ns: int) -> bool:
    """A previous check still holds when the file is unchanged, unless it failed for a reason
    outside the file (permissions, memory, the pixel limit): those are checked again."""
    return (prev is not None and prev.size == size and prev.mtime_ns == mtime_ns
            and not (prev.problem and depends_on_environment(prev.problem)))


def scan(
    root: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    *,
    patient_regex: str | None = None,
    folder_labels: bool = True,
    known: Mapping[str, FileCheck] | None = None,
    verify: bool = True,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    max_pixels: int | None = None,
) -> ScanResult:
    """Scan a folder of cell images; bad files are reported in `problems`, never raised.

    `labels` names a C-NMC or generic labels CSV (a malformed one raises LabelFileError: the
    user asked for it explicitly). C-NMC labels CSVs inside the tree are found and applied too.
    `max_pixels` refuses larger images unread (None: ALLBLAST_MAX_PIXELS or the default; 0: no
    limit). Checks in `known` are reused for unchanged files, except failures that depend on the
    environment (see `imaging.depends_on_environment`), which are checked again.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder (or cannot be opened)")
    pattern = compile_patient_regex(patient_regex)
    problems: list[Problem] = []
    files = walk_images(root, problems)
    label_files: list[LabelFile] = find_cnmc_label_files(root)
    if labels is not None:
        explicit = read_label_file(Path(labels), root)
        label_files = [lf for lf in label_files if lf.path != explicit.path] + [explicit]

    checks = _verify(root, files, known, verify, workers, progress, max_pixels)
    present = {rel for rel, _, _ in files}
    by_name = _unique_names(present)
    csv_rows: dict[str, tuple[str | None, str | None, str | None, str]] = {}
    missing: list[str] = []
    for lf in label_files:
        for row in lf.rows:
            rel = lf.resolve(row.path, present, by_name)
            if rel is None:
                missing.append(row.path if lf.kind == "generic" else lf.display(row.path))
            elif row.problem:
                problems.append(Problem(rel, row.problem))
            else:
                csv_rows[rel] = (row.label, row.patient, row.original, lf.kind)
    governed = {d for lf in label_files for d in lf.governed_dirs(present)}
    class_dirs = class_folders(present) if folder_labels else set()

    cells: list[Cell] = []
    seen_digest: dict[str, str] = {}
    duplicates: dict[str, str] = {}
    for rel, size, mtime_ns in files:
        check = checks[rel]
        if check.problem:
            problems.append(Problem(rel, check.problem))
            continue
        if check.digest in seen_digest:
            duplicates[rel] = seen_digest[check.digest]
            problems.append(Problem(rel, f"duplicate content of {seen_digest[check.digest]} (skipped)"))
            continue
        if check.digest:
            seen_digest[check.digest] = rel
        parent = rel.rpartition("/")[0]
        is_class_dir = parent in class_dirs and parent not in governed
        label, patient, source = None, None, "none"
        if rel in csv_rows:
            label, patient, original, kind = csv_rows[rel]
            source = "cnmc-csv" if kind == "cnmc" else "csv"
            patient = patient or patient_for(rel, class_level=is_class_dir, pattern=pattern, original_name=original)
        else:
            if is_class_dir:
                label, source = parent.rpartition("/")[2], "folder"
            elif parent not in governed and (cls := cnmc_class(rel)) is not None:
                label, source = cls, "folder"  # C-NMC names end in the class, even when moved
            patient = patient_for(rel, class_level=is_class_dir, pattern=pattern)
        cells.append(Cell(rel, label, patient, source, fold_of(rel), size, mtime_ns, check.width, check.height))

    result = ScanResult(root, cells, problems, missing, checks, [str(lf.path) for lf in label_files],
                        duplicates=duplicates)
    no_pid = sum(1 for c in cells if c.patient is None)
    if no_pid:
        result.notes.append(
            f"No patient id could be found for {no_pid} of {len(cells)} cells: each such image is its "
            "own group, so splits cannot be made by patient for them (accuracy may be optimistic)."
        )
    return result


def _unique_names(present: set[str]) -> dict[str, str | None]:
    """File name -> relative path, or None when the name occurs more than once."""
    out: dict[str, str | None] = {}
    for rel in present:
        name = rel.rpartition("/")[2]
        out[name] = None if name in out else rel
    return out


def _verify(root, files, known, verify, workers, progress, max_pixels) -> dict[str, FileCheck]:
    checks: dict[str, FileCheck] = {}
    todo = []
    for rel, size, mtime_ns in files:
        prev = known.get(rel) if known else None
        if _reusable(prev, size, mtime_ns):
            checks[rel] = prev
        elif not verify:
            checks[rel] = FileCheck(size, mtime_ns, None, None if size else "empty file (0 bytes)")
        else:
            todo.append((rel, size, mtime_ns))
    total, done = len(files), len(checks)
    if progress:
        progress(done, total)
    if todo:
        # OpenCV releases the GIL while decoding, so threads use every core.
        with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 2) + 1)) as pool:
            for (rel, _, _), check in zip(todo, pool.map(lambda t: _check_file(root, *t, max_pixels), todo)):
                checks[rel] = check
                done += 1
                if progress and (done % 64 == 0 or done == total):
                    progress(done, total)
    return checks
