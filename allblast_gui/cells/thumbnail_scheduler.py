"""When the grid asks a ThumbnailLoader for thumbnails, and when it repaints the ones that came.

The grid model's `data()` must return at once, so a missing thumbnail is only *noted* here. Notes
are turned into loader requests once no new tile has asked for REQUEST_DELAY_MS (at the latest
REQUEST_MAX_WAIT_MS after the first note), and only for rows still on screen then: a flick through
the grid must not queue a decode for every tile flying past, and decoding threads must not compete
with painting while the reviewer flicks. Requests for rows scrolled away are cancelled. Finished
thumbnails are announced together: one `rowsReady(first, last)` per UPDATE_INTERVAL_MS tick.
"""
from __future__ import annotations

import time
from collections.abc import Callable

from PySide6.QtCore import QObject, QTimer, Signal, Slot

from .thumbnails import ThumbnailLoader

REQUEST_DELAY_MS = 30
REQUEST_MAX_WAIT_MS = 150
UPDATE_INTERVAL_MS = 25

Key = tuple[str, int, int]  # (absolute path, pixels, mtime_ns): a ThumbnailLoader request


class ThumbnailScheduler(QObject):
    rowsReady = Signal(int, int)  # first and last row whose thumbnail arrived since the last tick

    def __init__(self, loader: ThumbnailLoader, locate: Callable[[str], int | None],
                 parent: QObject | None = None) -> None:
        """`locate(abspath)` -> the row showing that file now (fetched rows only), or None."""
        super().__init__(parent)
        self._loader = loader
        self._locate = locate
        self._wanted: dict[int, Key] = {}
        self._wanted_since = 0.0  # monotonic time of the oldest entry in _wanted
        self._requested: dict[Key, int] = {}
        self._visible_range: Callable[[], tuple[int, int] | None] | None = None
        self._request_timer = QTimer(self, singleShot=True, interval=REQUEST_DELAY_MS)
        self._request_timer.timeout.connect(self.flush_requests)
        self._ready_rows: set[int] = set()
        self._ready_timer = QTimer(self, singleShot=True, interval=UPDATE_INTERVAL_MS)
        self._ready_timer.timeout.connect(self._flush_ready)
        loader.ready.connect(self._on_ready)

    def set_visible_range_provider(self, provider: Callable[[], tuple[int, int] | None] | None) -> None:
        """`provider()` -> (first, last) rows on screen (or None: unknown)."""
        self._visible_range = provider

    def want(self, row: int, key: Key) -> None:
        """`row` showed no thumbnail: request `key` soon, if the row is still on screen then."""
        wanted = self._wanted
        if not wanted:
            self._wanted_since = time.monotonic()
        if row in wanted:
            return
        wanted[row] = key
        # Debounced while tiles keep flying past, but never longer than the max wait.
        if (time.monotonic() - self._wanted_since) * 1000 < REQUEST_MAX_WAIT_MS - REQUEST_DELAY_MS:
            self._request_timer.start()
        elif not self._request_timer.isActive():
            self._request_timer.start()

    def forget_rows(self) -> None:
        """Rows are about to mean other cells (a filter, a new folder, a new tile size)."""
        self._wanted.clear()
        self._requested.clear()
        self._ready_rows.clear()

    def requested(self) -> dict[Key, int]:
        """Requests still queued in the loader, with the row they are for."""
        return dict(self._requested)

    @Slot()
    def flush_requests(self) -> None:
        """Request the noted thumbnails of rows still on screen; cancel queued requests of rows
        that left it."""
        wanted, self._wanted = self._wanted, {}
        span = self._visible_range() if self._visible_range is not None else None
        loader = self._loader
        if span is not None:
            first, last = span
            for key, row in list(self._requested.items()):
                if not first <= row <= last:
                    del self._requested[key]
                    loader.cancel(*key)
            wanted = {row: key for row, key in wanted.items() if first <= row <= last}
        elif len(self._requested) > 4096:
            self._requested.clear()  # no view tells us what is visible: keep the map bounded
        # Closest to the top of the screen last: the loader starts the newest request first.
        for row in sorted(wanted, reverse=True):
            key = wanted[row]
            if loader.request(*key) is None and loader.is_pending(*key):
                self._requested[key] = row
            else:
                self._mark_ready(row)  # in memory already (another row had it) or failed

    @Slot(str, int)
    def _on_ready(self, abspath: str, generation: int) -> None:
        if generation != self._loader.generation:
            return
        row = self._locate(abspath)
        if row is not None:
            self._mark_ready(row)

    def _mark_ready(self, row: int) -> None:
        self._ready_rows.add(row)
        if not self._ready_timer.isActive():
            self._ready_timer.start()

    @Slot()
    def _flush_ready(self) -> None:
        rows, self._ready_rows = self._ready_rows, set()
        if rows:
            self.rowsReady.emit(min(rows), max(rows))
