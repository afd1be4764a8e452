"""Label files: the C-NMC labels CSV and a generic `path,label[,patient]` CSV.

Reading a label file never fails on one bad row: rows with unknown labels carry a `problem`, and
rows naming images that are not on disk are reported as missing by the scan. A file that is not a
label file at all (wrong columns, not text) raises `LabelFileError` with what was expected.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .patients import cnmc_patient
from ..utils.csvsafe import unneutralise

CNMC_COLUMNS = ("Patient_ID", "new_names", "labels")
CNMC_CLASSES = {"1": "all", "0": "hem"}  # the C-NMC labels code -> class
CNMC_CODES = {label: code for code, label in CNMC_CLASSES.items()}
_PATH_COLUMNS = ("path", "file", "filename", "image", "name")
_MAX_SEARCH_DEPTH = 3


class LabelFileError(ValueError):
    """The file is not a usable label CSV; the message says what was expected."""


@dataclass(frozen=True, slots=True)
class LabelRow:
    path: str  # as written in the file
    label: str | None
    patient: str | None = None
    original: str | None = None  # C-NMC: the original file name (carries the patient)
    problem: str | None = None


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
        cleaned = row_path.strip().replace("\\", "/").removeprefix("./")
        if not cleaned:
            return None
        base = self.base
        if self.kind == "generic":
            candidates = [cleaned]
            if base not in (None, "."):
                candidates.append(f"{base}/{cleaned}")
            for cand in candidates:
                if cand in present:
                    return cand
            absolute = Path(row_path)
            if absolute.is_absolute():
                try:
                    rel = absolute.resolve().relative_to(self.root).as_posix()
                    return rel if rel in present else None
                except ValueError:
                    return None
        # C-NMC names a file beside the CSV; a generic row may give just a unique file name.
        rel = by_name.get(PurePosixPath(cleaned).name)
        if rel is None:
            return None
        if self.kind == "cnmc" and base not in (None, ".") and not rel.startswith(base + "/"):
            return None
        return rel

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


def _read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
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
            header = next(reader, None)
            # our own exports neutralise spreadsheet formulas ('=...); read them back as written
            rows = [[unneutralise(cell) for cell in r] for r in reader if any(cell.strip() for cell in r)]
    except UnicodeDecodeError as exc:
        raise LabelFileError(f"{path} is not a text CSV file ({exc.reason})") from exc
    except OSError as exc:
        raise LabelFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not header:
        raise LabelFileError(f"{path} is empty: expected a header row")
    return [h.strip() for h in header], rows


def read_label_file(path: Path, root: Path) -> LabelFile:
    """Read a C-NMC (`Patient_ID,new_names,labels`) or generic (`path,label[,patient]`) CSV."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise LabelFileError(f"label file {path} does not exist")
    header, rows = _read_rows(path)
    lower = [h.lower() for h in header]
    if tuple(lower[:3]) == tuple(c.lower() for c in CNMC_COLUMNS):
        return LabelFile(path, "cnmc", [_cnmc_row(r, path) for r in rows], root)
    path_col = next((lower.index(c) for c in _PATH_COLUMNS if c in lower), None)
    if path_col is None or "label" not in lower:
        raise LabelFileError(
            f"{path.name} has columns {','.join(header)}; expected the C-NMC form "
            f"'{','.join(CNMC_COLUMNS)}' (1 = all, 0 = hem) or a generic 'path,label[,patient]' CSV"
        )
    label_col = lower.index("label")
    patient_col = lower.index("patient") if "patient" in lower else None
    out = [LabelRow(_cell(r, path_col), _cell(r, label_col) or None, _cell(r, patient_col) or None) for r in rows]
    return LabelFile(path, "generic", out, root)


def _cell(row: list[str], col: int | None) -> str:
    return row[col].strip() if col is not None and col < len(row) else ""


def _cnmc_row(r: list[str], path: Path) -> LabelRow:
    original = r[0].strip() if r else ""
    name = r[1].strip() if len(r) > 1 else ""
    raw = r[2].strip() if len(r) > 2 else ""
    label = CNMC_CLASSES.get(raw.split(".")[0] if raw.replace(".", "", 1).isdigit() else raw)
    problem = None
    if label is None:
        problem = f"unknown label {raw!r} in {path.name} (expected 1 = all or 0 = hem)"
    return LabelRow(name, label, cnmc_patient(original), original or None, problem)


def find_cnmc_label_files(root: Path) -> list[LabelFile]:
    """C-NMC labels CSVs inside the data folder (a few levels deep), found by their header."""
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
                except LabelFileError:
                    continue
    return found
