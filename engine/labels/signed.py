"""What a signature fixed, and changes to it: amendments.

A signed case (`engine.cases.signoff`) records each of its cells with the label it had
(`signoff_cells`). From then on, a change to one of those labels is an amendment: the store
(`LabelStore.apply`, undo and redo) asks here before it writes, and refuses a change without a
reason (`ReasonRequired`, a StoreError: the app asks for one, the CLI says `--reason`). With a
reason, each changed cell gets an `amendments` row in the same transaction as the change. A class
rename or delete that relabels signed cells is recorded with the edit as its reason.

Case keys: `patient:<id>` (one patient's cells), `folder:` (the whole folder), `folder:<path>`
(the cells below a sub-folder). `case_title` says them in words; engine.cases builds on them.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .errors import StoreError

PATIENT, FOLDER = "patient:", "folder:"
MAX_REASON = 2000


def case_title(key: str) -> str:
    """'patient 7', 'the whole folder', 'folder slides/A12'."""
    if key.startswith(PATIENT):
        return f"patient {key[len(PATIENT):]}"
    if key == FOLDER:
        return "the whole folder"
    if key.startswith(FOLDER):
        return f"folder {key[len(FOLDER):]}"
    return key


@dataclass(frozen=True)
class SignedCell:
    path: str
    label: str | None  # as signed
    signoff_id: int  # the case's latest signature
    case_key: str
    signer: str
    signed_at: str


class ReasonRequired(StoreError):
    """A change to a signed case's labels without a reason: nothing was changed."""

    def __init__(self, cells: Sequence[SignedCell]):
        self.cells = list(cells)
        first = self.cells[0]
        cases = sorted({c.case_key for c in self.cells})
        more = f" (and {len(self.cells) - 1} more cell(s))" if len(self.cells) > 1 else ""
        named = ", ".join(f"'{case_title(k)}'" for k in cases)
        super().__init__(
            f"{first.path}{more} belongs to the signed case {named} (signed by {first.signer} on "
            f"{first.signed_at[:16].replace('T', ' ')}): changing it is an amendment and needs a reason; "
            "nothing was changed")


_LATEST = "SELECT MAX(id) FROM signoffs GROUP BY case_key"


def _query(conn_or_store, sql: str, params: Sequence = ()) -> list[tuple]:
    """A read on a transaction's connection, or on a store (`query`, under its lock)."""
    if hasattr(conn_or_store, "query"):
        return conn_or_store.query(sql, params)
    return conn_or_store.execute(sql, params).fetchall()


def signed_cells(conn_or_store, paths: Iterable[str]) -> list[SignedCell]:
    """The cells among `paths` that a case's latest signature covers (one entry per case)."""
    paths = list(dict.fromkeys(paths))
    if not paths or not _query(conn_or_store, "SELECT 1 FROM signoffs LIMIT 1"):
        return []  # no case was ever signed here: nothing to look up (the common case)
    out: list[SignedCell] = []
    for i in range(0, len(paths), 500):
        chunk = paths[i:i + 500]
        marks = ",".join("?" * len(chunk))
        out += [SignedCell(*r) for r in _query(
            conn_or_store,
            "SELECT sc.path, sc.label, s.id, s.case_key, s.signer, s.signed_at FROM signoff_cells sc "
            f"JOIN signoffs s ON s.id = sc.signoff_id WHERE s.id IN ({_LATEST}) AND sc.path IN ({marks}) "
            "ORDER BY sc.path, s.id", chunk)]
    return out


def check_reason(reason: str | None) -> str | None:
    text = " ".join((reason or "").split())
    if len(text) > MAX_REASON:
        raise StoreError(f"a reason is at most {MAX_REASON} characters")
    return text or None


def record_amendments(conn: sqlite3.Connection, changes: Sequence[tuple[str, str | None, str | None]], *,
                      reason: str | None, annotator: str, when: str, action_id: int | None, source: str) -> int:
    """Inside the change's transaction, before its labels are written: `changes` are (path, old,
    new). Cells of a signed case need `reason` (else ReasonRequired, and the caller's transaction
    rolls back); each gets an amendment row. Returns the number of rows written."""
    hits = signed_cells(conn, [p for p, _, _ in changes])
    if not hits:
        return 0
    reason = check_reason(reason)
    if reason is None:
        raise ReasonRequired(hits)
    by_path = {p: (old, new) for p, old, new in changes}
    rows = [(c.signoff_id, c.case_key, c.path, *by_path[c.path], reason, annotator, when, action_id, source)
            for c in hits]
    conn.executemany("INSERT INTO amendments(signoff_id, case_key, path, old, new, reason, annotator, changed_at, "
                     "action_id, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return len(rows)


def amendment_reasons(store) -> dict[tuple[int | None, str], str]:
    """(action id, path) -> the reason of its amendment (the history export marks those changes)."""
    rows = _query(store, "SELECT action_id, path, reason FROM amendments ORDER BY id")
    return {(a, p): r for a, p, r in rows}


def signoff_history(store) -> list[tuple]:
    """The signatures as history rows (engine.labels.csv_io.HISTORY_COLUMNS): path is the case,
    new the labels' digest, source the signed report."""
    rows = _query(store, "SELECT case_key, round, seq, required, signer, signed_at, digest, n_cells, model, report, "
                  "report_sha256 FROM signoffs ORDER BY id")
    return [(key, None, digest, signer, at, report, None, "sign-off",
             f"{case_title(key)}, version {rnd}, signature {seq} of {req}: {n} cells; model {model or 'none'}; "
             f"report sha256 {sha}")
            for key, rnd, seq, req, signer, at, digest, n, model, report, sha in rows]


def needs_reason(store, paths: Iterable[str]) -> list[SignedCell]:
    """The cells among `paths` whose change would be an amendment (ask for a reason first)."""
    return signed_cells(store, paths)


__all__ = ["FOLDER", "PATIENT", "ReasonRequired", "SignedCell", "amendment_reasons", "case_title", "check_reason",
           "needs_reason", "record_amendments", "signed_cells", "signoff_history"]
