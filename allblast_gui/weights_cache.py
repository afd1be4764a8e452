"""Which backbones have ImageNet weights on this computer, looked up off the GUI thread.

`engine.learn.weights.find_weights` searches the installation, the user weights folder, the
Hugging Face cache and the Lite packages: hundreds of ms on a cold disk, which froze the window
when the Train dialog asked on the GUI thread (issue 28). Here each look-up runs on a pool thread
and its answer is kept per backbone until the weights change (the session's `weightsChanged`
calls `invalidate`); whoever shows them reads `get` again when `updated` fires.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from PySide6.QtCore import QEventLoop, QObject, QTimer, Signal

from engine.learn.weights import WeightsAvailability, find_weights

from .workers import heavy_import

log = logging.getLogger(__name__)


def _look_up(lookup: Callable[[str], WeightsAvailability], names: list[str], generation: int):
    """On the pool thread: every name's answer, or the error its look-up raised (kept, raised again
    by `get` on the GUI thread as `find_weights` would have raised it there)."""
    heavy_import("timm.models")  # what a look-up imports, in turn with the warm-up
    found: dict[str, WeightsAvailability | Exception] = {}
    for name in names:
        try:
            found[name] = lookup(name)
        except Exception as exc:  # noqa: BLE001 - an unknown name (ValueError) or an unreadable cache
            found[name] = exc
    return generation, found


class WeightsCache(QObject):
    updated = Signal()  # answers arrived, or were dropped because the weights changed: read `get` again

    def __init__(self, runner, lookup: Callable[[str], WeightsAvailability] = find_weights,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._runner, self._lookup = runner, lookup  # a workers.TaskRunner
        self._known: dict[str, WeightsAvailability | Exception] = {}
        self._pending: set[str] = set()
        self._asked: list[str] = []  # every name asked for: looked up again after a change
        self._generation = 0  # answers of an older generation were looked up before a change

    def known(self, name: str) -> bool:
        return name in self._known

    def get(self, name: str) -> WeightsAvailability | None:
        """The answer for `name`; None while it is being looked up. A look-up that failed raises its
        error (ValueError for a name timm does not know)."""
        answer = self._known.get(name)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def request(self, names: Iterable[str]) -> None:
        """Look up, on a pool thread, the names not known or on their way yet."""
        names = [n for n in dict.fromkeys(names) if n]
        self._asked += [n for n in names if n not in self._asked]
        new = [n for n in names if n not in self._known and n not in self._pending]
        if not new:
            return
        self._pending.update(new)
        worker = self._runner.run(_look_up, self._lookup, new, self._generation)
        worker.result.connect(self._arrived)  # a bound method: dropped with this object

    def invalidate(self) -> None:
        """The weights changed (imported, fetched, removed): forget every answer and look again."""
        self._generation += 1
        self._known.clear()
        self._pending.clear()
        self.request(list(self._asked))
        self.updated.emit()

    def _arrived(self, answer) -> None:
        generation, found = answer
        if generation != self._generation:
            return  # looked up before the weights changed; the new look-up is on its way
        self._known.update(found)
        self._pending.difference_update(found)
        self.updated.emit()

    def wait(self, name: str, timeout_ms: int = 120_000) -> WeightsAvailability | None:
        """The answer for `name`, waiting for it with the event loop running (a script's call on the
        GUI thread: the window stays live). None if it did not come within the timeout."""
        self.request([name])
        if not self.known(name):
            loop = QEventLoop()
            timer = QTimer(singleShot=True, interval=timeout_ms)
            timer.timeout.connect(loop.quit)

            def check() -> None:
                if self.known(name):
                    loop.quit()

            self.updated.connect(check)
            timer.start()
            try:
                while not self.known(name) and timer.isActive():
                    loop.exec()
            finally:
                timer.stop()
                self.updated.disconnect(check)
            if not self.known(name):
                log.warning("no answer within %d ms on whether %s has ImageNet weights", timeout_ms, name)
                return None
        return self.get(name)
