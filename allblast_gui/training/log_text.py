"""The words for a run's events: the Training dock's title and log lines, and the status bar's
line when a run ends. Plain functions of the engine's events (engine.learn.events)."""
from __future__ import annotations

from pathlib import Path

REASONS = {"completed": "finished", "halted": "halted by the user", "early-stopped": "stopped early (no improvement)",
           "cancelled": "stopped; checkpoints kept"}


def started_title(e) -> str:
    leaky = " (leaky: the same patient in training and validation)" if e.split_protocol == "image" else ""
    return (f"{Path(e.run_dir).name} · {', '.join(e.classes)} · {e.n_train} train / {e.n_val} val / {e.n_test} "
            f"test cells · {e.split_protocol} split{leaky} · {e.device} · weights: {e.weights_source}")


def started_line(e) -> str:
    return f"training {e.n_train} cells on {e.device}" + (f", resuming after epoch {e.start_epoch}" if e.start_epoch else "")


def epoch_lines(e, history, monitor: str) -> list[tuple[str, str]]:
    """(text, kind) lines for an epoch's end: a halved learning rate, a new best, the checkpoint."""
    lines = []
    if len(history.lr) >= 2 and history.lr[-1] < history.lr[-2]:
        lines.append((f"epoch {e.epoch} ran at a halved learning rate, {history.lr[-1]:.2e} (epoch {e.epoch - 1} "
                      "did not improve)", "info"))
    if e.is_best:
        lines.append((f"epoch {e.epoch}: new best ({monitor}); wrote model.pt", "best"))
    lines.append((f"epoch {e.epoch} done in {e.seconds:.0f} s; wrote last.pt", "info"))
    return lines


def finished_line(e) -> str:
    text = f"{Path(e.run_dir).name}: {REASONS.get(e.reason, e.reason)} after {e.epochs_run} epochs"
    if e.best_epoch:
        text += f"; best epoch {e.best_epoch}"
    if e.test_metrics and e.test_metrics.get("accuracy") is not None:
        leaky = " (leaky split)" if e.test_metrics.get("leaky") else ""
        text += (f"; test accuracy {e.test_metrics['accuracy']:.3f}, weighted F1 "
                 f"{e.test_metrics['weighted_f1']:.3f}{leaky}")
    return text


def finished_message(e) -> str:
    return (f"Training {REASONS.get(e.reason, e.reason)} after {e.epochs_run} epochs "
            f"(best epoch {e.best_epoch or '–'}): see the Training dock")
