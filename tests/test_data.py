"""CellDataset, DecodedCache, make_loader and to_model_input on the real C-NMC samples."""
from __future__ import annotations

import shutil
import sys
from collections import Counter

import numpy as np
import pytest
import torch

from engine.data.dataset import (
    CellDataset,
    CellReadError,
    DecodedCache,
    dihedral,
    make_loader,
    resize_square,
    to_model_input,
)
from engine.data.imaging import read_rgb
from engine.learn.model import ModelSpec

S = 64


def _cnmc_paths(root, n=6):
    return sorted(p.relative_to(root).as_posix() for p in (root / "training_data").rglob("*.bmp"))[:n]


def test_items_are_uint8_chw_with_target_and_index(cnmc_dir):
    paths = _cnmc_paths(cnmc_dir, 3)
    ds = CellDataset(cnmc_dir, paths, [0, 1, 0], img_size=S)
    assert len(ds) == 3
    x, t, i = ds[1]
    assert x.dtype == torch.uint8 and x.shape == (3, S, S) and x.is_contiguous()
    assert (t, i) == (1, 1)
    # Same pixels as decoding + INTER_AREA resize by hand, channel-first.
    ref = resize_square(read_rgb(cnmc_dir / paths[1]), S)
    assert np.array_equal(x.permute(1, 2, 0).numpy(), ref)
    assert CellDataset(cnmc_dir, paths, img_size=S)[0][1] == -1


def test_resize_shrinks_with_area_and_enlarges_smoothly():
    img = np.zeros((8, 8, 3), np.uint8)
    img[::2, ::2] = 255  # a fine checkerboard: area averaging gives flat grey, not aliasing
    small = resize_square(img, 4)
    assert small.shape == (4, 4, 3) and np.all(np.abs(small.astype(int) - 64) <= 1)
    big = resize_square(np.arange(48, dtype=np.uint8).reshape(4, 4, 3), 9)
    assert big.shape == (9, 9, 3)
    assert resize_square(img, 8) is img


def test_augment_only_permutes_pixels(cnmc_dir):
    paths = _cnmc_paths(cnmc_dir, 1)
    plain = CellDataset(cnmc_dir, paths, img_size=S)[0][0]
    aug = CellDataset(cnmc_dir, paths, img_size=S, augment=True)
    assert torch.equal(aug[0][0], plain)  # view 0 is the image as it is
    seen = set()
    for view in range(8):
        x, _, index = aug[0 + len(paths) * view]
        assert index == 0
        assert x.dtype == torch.uint8 and x.shape == plain.shape
        # Exact symmetry: every pixel (as an RGB triple) survives, none is interpolated.
        assert Counter(map(tuple, x.reshape(3, -1).T.tolist())) == Counter(map(tuple, plain.reshape(3, -1).T.tolist()))
        seen.add(x.numpy().tobytes())
    assert len(seen) == 8  # all eight flips/rotations occur


def test_the_sampler_picks_views_reproducibly_from_the_loader_seed(cnmc_dir):
    paths = _cnmc_paths(cnmc_dir, 6)
    ds = CellDataset(cnmc_dir, paths, list(range(len(paths))), img_size=S, augment=True)

    def epoch(seed):
        loader = make_loader(ds, batch_size=len(paths), shuffle=True, device="cpu", workers=0, seed=seed)
        x, _, idx = next(iter(loader))
        return x, idx

    (x1, i1), (x2, i2), (x3, _) = epoch(3), epoch(3), epoch(4)
    assert torch.equal(x1, x2) and torch.equal(i1, i2)  # same seed: same order and views
    assert sorted(i1.tolist()) == list(range(len(paths)))  # every cell once
    assert not torch.equal(x1, x3)


def test_dihedral_gives_eight_distinct_views():
    img = np.arange(2 * 2 * 1, dtype=np.uint8).reshape(2, 2, 1)
    views = {dihedral(img, k).tobytes() for k in range(8)}
    assert len(views) == 8


def test_cache_fills_in_workers_and_is_reused(cnmc_dir, tmp_path):
    # Copy a few files to tmp, so deleting them afterwards proves the second epoch reads no files.
    paths = _cnmc_paths(cnmc_dir, 4)
    for p in paths:
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(cnmc_dir / p, tmp_path / p)
    cache = DecodedCache(len(paths), S)
    assert cache.capacity == 4 and cache.count() == 0
    ds = CellDataset(tmp_path, paths, img_size=S, cache=cache)
    loader = make_loader(ds, batch_size=2, shuffle=True, device="cpu", workers=2)
    first = {int(i): x for xb, _, ib in loader for x, i in zip(xb, ib)}
    assert cache.count() == 4  # written by the worker processes, visible here
    shutil.rmtree(tmp_path / "training_data")
    second = {int(i): x for xb, _, ib in make_loader(ds, batch_size=2, shuffle=False, device="cpu", workers=1)
              for x, i in zip(xb, ib)}
    assert all(torch.equal(first[i], second[i]) for i in range(4))


def test_cache_respects_its_byte_budget(cnmc_dir):
    per = S * S * 3
    assert DecodedCache(10, S, max_bytes=3 * per + 5).capacity == 3
    none = DecodedCache(10, S, max_bytes=per - 1)
    assert none.capacity == 0 and none.get(0) is None
    paths = _cnmc_paths(cnmc_dir, 2)
    part = DecodedCache(2, S, max_bytes=per)
    ds = CellDataset(cnmc_dir, paths, img_size=S, cache=part)
    _ = ds[0], ds[1]
    assert part.count() == 1 and part.get(1) is None
    with pytest.raises(ValueError, match="different"):
        CellDataset(cnmc_dir, paths, img_size=S + 1, cache=part)


def test_unreadable_file_mid_epoch_names_the_file(cnmc_dir, tmp_path):
    good = _cnmc_paths(cnmc_dir, 1)[0]
    (tmp_path / "ok.bmp").write_bytes((cnmc_dir / good).read_bytes())
    (tmp_path / "broken.bmp").write_bytes((cnmc_dir / good).read_bytes()[:5000])  # truncated
    ds = CellDataset(tmp_path, ["ok.bmp", "broken.bmp"], [0, 1], img_size=S)
    with pytest.raises(CellReadError, match="broken.bmp"):
        ds[1]
    with pytest.raises(CellReadError, match="broken.bmp"):  # also through a worker process
        list(make_loader(ds, batch_size=2, shuffle=False, device="cpu", workers=1))


def test_loader_is_seeded_and_batches_uint8(cnmc_dir):
    paths = _cnmc_paths(cnmc_dir, 6)
    ds = CellDataset(cnmc_dir, paths, list(range(6)), img_size=32)
    order = lambda seed: [int(i) for _, _, ib in make_loader(ds, batch_size=4, shuffle=True, device="cpu",
                                                             workers=0, seed=seed) for i in ib]
    assert order(1) == order(1) and sorted(order(1)) == list(range(6))
    loader = make_loader(ds, batch_size=4, shuffle=False, device="cpu", workers=0, drop_last=True)
    batches = list(loader)
    assert len(batches) == 1 and batches[0][0].dtype == torch.uint8 and batches[0][0].shape == (4, 3, 32, 32)
    assert not loader.pin_memory


def test_to_model_input_normalises_like_torchvision():
    spec = ModelSpec("x", ("a", "b"), 4, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic")
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    out = to_model_input(x, spec, "cpu", channels_last=True)
    ref = (x.float() / 255 - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)
    assert out.dtype == torch.float32 and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert x.dtype == torch.uint8  # the input batch is not modified


def test_to_model_input_builds_its_normalisation_once_per_device():
    """The mean/std tensors were rebuilt from Python lists for every batch: on CUDA each was a copy
    from pageable memory, which synchronises the stream and kept the host from queueing ahead."""
    from engine.data.dataset import _normalisation

    spec = ModelSpec("x", ("a", "b"), 4, (0.5, 0.4, 0.3), (0.2, 0.2, 0.2), "bicubic")
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    to_model_input(x, spec, "cpu")
    before = _normalisation.cache_info()
    for _ in range(3):
        to_model_input(x, spec, "cpu")
    after = _normalisation.cache_info()
    assert after.misses == before.misses and after.hits == before.hits + 3


def test_loader_workers_are_not_forked_after_a_backend_thread_pool_loaded(monkeypatch):
    """Forking a DataLoader worker after OpenVINO ran in this process crashed (its thread pools do
    not survive a fork): with OpenVINO or ONNX Runtime loaded, workers come from a fork server."""
    import types

    from engine.data.dataset import worker_context

    monkeypatch.setattr("engine.utils.jobs._worker_start_method", None)
    monkeypatch.delitem(sys.modules, "openvino", raising=False)
    monkeypatch.delitem(sys.modules, "onnxruntime", raising=False)
    assert worker_context() is None  # the platform default (fork on Linux)
    monkeypatch.setitem(sys.modules, "openvino", types.ModuleType("openvino"))
    assert worker_context().get_start_method() == "forkserver"
