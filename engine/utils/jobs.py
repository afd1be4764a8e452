"""What every long engine job shares: cooperative cancellation and running a job without a driver.

Long jobs (scan, training, prediction) are generators of typed events; a driver (the CLI's loop,
the GUI's worker thread) reacts to them. `drain` is the driver for callers that only want the
result.
"""
from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Generator, Sequence
from typing import Any

_worker_start_method: str | None = None


class Cancelled(Exception):
    """Raised inside an engine job when its CancelToken was triggered."""


class CancelToken:
    """Cooperative cancellation: the job checks it every batch and cleans up itself."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled()


def drain(gen: Generator[Any, Any, Any]) -> Any:
    """Run a job generator to its end, ignoring its events; return its return value."""
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


# What a fork server imports once, so each DataLoader worker it forks starts at once: the decoding
# stack of engine.data.dataset (the app's workers, and `predict --workers N`'s).
WORKER_PRELOAD = ("torch", "cv2", "numpy", "engine.data.dataset")


def set_worker_start_method(method: str | None, preload: Sequence[str] = ()) -> None:
    """How DataLoader worker processes start: None = the platform default (fork on Linux, right for
    the CLI); "forkserver" for the app, where forking the large GUI process would stall its every
    thread for the length of the fork. `preload`: modules the fork server imports once, so each
    worker starts at once."""
    global _worker_start_method
    if method is not None and method not in multiprocessing.get_all_start_methods():
        raise ValueError(f"start method {method!r} is not available here")
    if method == "forkserver" and preload:
        multiprocessing.set_forkserver_preload(list(preload))
    _worker_start_method = method


def worker_start_method() -> str | None:
    return _worker_start_method


def start_worker_server() -> None:
    """Start the fork server now (it imports its preload modules in its own process), so the
    first training epoch does not wait for it. Nothing to do for the other start methods."""
    if _worker_start_method == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()
