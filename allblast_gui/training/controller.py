"""Training in the app: the engine's `fit` on a background thread, its events as Qt signals.

The controller owns one GeneratorWorker at a time (on its own one-thread pool, so opening folders
and loading images never wait behind training). The worker thread only runs `fit` and queues its
events; this object, on the GUI thread, keeps the run's `TrainingHistory` and re-emits each event
as a typed signal. `AskContinue` is answered by `on_ask` (scripts) or by whoever listens to
`askContinue` (the continue dialog) through `answer()`. `stop()` sets the engine's cancel token:
`fit` ends within one batch, keeps its checkpoints and reports `TrainingFinished("cancelled")`.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QEventLoop, QObject, QTimer, Signal

from engine.learn.config import TrainConfig
from engine.learn.events import (AskContinue, BatchProgress, Continue, EpochEnd, Halt, Message, TrainingFailed,
                                 TrainingFinished, TrainingStarted)
from engine.learn.run_folder import RunDir
from engine.utils.jobs import CancelToken

from ..workers import GeneratorWorker, TaskRunner, lower_thread_priority
from .history import TrainingHistory

log = logging.getLogger(__name__)
TRAIN_KEY = "train"


def _background(gen):
    lower_thread_priority()
    return (yield from gen)


class TrainingController(QObject):
    started = Signal(object)  # TrainingStarted
    progress = Signal(object)  # BatchProgress (train, val and test phases)
    epochEnded = Signal(object)  # EpochEnd, after the history has it
    message = Signal(str)  # a line for the training log (engine Message, checkpoints written)
    warned = Signal(str)  # an engine warning (leaky split, few patients, ...)
    askContinue = Signal(dict)  # summary of the last epochs: answer with answer(n) or answer(None)
    finished = Signal(object)  # TrainingFinished
    failed = Signal(object)  # TrainingFailed
    runningChanged = Signal(bool)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._runner = TaskRunner(self, max_threads=1)
        self._worker: GeneratorWorker | None = None
        self._token: CancelToken | None = None
        self._waiting: AskContinue | None = None  # a question the engine waits on
        self.history = TrainingHistory()
        self.run_dir: Path | None = None
        self.config: TrainConfig | None = None
        self.monitor = "val_loss"
        self.on_ask: Callable[[dict], int | None] | None = None  # scripts answer without a dialog
        self.last_outcome: TrainingFinished | TrainingFailed | None = None
        self._t0 = 0.0

    # ---- state ---------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._worker is not None

    @property
    def waiting_for_answer(self) -> bool:
        return self._waiting is not None

    # ---- commands ------------------------------------------------------------------------------
    def start(self, scan, run_dir: str | Path, config: TrainConfig, *, resume: bool = False) -> Path:
        """Train `scan` (labels as they are in it) into `run_dir`; returns at once."""
        from engine.learn.fit import fit  # torch and timm load on the first training, not at startup

        if self.running:
            raise RuntimeError("a training run is already in progress; stop it first")
        self.run_dir, self.config, self.monitor = Path(run_dir), config, config.monitor
        self.history = TrainingHistory.from_records(RunDir(run_dir).read_metrics()) if resume else TrainingHistory()
        self.last_outcome, self._waiting = None, None
        self._token = CancelToken()
        worker = GeneratorWorker(_background(fit(scan, run_dir, config, cancel=self._token, resume=resume)),
                                 needs_answer=lambda e: isinstance(e, AskContinue))
        worker.progress.connect(self._on_event)
        worker.warned.connect(self._on_warned)
        worker.error.connect(self._on_error)
        worker.finished.connect(self._on_done)
        self._worker = worker
        self._t0 = time.monotonic()
        log.info("training %s into %s (resume=%s)", config.backbone, run_dir, resume)
        self._runner.submit(worker, key=TRAIN_KEY)
        self.runningChanged.emit(True)
        return self.run_dir

    def answer(self, epochs: int | None) -> None:
        """Answer the engine's question: continue for `epochs` more, or halt (None or 0)."""
        if self._worker is None or self._waiting is None:
            return
        self._waiting = None
        self._worker.answer(Continue(int(epochs)) if epochs else Halt())

    def stop(self) -> None:
        """Stop within one batch; the best and last checkpoints are kept."""
        if self._token is not None:
            self._token.cancel()
        if self._waiting is not None:
            self.answer(None)

    def wait(self, timeout_ms: int = 120_000) -> bool:
        """Process events until the run has ended (True) or the timeout passed (False)."""
        if not self.running:
            return True
        loop = QEventLoop()
        self.runningChanged.connect(loop.quit)
        timer = QTimer(singleShot=True, interval=timeout_ms)
        timer.timeout.connect(loop.quit)
        timer.start()
        try:
            loop.exec()  # the window stays live: curves, dialogs, the Stop button
        finally:
            timer.stop()
            self.runningChanged.disconnect(loop.quit)
        return not self.running

    def shutdown(self, timeout_ms: int = 120_000) -> bool:
        """Stop, wait for the engine to finish its batch and write its checkpoints, then make sure
        no thread is left. True when nothing runs any more."""
        self.stop()
        ok = self.wait(timeout_ms)
        ok = self._runner.shutdown(10_000) and ok
        QCoreApplication.sendPostedEvents(self)
        return ok

    # ---- engine events (GUI thread) ------------------------------------------------------------
    def _on_event(self, event) -> None:
        if isinstance(event, BatchProgress):
            if event.phase == "train":
                self.history.add_batch(event.epoch, event.batch, event.n_batches, event.loss)
            self.progress.emit(event)
        elif isinstance(event, EpochEnd):
            self.history.add_epoch(event.epoch, event.train, event.val, event.lr, event.is_best, event.stalls)
            self.epochEnded.emit(event)
        elif isinstance(event, TrainingStarted):
            self.started.emit(event)
        elif isinstance(event, Message):
            self.message.emit(event.text)
        elif isinstance(event, AskContinue):
            self._ask(event)
        elif isinstance(event, TrainingFinished):
            self.last_outcome = event
            self.finished.emit(event)
        elif isinstance(event, TrainingFailed):
            self.last_outcome = event
            self.failed.emit(event)

    def ask_summary(self, event: AskContinue) -> dict:
        every = self.config.ask_every if self.config is not None else 5
        summary = self.history.summary(max(1, every), self.monitor)
        summary.update(epoch=event.epoch, best_epoch=event.best_epoch, best_value=event.best_metric,
                       suggested_epochs=event.suggested_epochs, run_dir=str(self.run_dir))
        return summary

    def _ask(self, event: AskContinue) -> None:
        self._waiting = event
        summary = self.ask_summary(event)
        if self.on_ask is not None:
            try:
                decision = self.on_ask(summary)
            except Exception:  # noqa: BLE001 - a script's bug must not leave the engine waiting
                log.exception("on_ask raised; halting the run")
                decision = None
            self.answer(decision)
        else:
            self.askContinue.emit(summary)

    def _on_warned(self, text: str) -> None:
        self.warned.emit(text)

    def _on_error(self, exc: BaseException) -> None:
        # fit() turns every failure into TrainingFailed; this is a bug outside it (already logged).
        failed = TrainingFailed(f"{type(exc).__name__}: {exc}", "error", str(self.run_dir))
        self.last_outcome = failed
        self.failed.emit(failed)

    def _on_done(self) -> None:
        log.info("training worker done after %.1f s: %s", time.monotonic() - self._t0, self.last_outcome)
        self._worker, self._token, self._waiting = None, None, None
        self.runningChanged.emit(False)
