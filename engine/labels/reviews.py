"""An expert's review marks that are not label changes: confirmations ("the label shown is right",
an unsure cell's note) and disagreements with a model kept with a reason. Both tables are
append-only; the latest row of a cell counts. One transaction per call.

What counts as reviewed, and which disagreements are open, is decided in engine.cases.review from
these rows, the label history (`effective_changes`) and the model's answers.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..data.cells import UNSURE
from .errors import StoreError
from .signed import check_reason
from .stamps import default_annotator, now_utc

CONFIRM_SOURCES = ("keyboard", "batch", "cli", "script")  # or "accepted prediction (model <sha>)"
MAX_NOTE = 2000


@dataclass(frozen=True)
class Confirmation:
    path: str
    label: str | None  # the label confirmed (a class, or 'unsure' with a note)
    note: str | None
    annotator: str
    at: str
    source: str


@dataclass(frozen=True)
class Resolution:
    path: str
    model: str  # sha256
    label: str | None  # the expert's label kept
    predicted: str | None
    reason: str
    annotator: str
    at: str


_CURRENT = ("SELECT c.path, CASE WHEN l.path IS NULL THEN c.original ELSE l.label END FROM cells c "
            "LEFT JOIN labels l ON l.path = c.path WHERE c.path IN ({marks})")


def _who(annotator: str | None) -> str:
    return (annotator or "").strip() or default_annotator()


def _note(note: str | None) -> str | None:
    text = (note or "").strip()
    if len(text) > MAX_NOTE:
        raise StoreError(f"a note is at most {MAX_NOTE} characters")
    return text or None


def _current(conn, paths: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for i in range(0, len(paths), 500):
        chunk = paths[i:i + 500]
        out.update(conn.execute(_CURRENT.format(marks=",".join("?" * len(chunk))), chunk).fetchall())
    return out


def _written(store) -> None:
    """A review mark, like a label, is the expert's work: a pending store goes beside the images."""
    if store.home is not None:
        store._promote_after = True  # noqa: SLF001 - the store's own flag (engine.labels.pending)


def confirm(store, paths: Iterable[str], *, annotator: str | None = None, note: str | None = None,
            source: str = "keyboard") -> list[str]:
    """Record that each cell's current label is right (one transaction); returns the paths.

    An unlabeled cell cannot be confirmed (label it), and an unsure one only with a `note` (what
    the expert saw): both raise ValueError and nothing is written."""
    if source not in CONFIRM_SOURCES and not source.startswith("accepted prediction"):
        raise ValueError(f"unknown review source {source!r}")
    paths = list(dict.fromkeys(paths))
    note, who, now = _note(note), _who(annotator), now_utc()
    with store.transaction() as conn:
        current = _current(conn, paths)
        unknown = [p for p in paths if p not in current]
        if unknown:
            raise KeyError(f"not a cell of this data set: {unknown[0]}")
        blank = [p for p in paths if current[p] is None]
        if blank:
            raise ValueError(f"{blank[0]} has no label: give it a class (or mark it unsure with a note) instead "
                             "of confirming it")
        if note is None and any(current[p] == UNSURE for p in paths):
            first = next(p for p in paths if current[p] == UNSURE)
            raise ValueError(f"{first} is marked unsure: it counts as reviewed with a note saying what you saw")
        conn.executemany("INSERT INTO reviews(path, label, note, annotator, reviewed_at, source) "
                         "VALUES (?, ?, ?, ?, ?, ?)", [(p, current[p], note, who, now, source) for p in paths])
        _written(store)
    return paths


def keep(store, path: str, *, model: str, predicted: str | None, reason: str,
         annotator: str | None = None) -> Resolution:
    """Keep the expert's label of a cell the model disagrees with, for `reason` (one transaction)."""
    reason = check_reason(reason)
    if reason is None:
        raise ValueError("keeping a label the model disagrees with needs a reason")
    who, now = _who(annotator), now_utc()
    with store.transaction() as conn:
        current = _current(conn, [path])
        if path not in current:
            raise KeyError(f"not a cell of this data set: {path}")
        conn.execute("INSERT INTO resolutions(path, model, label, predicted, reason, annotator, resolved_at) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)", (path, model, current[path], predicted, reason, who, now))
        _written(store)
    return Resolution(path, model, current[path], predicted, reason, who, now)


def confirmations(store) -> dict[str, Confirmation]:
    """The latest confirmation of each cell."""
    rows = store.query("SELECT path, label, note, annotator, reviewed_at, source FROM reviews ORDER BY id")
    return {r[0]: Confirmation(*r) for r in rows}


def resolutions(store, model: str | None = None) -> dict[tuple[str, str], Resolution]:
    """(path, model sha256) -> the latest kept disagreement (of one model when `model` is given)."""
    sql = "SELECT path, model, label, predicted, reason, annotator, resolved_at FROM resolutions"
    rows = store.query(sql + (" WHERE model = ?" if model else "") + " ORDER BY id", (model,) if model else ())
    return {(r[0], r[1]): Resolution(*r) for r in rows}


def effective_changes(store) -> list[tuple[str, str | None, str]]:
    """(path, new label, source) of every label change in force, oldest first: the forward changes
    of actions that are done (undone ones left out, redone ones back in)."""
    return store.query("SELECT ch.path, ch.new, ch.source FROM changes ch JOIN actions a ON a.id = ch.action_id "
                       "WHERE a.state = 'done' AND ch.source NOT IN ('undo', 'redo') ORDER BY ch.id")


def review_history(store) -> list[dict]:
    """Confirmations and kept disagreements, oldest first (the history export)."""
    out = [dict(kind="confirm", path=p, label=lb, note=n, annotator=a, at=t, source=s, reason=None, model=None)
           for p, lb, n, a, t, s in store.query("SELECT path, label, note, annotator, reviewed_at, source "
                                                "FROM reviews ORDER BY id")]
    out += [dict(kind="keep", path=p, label=lb, note=None, annotator=a, at=t, source=f"model predicted {pr}",
                 reason=r, model=m)
            for p, m, lb, pr, r, a, t in store.query("SELECT path, model, label, predicted, reason, annotator, "
                                                     "resolved_at FROM resolutions ORDER BY id")]
    return sorted(out, key=lambda d: d["at"])


__all__ = ["Confirmation", "Resolution", "confirm", "confirmations", "effective_changes", "keep", "resolutions",
           "review_history"]
