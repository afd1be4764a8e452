"""Signing a case: refused, with what is missing, until every cell is reviewed and no disagreement
with the active model is open; then the signature (signer, time, the cells' label digest, the
active model's sha256) and the signed case report (PDF, with its signature block) are kept, the
report in `signed/` beside the label database with its own sha256. A report is never overwritten:
a new signing (after an amendment) or a second signature writes a new version beside it.

With the two-person rule on (`records.set_two_person`), a signing is complete with a second
signature by another person over the same labels.

The PDF is drawn by the caller (`write_report(path, draft)`: the CLI and the app render it with Qt
on their side); this module places it, hashes it, and records the signature in one transaction,
in which the labels are read again: a label changed while the report was drawn refuses the
signature and removes the files.
"""
from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..labels.stamps import now_utc
from ..utils.files import atomic_path, atomic_write_json
from .cases import Case
from .digest import label_digest
from .records import Amendment, Signature, amendments, signatures, signed_dir, two_person
from .review import ModelView, ReviewSnapshot, snapshot
from .verify import AMENDED, INTACT, TAMPERED, UNSIGNED, record_of, verify_case

log = logging.getLogger(__name__)
LIST_LIMIT = 20  # cells named one by one in a refusal


@dataclass
class Readiness:
    """What stands between a case and its signature."""

    case: Case
    unreviewed: list[str]
    disagreements: list[tuple[str, str | None, str | None]]  # (path, expert, model) still open

    @property
    def ready(self) -> bool:
        return bool(self.case.paths) and not self.unreviewed and not self.disagreements

    def missing(self) -> list[str]:
        """One line per thing to do, the cells named (up to LIST_LIMIT each)."""
        out = []
        if not self.case.paths:
            out.append("the case holds no cells")
        if self.unreviewed:
            out.append(f"{len(self.unreviewed)} cell(s) not reviewed (set or confirm the class, or mark unsure "
                       "with a note):")
            out += [f"  {p}" for p in self.unreviewed[:LIST_LIMIT]]
            if len(self.unreviewed) > LIST_LIMIT:
                out.append(f"  ... and {len(self.unreviewed) - LIST_LIMIT} more")
        if self.disagreements:
            out.append(f"{len(self.disagreements)} open disagreement(s) with the active model (accept the model's "
                       "class, relabel, or keep the label with a reason):")
            out += [f"  {p}: expert {e or 'unlabeled'}, model {m}" for p, e, m in self.disagreements[:LIST_LIMIT]]
            if len(self.disagreements) > LIST_LIMIT:
                out.append(f"  ... and {len(self.disagreements) - LIST_LIMIT} more")
        return out


def readiness(snap: ReviewSnapshot, case: Case) -> Readiness:
    unreviewed = [p for p in case.paths if not snap.reviewed(p)]
    open_ = [(p, snap.current.get(p), snap.predicted(p)) for p in case.paths if snap.open_disagreement(p)]
    return Readiness(case, unreviewed, open_)


class SignOffRefused(ValueError):
    """A signature that cannot be given now; `missing` lists what to do (one line each)."""

    def __init__(self, case: Case, headline: str, missing: list[str] | None = None):
        self.case = case
        self.headline = headline
        self.missing = list(missing or [])
        super().__init__(f"cannot sign {case.title}: {headline}")


@dataclass
class Draft:
    """A signature about to be given: what the signed report states."""

    case: Case
    signer: str
    signed_at: str
    digest: str
    labels: dict[str, str | None]
    model: str | None  # the active model's sha256
    round: int
    seq: int
    required: int
    report: Path  # where the signed PDF goes
    earlier: list[Signature] = field(default_factory=list)  # this signing's signatures before this one
    amended: list[Amendment] = field(default_factory=list)  # the amendments since the previous signing

    @property
    def when(self) -> str:
        return self.signed_at[:16].replace("T", " ") + " UTC"


def _report_path(folder: Path, case: Case, round_: int, seq: int) -> Path:
    stem = f"{case.slug}-v{round_}" + ("" if seq == 1 else f"-signature{seq}")
    path, n = folder / f"{stem}.pdf", 1
    while path.exists() or record_of(path).exists():  # never over an earlier report
        n += 1
        path = folder / f"{stem}-{n}.pdf"
    return path


def plan(store, case: Case, *, signer: str, model: ModelView | None, snap: ReviewSnapshot | None = None,
         now: str | None = None) -> Draft:
    """The signature `signer` would give `case` now, or SignOffRefused saying why not."""
    signer = " ".join((signer or "").split())
    if not signer:
        raise SignOffRefused(case, "a signature needs the signer's name (--annotator NAME)")
    snap = snap or snapshot(store, model)
    ready = readiness(snap, case)
    if not ready.ready:
        counts = []
        if ready.unreviewed:
            counts.append(f"{len(ready.unreviewed)} cell(s) not reviewed")
        if ready.disagreements:
            counts.append(f"{len(ready.disagreements)} open disagreement(s) with the model")
        raise SignOffRefused(case, ", ".join(counts) or "the case holds no cells", ready.missing())
    if store.read_only or store.home is not None:  # (a reviewed cell has put the database beside the images)
        raise SignOffRefused(case, f"the label database {store.db_path} cannot be written here")
    verdict = verify_case(store, case.key, case.paths)
    if verdict.state == TAMPERED:
        raise SignOffRefused(case, "its signed record was changed outside allblast; `allblast-engine cases verify` "
                             "lists what changed (restore the label database or the report from a backup)",
                             verdict.problems)
    labels = {p: snap.current.get(p) for p in case.paths}
    digest = label_digest(labels.items())
    current = verdict.current
    earlier: list[Signature] = []
    if verdict.state == INTACT and verdict.complete:
        last = current[-1]
        raise SignOffRefused(case, f"it is signed already (by {', '.join(s.signer for s in current)}, "
                             f"{last.when}) and nothing changed since")
    if verdict.state == INTACT and current:  # the second signature of this signing
        if any(s.signer.casefold() == signer.casefold() for s in current):
            raise SignOffRefused(case, f"{signer} signed it already; the two-person rule needs another person's "
                                 "signature")
        round_, seq, required, earlier = current[0].round, len(current) + 1, current[0].required, current
    else:
        assert verdict.state in (UNSIGNED, AMENDED)
        round_ = (current[0].round + 1) if current else 1
        seq, required = 1, 2 if two_person(store) else 1
    amended = verdict.amendments if verdict.state == AMENDED else []
    folder = signed_dir(store)
    return Draft(case, signer, now or now_utc(), digest, labels, model.sha256 if model else None, round_, seq,
                 required, _report_path(folder, case, round_, seq), earlier, amended)


def sign(store, case: Case, *, signer: str, model: ModelView | None,
         write_report: Callable[[Path, Draft], object], snap: ReviewSnapshot | None = None) -> Signature:
    """Sign `case`: plan it (refused with what is missing), have `write_report` draw the PDF, put it
    in `signed/` with its JSON record, and record the signature (one transaction)."""
    draft = plan(store, case, signer=signer, model=model, snap=snap)
    with tempfile.TemporaryDirectory(prefix="allblast-sign-") as tmp:
        drawn = Path(tmp) / draft.report.name
        write_report(drawn, draft)
        data = drawn.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    rel = draft.report.relative_to(Path(store.db_path).parent).as_posix()
    record = record_of(draft.report)
    written: list[Path] = []
    try:
        with atomic_path(draft.report) as tmp_pdf:
            tmp_pdf.write_bytes(data)
        written.append(draft.report)
        atomic_write_json(record, {
            "case": case.key, "title": case.title, "round": draft.round, "signature": draft.seq,
            "signatures_required": draft.required, "signer": draft.signer, "signed_at": draft.signed_at,
            "digest": draft.digest, "digest_of": "sha256 of the sorted lines [\"path\", label] (engine.cases.digest)",
            "cells": len(draft.labels), "model_sha256": draft.model, "report": rel, "report_sha256": sha,
            "data_root": str(store.data_root)})
        written.append(record)
        with store.transaction() as conn:
            now = _labels_in(conn, case.paths)
            if label_digest(now.items()) != draft.digest:
                raise SignOffRefused(case, "labels of the case changed while the report was written; sign again")
            sid = conn.execute(
                "INSERT INTO signoffs(case_key, round, seq, required, signer, signed_at, digest, n_cells, model, "
                "report, report_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (case.key, draft.round, draft.seq, draft.required, draft.signer, draft.signed_at, draft.digest,
                 len(draft.labels), draft.model, rel, sha)).lastrowid
            conn.executemany("INSERT INTO signoff_cells(signoff_id, path, label) VALUES (?, ?, ?)",
                             [(sid, p, lb) for p, lb in draft.labels.items()])
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    log.info("%s signed by %s (round %d, signature %d of %d): %s", case.title, draft.signer, draft.round,
             draft.seq, draft.required, draft.report)
    return Signature(sid, case.key, draft.round, draft.seq, draft.required, draft.signer, draft.signed_at,
                     draft.digest, len(draft.labels), draft.model, rel, sha)


def _labels_in(conn, paths) -> dict[str, str | None]:
    paths = list(paths)
    out: dict[str, str | None] = {}
    for i in range(0, len(paths), 500):
        chunk = paths[i:i + 500]
        out.update(conn.execute(
            "SELECT c.path, CASE WHEN l.path IS NULL THEN c.original ELSE l.label END FROM cells c "
            f"LEFT JOIN labels l ON l.path = c.path WHERE c.path IN ({','.join('?' * len(chunk))})", chunk).fetchall())
    return out


__all__ = ["Draft", "Readiness", "SignOffRefused", "amendments", "plan", "readiness", "sign", "signatures"]
