"""Which training runs belong to the open data set, and which one is its active model.

Runs made in the app live in `<database folder>/runs/` (`FOLDER/.allblast/runs/` beside the
images, or the user data folder for a read-only folder); runs made elsewhere (the CLI, a server)
are added by path. The list of added runs and the active model are kept in the data set's label
database, so every window and the CLI see the same. The Runs panel is a view of it; the active
model's stored predictions are what a reopened folder shows.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from ..learn.run_list import RunSummary, list_runs, summarize_run

log = logging.getLogger(__name__)
ADDED_KEY, ACTIVE_KEY = "runs_added", "active_model"


def new_run_name(backbone: str, when: str | None = None) -> str:
    """`<YYYYmmdd-HHMMSS>-<backbone>`: sorts by time, says what was trained (`when`: the time part)."""
    return f"{when or time.strftime('%Y%m%d-%H%M%S')}-{backbone.replace('/', '_')}"


class RunsCatalog:
    def __init__(self, store) -> None:
        self._store = store  # engine.labels.store.LabelStore of the open data set
        # Runs live beside the database; while the store still waits in the user cache for its first
        # label, beside where it will go (training is the user's own request to write there; a cache
        # folder the system may clear is no place for a model).
        self.root = Path(store.home if store.home is not None else store.db_path).parent / "runs"

    def new_run_dir(self, backbone: str) -> Path:
        path = self.root / new_run_name(backbone)
        n = 1
        while path.exists():  # two runs started in the same second
            n += 1
            path = self.root / f"{new_run_name(backbone)}-{n}"
        return path

    def added(self) -> list[Path]:
        try:
            return [Path(p) for p in json.loads(self._store.meta(ADDED_KEY) or "[]")]
        except (ValueError, TypeError):
            log.warning("the list of added runs in %s is unreadable; starting a new one", self._store.db_path)
            return []

    def add(self, path: str | Path) -> RunSummary:
        """List a run folder made elsewhere; raises FileNotFoundError when it is not a run."""
        path = Path(path).expanduser().resolve()
        summary = summarize_run(path)
        if not path.is_relative_to(self.root.resolve()) and path not in self.added():
            self._store.set_meta(ADDED_KEY, json.dumps([str(p) for p in [*self.added(), path]]))
        return summary

    def runs(self) -> list[RunSummary]:
        """Every run of this data set, newest first: those under `root`, then added ones."""
        return self.listing()()

    def listing(self) -> Callable[[], list[RunSummary]]:
        """`runs()` as a function that reads only run folders, not the database: the window calls
        it on a pool thread (the store's connection belongs to the thread that opened it)."""
        root, added = self.root, self.added()
        return lambda: _list(root, added)

    def active(self) -> Path | None:
        """The active model as it was chosen: a run folder, or a model file made elsewhere."""
        value = self._store.meta(ACTIVE_KEY)
        return Path(value) if value else None

    def active_model_file(self) -> Path | None:
        return model_file(self.active())

    def set_active(self, path: str | Path | None) -> None:
        """Make a run folder (its model.pt) or a model file the one predictions use."""
        if path is not None and model_file(path) is None:
            raise FileNotFoundError(f"{path} has no model.pt yet: only a run with a finished epoch, or a model "
                                    "file, can be the active model")
        self._store.set_meta(ACTIVE_KEY, None if path is None else str(Path(path).resolve()))


def _list(root: Path, added: list[Path]) -> list[RunSummary]:
    out = list_runs(root)
    seen = {r.path.resolve() for r in out}
    for path in added:
        if path.resolve() in seen:
            continue
        try:
            out.append(summarize_run(path))
        except (OSError, ValueError) as exc:
            log.info("added run %s is not readable now: %s", path, exc)
    return out


def model_file(path: str | Path | None) -> Path | None:
    """The model.pt a run folder or a model path names (None when there is none)."""
    if path is None:
        return None
    path = Path(path)
    candidate = path / "model.pt" if path.is_dir() else path
    return candidate if candidate.is_file() else None


__all__ = ["ACTIVE_KEY", "ADDED_KEY", "RunsCatalog", "model_file", "new_run_name"]
