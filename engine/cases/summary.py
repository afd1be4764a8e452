"""The Cases panel's table (and `allblast-engine cases list`): per case its cells, how many are
reviewed, the open disagreements with the active model, the differential in the class set's
order, the positive (blast) fraction with its 95% Wilson interval and the cells it rests on, and
its status:

    open      cells to review or disagreements open
    ready     every cell reviewed, nothing open: it can be signed
    signed    signed, and labels and report are as signed (awaiting 2nd: the two-person rule's
              second signature is still to come)
    amended   changed since it was signed (with reasons): it needs a new signature
    tampered  changed outside the app (`cases verify` says what)
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..data.cells import UNSURE
from ..utils.natsort import natural_key
from .cases import Case, list_cases
from .records import signed_case_keys
from .review import ModelView, ReviewSnapshot, snapshot
from .signoff import Readiness, readiness
from .verify import AMENDED, INTACT, TAMPERED, Verdict, verify_case
from .wilson import Fraction

OPEN, READY, SIGNED, AWAITING, AMENDED_STATUS, TAMPERED_STATUS = (
    "open", "ready", "signed", "awaiting 2nd signature", "amended", "tampered")
STATUSES = (OPEN, READY, AWAITING, SIGNED, AMENDED_STATUS, TAMPERED_STATUS)


@dataclass
class CaseSummary:
    case: Case
    cells: int
    reviewed: int
    open_disagreements: int
    differential: list[tuple[str, int]]  # class -> cells, the class set's order (other labels after)
    unsure: int
    unlabeled: int
    positive: str | None
    fraction: Fraction | None  # positive cells of the cells with a class
    status: str
    readiness: Readiness
    verdict: Verdict

    @property
    def key(self) -> str:
        return self.case.key

    @property
    def title(self) -> str:
        return self.case.title

    def differential_text(self) -> str:
        return ", ".join(f"{name} {n}" for name, n in self.differential) or "–"

    def fraction_text(self) -> str:
        """'20.0% (11.2–33.0%), n=50': the fraction, its 95% interval and the cells it rests on."""
        if self.positive is None or self.fraction is None:
            return "–"
        return self.fraction.short()


def status_of(ready: Readiness, verdict: Verdict) -> str:
    if verdict.state == TAMPERED:
        return TAMPERED_STATUS
    if verdict.state == AMENDED:
        return AMENDED_STATUS
    if verdict.state == INTACT:
        return SIGNED if verdict.complete else AWAITING
    return READY if ready.ready else OPEN


def summarize_case(snap: ReviewSnapshot, case: Case, classes: Sequence[str], positive: str | None, store=None,
                   *, files: bool = True) -> CaseSummary:
    """One case's row (`store`: to read its signatures; None: an unsigned case)."""
    counts = Counter(snap.current.get(p) for p in case.paths)
    order = list(classes) + sorted((k for k in counts if k not in (None, UNSURE) and k not in classes),
                                   key=natural_key)
    differential = [(k, counts[k]) for k in order if counts[k] or k in classes]
    labelled = sum(n for _, n in differential)
    positive = positive if positive in order else None
    fraction = Fraction(counts[positive], labelled) if positive is not None else None
    ready = readiness(snap, case)
    verdict = verify_case(store, case.key, case.paths, files=files) if store is not None else \
        Verdict(case.key, "unsigned")
    reviewed = sum(1 for p in case.paths if snap.reviewed(p))
    return CaseSummary(case, len(case.paths), reviewed, len(ready.disagreements), differential, counts[UNSURE],
                       counts[None], positive, fraction, status_of(ready, verdict), ready, verdict)


def summarize(store, classes: Sequence[str], *, model: ModelView | None, positive: str | None = None,
              snap: ReviewSnapshot | None = None, files: bool = True) -> list[CaseSummary]:
    """Every case of the folder (engine.cases.cases.list_cases; signed sub-folders too)."""
    snap = snap or snapshot(store, model)
    cells = [(p, snap.patients.get(p)) for p in snap.current]
    return [summarize_case(snap, case, classes, positive, store, files=files)
            for case in list_cases(cells, signed_case_keys(store))]


TABLE_COLUMNS = ("case", "cells", "reviewed", "open", "differential", "positive fraction (95% CI)", "status")


def table_rows(summaries: Sequence[CaseSummary]) -> list[tuple[str, ...]]:
    return [(s.title, str(s.cells), str(s.reviewed), str(s.open_disagreements), s.differential_text(),
             s.fraction_text() if s.positive else "–", s.status) for s in summaries]


def format_table(summaries: Sequence[CaseSummary], positive: str | None) -> str:
    """The panel's table as text (`cases list`)."""
    header = list(TABLE_COLUMNS)
    if positive:
        header[5] = f"{positive} fraction (95% CI)"
    rows = [header, *table_rows(summaries)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i in (0, 4, 5, 6) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             .rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def model_for(store) -> ModelView | None:
    """The active model's answers stored for this folder (engine.workspace): None without an active
    model; no answers (an empty view) when it never predicted here. Reads the model file to hash it."""
    from ..labels.predictions import load
    from ..utils.files import sha256_file
    from ..workspace.catalog import RunsCatalog
    from .review import model_view

    path = RunsCatalog(store).active_model_file()
    if path is None:
        return None
    sha = sha256_file(Path(path))
    stored = load(store, sha)
    if stored is None:
        return ModelView(sha, (), {}, Path(path).parent.name if Path(path).name == "model.pt" else Path(path).name)
    return model_view(stored)


__all__ = ["AMENDED_STATUS", "AWAITING", "CaseSummary", "OPEN", "READY", "SIGNED", "STATUSES", "TABLE_COLUMNS",
           "TAMPERED_STATUS", "format_table", "model_for", "status_of", "summarize", "summarize_case", "table_rows"]
