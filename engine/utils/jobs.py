"""What every long engine job shares: cooperative cancellation and running a job without a driver.

Long jobs (scan, training, prediction) are generators of typed events; a driver (the CLI's loop,
the GUI's worker thread) reacts to them. `drain` is the driver for callers that only want the
result.
"""
from __future__ import annotations

import threading
from collections.abc import Generator
from typing import Any


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
