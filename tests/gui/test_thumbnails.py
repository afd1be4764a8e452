"""ThumbnailLoader: async decode, memory + disk cache, failures, generations, shutdown."""
from __future__ import annotations

import shutil

import pytest
from PySide6.QtCore import QCoreApplication
from PySide6.QtGui import QImage, QPixmap

from allblast_gui.cells.thumbnails import ThumbnailLoader, cache_key


@pytest.fixture
def make_loader(tmp_path, qapp):
    made = []

    def make(cache_dir=tmp_path / "thumbs", **kw):
        loader = ThumbnailLoader(cache_dir=cache_dir, **kw)
        made.append(loader)
        return loader

    yield make
    for loader in made:
        assert loader.shutdown(10_000)


@pytest.fixture(scope="module")
def cnmc_bmp(cnmc_dir):
    return str(sorted((cnmc_dir / "training_data" / "fold_0" / "all").glob("*.bmp"))[0])


@pytest.fixture(scope="module")
def pbc_jpgs(pbc_dir):
    return [str(p) for p in sorted((pbc_dir / "neutrophil").glob("*.jpg"))[:12]]


def load(qtbot, loader, path, size, mtime_ns=0):
    assert loader.request(path, size, mtime_ns) is None
    with qtbot.waitSignal(loader.ready, timeout=10_000, check_params_cb=lambda p, g: p == path):
        pass
    return loader.request(path, size, mtime_ns)


def test_real_image_loads_and_is_cached_in_memory(qtbot, make_loader, cnmc_bmp):
    loader = make_loader()
    with qtbot.waitSignal(loader.ready, timeout=10_000) as blocker:
        assert loader.request(cnmc_bmp, 96) is None
    assert blocker.args == [cnmc_bmp, loader.generation]
    pixmap = loader.request(cnmc_bmp, 96)  # now a memory hit, returned at once
    assert isinstance(pixmap, QPixmap) and (pixmap.width(), pixmap.height()) == (96, 96)  # 450x450 source
    assert loader.request(cnmc_bmp, 96) is pixmap
    assert loader.failure(cnmc_bmp) is None and loader.pending_count() == 0


def test_aspect_kept_and_never_enlarged(qtbot, make_loader, pbc_jpgs):
    loader = make_loader()
    small = load(qtbot, loader, pbc_jpgs[0], 100)  # PBC is 360 x 363
    assert max(small.width(), small.height()) == 100 and small.width() < small.height()
    big = load(qtbot, loader, pbc_jpgs[0], 1000)
    assert (big.width(), big.height()) == (360, 363)


def test_disk_cache_serves_a_new_loader(qtbot, make_loader, tmp_path, cnmc_bmp):
    source = tmp_path / "cell.bmp"
    shutil.copy(cnmc_bmp, source)
    src = str(source)
    cache = tmp_path / "shared-cache"
    first = make_loader(cache)
    load(qtbot, first, src, 80, mtime_ns=123)
    files = list(cache.glob("*.png"))
    assert [f.name for f in files] == [f"{cache_key(src, 80, 123)}.png"]
    assert not list(cache.glob("*.tmp"))

    # The image is now unreadable: only the disk cache can still give its thumbnail (decoding
    # happens in another process, so this is checked through the file, not a monkeypatch).
    source.write_bytes(b"not an image any more" * 4)
    second = make_loader(cache)
    pixmap = load(qtbot, second, src, 80, mtime_ns=123)
    assert (pixmap.width(), pixmap.height()) == (80, 80) and second.failure(src) is None
    # Another mtime is another file version: not served from the old entry.
    with qtbot.waitSignal(second.ready, timeout=10_000):
        second.request(src, 80, mtime_ns=456)
    assert "not an image" in second.failure(src)


@pytest.mark.parametrize("content, reason", [
    (b"", "empty file"),
    (b"this is not an image at all, just some text", "not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "corrupt or truncated PNG"),
])
def test_corrupt_file_reports_reason(qtbot, make_loader, tmp_path, content, reason):
    bad = tmp_path / "bad.png"
    bad.write_bytes(content)
    loader = make_loader()
    with qtbot.waitSignal(loader.ready, timeout=10_000):
        assert loader.request(str(bad), 64) is None
    assert reason in loader.failure(str(bad))
    assert loader.request(str(bad), 64) is None and loader.pending_count() == 0  # not retried
    assert not list((tmp_path / "thumbs").glob("*.png"))


def deliver_everything(loader):
    """Wait until no decoding thread runs, then deliver every result they posted: after this, no
    further signal can come (a negative check needs no sleep)."""
    assert loader.pool().waitForDone(10_000)
    QCoreApplication.sendPostedEvents()


def test_missing_file_reports_reason(qtbot, make_loader, tmp_path):
    loader = make_loader()
    path = str(tmp_path / "gone.bmp")
    with qtbot.waitSignal(loader.ready, timeout=10_000):
        loader.request(path, 64)
    assert "not readable" in loader.failure(path)


def test_duplicate_requests_are_coalesced(qtbot, make_loader, pbc_jpgs):
    loader = make_loader()
    seen = []
    loader.ready.connect(lambda p, g: seen.append(p))
    for _ in range(5):
        loader.request(pbc_jpgs[1], 64)
    assert loader.pending_count() == 1
    qtbot.waitUntil(lambda: loader.cached(pbc_jpgs[1], 64) is not None, timeout=10_000)
    deliver_everything(loader)
    assert seen == [pbc_jpgs[1]]


def test_many_requests_all_arrive(qtbot, make_loader, pbc_jpgs):
    loader = make_loader()
    for p in pbc_jpgs:
        loader.request(p, 48)
    qtbot.waitUntil(lambda: all(loader.cached(p, 48) is not None for p in pbc_jpgs), timeout=20_000)


def test_memory_cache_is_bounded(qtbot, make_loader, pbc_jpgs):
    loader = make_loader(max_items=3)
    for p in pbc_jpgs[:5]:
        load(qtbot, loader, p, 32)
    kept = [p for p in pbc_jpgs[:5] if loader.cached(p, 32) is not None]
    assert kept == pbc_jpgs[2:5]  # least recently used went first


def test_reset_drops_stale_results(qtbot, make_loader, pbc_jpgs):
    loader = make_loader()
    old = loader.generation
    loader.reset()
    assert loader.generation == old + 1
    # A result computed for the previous folder arrives late: it is not inserted nor announced.
    image = QImage(8, 8, QImage.Format.Format_RGB888)
    with qtbot.assertNotEmitted(loader.ready):
        loader._finished.emit(pbc_jpgs[2], 64, "0", old, image, "")
        deliver_everything(loader)
    assert loader.cached(pbc_jpgs[2], 64) is None
    # The real race: requests in flight, then reset; nothing of theirs shows up afterwards.
    for p in pbc_jpgs:
        loader.request(p, 40)
    loader.reset()
    assert loader.pending_count() == 0
    seen = []
    loader.ready.connect(lambda p, g: seen.append(p))
    deliver_everything(loader)
    assert seen == [] and all(loader.cached(p, 40) is None for p in pbc_jpgs)
    # ...and the same files load normally when asked for again.
    assert load(qtbot, loader, pbc_jpgs[0], 40) is not None


def test_reset_clears_failures(qtbot, make_loader, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    loader = make_loader()
    with qtbot.waitSignal(loader.ready, timeout=10_000):
        loader.request(str(bad), 64)
    assert loader.failure(str(bad))
    loader.reset()
    assert loader.failure(str(bad)) is None


def test_shutdown_leaves_no_running_threads(qtbot, make_loader, pbc_dir):
    loader = make_loader()
    paths = [str(p) for p in sorted((pbc_dir / "lymphocyte").glob("*.jpg"))[:60]]
    for p in paths:
        loader.request(p, 64)
    assert loader.shutdown(10_000)
    assert loader.pool().activeThreadCount() == 0
    assert loader.pending_count() == 0
    assert loader.request(paths[0], 64) is None and loader.pending_count() == 0  # closed: no new work


def test_unwritable_cache_dir_still_loads(qtbot, make_loader, tmp_path, cnmc_bmp):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    loader = make_loader(blocker / "thumbs")
    assert loader.cache_dir() is None
    assert load(qtbot, loader, cnmc_bmp, 32) is not None


def test_cancel_drops_a_queued_request(qtbot, make_loader, pbc_jpgs):
    loader = make_loader()
    loader.pool().setMaxThreadCount(1)
    for p in pbc_jpgs[:6]:
        loader.request(p, 40)
    assert loader.is_pending(pbc_jpgs[0], 40)
    assert loader.cancel(pbc_jpgs[0], 40) and not loader.is_pending(pbc_jpgs[0], 40)
    assert not loader.cancel(pbc_jpgs[0], 40)
    qtbot.waitUntil(lambda: all(loader.lookup(p, 40) is not None for p in pbc_jpgs[1:6]), timeout=20_000)
    assert loader.pending_count() == 0 and loader.pool().waitForDone(10_000)
