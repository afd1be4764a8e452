"""What a run starts from: its config, split and (resumed) state, made by rank 0.

`start_run` is the first part of `session.TrainingSession`. A new run makes its split and writes
config.json and split.json; a resumed one reads them and last.pt. Under torchrun rank 0 does this
alone and broadcasts the result (or its failure) to the other ranks, so every rank trains the same
run even when only rank 0 can read the run folder.
"""
from __future__ import annotations

import os
from dataclasses import asdict
from typing import TYPE_CHECKING

from ..data.splits import make_split
from ..utils.logs import warn
from .config import RUN_CONTROL, TrainConfig
from .run_folder import RunDir, live_process

if TYPE_CHECKING:
    from .distributed import Dist


def start_run(scan, run: RunDir, config: TrainConfig, val_scan, resume: bool, dist: Dist | None):
    """(config, split, resumed state or None): made on rank 0, the same on every rank."""
    result = error = None
    if dist is None or dist.is_main:
        try:
            result = _prepare(scan, run, config, val_scan, resume)
        except Exception as exc:  # the other ranks must hear of it, or they wait forever
            error = exc
    if dist is not None:
        payload = None
        if dist.is_main:
            payload = ((f"{type(error).__name__}: {error}", None) if error else
                       (None, (result[0].to_dict(), result[1], result[2])))
        sent = dist.broadcast(payload)
        if not dist.is_main:
            if sent[0]:
                raise RuntimeError(f"rank 0 could not start the run: {sent[0]}")
            config_dict, split, state = sent[1]
            result = TrainConfig.from_dict(config_dict), split, state
    if error is not None:
        raise error
    return result


def _prepare(scan, run: RunDir, config: TrainConfig, val_scan, resume: bool):
    _refuse_a_live_run(run)
    if resume:
        run.clean_temporaries()  # a killed run's half-written checkpoint; this run is ours now
        return _restore(run, config)
    if run.has_run():
        raise ValueError(f"{run.path} already holds a training run; choose a new output folder "
                         "or resume it")
    run.claimed = True  # from here on the folder is this run's: its failure may be recorded
    run.create()
    run.clean_temporaries()
    # a separate test folder is the test: every other cell trains, but the validation ones
    test_fraction = 0.0 if config.test_dir and config.test_fraction is None else config.test_fraction
    split = make_split(scan, config.split, seed=config.seed, val_scan=val_scan,
                       val_fraction=config.val_fraction, test_fraction=test_fraction)
    for text in split.warnings:
        warn(text)
    run.write_split(split)
    return config, split, None


def _restore(run: RunDir, config: TrainConfig):
    from_best = not run.last_path.is_file() and run.model_path.is_file()
    if not (run.can_resume() or from_best and run.config_path.is_file() and run.split_path.is_file()):
        raise FileNotFoundError(f"nothing to resume in {run.path}: it needs last.pt, config.json and "
                                "split.json (no epoch finished yet?); start a new run instead")
    try:  # read_config names the file when it is no JSON object; these, when a field is wrong
        saved = TrainConfig.from_dict(run.read_config())
        saved.validate()
    except (TypeError, ValueError) as exc:
        text = str(exc)
        raise ValueError(text if str(run.config_path) in text else f"{run.config_path} is damaged ({text}); "
                         "restore it from a backup, or train a new run") from None
    changed = [k for k in asdict(saved) if k not in RUN_CONTROL and getattr(saved, k) != getattr(config, k)]
    if changed:
        warn(f"resuming with the run's saved {', '.join(changed)} (they define the run)")
    for k in RUN_CONTROL:
        setattr(saved, k, getattr(config, k))
    split = run.read_split()
    if from_best:  # the first epoch's last.pt was never written (a full disk): its model.pt was
        state = best_as_state(run)
        warn(f"{run.last_path.name} is missing: resuming from model.pt (epoch {state['epoch']}); the "
             "optimizer and the learning-rate schedule start afresh")
        return saved, split, state
    return saved, split, run.load_last()


def best_as_state(run: RunDir) -> dict:
    """What last.pt would hold, as far as model.pt (the best epoch's weights) tells it: the model,
    its epoch and metrics; no optimizer, schedule or random state."""
    from .model import read_checkpoint

    spec, weights, extras = read_checkpoint(run.model_path)
    epoch = int(extras.get("epoch") or 0)
    if epoch < 1:
        raise ValueError(f"{run.model_path} does not say its epoch: it cannot be resumed; train a new run")
    return {"epoch": epoch, "spec": spec.to_dict(), "model": weights, "best_epoch": epoch,
            "best_metrics": dict(extras.get("metrics") or {}), "weights": dict(extras.get("weights") or {})}


def _refuse_a_live_run(run: RunDir) -> None:
    """Never two trainings in one run folder: a card that says running, of a process still alive."""
    if not run.card_path.is_file():
        return
    try:
        card = run.read_model_card()
    except (OSError, ValueError):
        return  # a damaged card: the start's own checks decide
    pid = live_process(card)
    if pid is not None and pid != os.getpid():  # this process knows what it trains (the app's one run)
        raise ValueError(f"{run.path} is being trained right now (process {pid} on this computer); wait for it "
                         "to end, or stop it, before starting or resuming a run there")
