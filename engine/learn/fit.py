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
from ..utils.files import is_disk_full
from ..utils.jobs import CancelToken, Cancelled
from ..utils.process import process_marker
from .config import TrainConfig
from .device import is_oom, oom_message
from .events import TrainingFailed, TrainingFinished, TrainingStarted
from .loops import NonFiniteLoss
from .distributed import is_main_process
from .run_folder import ReplicaRunDir, RunDir
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
        session.end.write_card("running", **process_marker())  # a live run is told from a killed one
        yield TrainingStarted(str(run.path), session.device_name, session.spec.classes,
                              len(session.parts["train"]), len(session.parts["val"]),
                              len(session.parts["test"]), session.split.protocol, session.start_epoch,
                              session.config.epochs, session.weights.get("source", "none"))
        reason = yield from session.loop(cancel)
        session.end.check_replicas()
        if reason != "cancelled" and main:  # rank 0 alone calibrates and tests the best model
            yield from session.end.calibrate(cancel)
            if session.parts["test"] and run.model_path.is_file():
                test_metrics = yield from session.end.test(cancel)
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
    session.end.write_card(reason, test_metrics)
    yield TrainingFinished(str(run.path), reason, session.epochs_done, session.best_epoch,
                           session.best_metrics, test_metrics, session.elapsed_total())


def _record_failure(failed: TrainingFailed, run: RunDir, session: TrainingSession | None, resume: bool) -> None:
    """The run folder says the run failed (the Runs panel lists it as such); a resumed run that
    failed to start keeps the card of its earlier training."""
    failure = {"kind": failed.kind, "message": failed.message}
    try:
        if session is not None:
            session.end.write_card("failed", failure=failure)
        elif not resume and run.claimed and run.config_path.is_file():  # never a run this start refused
            run.mark_failed(failed.kind, failed.message)
    except OSError as exc:  # a full disk or a vanished folder: the failure itself is still reported
        log.warning("could not record the failure in %s: %s", run.path, exc)


def _failure(exc: Exception, run: RunDir, config: TrainConfig, session: TrainingSession | None) -> TrainingFailed:
    """The one place a failure becomes a message: what happened, and what to do about it."""
    kept = _kept(run, session)
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
    elif is_disk_full(exc):
        kind = "disk-full"
        text = f"the disk holding {run.path} is full ({exc.strerror}); free some space.{kept}"
    elif isinstance(exc, PermissionError) or (isinstance(exc, OSError) and exc.errno == errno.EROFS):
        kind = "not-writable"
        text = f"cannot write the run folder {run.path} ({exc.strerror or exc}); choose a folder you can write to."
    elif isinstance(exc, ImageReadError) or (session is None and isinstance(exc, (ValueError, OSError))):
        kind, text = "data", worker_message(exc) + kept  # e.g. an image deleted while training
    else:
        kind, text = "error", f"{type(exc).__name__}: {worker_message(exc)}"
        details = {"traceback": traceback.format_exc()}
    # The log keeps the traceback of every failure; the user reads the one-line message (the
    # driver shows it: logged as a warning, it would print twice on a terminal).
    log.info("training in %s failed (%s): %s", run.path, kind, text, exc_info=exc)
    return TrainingFailed(text, kind, str(run.path), details)


def _kept(run: RunDir, session: TrainingSession | None) -> str:
    """What a failed run leaves to resume from, said in the failure's message."""
    if session is None:
        return ""
    if session.epochs_done > 0:
        return f" Checkpoints of the last completed epoch ({session.epochs_done}) are kept: resume the run."
    if run.model_path.is_file():  # the first epoch's model.pt was written, its last.pt was not
        return " The first epoch's model (model.pt) is kept: resume the run to continue from it."
    return ""


def worker_message(exc: BaseException) -> str:
    """The error's own message. An error in a DataLoader worker comes back with the worker's whole
    traceback as its message ("Caught X in DataLoader worker process 0. Original Traceback ...");
    its last line is the original message."""
    text = str(exc)
    if "Original Traceback" not in text:
        return text
    last = next((line for line in reversed(text.splitlines()) if line.strip()), text)
    name, sep, message = last.partition(": ")  # "engine.data.dataset.CellReadError: cannot read ..."
    return message if sep and " " not in name else last
