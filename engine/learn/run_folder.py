"""A training run's folder: what it holds, and how each file is written so a crash loses nothing.

torch is imported only by the functions that read or write tensors: the app lists runs without it.

    model.pt         best-by-validation model, self-describing (engine.model.save_model)
    last.pt          resume state after the last completed epoch: model, optimizer, plateau, rng
    config.json      the TrainConfig the run was started with
    split.json       exactly which images were train / val / test (Split.to_json)
    metrics.jsonl    one JSON line per epoch, appended and fsynced
    model_card.json  provenance: data, counts, weights, versions, split, device, results
    val_predictions.csv, test_predictions.csv
                     the best model's calibrated probabilities on those splits, with the labels

Every file except metrics.jsonl is replaced atomically (engine.utils.files); metrics.jsonl is only
appended, and lines past last.pt's epoch are dropped on resume, so the two always agree.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..data.splits import Split
from ..utils.files import atomic_write_json, atomic_write_text, check_writable_dir
from ..utils.process import marker_alive
from .checkpoints import check_format, load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

LAST_FORMAT = "allblast.last/1"
LAST_FILE = "resume checkpoint"
CHOOSE_LAST = "it cannot be resumed: train a new run instead"


def live_process(card: dict[str, Any]) -> int | None:
    """The pid of the process on this computer that trains the run of `card` now, else None (a
    run whose process was killed, by the user or for lack of memory, still says "running")."""
    if card.get("status") == "running" and marker_alive(card):
        return card["pid"]
    return None


class RunDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser()
        # True once this process has started a new run here (it may then record the run's
        # failure); a refused start (a run already there) never writes a thing.
        self.claimed = False

    # ---- paths -----------------------------------------------------------------------------
    model_path = property(lambda self: self.path / "model.pt")
    last_path = property(lambda self: self.path / "last.pt")
    config_path = property(lambda self: self.path / "config.json")
    split_path = property(lambda self: self.path / "split.json")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    card_path = property(lambda self: self.path / "model_card.json")

    def predictions_path(self, part: str) -> Path:
        """val_predictions.csv / test_predictions.csv: the best model on that split, with labels."""
        return self.path / f"{part}_predictions.csv"

    def create(self) -> "RunDir":
        check_writable_dir(self.path)
        return self

    def clean_temporaries(self) -> list[Path]:
        """Remove what an interrupted atomic write left (`.model.pt.x1y2.tmp`, 15 MB each). Call it
        only when no process writes this run: when a training of it starts or resumes."""
        removed = []
        for tmp in self.path.glob(".*.tmp") if self.path.is_dir() else []:
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError as exc:
                log.warning("could not remove the leftover %s: %s", tmp, exc)
        if removed:
            log.info("removed %d leftover temporary files from %s", len(removed), self.path)
        return removed

    def can_resume(self) -> bool:
        return self.last_path.is_file() and self.config_path.is_file() and self.split_path.is_file()

    def has_run(self) -> bool:
        """Whether a run already lives here (a new run must not silently overwrite it)."""
        return any(p.exists() for p in (self.last_path, self.model_path, self.metrics_path))

    # ---- json files ------------------------------------------------------------------------
    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_json(self.config_path, config)

    def read_config(self) -> dict[str, Any]:
        return read_json(self.config_path)

    def write_split(self, split: Split) -> None:
        atomic_write_json(self.split_path, split.to_json())

    def read_split(self) -> Split:
        return Split.from_json(read_json(self.split_path))

    def write_model_card(self, card: dict[str, Any]) -> None:
        atomic_write_json(self.card_path, card)

    def mark_failed(self, kind: str, message: str) -> None:
        """A run that failed before it could describe itself: a card that says so, next to
        whatever it had written (config.json, split.json)."""
        atomic_write_json(self.card_path, {"format": "allblast.model_card/1", "status": "failed",
                                           "failure": {"kind": kind, "message": message},
                                           "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")})

    def read_model_card(self) -> dict[str, Any]:
        return read_json(self.card_path)

    # ---- metrics.jsonl ---------------------------------------------------------------------
    def append_metrics(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, default=_json_default, allow_nan=True)
        with open(self.metrics_path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.is_file():
            return []
        out = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a crash mid-append
        return out

    def truncate_metrics(self, last_epoch: int) -> None:
        """Keep only epochs <= last_epoch (those last.pt knows about)."""
        keep = [r for r in self.read_metrics() if int(r.get("epoch", 0)) <= last_epoch]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in keep))

    # ---- checkpoints -----------------------------------------------------------------------
    def save_last(self, state: dict[str, Any]) -> None:
        save_checkpoint(state, self.last_path)
        log.debug("wrote %s (epoch %s)", self.last_path, state.get("epoch"))

    def load_last(self) -> dict[str, Any]:
        # weights_only: the state holds tensors, numbers, strings and containers only.
        state = load_checkpoint(self.last_path, what=LAST_FILE, choose=CHOOSE_LAST)
        if not isinstance(state, dict):
            raise ValueError(f"{self.last_path} is not an allblast {LAST_FILE}; {CHOOSE_LAST}")
        if "format" in state:  # written by every allblast version that resumes (a bare state is let through)
            check_format(state["format"], LAST_FORMAT, self.last_path, LAST_FILE, CHOOSE_LAST)
        return state

    def save_best(self, model, spec, **extra) -> None:
        from .model import save_model  # torch + timm: only when a run actually trains

        save_model(self.model_path, model, spec, **extra)
        log.info("wrote %s (best so far, epoch %s)", self.model_path, extra.get("epoch"))


class ReplicaRunDir(RunDir):
    """A DDP rank other than 0: the same folder, but it never writes (rank 0 writes the run)."""

    def create(self) -> "RunDir":
        return self

    def _skip(self, *args, **kwargs) -> None:
        return None

    clean_temporaries = write_config = write_split = write_model_card = mark_failed = _skip
    append_metrics = truncate_metrics = save_last = save_best = _skip


def read_json(path: Path) -> dict[str, Any]:
    """A run folder's JSON file; one line naming the file when it is missing or damaged."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path.name} is missing in {path.parent}: not a training run folder") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is damaged (not valid JSON: {exc}); restore it from a backup, or train a "
                         "new run") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is damaged (not a JSON object); restore it from a backup, or train a new run")
    return data


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


__all__ = ["CHOOSE_LAST", "LAST_FILE", "LAST_FORMAT", "ReplicaRunDir", "RunDir", "live_process", "read_json"]
