"""The case report a signature writes: the case's cells (labels from the label store, the active
model's stored answers), its differential, and the signature blocks of this signing (the earlier
signature of a two-person signing too), with the amendments that made a new signing necessary."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

from ..cases.signoff import Draft
from ..labels import predictions as stored
from ..labels.signed import case_title
from .case import AmendmentLine, CaseCell, CaseReport, SignatureLine, build_case_report
from .model_info import ModelInfo
from .sources import cells_with_predictions


def store_case_cells(store, paths: Sequence[str], preds: stored.StoredPredictions | None) -> list[CaseCell]:
    """The case's cells as a report sees them, from the label store (no scan)."""
    wanted = set(paths)
    states = {p: s for p, s in store.states().items() if p in wanted}
    patients = dict(store.query("SELECT path, patient FROM cells"))
    cells = [SimpleNamespace(path=p, patient=patients.get(p), label=states[p].original if p in states else None)
             for p in paths]
    return cells_with_predictions(cells, states, preds)


def signed_case_report(draft: Draft, cells: Sequence[CaseCell], classes: Sequence[str], *, data_root,
                       positive: str | None, model: ModelInfo | None = None, per_class: int = 8) -> CaseReport:
    """The report of `draft`'s case with its signature blocks; `cells` are the case's cells (their
    labels are the signed ones: the draft's)."""
    report = build_case_report(cells, classes, data_root=Path(data_root), scope=case_title(draft.case.key),
                               reviewer=draft.signer, positive=positive, model=model, per_class=per_class,
                               date=draft.when)
    lines = [SignatureLine(s.signer, s.when, s.digest, s.n_cells, s.model, s.seq, s.required) for s in draft.earlier]
    lines.append(SignatureLine(draft.signer, draft.when, draft.digest, len(draft.labels), draft.model, draft.seq,
                               draft.required))
    report.signatures = lines
    report.amendments = [AmendmentLine(a.path, a.old, a.new, a.reason, a.annotator,
                                       a.changed_at[:16].replace("T", " ") + " UTC") for a in draft.amended]
    complete = draft.seq >= draft.required
    names = " and ".join(s.signer for s in lines)
    report.status = "signed" if complete else "awaiting 2nd signature"
    report.status_line = (f"Signed by {names}, {draft.when} · {len(draft.labels)} cells · labels digest "
                          f"{draft.digest[:16]}…")
    if not complete:
        report.status_line += f" · signature {draft.seq} of {draft.required}: awaiting the second signature"
    if draft.amended:
        report.status_line += f" · amended after signing version {draft.round - 1} ({len(draft.amended)} change(s))"
    if draft.round > 1:
        report.title = f"Case report (version {draft.round})"
    return report


__all__ = ["signed_case_report", "store_case_cells"]
