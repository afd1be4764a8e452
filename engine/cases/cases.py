"""Which cells form a case: one patient's (C-NMC names, `--patient-regex`, a slide folder), or,
where the cells carry no patient id, the whole folder or a chosen sub-folder.

A case is named by a key (engine.labels.signed: `patient:<id>`, `folder:`, `folder:<sub-folder>`)
and holds the present cells it names. `list_cases` gives the panel's cases; `resolve_case` reads
what a user typed (a patient id, `.`, a sub-folder, or a key).
"""
from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..labels.signed import FOLDER, PATIENT, case_title
from ..utils.natsort import natural_key

NO_PATIENT = PATIENT  # the key of the cells without a patient id where others have one


@dataclass(frozen=True)
class Case:
    key: str
    paths: tuple[str, ...]  # its present cells, in natural order

    @property
    def title(self) -> str:
        return "cells without a patient id" if self.key == NO_PATIENT else case_title(self.key)

    @property
    def patient(self) -> str | None:
        return self.key[len(PATIENT):] or None if self.key.startswith(PATIENT) else None

    @property
    def slug(self) -> str:
        """The case in a file name: 'patient-7', 'folder', 'folder-slides_A12'."""
        kind, _, value = self.key.partition(":")
        value = re.sub(r"[^A-Za-z0-9._-]+", "_", value.replace("/", "-")).strip("._-")
        return f"{kind}-{value}" if value else (kind if kind == "folder" else f"{kind}-none")


class CaseError(ValueError):
    """A CASE that names no case of the folder; the message lists the ones there are."""


def patient_key(patient: str | None) -> str:
    return f"{PATIENT}{patient or ''}"


def folder_key(sub: str = "") -> str:
    sub = PurePosixPath(sub).as_posix().strip("/") if sub else ""
    return FOLDER if sub in ("", ".") else f"{FOLDER}{sub}"


def members(key: str, cells: Iterable[tuple[str, str | None]]) -> tuple[str, ...]:
    """The paths of `cells` ((path, patient) pairs) that the case `key` holds."""
    if key.startswith(PATIENT):
        want = key[len(PATIENT):] or None
        out = [p for p, patient in cells if patient == want]
    elif key == FOLDER:
        out = [p for p, _ in cells]
    elif key.startswith(FOLDER):
        prefix = key[len(FOLDER):].rstrip("/") + "/"
        out = [p for p, _ in cells if p.startswith(prefix)]
    else:
        raise CaseError(f"{key!r} is not a case key (patient:<id>, folder:, folder:<sub-folder>)")
    return tuple(sorted(out, key=natural_key))


def list_cases(cells: Iterable[tuple[str, str | None]], extra: Iterable[str] = ()) -> list[Case]:
    """The folder's cases: one per patient when the cells carry patient ids (those without one
    together), else the whole folder; then each case in `extra` (keys signed before, such as a
    sub-folder) that is not among them."""
    cells = list(cells)
    by_patient: dict[str | None, list[str]] = defaultdict(list)
    for path, patient in cells:
        by_patient[patient].append(path)
    out: list[Case] = []
    if any(p is not None for p in by_patient):
        for patient in sorted((p for p in by_patient if p is not None), key=natural_key):
            out.append(Case(patient_key(patient), tuple(sorted(by_patient[patient], key=natural_key))))
        if None in by_patient:
            out.append(Case(NO_PATIENT, tuple(sorted(by_patient[None], key=natural_key))))
    elif cells:
        out.append(Case(FOLDER, members(FOLDER, cells)))
    seen = {c.key for c in out}
    for key in dict.fromkeys(extra):
        if key not in seen:
            out.append(Case(key, members(key, cells)))
    return out


def resolve_case(spec: str, cells: Iterable[tuple[str, str | None]], root: str | Path | None = None) -> Case:
    """The case a user named: a key, a patient id (C-NMC's 'h3' is 'H3'), '.' for the whole
    folder, or a sub-folder of `root` (relative to it, or an absolute path inside it)."""
    cells = list(cells)
    text = (spec or "").strip()
    if not text:
        raise CaseError("name a case: a patient id, '.' for the whole folder, or a sub-folder")
    if text.startswith((PATIENT, FOLDER)):
        case = Case(text, members(text, cells))
        if not case.paths:
            raise CaseError(f"the case {case.title} holds no cells of this folder")
        return case
    patients = {p for _, p in cells if p is not None}
    if text in patients:
        return Case(patient_key(text), members(patient_key(text), cells))
    folded = [p for p in patients if p.casefold() == text.casefold()]
    if len(folded) == 1:
        return Case(patient_key(folded[0]), members(patient_key(folded[0]), cells))
    if text in (".", "./"):
        return Case(FOLDER, members(FOLDER, cells))
    rel = _relative(text, root)
    if rel is not None:
        key = folder_key(rel)
        found = members(key, cells)
        if found:
            return Case(key, found)
    listed = ", ".join(sorted(patients, key=natural_key)[:12]) + (" ..." if len(patients) > 12 else "")
    hint = f"patients here: {listed}" if patients else "this folder's cells carry no patient ids"
    raise CaseError(f"{spec!r} is no case of this folder ({hint}; '.' is the whole folder, or name a sub-folder "
                    "that holds cells)")


def _relative(text: str, root: str | Path | None) -> str | None:
    path = Path(text).expanduser()
    if path.is_absolute():
        if root is None:
            return None
        try:
            return path.resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            return None
    return PurePosixPath(path.as_posix()).as_posix().strip("/")


__all__ = ["Case", "CaseError", "NO_PATIENT", "folder_key", "list_cases", "members", "patient_key", "resolve_case"]
