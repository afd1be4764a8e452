"""The label database's schema and its migrations. The schema is versioned with
`PRAGMA user_version`; a file written by a newer allblast is refused rather than damaged, and a
file whose tables do not match its version (another allblast changed it) is refused before a
migration could fail halfway.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

from .errors import StoreError
from .stamps import now_utc

SCHEMA_VERSION = 4

_SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE cells(
    path TEXT PRIMARY KEY,          -- relative to the data root, '/' separators
    original TEXT,                  -- label from the data set (folder / CSV); NULL = unlabeled
    patient TEXT,
    label_source TEXT,
    present INTEGER NOT NULL DEFAULT 1,  -- 0: no longer on disk (labels kept)
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL
);
CREATE TABLE labels(                -- a user's label overrides the original (no row: the original holds)
    path TEXT PRIMARY KEY REFERENCES cells(path),
    label TEXT,                     -- class name, 'unsure', or NULL (explicitly unlabeled)
    annotator TEXT NOT NULL,
    changed_at TEXT NOT NULL
);
CREATE TABLE actions(               -- the global undo stack
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,             -- keyboard | batch | csv-import | cli
    state TEXT NOT NULL CHECK (state IN ('done', 'undone', 'discarded')),
    annotator TEXT NOT NULL,
    created_at TEXT NOT NULL,
    n INTEGER NOT NULL
);
CREATE INDEX actions_state ON actions(state, id);
CREATE TABLE changes(               -- append-only history, undo and redo included
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    action_id INTEGER NOT NULL REFERENCES actions(id),
    path TEXT NOT NULL REFERENCES cells(path),
    old TEXT,
    new TEXT,
    annotator TEXT NOT NULL,
    changed_at TEXT NOT NULL,
    source TEXT NOT NULL,
    prev_set INTEGER NOT NULL,      -- the override row before this change (for exact undo)
    prev_annotator TEXT,
    prev_changed_at TEXT
);
CREATE INDEX changes_path ON changes(path, id);
CREATE INDEX changes_action ON changes(action_id, id);
CREATE TABLE files(                 -- the scan index: what decoding each file told us
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    digest TEXT,
    problem TEXT,
    width INTEGER NOT NULL DEFAULT 0,
    height INTEGER NOT NULL DEFAULT 0
);
"""


# Version 2: per-cell model outputs, keyed by the model file's sha256 (the app shows them at once on
# reopen; switching the active model switches them).
_SCHEMA_V2 = """
CREATE TABLE models(
    sha256 TEXT PRIMARY KEY,        -- of model.pt
    path TEXT NOT NULL,             -- where it was when it predicted
    name TEXT NOT NULL,             -- e.g. the run folder's name
    classes TEXT NOT NULL,          -- JSON list, the order of the probability columns
    temperature REAL NOT NULL DEFAULT 1.0,
    tta INTEGER NOT NULL DEFAULT 0,
    predicted_at TEXT NOT NULL
);
CREATE TABLE predictions(
    model TEXT NOT NULL REFERENCES models(sha256) ON DELETE CASCADE,
    path TEXT NOT NULL,             -- the cell, relative to the data root
    probs BLOB NOT NULL,            -- float32, one per class, calibrated
    PRIMARY KEY(model, path)
) WITHOUT ROWID;
"""


# Version 3: the data set's class set (engine.labels.classes) and the history of its edits.
_SCHEMA_V3 = """
CREATE TABLE classes(
    name TEXT PRIMARY KEY,
    key INTEGER UNIQUE,             -- number key 1-9; NULL: none (more than nine classes)
    color TEXT NOT NULL,            -- #RRGGBB
    ord INTEGER NOT NULL,           -- display order
    positive INTEGER NOT NULL DEFAULT 0  -- 1: the class reports count as suspicious (blasts)
);
CREATE TABLE class_changes(         -- append-only: add, rename, colour, key, order, positive, delete, undo/redo
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    action_id INTEGER REFERENCES actions(id),  -- rename / delete: the undoable action that relabelled cells
    kind TEXT NOT NULL,
    name TEXT NOT NULL,             -- the class, as named before the change
    old TEXT,                       -- JSON of the class before (NULL: added)
    new TEXT,                       -- JSON of the class after (NULL: deleted)
    annotator TEXT NOT NULL,
    changed_at TEXT NOT NULL
);
"""


# Version 4: each cell's embedding kept with a model's predictions (engine.learn.embeddings: the
# pooled backbone feature, float16; 2 bytes per feature, 2,560 for Lite0), and which model's
# embeddings a model shares (a Keep Learning round keeps its parent's backbone, so its cells'
# embeddings are its parent's: stored once). Other tables of this version join this block.
_SCHEMA_V4 = """
CREATE TABLE embeddings(           -- one row per stored batch: a row per cell (2.6 KB) would fill a page alone
    id INTEGER PRIMARY KEY,         -- later rows win: a cell predicted again is found in its latest batch
    model TEXT NOT NULL REFERENCES models(sha256) ON DELETE CASCADE,
    paths TEXT NOT NULL,            -- JSON list of the batch's cells, relative to the data root
    vecs BLOB NOT NULL              -- float16, len(paths) x the model's features, in that order
);
CREATE INDEX embeddings_model ON embeddings(model, id);
ALTER TABLE models ADD COLUMN embeddings_from TEXT;  -- NULL: its own; else the sha256 whose embeddings it uses
"""


# Version 4 too: review marks and sign-off (engine.labels.reviews, engine.labels.signed,
# engine.cases): confirmations and unsure notes, disagreements kept with a reason, signatures with
# the cells they covered, and amendments to signed cases.
_SCHEMA_V4_SIGNOFF = """
CREATE TABLE reviews(               -- append-only: "the label shown is right" (or an unsure cell's note)
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL REFERENCES cells(path),
    label TEXT,                     -- the label confirmed, as it was: a class, or 'unsure' with a note
    note TEXT,
    annotator TEXT NOT NULL,
    reviewed_at TEXT NOT NULL,
    source TEXT NOT NULL            -- keyboard | batch | cli | script | accepted prediction (model <sha>)
);
CREATE INDEX reviews_path ON reviews(path, id);
CREATE TABLE resolutions(           -- append-only: a label kept against a model's disagreement, with why
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL REFERENCES cells(path),
    model TEXT NOT NULL,            -- the model's sha256
    label TEXT,                     -- the expert's label kept
    predicted TEXT,                 -- what the model said
    reason TEXT NOT NULL,
    annotator TEXT NOT NULL,
    resolved_at TEXT NOT NULL
);
CREATE INDEX resolutions_path ON resolutions(path, model, id);
CREATE TABLE signoffs(              -- append-only: a case's signatures (engine.cases.signoff)
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    case_key TEXT NOT NULL,         -- patient:<id> | folder: | folder:<sub-folder>
    round INTEGER NOT NULL,         -- 1, then one more for each signing after an amendment
    seq INTEGER NOT NULL,           -- 1; 2 for the second signature (two-person rule)
    required INTEGER NOT NULL,      -- signatures the round needs
    signer TEXT NOT NULL,
    signed_at TEXT NOT NULL,
    digest TEXT NOT NULL,           -- sha256 of the case's cells and labels (engine.cases.digest)
    n_cells INTEGER NOT NULL,
    model TEXT,                     -- the active model's sha256 (NULL: none)
    report TEXT NOT NULL,           -- the signed PDF, relative to the database's folder
    report_sha256 TEXT NOT NULL,
    UNIQUE(case_key, round, seq)
);
CREATE TABLE signoff_cells(         -- what a signature covered: each cell with its label then
    signoff_id INTEGER NOT NULL REFERENCES signoffs(id),
    path TEXT NOT NULL,
    label TEXT,
    PRIMARY KEY(signoff_id, path)
) WITHOUT ROWID;
CREATE INDEX signoff_cells_path ON signoff_cells(path);
CREATE TABLE amendments(            -- append-only: a signed case's label changed afterwards, with the reason
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    signoff_id INTEGER NOT NULL REFERENCES signoffs(id),
    case_key TEXT NOT NULL,
    path TEXT NOT NULL,
    old TEXT,
    new TEXT,
    reason TEXT NOT NULL,
    annotator TEXT NOT NULL,
    changed_at TEXT NOT NULL,
    action_id INTEGER REFERENCES actions(id),
    source TEXT NOT NULL
);
CREATE INDEX amendments_case ON amendments(case_key, id);
"""


def _statements(script: str) -> list[str]:
    """Split a script into statements (executescript would COMMIT our transaction)."""
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    return out


def migrate(conn: sqlite3.Connection, db_path: Path, data_root: Path) -> None:
    if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
        row = conn.execute("SELECT value FROM meta WHERE key = 'root'").fetchone()
        if row is not None and row[0] == str(data_root):
            return  # nothing to write: opening needs no write lock
    conn.execute("BEGIN IMMEDIATE")  # two openers at once: the second waits, then sees the schema
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the label database {db_path} was written by a newer allblast (schema {version}, this "
                f"version reads {SCHEMA_VERSION}); update allblast, or open the data set with another db_path"
            )
        _check_tables_match(conn, db_path, version)
        if version == 0:
            if conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]:
                raise StoreError(
                    f"{db_path} is an SQLite file but not an allblast label database; move it aside "
                    "or choose another db_path"
                )
            for statement in _statements(_SCHEMA):
                conn.execute(statement)
            conn.execute("INSERT INTO meta(key, value) VALUES ('created_at', ?)", (now_utc(),))
            version = 1
        if version < 2:  # migrations run in order, inside this one transaction
            for statement in _statements(_SCHEMA_V2):
                conn.execute(statement)
        if version < 3:
            for statement in _statements(_SCHEMA_V3):
                conn.execute(statement)
        if version < 4:
            for statement in _statements(_SCHEMA_V4) + _statements(_SCHEMA_V4_SIGNOFF):
                conn.execute(statement)
        if version < SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        old_root = conn.execute("SELECT value FROM meta WHERE key = 'root'").fetchone()
        if old_root is None or old_root[0] != str(data_root):
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('root', ?)", (str(data_root),))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


# The tables each schema version adds: a file whose version is older than its tables was written
# (or changed) by another allblast, and migrating it would fail halfway ("table ... already exists").
_ADDED_IN = {1: ("cells", "labels", "actions", "changes"), 2: ("models", "predictions"),
             3: ("classes", "class_changes"),
             4: ("embeddings", "reviews", "resolutions", "signoffs", "signoff_cells", "amendments")}


def _check_tables_match(conn: sqlite3.Connection, db_path: Path, version: int) -> None:
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    later = [t for v, names in _ADDED_IN.items() if v > version for t in names if t in tables]
    if later:
        raise StoreError(
            f"the label database {db_path} comes from another (newer or older) version of allblast: it says "
            f"schema {version} but holds tables of a later one ({', '.join(later)}); open it with the allblast "
            "that wrote it, or move it aside (rename it) and import your last exported labels CSV"
        )


__all__ = ["SCHEMA_VERSION", "migrate"]
