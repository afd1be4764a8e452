"""A case's signatures and amendments as the label database keeps them (tables `signoffs`,
`signoff_cells`, `amendments`), where the signed reports go, and the two-person setting."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..labels.signed import case_title

SIGNED_DIR = "signed"  # beside the label database: <folder>/.allblast/signed/
TWO_PERSON_KEY = "signoff_two_person"


@dataclass(frozen=True)
class Signature:
    id: int
    case_key: str
    round: int  # 1, then one more for each signing after an amendment
    seq: int  # 1: the signature; 2: the second one (two-person rule)
    required: int  # signatures the round needs
    signer: str
    signed_at: str  # ISO-8601 UTC
    digest: str  # engine.cases.digest over its cells and their labels
    n_cells: int
    model: str | None  # the active model's sha256 when it was signed
    report: str  # the signed PDF, relative to the label database's folder
    report_sha256: str

    @property
    def title(self) -> str:
        return case_title(self.case_key)

    @property
    def when(self) -> str:
        """'2024-05-01 14:03 UTC'."""
        return self.signed_at[:16].replace("T", " ") + " UTC"


@dataclass(frozen=True)
class Amendment:
    id: int
    signoff_id: int  # the signature it amends (the case's latest when it was made)
    case_key: str
    path: str
    old: str | None
    new: str | None
    reason: str
    annotator: str
    changed_at: str
    action_id: int | None
    source: str


_SIG = ("SELECT id, case_key, round, seq, required, signer, signed_at, digest, n_cells, model, report, "
        "report_sha256 FROM signoffs")
_AMEND = ("SELECT id, signoff_id, case_key, path, old, new, reason, annotator, changed_at, action_id, source "
          "FROM amendments")


def signatures(store, case_key: str | None = None) -> list[Signature]:
    """Every signature (of one case), oldest first."""
    if case_key is None:
        return [Signature(*r) for r in store.query(_SIG + " ORDER BY id")]
    return [Signature(*r) for r in store.query(_SIG + " WHERE case_key = ? ORDER BY id", (case_key,))]


def signed_case_keys(store) -> list[str]:
    return [r[0] for r in store.query("SELECT case_key FROM signoffs GROUP BY case_key ORDER BY MIN(id)")]


def signed_labels(store, signoff_id: int) -> dict[str, str | None]:
    """The cells a signature covered, with their labels then."""
    return dict(store.query("SELECT path, label FROM signoff_cells WHERE signoff_id = ? ORDER BY path",
                            (signoff_id,)))


def amendments(store, case_key: str | None = None) -> list[Amendment]:
    """Every amendment (of one case), oldest first."""
    if case_key is None:
        return [Amendment(*r) for r in store.query(_AMEND + " ORDER BY id")]
    return [Amendment(*r) for r in store.query(_AMEND + " WHERE case_key = ? ORDER BY id", (case_key,))]


def latest_round(sigs: list[Signature]) -> list[Signature]:
    """The signatures of the newest round (a case's current signing)."""
    if not sigs:
        return []
    last = max(s.round for s in sigs)
    return [s for s in sigs if s.round == last]


def signed_dir(store) -> Path:
    return Path(store.db_path).parent / SIGNED_DIR


def report_file(store, sig: Signature) -> Path:
    return Path(store.db_path).parent / sig.report


def two_person(store) -> bool:
    """Whether a signing needs a second person's signature too (a setting of the data set)."""
    return store.meta(TWO_PERSON_KEY) == "1"


def set_two_person(store, on: bool) -> None:
    store.set_meta(TWO_PERSON_KEY, "1" if on else None)


def current_labels(store, paths) -> dict[str, str | None]:
    """The labels of `paths` now, present on disk or not (a path the database lacks is left out)."""
    paths = list(paths)
    out: dict[str, str | None] = {}
    for i in range(0, len(paths), 500):
        chunk = paths[i:i + 500]
        marks = ",".join("?" * len(chunk))
        out.update(store.query(
            "SELECT c.path, CASE WHEN l.path IS NULL THEN c.original ELSE l.label END FROM cells c "
            f"LEFT JOIN labels l ON l.path = c.path WHERE c.path IN ({marks})", chunk))
    return out


__all__ = ["Amendment", "SIGNED_DIR", "Signature", "TWO_PERSON_KEY", "amendments", "current_labels", "latest_round",
           "report_file", "set_two_person", "signatures", "signed_case_keys", "signed_dir", "signed_labels",
           "two_person"]
