"""Patient / subject ids and label folders: how a cell's path says who it came from.

C-NMC names carry the subject (`UID_<n>_<image>_<cell>_all.bmp` for ALL, `UID_H<n>_...` or
`UID_h<n>_...` for normal subjects); other data sets may use a user-supplied regex, or a slide
folder that sits above the class folder. The class folder itself is never a patient.
"""
from __future__ import annotations

import re

CNMC_NAME = re.compile(r"^UID_(?P<patient>[Hh]?\d+)_\d+_\d+_(?P<cls>all|hem)\.\w+$", re.IGNORECASE)
# Looser form (other C-NMC derived sets rename the tail); still needs the UID_ prefix.
CNMC_PREFIX = re.compile(r"^UID_(?P<patient>[Hh]?\d+)_", re.IGNORECASE)

# Folder names that organise a data set but are not slides or subjects.
_CONTAINER = re.compile(
    r"^(fold[_-]?\d+|train(ing)?([_-]data)?|val(id(ation)?)?([_-]data)?|test([_-]data)?|"
    r"images?|data|dataset|cells?|c-nmc.*)$",
    re.IGNORECASE,
)
_FOLD = re.compile(r"^fold[_-]?\d+$", re.IGNORECASE)


def normalise_cnmc_patient(raw: str) -> str:
    """'h3' and 'H3' are the same normal subject; ALL subjects are plain numbers."""
    return raw.upper() if raw[:1] in "hH" else str(int(raw))


def cnmc_patient(name: str) -> str | None:
    """Patient id from a C-NMC file name (or the original name in the validation CSV)."""
    m = CNMC_PREFIX.match(name.rpartition("/")[2])
    return normalise_cnmc_patient(m.group("patient")) if m else None


def cnmc_class(name: str) -> str | None:
    m = CNMC_NAME.match(name.rpartition("/")[2])
    return m.group("cls").lower() if m else None


def regex_patient(pattern: re.Pattern[str] | None, relpath: str) -> str | None:
    """Apply a user regex to the relative path: the group named `patient`, else group 1."""
    if pattern is None:
        return None
    m = pattern.search(relpath)
    if not m:
        return None
    if "patient" in pattern.groupindex:
        value = m.group("patient")
    elif pattern.groups:
        value = m.group(1)
    else:
        value = m.group(0)
    return value or None


def compile_patient_regex(pattern: str | None) -> re.Pattern[str] | None:
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid patient regex {pattern!r}: {exc}") from exc


def is_container_folder(name: str) -> bool:
    return bool(_CONTAINER.match(name))


def fold_of(relpath: str) -> str | None:
    for part in relpath.split("/")[:-1]:
        if _FOLD.match(part):
            return part.lower().replace("-", "_")
    return None


def slide_folder(parts: tuple[str, ...], class_level: bool) -> str | None:
    """The nearest folder above the cells that names a slide or subject.

    `parts` are the folder parts of a relative path (file name excluded). When the innermost folder
    is a class folder it is skipped: a class is never a patient.
    """
    folders = list(parts[:-1] if class_level else parts)
    for name in reversed(folders):
        if not is_container_folder(name):
            return name
    return None


def patient_for(
    relpath: str,
    *,
    class_level: bool,
    pattern: re.Pattern[str] | None = None,
    original_name: str | None = None,
) -> str | None:
    """C-NMC name (or the CSV's original name), then the user's regex, then the slide folder."""
    for candidate in (original_name, relpath):
        if candidate:
            pid = cnmc_patient(candidate)
            if pid is not None:
                return pid
    pid = regex_patient(pattern, relpath)
    if pid is not None:
        return pid
    return slide_folder(tuple(relpath.split("/")[:-1]), class_level)
