"""The expert loop's work off the GUI thread: Keep Learning's rounds (engine.workspace.loop) on a
one-thread pool at a lower priority, and suggestions and look-alikes (engine.workspace.suggestions)
on another, each from the label database.

A round opens its own connection to the folder's label database, so the window's label writes never
wait behind a round's reads (a round reads every stored embedding); it writes its predictions in
small transactions. Labels made while a round runs count towards the next one.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import replace

from PySide6.QtCore import QObject, Signal

from engine.labels.store import LabelStore
from engine.utils.jobs import CancelToken
from engine.workspace import loop as engine_loop
from engine.workspace import suggestions as sg

from ..workers import GeneratorWorker, TaskRunner, lower_thread_priority

log = logging.getLogger(__name__)


# While a round runs its Python thread shares the GIL with the window's. Every SQLite call of a
# label key releases the GIL, and getting it back took up to the interpreter's switch interval (5 ms)
# each time: 20-100 ms a key. Handed over within 0.1 ms while Keep Learning is on or a round runs.
ROUND_SWITCH_INTERVAL_S = 0.0001


def _round(root, db_path, info, settings, token):
    """A round on the worker thread, with its own connection to the label database."""
    lower_thread_priority()
    store = LabelStore.open(root, db_path=db_path)
    try:
        info.expert_labels = engine_loop.expert_label_count(store.states())
        if settings.start == engine_loop.START_IMAGENET:
            result = yield from engine_loop.imagenet_round(store, root, info, settings=settings, cancel=token)
        else:
            result = yield from engine_loop.continue_round(store, root, info, settings=settings.head, cancel=token)
        return result
    finally:
        store.close()


def _warm_up() -> None:
    """What a round imports, imported when Keep Learning is switched on: a first import holds the
    GIL in long stretches, which the label keys must not wait behind during a round."""
    lower_thread_priority()
    import scipy.optimize  # noqa: F401 - calibration
    import sklearn.metrics  # noqa: F401 - a round's validation metrics
    import timm  # noqa: F401 - a prediction pass for cells without stored embeddings

    import engine.learn.calibration  # noqa: F401
    import engine.learn.headfit  # noqa: F401
    import engine.learn.inference  # noqa: F401
    import engine.learn.model_card  # noqa: F401


def _suggest(store, sha, n, strategy, among, seed):
    states = store.states()
    if among == "unlabelled":
        candidates = sg.unlabelled_paths(states)
    elif among == "unreviewed":
        from engine.cases.review import snapshot  # what "reviewed" means is the sign-off's

        snap = snapshot(store, None)
        candidates = {p for p in snap.current if not snap.reviewed(p)}
    else:
        candidates = None
    try:
        return sg.suggest_stored(store, sha, n=n, strategy=strategy, candidates=candidates, among=among, seed=seed)
    except ValueError:
        if strategy != "diverse" or sg.needs_prediction(store, sha, list(states), embeddings=False):
            raise
        # a model that predicted before embeddings were kept: the doubt alone
        batch = sg.suggest_stored(store, sha, n=n, strategy="margin", candidates=candidates, among=among, seed=seed)
        batch.strategy = "margin (no stored embeddings: predict again for diverse)"
        return batch


class LoopController(QObject):
    roundStarted = Signal(object)  # engine.workspace.loop.LoopInfo
    roundEvent = Signal(object)  # the engine's events of the round (TrainingStarted, EpochEnd, ...)
    roundFinished = Signal(object)  # RoundResult, or None (cancelled, or a training run that failed)
    roundFailed = Signal(str)
    runningChanged = Signal(bool)
    suggested = Signal(object)  # SuggestedBatch
    similarFound = Signal(str, list)  # the cell, [(path, cosine)] most similar first
    failed = Signal(str)  # a suggestion or a look-up that could not be made: why

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._runner = TaskRunner(self, max_threads=1)  # rounds
        self._quick = TaskRunner(self, max_threads=1)  # suggestions, look-alikes
        self.settings = engine_loop.LoopSettings()
        self.on = False
        self.loop_id: str | None = None
        self.round = 0
        self.pending = 0  # labels changed since the last round began
        self.rounds: list = []  # RoundResult of each finished round of this loop
        self.last_error: str | None = None
        self._dataset = None
        self._worker: GeneratorWorker | None = None
        self._token: CancelToken | None = None
        self._switch_interval = sys.getswitchinterval()
        self._fast = False

    @property
    def running(self) -> bool:
        return self._worker is not None

    def set_dataset(self, dataset) -> None:
        """A folder was opened: any loop of the previous one ends."""
        self.stop(cancel=True)
        self._dataset = dataset
        self.rounds, self.round, self.pending, self.loop_id = [], 0, 0, None

    # ---- Keep Learning ------------------------------------------------------------------------------
    def start(self, settings: engine_loop.LoopSettings) -> None:
        settings.check()
        self.settings = settings
        if not self.on or self.loop_id is None:
            self.loop_id, self.round, self.rounds = engine_loop.new_loop_id(), 0, []
        self.on = True
        self.pending = 0
        self._fast_switching(True)
        if not self.running:
            self._runner.run(_warm_up, key="warm-up")
        log.info("Keep Learning %s: a round every %d labels, start %s", self.loop_id, settings.every, settings.start)

    def stop(self, *, cancel: bool = False) -> None:
        """No more rounds; `cancel` also stops the round in progress (else it finishes)."""
        self.on = False
        if cancel and self._token is not None:
            self._token.cancel()
        if not self.running:
            self._fast_switching(False)

    def _fast_switching(self, on: bool) -> None:
        """The GIL handed over within ROUND_SWITCH_INTERVAL_S while the loop may run Python work
        beside the window; the interpreter's own interval otherwise."""
        if on and not self._fast:
            self._switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(min(self._switch_interval, ROUND_SWITCH_INTERVAL_S))
        elif not on and self._fast:
            sys.setswitchinterval(self._switch_interval)
        self._fast = on

    def note_labels(self, n: int) -> None:
        """`n` cells were just labelled: a round starts when enough have been since the last one."""
        self.pending += n
        if self.on and not self.running and self.pending >= self.settings.every:
            self.learn_now()

    def learn_now(self) -> bool:
        """Start a round now (False: one is running, or no folder is open)."""
        ds = self._dataset
        if ds is None or self.running:
            return False
        if getattr(ds.store, "pending", False):
            self.roundFailed.emit("Label some cells first: Keep Learning trains on the expert's labels")
            return False
        if self.loop_id is None:
            self.loop_id = engine_loop.new_loop_id()
        self.round += 1
        self.pending = 0
        info = engine_loop.LoopInfo(self.loop_id, self.round, self.settings.strategy, 0, 0, self.settings.start)
        self._token = CancelToken()
        settings = replace(self.settings)
        worker = GeneratorWorker(_round(ds.root, ds.store.db_path, info, settings, self._token))
        worker.progress.connect(self.roundEvent)
        worker.result.connect(self._on_result)
        worker.error.connect(self._on_error)
        worker.finished.connect(self._on_done)
        self._worker = worker
        self.last_error = None
        self._fast_switching(True)
        self._runner.submit(worker, key="round")
        self.roundStarted.emit(info)
        self.runningChanged.emit(True)
        return True

    def _on_result(self, result) -> None:
        if result is not None:
            self.rounds.append(result)
        else:
            self.round -= 1  # nothing was made: the next round takes this number
        self.roundFinished.emit(result)

    def _on_error(self, exc) -> None:
        self.round -= 1
        self.last_error = str(exc)
        log.info("Keep Learning round failed: %s", exc, exc_info=exc)
        self.roundFailed.emit(str(exc))

    def _on_done(self) -> None:
        self._worker, self._token = None, None
        self._fast_switching(self.on)
        self.runningChanged.emit(False)
        if self.on and self.pending >= self.settings.every:  # labels made during the round
            self.learn_now()

    # ---- suggestions and look-alikes ----------------------------------------------------------------
    def suggest(self, sha: str, *, n: int, strategy: str, among: str = "unlabelled", seed: int = 0):
        ds = self._dataset
        worker = self._quick.run(_suggest, ds.store, sha, n, strategy, among, seed, key="suggest")
        worker.result.connect(self.suggested)
        worker.error.connect(lambda exc: self.failed.emit(str(exc)))
        return worker

    def similar(self, sha: str, path: str, k: int):
        ds = self._dataset
        worker = self._quick.run(sg.similar_stored, ds.store, sha, path, k, key="similar")
        worker.result.connect(lambda found, p=path: self.similarFound.emit(p, found))
        worker.error.connect(lambda exc: self.failed.emit(str(exc)))
        return worker

    def wait(self, timeout_ms: int = 600_000) -> bool:
        return self._runner.pool.waitForDone(timeout_ms) and self._quick.pool.waitForDone(timeout_ms)

    def shutdown(self) -> bool:
        self.stop(cancel=True)
        ok = self._runner.shutdown()
        return self._quick.shutdown() and ok
