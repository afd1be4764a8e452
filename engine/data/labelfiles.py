"""Label files: the C-NMC labels CSV and a generic `path,label[,patient]` CSV.

Reading a label file never fails on one bad row: rows with unknown labels carry a `problem`, and
rows naming images that are not on disk are reported as missing by the scan. A file that is not a
label file at all (wrong columns, not text, a quote left open, a runaway field) raises
`LabelFileError` with what was expected and the line to look at.

A row's path names one image: relative to the data root or to the CSV's folder, or absolute. A path
that leads outside the data root is missing; only a bare file name (no folder) may be matched by
name, and only when that name is unique in the data set, so no row ever labels a look-alike cell.
"""
from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from .patients import cnmc_patient
from ..utils.csvsafe import unneutralise
from ..utils.logs import warn

CNMC_COLUMNS = ("Patient_ID", "new_names", "labels")
CNMC_CLASSES = {"1": "all", "0": "hem"}  # the C-NMC labels code -> class
CNMC_CODES = {label: code for code, label in CNMC_CLASSES.items()}
_PATH_COLUMNS = ("path", "file", "filename", "image", "name")
_MAX_SEARCH_DEPTH = 3
_LINE_BREAK = re.compile(r"\r\n?|\n")
_SHOWN_CONFLICTS = 3


class LabelFileError(ValueError):
    """The file is not a usable label CSV; the message says what was expected."""


@dataclass(frozen=True, slots=True)
class Conflict:
    """Rows of one label file that give one cell different labels."""

    cell: str  # relative to the data root
    rows: tuple[tuple[int | None, str, str | None], ...]  # (line, path as written, label), in file order

    def describe(self) -> str:
        said = ", ".join(
            f"line {line} " + (repr(label) if label else "no label") + ("" if path == self.cell else f" (as {path})")
            for line, path, label in self.rows
        )
        return f"{self.cell}: {said}"


class LabelConflictError(LabelFileError):
    """The file gives one cell different labels; nothing is imported (the message lists them)."""

    def __init__(self, path: Path, conflicts: list[Conflict]):
        self.path, self.conflicts = path, conflicts
        shown = "; ".join(c.describe() for c in conflicts[:_SHOWN_CONFLICTS])
        more = f"; and {len(conflicts) - _SHOWN_CONFLICTS} more" if len(conflicts) > _SHOWN_CONFLICTS else ""
        super().__init__(f"{path} gives {len(conflicts)} cell(s) different labels ({shown}{more}); "
                         "nothing was imported: keep one row per image and import again")


def find_conflicts(resolved: Iterable[tuple[str, LabelRow, str | None]]) -> list[Conflict]:
    """Cells that rows (cell, row, label as it would be stored) label differently; identical
    duplicate rows are no conflict."""
    by_cell: dict[str, list[tuple[LabelRow, str | None]]] = {}
    for cell, row, label in resolved:
        by_cell.setdefault(cell, []).append((row, label))
    return [
        Conflict(cell, tuple((row.line, row.path, label) for row, label in rows))
        for cell, rows in by_cell.items()
        if len({label for _, label in rows}) > 1
    ]


@dataclass(frozen=True, slots=True)
class LabelRow:
    path: str  # as written in the file
    label: str | None
    patient: str | None = None
    original: str | None = None  # C-NMC: the original file name (carries the patient)
    problem: str | None = None
    line: int | None = None  # where the row starts in the file (1 = the header)


@dataclass
class LabelFile:
    path: Path
    kind: str  # "cnmc" | "generic"
    rows: list[LabelRow]
    root: Path

    @property
    def base(self) -> str | None:
        """The CSV's folder relative to the data root, or None when it lies outside."""
        try:
            rel = self.path.parent.resolve().relative_to(self.root)
        except ValueError:
            return None
        return rel.as_posix()

    def resolve(self, row_path: str, present: set[str], by_name: dict[str, str | None]) -> str | None:
        """Relative path of the image a row names, or None when it is not on disk."""
        cleaned = row_path.replace("\\", "/")  # stripped when read (`_cell`): what is left is the name
        if not cleaned.strip():
            return None
        for cand in self._candidates(cleaned):
            if cand in present:
                return cand
        name = cleaned.removeprefix("./")
        if "/" in name:
            # A row that names a folder means that folder: matching it by file name would label
            # another cell that merely shares the name (../other_set/neutrophil/BA_1.jpg).
            return None
        # C-NMC names a file beside the CSV; a generic row may give just a unique file name.
        rel = by_name.get(name)
        if rel is None:
            return None
        base = self.base
        if self.kind == "cnmc" and base not in (None, ".") and not rel.startswith(base + "/"):
            return None
        return rel

    def _candidates(self, cleaned: str) -> list[str]:
        """Where a row's path points, relative to the data root; places outside the root are left out.

        Generic rows are read relative to the data root, then to the CSV's folder; C-NMC rows name
        files beside the CSV.
        """
        path = Path(cleaned)
        if path.is_absolute():
            starts = [path, _resolved(path)]  # resolved too: the root may be reached through a link
        elif self.kind == "generic":
            starts = [self.root / path, self.path.parent / path]
        else:
            starts = [self.path.parent / path]
        return [rel for p in starts if p is not None and (rel := _inside(p, self.root)) is not None]

    def governed_dirs(self, present: set[str]) -> set[str]:
        """Folders whose images take their labels from this file rather than the folder name."""
        if self.kind != "cnmc":
            return set()
        names = {r.path.replace("\\", "/").rpartition("/")[2] for r in self.rows}
        base = self.base
        return {
            p.rpartition("/")[0]
            for p in present
            if p.rpartition("/")[2] in names and (base in (None, ".") or p.startswith(base + "/"))
        }

    def display(self, row_path: str) -> str:
        base = self.base
        return row_path if base in (None, ".") else f"{base}/{row_path}"


def _inside(path: Path, root: Path) -> str | None:
    """`path`, with `..` worked out, relative to `root`; None when it leads outside the root."""
    try:
        rel = Path(os.path.normpath(path)).relative_to(root).as_posix()
    except ValueError:
        return None
    return None if rel == "." else rel


def _resolved(path: Path) -> Path | None:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a link loop or an unreadable folder: the path finds nothing
        return None


class _Table(NamedTuple):
    header: list[str]
    rows: list[tuple[int, list[str]]]  # (line where the row starts, cells), blank rows left out
    delimiter: str


def _read_rows(path: Path) -> _Table:
    start = 1  # the line the record being read starts on: where a runaway quote opened
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            sample = fh.read(4096)
            fh.seek(0)
            try:
                delimiter = csv.Sniffer().sniff(sample, delimiters=",;\t").delimiter
            except csv.Error:
                delimiter = ","
            # Only the delimiter is sniffed: a sniffed quote character mistakes the ' that marks a
            # neutralised formula ('=...) for quoting, and reads a whole row as one cell.
            reader = csv.reader(fh, delimiter=delimiter)
            header, rows = None, []
            for cells in reader:
                if header is None:
                    header = cells
                elif any(cell.strip() for cell in cells):
                    rows.append((start, cells))  # neutralised cells ('=...) are read back by `_cell`
                start = reader.line_num + 1
    except UnicodeDecodeError as exc:
        raise LabelFileError(f"{path} is not a text CSV file ({exc.reason})") from exc
    except OSError as exc:
        raise LabelFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except csv.Error as exc:
        raise LabelFileError(_csv_error(path, start, exc)) from exc
    if not header:
        raise LabelFileError(f"{path} is empty: expected a header row")
    if any(_LINE_BREAK.search(h) for h in header):
        raise LabelFileError(_open_quote(path, 1))
    return _Table([h.strip() for h in header], rows, delimiter)


def _csv_error(path: Path, line: int, exc: csv.Error) -> str:
    if "field larger than field limit" in str(exc):
        # No label file holds a value this long: it is nearly always a quote that never closes.
        return (f"{path}, line {line}: a value longer than {csv.field_size_limit():,} characters starts "
                'there (a quote (") left open?); fix that line and try again')
    return f"{path}, line {line}: not a readable CSV ({exc}); fix that line and try again"


def _open_quote(path: Path, line: int) -> str:
    return (f'{path}, line {line}: a quote (") opens there and never closes, so the rest of the file '
            "reads as one value; close or remove it and try again")


def _check_quotes(path: Path, table: _Table, columns: list[int]) -> None:
    """Refuse a file in which a quote opens and never closes: the csv module then reads the rest
    of the file as one value, which would otherwise show up only as one odd missing path."""
    needed = max(columns) + 1
    for line, cells in table.rows:
        for col in columns:
            if col < len(cells) and _LINE_BREAK.search(cells[col]):
                opened = line + sum(len(_LINE_BREAK.findall(c)) for c in cells[:col])
                raise LabelFileError(_open_quote(path, opened))
        # The same at the end of the file: the open quote swallowed only the rest of its own row.
        if len(cells) < needed and any(table.delimiter in cells[c] for c in columns if c < len(cells)):
            raise LabelFileError(f'{path}, line {line}: the row is one value holding "{table.delimiter}" '
                                 '(a quote (") left open?); close or remove it and try again')


def read_label_file(path: Path, root: Path) -> LabelFile:
    """Read a C-NMC (`Patient_ID,new_names,labels`) or generic (`path,label[,patient]`) CSV."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise LabelFileError(f"label file {path} does not exist")
    table = _read_rows(path)
    header = table.header
    lower = [h.lower() for h in header]
    if tuple(lower[:3]) == tuple(c.lower() for c in CNMC_COLUMNS):
        _check_quotes(path, table, [0, 1, 2])
        return LabelFile(path, "cnmc", [_cnmc_row(r, path, line) for line, r in table.rows], root)
    path_col = next((lower.index(c) for c in _PATH_COLUMNS if c in lower), None)
    if path_col is None or "label" not in lower:
        raise LabelFileError(
            f"{path.name} has columns {','.join(header)}; expected the C-NMC form "
            f"'{','.join(CNMC_COLUMNS)}' (1 = all, 0 = hem) or a generic 'path,label[,patient]' CSV"
        )
    label_col = lower.index("label")
    patient_col = lower.index("patient") if "patient" in lower else None
    # the patient column is optional per row: only the path and the label must be there
    _check_quotes(path, table, [path_col, label_col])
    out = [
        LabelRow(_cell(r, path_col), _cell(r, label_col) or None, _cell(r, patient_col) or None, line=line)
        for line, r in table.rows
    ]
    return LabelFile(path, "generic", out, root)


def _cell(row: list[str], col: int | None) -> str:
    """A value as written: white space stripped, then our exports' spreadsheet-safe `'` removed
    (in that order, so a name that starts with a tab or a space keeps it)."""
    return unneutralise(row[col].strip()) if col is not None and col < len(row) else ""


def _cnmc_row(r: list[str], path: Path, line: int) -> LabelRow:
    original, name, raw = _cell(r, 0), _cell(r, 1), _cell(r, 2)
    label = CNMC_CLASSES.get(raw.split(".")[0] if raw.replace(".", "", 1).isdigit() else raw)
    problem = None
    if label is None:
        problem = f"unknown label {raw!r} in {path.name} (expected 1 = all or 0 = hem)"
    return LabelRow(name, label, cnmc_patient(original), original or None, problem, line)


def find_cnmc_label_files(root: Path, *, warn_unusable: bool = True) -> list[LabelFile]:
    """C-NMC labels CSVs inside the data folder (a few levels deep), found by their header.
    `warn_unusable=False`: a file that cannot be read is left out silently (the scan said so)."""
    found = []
    root_depth = len(root.parts)
    for folder, dirs, files in os.walk(root):
        depth = len(Path(folder).parts) - root_depth
        dirs[:] = [d for d in dirs if not d.startswith(".")] if depth < _MAX_SEARCH_DEPTH else []
        for name in sorted(files):
            if not name.lower().endswith(".csv"):
                continue
            try:
                with open(Path(folder) / name, encoding="utf-8-sig", errors="replace") as fh:
                    first = fh.readline()
            except OSError:
                continue
            if [h.strip().lower() for h in first.split(",")][:3] == [c.lower() for c in CNMC_COLUMNS]:
                try:
                    found.append(read_label_file(Path(folder) / name, root))
                except LabelFileError as exc:
                    # found, not asked for: the scan goes on, but the expert must hear it was not used
                    if warn_unusable:
                        warn(f"labels file not used: {exc}")
    return found
