"""Run folders as rows of a list (the app's Runs panel, `report`): what each run is and how it
went, told from its files alone; a card that says "running" is asked whether its process lives."""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .run_folder import RunDir, live_process, read_json

log = logging.getLogger(__name__)

FINISHED_STATES = ("completed", "halted", "early-stopped")


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
    # a round of Keep Learning (engine.workspace.loop.LoopInfo as a dict: id, round, strategy,
    # expert_labels, labels, start, parent); None for a run of its own
    loop: dict | None = None

    @property
    def loop_text(self) -> str:
        """'round 2 of loop-20260105-101500 (diverse, 60 labels)', or ''."""
        lp = self.loop or {}
        if not lp:
            return ""
        return (f"round {lp.get('round')} of {lp.get('id')} ({lp.get('strategy')}, {lp.get('labels')} labels, "
                f"{lp.get('start')})")


def summarize_run(path: str | os.PathLike) -> RunSummary:
    """Read a run folder (config.json, model_card.json, metrics.jsonl); raises FileNotFoundError
    when `path` is not a run folder."""
    run = RunDir(path)
    if not run.config_path.is_file():
        raise FileNotFoundError(f"{run.path} is not a training run folder (no config.json)")
    config = read_json(run.config_path)
    card, damaged = {}, None
    if run.card_path.is_file():
        try:
            card = read_json(run.card_path)
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
    loop = card.get("loop") if isinstance(card.get("loop"), dict) else config.get("loop")
    return RunSummary(run.path, time.strftime("%Y-%m-%d %H:%M", time.localtime(first)),
                      card.get("backbone") or config.get("backbone", "?"),
                      card.get("img_size") or config.get("img_size"), split.get("protocol") or config.get("split", "?"),
                      leaky, len(metrics), best_epoch, best_metrics, status, detail,
                      loop if isinstance(loop, dict) else None)


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


__all__ = ["FINISHED_STATES", "RunSummary", "list_runs", "run_status", "summarize_run"]
