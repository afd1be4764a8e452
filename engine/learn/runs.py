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
import platform
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.splits import LEAKY_NOTE, Split
from ..utils.files import atomic_write_json, atomic_write_text, check_writable_dir
from ..utils.process import marker_alive, process_marker
from .checkpoints import check_format, load_checkpoint, save_checkpoint


log = logging.getLogger(__name__)


FINISHED_STATES = ("completed", "halted", "early-stopped")
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
        return _read_json(self.config_path)

    def write_split(self, split: Split) -> None:
        atomic_write_json(self.split_path, split.to_json())

    def read_split(self) -> Split:
        return Split.from_json(_read_json(self.split_path))

    def write_model_card(self, card: dict[str, Any]) -> None:
        atomic_write_json(self.card_path, card)

    def mark_failed(self, kind: str, message: str) -> None:
        """A run that failed before it could describe itself: a card that says so, next to
        whatever it had written (config.json, split.json)."""
        atomic_write_json(self.card_path, {"format": "allblast.model_card/1", "status": "failed",
                                           "failure": {"kind": kind, "message": message},
                                           "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")})

    def read_model_card(self) -> dict[str, Any]:
        return _read_json(self.card_path)

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


def _read_json(path: Path) -> dict[str, Any]:
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


# ---- rng state: resume continues the same random stream ---------------------------------------
def rng_state() -> dict[str, Any]:
    import torch

    st = np.random.get_state()
    out = {
        "python": random.getstate(),
        "numpy": [st[0], torch.from_numpy(st[1].astype(np.int64)), int(st[2]), int(st[3]), float(st[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    if "python" in state:
        v, internal, gauss = state["python"]
        random.setstate((v, tuple(internal), gauss))
    if "numpy" in state:
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda"])
        except RuntimeError:
            pass  # a different number of GPUs now; the data order is still reproduced


# ---- model card ---------------------------------------------------------------------------------
def versions() -> dict[str, str]:
    import timm
    import torch

    from .. import __version__ as allblast

    return {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
            "allblast": allblast, "platform": sys.platform,
            # an installer bundle (PyInstaller) or a Python environment: provenance of the run
            "build": "installer" if getattr(sys, "frozen", False) else "python"}


def split_counts(paths: list[str], cells_by_path: dict[str, Any]) -> dict[str, Any]:
    """Images per class and per patient (patient -> class -> n) of one split."""
    cells = [cells_by_path[p] for p in paths if p in cells_by_path]
    per_class = Counter(c.label for c in cells)
    per_patient: dict[str, Counter] = {}
    for c in cells:
        per_patient.setdefault(c.patient or "(unknown)", Counter())[c.label] += 1
    return {
        "n": len(cells),
        "per_class": dict(sorted(per_class.items())),
        "n_patients": len({c.patient for c in cells if c.patient is not None}),
        "per_patient": {p: dict(sorted(v.items())) for p, v in sorted(per_patient.items())},
    }


def build_model_card(*, status: str, data_root, split: Split, spec, weights: dict[str, Any],
                     config: dict[str, Any], counts: dict[str, Any], device: str, amp: str,
                     wall_time_s: float, epochs_run: int, best_epoch: int, monitor: str,
                     best_metrics: dict[str, Any], test_metrics: dict[str, Any] | None,
                     **extra: Any) -> dict[str, Any]:
    """Provenance of a run: data, counts per class and patient, weights, versions, split, results.

    `status` is "running" while training (with the process in `extra`), then one of FINISHED_STATES,
    "cancelled" or "failed" (with `failure`: kind and message). `extra` also carries `calibration`
    (temperature, ECE before and after on the validation split) once it is fitted."""
    s = split
    return {
        "format": "allblast.model_card/1",
        "status": status,
        **extra,
        "data_root": str(data_root),
        "val_root": s.val_root,
        "classes": list(spec.classes),
        "backbone": spec.backbone,
        "img_size": spec.img_size,
        "weights": weights,
        "split": {"protocol": s.protocol, "leaky": s.leaky, "by_patient": s.by_patient, "seed": s.seed,
                  "warnings": s.warnings, **({"leaky_note": LEAKY_NOTE} if s.leaky else {}),
                  "counts": counts},
        "seed": config.get("seed"),
        "device": device,
        "amp": amp,
        "versions": versions(),
        "wall_time_s": round(wall_time_s, 2),
        "epochs_run": epochs_run,
        "best_epoch": best_epoch,
        "monitor": monitor,
        "best_metrics": best_metrics,
        "test_metrics": test_metrics,
        "config": config,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# ---- run lists (the app's Runs panel) ------------------------------------------------------------
@dataclass
class RunSummary:
    """One row of a run list: what a run is and how it went, read from its folder."""

    path: Path
    started: str  # local time of the first file, "YYYY-mm-dd HH:MM"
    backbone: str
    img_size: int | None
    split: str
    leaky: bool
    epochs_run: int
    best_epoch: int
    best: dict[str, float]  # the best epoch's metrics (val_loss, val_accuracy, val_weighted_f1, ...)
    status: str  # running | finished | stopped | failed
    detail: str  # completed / halted / early-stopped / cancelled / interrupted / the failure message


def summarize_run(path: str | os.PathLike) -> RunSummary:
    """Read a run folder (config.json, model_card.json, metrics.jsonl); raises FileNotFoundError
    when `path` is not a run folder."""
    run = RunDir(path)
    if not run.config_path.is_file():
        raise FileNotFoundError(f"{run.path} is not a training run folder (no config.json)")
    config = _read_json(run.config_path)
    card, damaged = {}, None
    if run.card_path.is_file():
        try:
            card = _read_json(run.card_path)
        except (OSError, ValueError) as exc:  # listed all the same: its model and checkpoints are still there
            damaged = str(exc)
    metrics = run.read_metrics()
    best = [m for m in metrics if m.get("is_best")]
    best_epoch = int(best[-1]["epoch"]) if best else int(card.get("best_epoch") or 0)
    best_metrics = dict(card.get("best_metrics") or {})
    if not best_metrics and best:
        best_metrics = {f"{part}_{k}": v for part in ("train", "val") for k, v in best[-1].get(part, {}).items()
                        if k in ("loss", "accuracy", "weighted_f1")}
    status, detail = _status(card, run)
    if damaged:
        detail = damaged
    split = card.get("split") or {}
    leaky = bool(split.get("leaky", config.get("split") == "image"))
    first = min((p.stat().st_mtime for p in (run.config_path, run.split_path) if p.exists()),
                default=run.config_path.stat().st_mtime)
    return RunSummary(run.path, time.strftime("%Y-%m-%d %H:%M", time.localtime(first)),
                      card.get("backbone") or config.get("backbone", "?"),
                      card.get("img_size") or config.get("img_size"), split.get("protocol") or config.get("split", "?"),
                      leaky, len(metrics), best_epoch, best_metrics, status, detail)


def run_status(card: dict[str, Any], run: RunDir) -> tuple[str, str]:
    """(status, detail) of a run from its card, a "running" one told live or killed by its process."""
    return _status(card, run)


def _status(card: dict[str, Any], run: RunDir) -> tuple[str, str]:
    state = card.get("status")
    if state in FINISHED_STATES:
        return "finished", state
    if state == "cancelled":
        return "stopped", "stopped by the user"
    if state == "failed":
        failure = card.get("failure") or {}
        return "failed", failure.get("message") or "failed"
    if state == "running":
        if live_process(card) is not None:
            return "running", "training"
        return "stopped", "interrupted"  # its process is gone: killed, or out of memory
    return ("stopped", "interrupted") if run.last_path.is_file() else ("failed", "did not start")


def list_runs(folder: str | os.PathLike) -> list[RunSummary]:
    """Every run folder directly inside `folder`, newest first; unreadable ones are skipped."""
    folder = Path(folder)
    out = []
    for child in sorted(folder.iterdir()) if folder.is_dir() else []:
        try:
            out.append(summarize_run(child))
        except (OSError, ValueError) as exc:
            log.debug("not a readable run folder: %s (%s)", child, exc)
    return sorted(out, key=lambda r: r.started, reverse=True)
