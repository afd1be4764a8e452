"""Thumbnails for the cell grid: decoded off the GUI thread, cached in memory and on disk.

Like Qt's mandelbrot example, a worker builds a QImage (thread-safe) and the GUI thread turns it
into a QPixmap (GUI-thread only). Workers never touch widgets or the loader's state: they only
emit one queued signal with their result, tagged with the generation it was asked for, so a
result for a folder that is no longer shown is simply dropped.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PySide6.QtCore import QObject, QRunnable, QThreadPool, Qt, Signal, Slot
from PySide6.QtGui import QImage, QPixmap

from engine.data.imaging import ImageReadError, read_rgb
from engine.utils.places import user_cache_dir

# Bump when the way thumbnails are made changes, so old disk-cache files are not reused.
_CACHE_VERSION = "1"
# Queued requests beyond this are cancelled oldest-first: when the reviewer flicks through a
# 15,000-cell folder, tiles scrolled past long ago are not worth decoding any more.
_MAX_PENDING = 1024
log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    return user_cache_dir() / "thumbs"  # the one user cache (engine.utils.places)


def cache_key(abspath: str, size: int, mtime_ns: int) -> str:
    text = f"{_CACHE_VERSION}\0{abspath}\0{mtime_ns}\0{size}"
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def make_thumbnail(rgb: np.ndarray, size: int) -> np.ndarray:
    """Fit inside size x size keeping the aspect ratio; never enlarge (the painter can)."""
    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    if scale >= 1.0:
        return np.ascontiguousarray(rgb)
    tw, th = max(1, round(w * scale)), max(1, round(h * scale))
    # INTER_AREA averages source pixels: no aliasing on the fine chromatin texture.
    return np.ascontiguousarray(cv2.resize(rgb, (tw, th), interpolation=cv2.INTER_AREA))


def rgb_to_qimage(rgb: np.ndarray) -> QImage:
    h, w = rgb.shape[:2]
    # QImage only wraps the numpy buffer; copy() so the image owns its pixels after `rgb` dies.
    return QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


# -- display adjustments (brightness, contrast, gamma, auto contrast) --------------------------
# They change what is shown, never a file: a 256-entry lookup table applied to the 8-bit pixels
# of a thumbnail or of the inspector's image. The table is cached per setting and the adjusted
# pixmaps per (thumbnail, setting), so painting a tile stays one blit.
BRIGHTNESS_STEP = 0.05  # of the full range
CONTRAST_STEP = GAMMA_STEP = 1.2  # multiplicative
AUTO_PERCENTILES = (1.0, 99.0)


@dataclass(frozen=True, slots=True)
class Display:
    """How pixels are shown. `levels` (auto contrast): the (low, high) intensities stretched to
    black and white first; then contrast around mid-grey, brightness, and gamma (> 1 lifts the
    dark parts: C-NMC cells are small and dark on black)."""

    brightness: float = 0.0  # -1 .. 1
    contrast: float = 1.0  # 0.2 .. 8
    gamma: float = 1.0  # 0.2 .. 5
    levels: tuple[int, int] | None = None

    def is_identity(self) -> bool:
        return self == IDENTITY

    def adjusted(self, *, brightness: int = 0, contrast: int = 0, gamma: int = 0) -> Display:
        """One or more key steps (+1 / -1) from this setting, clamped to the ranges above."""
        return replace(
            self,
            brightness=round(min(1.0, max(-1.0, self.brightness + brightness * BRIGHTNESS_STEP)), 4),
            contrast=round(min(8.0, max(0.2, self.contrast * CONTRAST_STEP ** contrast)), 4),
            gamma=round(min(5.0, max(0.2, self.gamma * GAMMA_STEP ** gamma)), 4),
        )

    def with_levels(self, levels: tuple[int, int] | None) -> Display:
        return replace(self, levels=None if levels is None else (int(levels[0]), int(levels[1])))

    def describe(self) -> str:
        """What differs from the files' own pixels, e.g. "contrast ×1.20, auto contrast 17–115"."""
        parts = [f"brightness {self.brightness:+.2f}"] if self.brightness else []
        parts += [f"contrast ×{self.contrast:.2f}"] if self.contrast != 1.0 else []
        parts += [f"gamma {self.gamma:.2f}"] if self.gamma != 1.0 else []
        if self.levels is not None:
            parts.append(f"auto contrast {self.levels[0]}–{self.levels[1]}")
        return ", ".join(parts)

    def lut(self) -> np.ndarray:
        return _lut(self)


IDENTITY = Display()


@lru_cache(maxsize=64)
def _lut(display: Display) -> np.ndarray:
    x = np.arange(256, dtype=np.float64) / 255.0
    if display.levels is not None:
        lo, hi = display.levels
        x = (x - lo / 255.0) / max(1.0 / 255.0, (hi - lo) / 255.0)
    x = (x - 0.5) * display.contrast + 0.5 + display.brightness
    x = np.clip(x, 0.0, 1.0) ** (1.0 / display.gamma)
    table = np.round(x * 255.0).astype(np.uint8)
    table.flags.writeable = False
    return table


def qimage_to_rgb(image: QImage) -> np.ndarray:
    """A copy of the pixels as (H, W, 3) uint8."""
    image = image.convertToFormat(QImage.Format.Format_RGB888)
    w, h, stride = image.width(), image.height(), image.bytesPerLine()
    buf = np.frombuffer(image.constBits(), dtype=np.uint8, count=stride * h).reshape(h, stride)
    return buf[:, : 3 * w].reshape(h, w, 3).copy()


def adjust_image(image: QImage, display: Display) -> QImage:
    """`image` as `display` shows it (the same image when the setting changes nothing)."""
    if display.is_identity() or image.isNull():
        return image
    image = image.convertToFormat(QImage.Format.Format_RGB888)
    h, stride = image.height(), image.bytesPerLine()
    buf = np.frombuffer(image.constBits(), dtype=np.uint8, count=stride * h).reshape(h, stride)
    out = cv2.LUT(buf, display.lut())  # the same table for R, G and B: every byte alike
    return QImage(out.data, image.width(), h, stride, QImage.Format.Format_RGB888).copy()


def auto_levels(images: Iterable[QImage],
                percentiles: tuple[float, float] = AUTO_PERCENTILES) -> tuple[int, int] | None:
    """(low, high) intensity percentiles over a sample of images (their brightest channel per
    pixel), or None without pixels. The black background around segmented cells is left out when
    it is most of the picture, so the stretch is made for the cell."""
    values = [qimage_to_rgb(img).max(axis=2).ravel() for img in images if not img.isNull()]
    if not values:
        return None
    pixels = np.concatenate(values)
    foreground = pixels[pixels > 8]
    if foreground.size >= max(64, pixels.size // 20):
        pixels = foreground
    lo, hi = (int(v) for v in np.percentile(pixels, percentiles))
    if hi - lo < 8:  # a flat sample: stretching it would only amplify noise
        return None
    return lo, hi


class _Job(QRunnable):
    """Load one thumbnail: disk cache, else decode + scale + write the disk cache."""

    def __init__(self, loader: ThumbnailLoader, key: tuple, generation: int, cache_dir: Path | None):
        super().__init__()
        self.setAutoDelete(True)
        self._emit = loader._finished.emit  # a bound signal: emitting from here is queued
        self.key = key
        self.generation = generation
        self.cache_dir = cache_dir
        self.cancelled = False  # set by the GUI thread; a plain bool is enough under the GIL

    def run(self) -> None:
        if self.cancelled:
            return
        abspath, size, mtime_ns = self.key
        image, error = QImage(), ""
        try:
            image = self._load(abspath, size, mtime_ns)
        except ImageReadError as exc:
            error = str(exc) or "could not be decoded"
        except Exception as exc:  # a decoder bug must show as a placeholder, not kill a thread
            log.exception("thumbnail of %s failed unexpectedly", abspath)
            error = f"could not be decoded: {exc}"
        try:
            # Typed arguments, not one Python object: PySide6's queued `object` signals have
            # mis-counted references to None across threads (seen crashing here).
            self._emit(abspath, size, str(mtime_ns), self.generation, image, error)
        except RuntimeError:
            pass  # the loader was destroyed while we worked; nobody wants the result

    def _load(self, abspath: str, size: int, mtime_ns: int) -> QImage:
        cache_file = None
        if self.cache_dir is not None:
            if not mtime_ns:  # unknown mtime: stat, so an edited file never hits a stale entry
                try:
                    mtime_ns = os.stat(abspath).st_mtime_ns
                except OSError:
                    mtime_ns = 0
            cache_file = self.cache_dir / f"{cache_key(abspath, size, mtime_ns)}.png"
            cached = _read_cached(cache_file)
            if cached is not None:
                return rgb_to_qimage(cached)
        thumb = make_thumbnail(read_rgb(abspath), size)
        if cache_file is not None:
            _write_cached(cache_file, thumb)
        return rgb_to_qimage(thumb)


class _Drainer(QRunnable):
    """Runs queued jobs, newest first, until the queue is empty.

    QThreadPool.start() costs ~0.2-0.3 ms of GUI-thread time per call on a loaded machine (the
    GIL is released and re-taken around it); a flick through 15,000 cells asks for thousands of
    thumbnails. So jobs go into a plain deque (microseconds) and at most max-threads drainers
    are ever started, each only when the queue was drained before.
    """

    def __init__(self, loader: ThumbnailLoader):
        super().__init__()
        self.setAutoDelete(True)
        self._take = loader._take_job

    def run(self) -> None:
        while (job := self._take()) is not None:
            job.run()


def _read_cached(path: Path) -> np.ndarray | None:
    # Python file I/O, not np.fromfile/tofile: it releases the GIL around the system call, so a
    # slow disk stalls this thread only, never the GUI thread. imdecode: non-ASCII paths work.
    try:
        with open(path, "rb") as fh:
            data = np.frombuffer(fh.read(), dtype=np.uint8)
    except OSError:
        return None
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _write_cached(path: Path, rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        return
    # Write-then-rename: another loader (or a second window) never reads half a file.
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.{id(buf)}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(memoryview(buf))
        os.replace(tmp, path)
    except OSError:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # a full or read-only cache disk only costs speed


class ThumbnailLoader(QObject):
    """Asynchronous, cached thumbnails. `request` never blocks; `ready` says when to repaint."""

    ready = Signal(str, int)  # absolute path, generation (also emitted when decoding failed)
    # worker -> GUI thread: path, size, mtime_ns (str: may exceed a C int), generation, image
    # (null on failure), error ("" on success)
    _finished = Signal(str, int, str, int, QImage, str)

    def __init__(self, cache_dir: Path | None = None, max_items: int = 4000, parent: QObject | None = None):
        super().__init__(parent)
        # Our own pool: thumbnail bursts must not starve QThreadPool.globalInstance() users.
        self._pool = QThreadPool(self)
        # One core is left to the GUI thread: painting while decoding must not stall on 2 cores.
        self._pool.setMaxThreadCount(max(1, min(8, (os.cpu_count() or 2) - 1)))
        self._cache_dir = self._prepare_cache_dir(Path(cache_dir) if cache_dir else default_cache_dir())
        self._max_items = max(1, max_items)
        self._pixmaps: OrderedDict[tuple, QPixmap] = OrderedDict()  # LRU: oldest first
        self._pending: OrderedDict[tuple, _Job] = OrderedDict()  # coalesces duplicate requests
        self._failures: dict[str, str] = {}
        self._generation = 0
        self._closed = False
        # Shared with the drainer threads (under _lock): the queue and how many drainers run.
        self._lock = threading.Lock()
        self._queue: deque[_Job] = deque()
        self._drainers = 0
        self._finished.connect(self._on_finished, Qt.ConnectionType.QueuedConnection)

    @staticmethod
    def _prepare_cache_dir(path: Path) -> Path | None:
        try:
            path.mkdir(parents=True, exist_ok=True)
            return path
        except OSError:
            return None  # no disk cache (read-only home, full disk): decode every time instead

    @property
    def generation(self) -> int:
        return self._generation

    def cache_dir(self) -> Path | None:
        return self._cache_dir

    def pool(self) -> QThreadPool:
        return self._pool

    def pending_count(self) -> int:
        return len(self._pending)

    def request(self, abspath: str, size: int, mtime_ns: int = 0) -> QPixmap | None:
        """The cached pixmap (fits in size x size), or None after scheduling a load."""
        key = (abspath, int(size), int(mtime_ns))
        pixmap = self._pixmaps.get(key)
        if pixmap is not None:
            self._pixmaps.move_to_end(key)
            return pixmap
        if self._closed or key in self._pending or abspath in self._failures:
            return None
        job = _Job(self, key, self._generation, self._cache_dir)
        self._pending[key] = job
        while len(self._pending) > _MAX_PENDING:
            _, old = self._pending.popitem(last=False)
            old.cancelled = True
        start = False
        with self._lock:
            # Newest first (drainers pop from the right): the tiles on screen now beat those
            # scrolled past.
            self._queue.append(job)
            if len(self._queue) > 2 * _MAX_PENDING:  # drop cancelled jobs before they pile up
                self._queue = deque(j for j in self._queue if not j.cancelled)
            if self._drainers < self._pool.maxThreadCount():
                self._drainers += 1
                start = True
        if start:
            self._pool.start(_Drainer(self))
        return None

    def lookup(self, abspath: str, size: int, mtime_ns: int = 0) -> QPixmap | None:
        """The pixmap if it is in memory (and mark it recently used); never schedules work."""
        key = (abspath, size, mtime_ns)
        pixmap = self._pixmaps.get(key)
        if pixmap is not None:
            self._pixmaps.move_to_end(key)
        return pixmap

    def is_pending(self, abspath: str, size: int, mtime_ns: int = 0) -> bool:
        return (abspath, size, mtime_ns) in self._pending

    def cancel(self, abspath: str, size: int, mtime_ns: int = 0) -> bool:
        """Drop a queued request (e.g. its tile was scrolled away); True if one was queued."""
        job = self._pending.pop((abspath, int(size), int(mtime_ns)), None)
        if job is None:
            return False
        job.cancelled = True  # a drainer skips it (or, if it already runs, its result is kept)
        return True

    def _take_job(self) -> _Job | None:
        """Drainer threads: the newest live job, or None (and the drainer ends) when empty."""
        with self._lock:
            while self._queue:
                job = self._queue.pop()
                if not job.cancelled:
                    return job
            self._drainers -= 1
            return None

    def cached(self, abspath: str, size: int, mtime_ns: int = 0) -> QPixmap | None:
        """The pixmap if it is in memory; never schedules work."""
        return self._pixmaps.get((abspath, int(size), int(mtime_ns)))

    def failure(self, abspath: str) -> str | None:
        """Why this file could not be made into a thumbnail, or None."""
        return self._failures.get(abspath)

    def reset(self) -> None:
        """Forget queued work and failures; results still in flight will be dropped."""
        self._generation += 1
        self._cancel_pending()
        self._failures.clear()
        # Pixmaps stay: their keys include path, size and mtime, so they are still correct if
        # the same folder is opened again.

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        """Cancel queued work and wait for running jobs; True when no thread is left running."""
        self._closed = True
        self._generation += 1
        self._cancel_pending()
        return self._pool.waitForDone(timeout_ms)

    def _cancel_pending(self) -> None:
        for job in self._pending.values():
            job.cancelled = True  # for jobs already picked up by a thread
        self._pending.clear()
        with self._lock:
            self._queue.clear()  # drainers find nothing more to do and end

    @Slot(str, int, str, int, QImage, str)
    def _on_finished(self, abspath: str, size: int, mtime: str, generation: int, image: QImage, error: str) -> None:
        key = (abspath, size, int(mtime))
        if generation != self._generation:
            return  # asked for by a folder that is no longer shown
        # Also keep results of jobs cancelled after they had started: the work is done anyway.
        self._pending.pop(key, None)
        if error or image.isNull():
            self._failures[abspath] = error or "could not be decoded"
        else:
            self._pixmaps[key] = QPixmap.fromImage(image)  # GUI thread only
            while len(self._pixmaps) > self._max_items:
                self._pixmaps.popitem(last=False)
        self.ready.emit(abspath, generation)
