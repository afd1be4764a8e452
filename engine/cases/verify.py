"""Is a signed case still what was signed? Recomputed from the label database and the files.

For each signature: its cell list must still give its digest, and its report file (and the JSON
record beside it) must still have the sha256 it was signed with. For the newest signing: the
labels now must be the signed labels with the recorded amendments applied, in order. Then

    intact    labels and report as signed
    amended   changed in the app since (each change with its reason), or new cells joined the case:
              it needs a new signature
    tampered  labels, the signature's records or a report changed outside the app (an edited
              SQLite row, an edited or missing PDF)
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..labels.signed import case_title
from ..utils.files import sha256_file
from .digest import label_digest
from .records import (Amendment, Signature, amendments, current_labels, latest_round, report_file, signatures,
                      signed_labels)

UNSIGNED, INTACT, AMENDED, TAMPERED = "unsigned", "intact", "amended", "tampered"
_MISSING = object()


@dataclass
class Verdict:
    case_key: str
    state: str  # UNSIGNED | INTACT | AMENDED | TAMPERED
    signatures: list[Signature] = field(default_factory=list)
    amendments: list[Amendment] = field(default_factory=list)  # of the newest signing
    problems: list[str] = field(default_factory=list)  # what was changed outside the app
    new_cells: list[str] = field(default_factory=list)  # joined the case after the newest signing

    @property
    def title(self) -> str:
        return case_title(self.case_key)

    @property
    def current(self) -> list[Signature]:
        """The newest signing's signatures."""
        return latest_round(self.signatures)

    @property
    def complete(self) -> bool:
        cur = self.current
        return bool(cur) and len(cur) >= cur[0].required

    def lines(self) -> list[str]:
        """What `cases verify` prints under the case's verdict."""
        out = []
        for s in self.current:
            out.append(f"signed by {s.signer} on {s.when}{_of(s)}: {s.n_cells} cells, digest {s.digest[:16]}…, "
                       f"report {s.report}")
        if self.current and not self.complete:
            out.append(f"awaiting the second signature ({len(self.current)} of {self.current[0].required})")
        for a in self.amendments:
            out.append(f"amended {a.changed_at[:16].replace('T', ' ')} by {a.annotator}: {a.path} "
                       f"{a.old or 'unlabeled'} -> {a.new or 'unlabeled'} (reason: {a.reason})")
        if self.new_cells:
            shown = ", ".join(self.new_cells[:5]) + (" ..." if len(self.new_cells) > 5 else "")
            out.append(f"{len(self.new_cells)} cell(s) joined the case after it was signed: {shown}")
        out += [f"TAMPERED: {p}" for p in self.problems]
        return out


def _of(s: Signature) -> str:
    return f" (signature {s.seq} of {s.required})" if s.required > 1 else ""


# A report's sha256, remembered by (path, size, mtime): the panel verifies on every change without
# reading every signed PDF again.
_sha_cache: dict[tuple[str, int, int], str] = {}


def _file_sha(path: Path) -> str | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _sha_cache:
        if len(_sha_cache) > 4096:
            _sha_cache.clear()
        _sha_cache[key] = sha256_file(path)
    return _sha_cache[key]


def record_of(pdf: Path) -> Path:
    """The JSON record written beside a signed report."""
    return pdf.with_suffix(".json")


def _check_files(store, s: Signature, problems: list[str]) -> None:
    pdf = report_file(store, s)
    sha = _file_sha(pdf)
    if sha is None:
        problems.append(f"the signed report {s.report} is missing")
    elif sha != s.report_sha256:
        problems.append(f"the signed report {s.report} changed after it was signed (sha256 {sha[:16]}…, signed "
                        f"{s.report_sha256[:16]}…)")
    record = record_of(pdf)
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.append(f"the signature record {record.name} beside the report is missing")
        return
    except (OSError, ValueError) as exc:
        problems.append(f"the signature record {record.name} cannot be read ({exc})")
        return
    for name, value in (("digest", s.digest), ("report_sha256", s.report_sha256), ("signer", s.signer),
                        ("signed_at", s.signed_at), ("case", s.case_key)):
        if data.get(name) != value:
            problems.append(f"the signature record {record.name} says {name} {data.get(name)!r}, the database "
                            f"{value!r}")


def verify_case(store, case_key: str, case_paths: Iterable[str] | None = None, *, files: bool = True) -> Verdict:
    """The verdict on one case (`case_paths`: its present cells now, to notice new ones)."""
    sigs = signatures(store, case_key)
    if not sigs:
        return Verdict(case_key, UNSIGNED)
    problems: list[str] = []
    for s in sigs:
        cells = signed_labels(store, s.id)
        if len(cells) != s.n_cells or label_digest(cells.items()) != s.digest:
            problems.append(f"the cells of the signature by {s.signer} on {s.when} no longer give its digest "
                            "(the database was edited outside allblast)")
        if files:
            _check_files(store, s, problems)
    current = latest_round(sigs)
    first = current[0]
    for s in current[1:]:
        if s.digest != first.digest:
            problems.append(f"the signatures of {s.when} and {first.when} cover different labels")
    ids = {s.id for s in current}
    amended = [a for a in amendments(store, case_key) if a.signoff_id in ids]
    expected = signed_labels(store, first.id)
    for a in amended:
        before = expected.get(a.path, _MISSING)
        if before is _MISSING:
            problems.append(f"an amendment names {a.path}, which the signature does not cover")
            continue
        if before != a.old:
            problems.append(f"the amendment of {a.path} at {a.changed_at[:16]} starts from {a.old!r}, not the "
                            f"label then ({before!r})")
        expected[a.path] = a.new
    now = current_labels(store, expected)
    for path, label in expected.items():
        got = now.get(path, _MISSING)
        if got is _MISSING:
            problems.append(f"{path} is no longer in the label database")
        elif got != label:
            said = "signed" if not any(a.path == path for a in amended) else "signed and amended to"
            problems.append(f"{path} is labelled {got or 'unlabeled'} but was {said} {label or 'unlabeled'}, "
                            "with no amendment recorded")
    new_cells = sorted(set(case_paths or ()) - set(expected))
    state = TAMPERED if problems else AMENDED if (amended or new_cells) else INTACT
    return Verdict(case_key, state, sigs, amended, problems, new_cells)


__all__ = ["AMENDED", "INTACT", "TAMPERED", "UNSIGNED", "Verdict", "record_of", "verify_case"]
