"""Label CSVs in and out of the label store (the store itself knows nothing of CSV files).

Import reads a generic `path,label[,patient]` or C-NMC `Patient_ID,new_names,labels` file with
`engine.data.labelfiles` (the same rules as the scan) and applies it as one undoable action. A file
that gives one cell two different labels imports nothing unless `last_wins` says which to keep.
Export writes the current labels (generic or C-NMC form) or the full change log, atomically;
what it leaves out is said with `engine.utils.logs.warn`.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..data.cells import UNSURE
from ..data.labelfiles import (CNMC_CODES, CNMC_COLUMNS, Conflict, LabelConflictError, LabelFileError, LabelRow,
                               find_cnmc_label_files, find_conflicts, read_label_file)
from ..utils.csvsafe import csv_text
from ..utils.files import atomic_write_text, disk_full_message, is_disk_full
from ..utils.logs import warn
from .classes import ClassSetError, add_missing, check_name, class_set
from .store import LabelStore, StoreError, normalise_label

log = logging.getLogger(__name__)
GENERIC_COLUMNS = ("path", "patient", "original", "label", "annotator", "changed_at")
# The label changes, then (merged in time order) confirmations, disagreements kept against a model,
# sign-offs and amendments: `event` says which; `reason` holds the amendment's reason, the kept
# disagreement's, a confirmation's note, or what a signature covered.
HISTORY_COLUMNS = ("path", "old", "new", "annotator", "changed_at", "source", "action_id", "event", "reason")


@dataclass
class ImportReport:
    applied: int  # cells whose label the import changed
    unchanged: int  # rows whose cell already had that label
    missing: list[str]  # rows naming images that are not in the data set
    problems: list[tuple[str, str]]  # (row path, reason) for rows that could not be used
    conflicts: list[Conflict] = field(default_factory=list)  # settled by the last row (`last_wins`)
    added_classes: list[str] = field(default_factory=list)  # new classes the import brought (`add_classes`)


class UnknownLabelsError(ClassSetError):
    """The file uses labels that are not classes of the data set: nothing was imported."""

    def __init__(self, path: Path, labels: list[str], classes):
        self.labels = labels
        named = []
        for lb in labels[:10]:
            matches = classes.close_matches(lb)
            named.append(f"{lb!r}" + (f" (did you mean {' or '.join(matches)}?)" if matches else ""))
        more = f" and {len(labels) - 10} more" if len(labels) > 10 else ""
        super().__init__(f"{path.name} uses labels that are not classes of this data set: {', '.join(named)}{more}; "
                         "nothing was imported. Add them as classes (--add-classes, or Label ▸ Classes… in the app) "
                         "or correct the file")


def import_csv(store: LabelStore, csv_path, *, annotator: str, last_wins: bool = False,
               add_classes: bool = False, reason: str | None = None) -> ImportReport:
    """Apply a labels CSV to the present cells: ONE transaction, ONE undoable action.

    Labels that are not in the data set's class set (`engine.labels.classes`) import nothing
    (`UnknownLabelsError` names them and the close matches) unless `add_classes`: then they are
    added to the set, in the same transaction.

    Raises `engine.labelfiles.LabelFileError` when the file is not a label CSV at all, and its
    `LabelConflictError` when rows give one cell different labels (unless `last_wins`: then the
    last such row counts, as in the file's order). Either way nothing is changed. Bad rows and rows
    naming images that are not in the data set are reported, not raised. A row that changes a
    signed case's cell is an amendment: without `reason` nothing is imported (ReasonRequired).
    """
    lf = read_label_file(Path(csv_path), store.data_root)
    report = ImportReport(0, 0, [], [])
    known = class_set(store)  # the classes the cells carry join the set first
    with store.transaction() as conn:  # raising inside rolls everything back
        present = {r[0] for r in conn.execute("SELECT path FROM cells WHERE present = 1")}
        by_name: dict[str, str | None] = {}
        for rel in present:
            name = PurePosixPath(rel).name
            by_name[name] = None if name in by_name else rel
        resolved: list[tuple[str, LabelRow, str | None]] = []  # (cell, row, label)
        for row in lf.rows:
            rel = lf.resolve(row.path, present, by_name)
            if rel is None:
                report.missing.append(row.path if lf.kind == "generic" else lf.display(row.path))
            elif row.problem:
                report.problems.append((row.path, row.problem))
            else:
                try:
                    resolved.append((rel, row, normalise_label(row.label)))
                except TypeError as exc:
                    report.problems.append((row.path, str(exc)))
        report.conflicts = find_conflicts(resolved)
        if report.conflicts and not last_wins:
            raise LabelConflictError(lf.path, report.conflicts)
        updates = {rel: label for rel, _, label in resolved}  # in file order: the last row wins
        unknown = known.unknown(updates.values())
        # A C-NMC file's labels are its format's own classes (1 = all, 0 = hem), never a typo.
        if unknown and not add_classes and not (lf.kind == "cnmc" and set(unknown) <= set(CNMC_CODES)):
            raise UnknownLabelsError(lf.path, unknown, known)
        if unknown:
            for lb in unknown:
                check_name(lb)  # a label that cannot be a class name (reserved, control characters)
            add_missing(conn, unknown, annotator=annotator, why="import")
            report.added_classes = unknown
        _, changed = store.apply(conn, updates, annotator=annotator, source="csv-import", reason=reason)
        report.applied = len(changed)
        report.unchanged = len(updates) - len(changed)
    if report.conflicts:
        warn(f"{len(report.conflicts)} cell(s) had rows with different labels in {lf.path.name}; "
             "the last row of each was used")
    log.info("imported %s by %s: %d applied, %d unchanged, %d missing, %d problems, %d conflicts", csv_path,
             annotator, report.applied, report.unchanged, len(report.missing), len(report.problems),
             len(report.conflicts))
    return report


def _csv_text(header: tuple[str, ...], rows) -> tuple[str, int]:
    rows = [["" if v is None else v for v in row] for row in rows]
    return csv_text(header, rows), len(rows)  # formulas neutralised: names become text in a spreadsheet


def export_csv(store: LabelStore, out_path, *, format: str = "generic", history: bool = False) -> int:
    """Write labels (or, with `history`, the change log) to `out_path` atomically; returns rows
    written. What the C-NMC form cannot hold (other classes, unsure, duplicate names) is warned."""
    if history:
        text, n = _csv_text(HISTORY_COLUMNS, history_rows(store))
    elif format == "generic":
        rows = store.query(
            "SELECT c.path, c.patient, c.original, CASE WHEN l.path IS NULL THEN c.original ELSE l.label END, "
            "l.annotator, l.changed_at FROM cells c LEFT JOIN labels l ON l.path = c.path "
            "WHERE c.present = 1 ORDER BY c.rowid"
        )
        text, n = _csv_text(GENERIC_COLUMNS, rows)
    elif format == "cnmc":
        text, n = _cnmc_text(store)
    else:
        raise ValueError(f"unknown export format {format!r}; expected 'generic' or 'cnmc'")
    try:
        atomic_write_text(out_path, text)
    except OSError as exc:
        if is_disk_full(exc):  # said like the store says it, not as an internal error
            raise StoreError(disk_full_message(out_path, exc.strerror or exc)) from exc
        raise
    log.info("exported %d rows (%s%s) to %s", n, format, ", history" if history else "", out_path)
    return n


def history_rows(store: LabelStore) -> list[tuple]:
    """Every label change (an amendment with its reason), then the review marks and sign-offs,
    in time order (HISTORY_COLUMNS)."""
    from .reviews import review_history
    from .signed import amendment_reasons, signoff_history

    reasons = amendment_reasons(store)  # (action id, path) -> reason
    rows = [(c.path, c.old, c.new, c.annotator, c.changed_at, c.source, c.action_id,
             "amendment" if (c.action_id, c.path) in reasons else "change", reasons.get((c.action_id, c.path)))
            for c in store.all_changes()]
    extra = [(r["path"], r["label"], r["label"], r["annotator"], r["at"], r["source"], None,
              "confirm" if r["kind"] == "confirm" else f"keep against model {r['model'][:8]}",
              r["note"] if r["kind"] == "confirm" else r["reason"]) for r in review_history(store)]
    extra += signoff_history(store)
    if not extra:
        return rows
    return sorted(rows + extra, key=lambda r: r[4])  # stable: changes of one moment keep their order


def _cnmc_text(store: LabelStore) -> tuple[str, int]:
    states = store.states()
    kept, skipped = [], Counter()
    for path, st in states.items():
        code = CNMC_CODES.get(st.current) if st.current is not None else None
        if code is None:
            why = "unlabeled" if st.current is None else "unsure" if st.current == UNSURE else "other classes"
            skipped[why] += 1
        else:
            kept.append((path, PurePosixPath(path).name, code))
    if skipped:
        detail = ", ".join(f"{n} {why}" for why, n in sorted(skipped.items()))
        warn(f"C-NMC export holds only 'all' (1) and 'hem' (0): skipped {sum(skipped.values())} cells ({detail})")
    names = Counter(name for _, name, _ in kept)
    dupes = sorted(name for name, n in names.items() if n > 1)
    if dupes:
        warn(f"{len(dupes)} file names occur in more than one folder (e.g. {dupes[0]}); the C-NMC form names "
             "files only, so those rows are ambiguous - use the generic export to keep folders")
    official = _official_ids(store, set(states))
    # Patient_ID: the original name the official labels CSV gives the file (UID_H49_5_2_hem.bmp for
    # 1002.bmp), so the export reads like C-NMC's own file; else the file name, which in C-NMC's
    # training folders is that original name.
    return _csv_text(CNMC_COLUMNS, ((official.get(path, name), name, code) for path, name, code in kept))


def _official_ids(store: LabelStore, present: set[str]) -> dict[str, str]:
    """Cell path -> Patient_ID of the C-NMC labels CSV row naming it: the files the scan reads (found
    inside the folder, then the one given with --labels, remembered in the store), the same way."""
    root = Path(store.data_root)
    files = find_cnmc_label_files(root, warn_unusable=False)
    chosen = store.meta("labels_file")
    if chosen and Path(chosen).is_file():
        try:
            explicit = read_label_file(Path(chosen), root)
        except LabelFileError as exc:  # the scan that opened the store reported it already
            log.debug("labels file %s not read again for the export: %s", chosen, exc)
        else:
            if explicit.kind == "cnmc":
                files = [lf for lf in files if lf.path != explicit.path] + [explicit]
    if not files:
        return {}
    by_name: dict[str, str | None] = {}
    for rel in present:
        name = PurePosixPath(rel).name
        by_name[name] = None if name in by_name else rel
    out: dict[str, str] = {}
    for lf in files:
        for row in lf.rows:
            if row.original and not row.problem and (rel := lf.resolve(row.path, present, by_name)) is not None:
                out[rel] = row.original
    return out
