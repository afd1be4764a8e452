"""The one place where engine work runs off the GUI thread and comes back as Qt signals.

Modelled on superqt's `_qthreading`: the work is a plain function or generator, run on a
QThreadPool; it never touches widgets. A `Worker` is a QObject that lives on the GUI thread; the
pool thread only emits one private signal (`_event`), which Qt queues to the GUI thread where it is
turned into the public signals. So slots connected to `started/progress/result/error/finished` -
lambdas included - always run on the GUI thread, and exceptions cross threads as `error`.

A `TaskRunner` owns the pool and the live workers. Submitting under a `key` makes every older
worker with that key stale: its progress/result/error are dropped (the user opened another folder
meanwhile), only `finished` still fires so the bookkeeping stays simple.

Warnings for the user (`engine.utils.logs.warn`) raised while a worker runs come out as its
`warned` signal, like superqt's workers; the same hook lets a short command on the GUI thread
collect them (`collect_warnings`). Every failure is logged with its traceback before `error`.
"""
from __future__ import annotations

import gc
import importlib
import logging
import os
import queue
import threading
import warnings
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from typing import Any

from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, Signal, Slot

from engine.utils.jobs import CancelToken, Cancelled
from engine.utils.logs import AllblastWarning, route_warnings_to_logging, warning_text

log = logging.getLogger(__name__)
BACKGROUND_NICE = 10  # Linux nice value of training and prediction threads (0 = the GUI's)
_local = threading.local()  # .sink: where this thread's AllblastWarnings go (a worker, a command)


# Heavy imports on pool threads take turns: two threads importing packages that import each other
# (timm, huggingface_hub, torchvision) can meet in a cycle of module locks, which Python breaks by
# handing one of them a partially initialised module ("cannot import name ... from partially
# initialized module"). The warm-up and the weights look-ups hold this while they import.
IMPORTS = threading.Lock()


def heavy_import(*modules: str) -> None:
    """On a pool thread: import `modules` in turn with every other heavy import (IMPORTS), libtorch
    loaded first with the GIL released (native_preload), and what they made frozen out of the
    GUI-thread collector's sight afterwards. A no-op, but for the lock, once they are imported."""
    from .native_preload import preload_native

    with IMPORTS:
        preload_native("torch")
        for name in modules:
            importlib.import_module(name)
    gc.freeze()


def gui_thread_collector(interval: float = 1.0):
    """Python's cyclic garbage collector run on the GUI thread only (pyqtgraph's GarbageCollector:
    run from a worker thread it can free Qt objects there, and Qt deadlocks against the GUI thread),
    and held off while a heavy import runs: what an import makes is frozen when it ends (warm_up),
    and a collection during it walked ~10^6 new objects with the event loop stopped (0.2 s)."""
    from pyqtgraph.util.garbage_collector import GarbageCollector

    class GuiThreadCollector(GarbageCollector):
        def check(self) -> None:
            if not IMPORTS.locked():
                super().check()

    return GuiThreadCollector(interval=interval)


def lower_thread_priority() -> None:
    """Run this thread (and the threads and processes it starts from now on: torch's compute
    threads, the DataLoader fork server and its workers) at a lower scheduling priority, so the GUI
    thread gets a core whenever it needs one; training loses only the little time the GUI uses."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
    except (AttributeError, OSError) as exc:  # not Linux, or not permitted: normal priority
        log.debug("thread priority unchanged: %s", exc)


def install_warning_hook() -> None:
    """Route AllblastWarnings to the current thread's sink (and always to the log). Idempotent."""
    route_warnings_to_logging()
    logged = warnings.showwarning
    if getattr(logged, "_allblast_sinks", False):
        return

    def show(message, category, filename, lineno, file=None, line=None):
        sink = getattr(_local, "sink", None)
        if sink is not None and issubclass(category, AllblastWarning):
            sink(warning_text(message))
        logged(message, category, filename, lineno, file, line)

    show._allblast = True  # type: ignore[attr-defined]
    show._allblast_sinks = True  # type: ignore[attr-defined]
    warnings.showwarning = show


@contextmanager
def _sink(callback: Callable[[str], None]) -> Iterator[None]:
    install_warning_hook()
    previous = getattr(_local, "sink", None)
    _local.sink = callback
    try:
        yield
    finally:
        _local.sink = previous


@contextmanager
def collect_warnings() -> Iterator[list[str]]:
    """The user warnings raised on this thread inside the block (a short command on the GUI
    thread, such as an export), in order."""
    texts: list[str] = []
    with _sink(texts.append):
        yield texts


class Worker(QObject):
    """Base: subclasses implement `work()`; `start()` (or a TaskRunner) runs it on a pool."""

    started = Signal()
    progress = Signal(object)  # whatever the work reports / yields
    result = Signal(object)  # the return value
    error = Signal(object)  # the exception (its traceback is in the log)
    warned = Signal(str)  # a warning for the user raised by the work (engine.utils.logs.warn)
    finished = Signal()  # always last, also after an error or when stale
    stale_result = Signal(object)  # a discarded worker's return value, so owners can release it
    _event = Signal(str, object)  # pool thread -> GUI thread; see module docstring

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.cancel_token = CancelToken()
        self._stale = False
        self._done = False
        self._event.connect(self._dispatch, Qt.ConnectionType.QueuedConnection)

    # -- called on the GUI thread ----------------------------------------------------------------
    def discard(self) -> None:
        """Drop everything this worker still reports (except `finished`) and ask it to stop."""
        self._stale = True
        self.cancel_token.cancel()

    @property
    def is_done(self) -> bool:
        return self._done

    def start(self, pool: QThreadPool | None = None) -> None:
        (pool or QThreadPool.globalInstance()).start(_Job(self))

    @Slot(str, object)
    def _dispatch(self, kind: str, payload: Any) -> None:
        if kind == "finished":
            self._done = True
            self.finished.emit()
        elif self._stale:
            if kind == "result":
                self.stale_result.emit(payload)
        else:
            getattr(self, kind).emit(*(() if kind == "started" else (payload,)))

    # -- called on the pool thread ---------------------------------------------------------------
    def work(self) -> Any:  # pragma: no cover - FunctionWorker and GeneratorWorker define it
        raise TypeError(f"{type(self).__name__} does not define work()")

    def report(self, value: Any) -> None:
        """Emit `progress`; raises Cancelled once the worker was discarded, so long jobs stop."""
        self.cancel_token.raise_if_cancelled()
        self._event.emit("progress", value)

    def describe(self) -> str:
        """What this worker does, for the log."""
        return type(self).__name__

    def _run(self) -> None:
        self._event.emit("started", None)
        try:
            with _sink(lambda text: self._event.emit("warned", text)):
                value = self.work()
        except Cancelled:
            pass  # asked to stop: nobody listens any more
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the GUI as a signal
            log.warning("%s failed: %s", self.describe(), exc, exc_info=exc)
            self._event.emit("error", exc)
        else:
            self._event.emit("result", value)
        finally:
            self._event.emit("finished", None)


class _Job(QRunnable):
    """Keeps the QRunnable separate so the Worker (a QObject) stays owned by the GUI thread."""

    def __init__(self, worker: Worker) -> None:
        super().__init__()
        self._worker = worker

    def run(self) -> None:
        self._worker._run()


class FunctionWorker(Worker):
    """Runs `func(*args, **kwargs)`. With `progress_arg="progress"` the function gets a callback
    that reports through the `progress` signal (and raises Cancelled when discarded)."""

    def __init__(self, func: Callable[..., Any], *args: Any, progress_arg: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__()
        self._func, self._args, self._kwargs = func, args, kwargs
        if progress_arg:
            self._kwargs[progress_arg] = lambda *values: self.report(values if len(values) != 1 else values[0])

    def work(self) -> Any:
        return self._func(*self._args, **self._kwargs)

    def describe(self) -> str:
        return getattr(self._func, "__qualname__", repr(self._func))


class GeneratorWorker(Worker):
    """Drives a generator: each yielded value is a `progress` event, its return value the `result`.

    Engine jobs such as training ask questions (`AskContinue`); when `needs_answer(event)` is true
    the worker waits for `answer(decision)` from the GUI and sends it into the generator. A
    discard sends None, which the engine reads as Halt.
    """

    def __init__(self, gen: Generator[Any, Any, Any], *,
                 needs_answer: Callable[[Any], bool] | None = None) -> None:
        super().__init__()
        self._gen = gen
        self._needs_answer = needs_answer
        self._answers: queue.Queue = queue.Queue()

    def answer(self, value: Any) -> None:
        self._answers.put(value)

    def discard(self) -> None:
        super().discard()
        self._answers.put(None)

    def work(self) -> Any:
        send: Any = None
        try:
            while True:
                event = self._gen.send(send)
                send = None
                self.report(event)
                if self._needs_answer is not None and self._needs_answer(event):
                    send = self._answers.get()
                    self.cancel_token.raise_if_cancelled()
        except StopIteration as stop:
            return stop.value
        finally:
            self._gen.close()


class TaskRunner(QObject):
    """Owns a thread pool and its live workers; `shutdown()` before the window goes away."""

    def __init__(self, parent: QObject | None = None, *, max_threads: int = 2) -> None:
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(max_threads)
        self._live: set[Worker] = set()
        self._latest: dict[str, Worker] = {}

    def submit(self, worker: Worker, *, key: str | None = None) -> Worker:
        """Start `worker`; a newer submission under the same `key` makes the older one stale."""
        if key is not None:
            old = self._latest.get(key)
            if old is not None and not old.is_done:
                old.discard()
            self._latest[key] = worker
        self._live.add(worker)  # a Python reference until `finished`, or it could be collected
        worker.finished.connect(lambda w=worker: self._forget(w))
        worker.start(self.pool)
        return worker

    def run(self, func: Callable[..., Any], *args: Any, key: str | None = None,
            progress_arg: str | None = None, **kwargs: Any) -> FunctionWorker:
        worker = FunctionWorker(func, *args, progress_arg=progress_arg, **kwargs)
        self.submit(worker, key=key)
        return worker

    def busy(self, key: str | None = None) -> bool:
        if key is None:
            return any(not w.is_done for w in self._live)
        w = self._latest.get(key)
        return w is not None and not w.is_done

    def _forget(self, worker: Worker) -> None:
        self._live.discard(worker)
        for key, w in list(self._latest.items()):
            if w is worker:
                del self._latest[key]

    def shutdown(self, timeout_ms: int = 10_000) -> bool:
        """Discard every worker and wait for the pool; True when all threads are idle."""
        for w in list(self._live):
            w.discard()
        ok = self.pool.waitForDone(timeout_ms)
        self._live.clear()
        self._latest.clear()
        return ok
