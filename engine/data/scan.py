"""The scan of a folder of cell images.

A scan walks any folder tree, decides each image's label (class folder, C-NMC labels CSV, generic
CSV, or none) and patient id, checks that every file decodes, and reports bad input instead of
failing on it. Files are only read. The expensive part (decoding every file) can be skipped for
files whose size and mtime match a previous scan's `FileCheck`, which is how the label store's
index makes reopening a large folder fast.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .cells import Cell, FileCheck, Problem, ScanResult, parse_label
from .imaging import UNEXPECTED, ImageReadError, depends_on_environment, read_rgb_checked
from .labelfiles import LabelFile, find_cnmc_label_files, read_label_file
from .patients import cnmc_class, compile_patient_regex, fold_of, patient_for
from .walk import walk_images

log = logging.getLogger(__name__)


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
    prefer: Iterable[str] = (),
) -> ScanResult:
    """Scan a folder of cell images; bad files are reported in `problems`, never raised.

    `labels` names a C-NMC or generic labels CSV (a malformed one raises LabelFileError: the
    user asked for it explicitly). C-NMC labels CSVs inside the tree are found and applied too.
    `max_pixels` refuses larger images unread (None: ALLBLAST_MAX_PIXELS or the default; 0: no
    limit). Checks in `known` are reused for unchanged files, except failures that depend on the
    environment (see `imaging.depends_on_environment`), which are checked again.
    Of files with the same content one is a cell and the others are listed as its duplicates: the
    first of `prefer` (the established cells, e.g. the labelled ones), else the first by path, so a
    copy that appears later never takes a labelled cell's place.
    Folder names and CSV labels that are reserved words mean unsure or unlabeled (`parse_label`).
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
                csv_rows[rel] = (parse_label(row.label), row.patient, row.original, lf.kind)
    governed = {d for lf in label_files for d in lf.governed_dirs(present)}
    class_dirs = class_folders(present) if folder_labels else set()

    cells: list[Cell] = []
    keepers = _keepers(files, checks, prefer)
    duplicates: dict[str, str] = {}
    reserved: dict[str, int] = {}  # class folders named like a reserved word -> cells in them
    for rel, size, mtime_ns in files:
        check = checks[rel]
        if check.problem:
            problems.append(Problem(rel, check.problem))
            continue
        if check.digest and (kept := keepers[check.digest]) != rel:
            duplicates[rel] = kept
            problems.append(Problem(rel, f"duplicate content of {kept} (skipped)"))
            continue
        parent = rel.rpartition("/")[0]
        is_class_dir = parent in class_dirs and parent not in governed
        label, patient, source = None, None, "none"
        if rel in csv_rows:
            label, patient, original, kind = csv_rows[rel]
            source = "cnmc-csv" if kind == "cnmc" else "csv"
            patient = patient or patient_for(rel, class_level=is_class_dir, pattern=pattern, original_name=original)
        else:
            if is_class_dir:
                label, source = parse_label(parent.rpartition("/")[2]), "folder"
                if label is None:
                    reserved[parent] = reserved.get(parent, 0) + 1
            elif parent not in governed and (cls := cnmc_class(rel)) is not None:
                label, source = cls, "folder"  # C-NMC names end in the class, even when moved
            patient = patient_for(rel, class_level=is_class_dir, pattern=pattern)
        cells.append(Cell(rel, label, patient, source, fold_of(rel), size, mtime_ns, check.width, check.height))

    result = ScanResult(root, cells, problems, missing, checks, [str(lf.path) for lf in label_files],
                        duplicates=duplicates,
                        options=dict(labels=labels, patient_regex=patient_regex, folder_labels=folder_labels,
                                     verify=verify, max_pixels=max_pixels))
    if reserved:
        where = ", ".join(f"{d}/ ({n})" for d, n in sorted(reserved.items()))
        result.notes.append(
            f"Folders named like a reserved word are not classes: their cells are unlabeled ({where}); "
            "'none' and 'unlabeled' mean no label in allblast. Rename such a folder to make it a class.")
    no_pid = sum(1 for c in cells if c.patient is None)
    if no_pid:
        result.notes.append(
            f"No patient id could be found for {no_pid} of {len(cells)} cells: each such image is its "
            "own group, so splits cannot be made by patient for them (accuracy may be optimistic)."
        )
    return result


def rescan(result: ScanResult, prefer: Iterable[str]) -> ScanResult:
    """`result` scanned again with other preferred duplicates (unchanged files are not decoded)."""
    return scan(result.root, known=result.checks, prefer=prefer, **result.options)


def _keepers(files, checks: Mapping[str, FileCheck], prefer: Iterable[str]) -> dict[str, str]:
    """Content digest -> the file kept as the cell: the first of `prefer`, else the first by path."""
    rank = {p: i for i, p in enumerate(prefer)}
    last = len(rank)
    keep: dict[str, str] = {}
    for rel, _, _ in files:
        digest = checks[rel].digest
        if digest and not checks[rel].problem:
            kept = keep.get(digest)
            if kept is None or rank.get(rel, last) < rank.get(kept, last):
                keep[digest] = rel
    return keep


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
