"""`fit`: a whole training run as a generator of `engine.learn.events` that a driver reacts to.

Answer `AskContinue` with `gen.send(Continue(n))` (train n more epochs, then ask again) or
`gen.send(Halt())`; sending None is Halt. Every failure ends in one `TrainingFailed` whose message
says what to do (never an exception); a cancel (token or KeyboardInterrupt) ends in
`TrainingFinished("cancelled")`. The run's state and recipe live in `session.TrainingSession`.
"""
from __future__ import annotations

import errno
import logging
import traceback
from collections.abc import Generator

from ..data.imaging import ImageReadError
from ..utils.jobs import CancelToken, Cancelled
from .config import TrainConfig
from .device import is_oom, oom_message
from .events import TrainingFailed, TrainingFinished, TrainingStarted
from .loops import NonFiniteLoss
from .distributed import is_main_process
from .runs import ReplicaRunDir, RunDir, process_marker
from .session import TrainingSession
from .weights import WeightsNotFoundError

log = logging.getLogger(__name__)

__all__ = ["fit", "TrainConfig"]


def fit(scan, out_dir, config: TrainConfig, *, val_scan=None, cancel: CancelToken | None = None,
        resume: bool = False) -> Generator[object, object, None]:
    """Train into the run folder `out_dir`, yielding events (see the module docstring)."""
    main = is_main_process()  # torchrun's other ranks train alongside, and write nothing
    run = RunDir(out_dir) if main else ReplicaRunDir(out_dir)
    cancel = cancel or CancelToken()
    session: TrainingSession | None = None
    test_metrics = None
    try:
        session = TrainingSession(scan, run, config, val_scan, resume)
        session.write_card("running", **process_marker())  # a live run is told from a killed one
        yield TrainingStarted(str(run.path), session.device_name, session.spec.classes,
                              len(session.parts["train"]), len(session.parts["val"]),
                              len(session.parts["test"]), session.split.protocol, session.start_epoch,
                              session.config.epochs, session.weights.get("source", "none"))
        reason = yield from session.loop(cancel)
        session.check_replicas()
        if reason != "cancelled" and main:  # rank 0 alone calibrates and tests the best model
            yield from session.calibrate(cancel)
            if session.parts["test"] and run.model_path.is_file():
                test_metrics = yield from session.test(cancel)
        if session.dist is not None:
            session.dist.barrier()  # the others wait for rank 0's test pass, then all end together
    except (Cancelled, KeyboardInterrupt):
        if session is None:
            raise
        reason = "cancelled"
    except Exception as exc:
        failed = _failure(exc, run, config, session)
        _record_failure(failed, run, session, resume)
        yield failed
        return
    session.write_card(reason, test_metrics)
    yield TrainingFinished(str(run.path), reason, session.epochs_done, session.best_epoch,
                           session.best_metrics, test_metrics, session.elapsed_total())


def _record_failure(failed: TrainingFailed, run: RunDir, session: TrainingSession | None, resume: bool) -> None:
    """The run folder says the run failed (the Runs panel lists it as such); a resumed run that
    failed to start keeps the card of its earlier training."""
    failure = {"kind": failed.kind, "message": failed.message}
    try:
        if session is not None:
            session.write_card("failed", failure=failure)
        elif not resume and run.config_path.is_file():
            run.mark_failed(failed.kind, failed.message)
    except OSError as exc:  # a full disk or a vanished folder: the failure itself is still reported
        log.warning("could not record the failure in %s: %s", run.path, exc)


def _failure(exc: Exception, run: RunDir, config: TrainConfig, session: TrainingSession | None) -> TrainingFailed:
    """The one place a failure becomes a message: what happened, and what to do about it."""
    kept = (f" Checkpoints of the last completed epoch ({session.epochs_done}) are kept: resume the run."
            if session is not None and session.epochs_done > 0 else "")
    details: dict = {}
    if isinstance(exc, WeightsNotFoundError):
        kind, text = "weights", str(exc)
    elif is_oom(exc):
        if session is not None:
            session.release()
        img_size = session.spec.img_size if session is not None else config.img_size
        batch = session.config.batch_size if session is not None else config.batch_size
        kind, text = "out-of-memory", oom_message(batch, img_size) + kept
    elif isinstance(exc, NonFiniteLoss):
        lr = session.config.lr if session is not None else config.lr
        kind = "nan-loss"
        text = (f"{exc}. Lower the learning rate (e.g. --lr {lr / 10:g}) or check the data for broken or "
                f"unusual images.{kept}")
        details = {"epoch": exc.epoch, "batch": exc.batch, "phase": exc.phase}
    elif isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        kind = "disk-full"
        text = f"the disk holding {run.path} is full ({exc.strerror}); free some space.{kept}"
    elif isinstance(exc, PermissionError) or (isinstance(exc, OSError) and exc.errno == errno.EROFS):
        kind = "not-writable"
        text = f"cannot write the run folder {run.path} ({exc.strerror or exc}); choose a folder you can write to."
    elif isinstance(exc, ImageReadError) or (session is None and isinstance(exc, (ValueError, OSError))):
        kind, text = "data", str(exc)
    else:
        kind, text = "error", f"{type(exc).__name__}: {exc}"
        details = {"traceback": traceback.format_exc()}
    # The log keeps the traceback of every failure; the user reads the one-line message.
    log.warning("training in %s failed (%s): %s", run.path, kind, text, exc_info=exc)
    return TrainingFailed(text, kind, str(run.path), details)
