"""Cell images as uint8 tensors for training and inference, a shared decoded-image cache, loaders.

Items stay uint8 until they reach the device, where `to_model_input` converts and normalises them
(as timm's PrefetchLoader does): a uint8 batch is 4x smaller to collate, pin and copy, and flips
and 90-degree rotations on uint8 are exact, so augmentation never changes a pixel value.
"""
from __future__ import annotations

import functools
import os
import random
import sys
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from .augment import Augment
from .imaging import ImageReadError, read_rgb

_UPSCALE = {"bicubic": cv2.INTER_CUBIC, "bilinear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST,
            "lanczos": cv2.INTER_LANCZOS4}


class CellReadError(ImageReadError):
    """A file that scanned fine could not be read during training; the message names it.

    Single-argument constructor on purpose: DataLoader re-raises worker errors as type(msg).
    """


def resize_square(img: np.ndarray, size: int, interpolation: str = "bicubic") -> np.ndarray:
    """Resize to size x size. INTER_AREA when shrinking (it averages the source pixels, so fine
    chromatin texture does not alias, like PIL's antialiased resize timm was trained with);
    cubic (or the spec's interpolation) when enlarging, where INTER_AREA degrades to nearest."""
    h, w = img.shape[:2]
    if h == size and w == size:
        return img
    flag = cv2.INTER_AREA if (h >= size and w >= size) else _UPSCALE.get(interpolation, cv2.INTER_CUBIC)
    return cv2.resize(img, (size, size), interpolation=flag)


def default_cache_budget() -> int:
    """A quarter of RAM, at most 8 GiB, and never more than /dev/shm can hold (Docker: 64 MB)."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 8 << 30
    budget = min(ram // 4, 8 << 30)
    if os.path.isdir("/dev/shm"):
        st = os.statvfs("/dev/shm")
        budget = min(budget, int(st.f_bavail * st.f_frsize * 0.8))
    return max(budget, 0)


class DecodedCache:
    """Decoded, resized uint8 images in shared memory, indexed like the dataset.

    Both tensors are `share_memory_()`-ed before the DataLoader starts its workers, so a worker
    that decodes item i writes it where every other worker (and the next epoch) can read it. Only
    the first `capacity` items are cached when the whole set does not fit `max_bytes`.
    """

    def __init__(self, n_items: int, img_size: int, *, max_bytes: int | None = None):
        per_item = img_size * img_size * 3
        budget = default_cache_budget() if max_bytes is None else max_bytes
        self.n_items, self.img_size = n_items, img_size
        self.capacity = max(0, min(n_items, budget // per_item))
        self.images = torch.zeros((self.capacity, img_size, img_size, 3), dtype=torch.uint8)
        self.filled = torch.zeros(self.capacity, dtype=torch.bool)
        if self.capacity:
            try:
                self.images.share_memory_()
                self.filled.share_memory_()
            except RuntimeError:  # shared memory refused: run uncached rather than fail
                self.capacity = 0
                self.images = self.images[:0]
                self.filled = self.filled[:0]

    @property
    def nbytes(self) -> int:
        return self.images.numel()

    def get(self, index: int) -> np.ndarray | None:
        if index < self.capacity and bool(self.filled[index]):
            return self.images[index].numpy()
        return None

    def put(self, index: int, img: np.ndarray) -> None:
        if index < self.capacity:
            self.images[index].copy_(torch.from_numpy(img))
            self.filled[index] = True  # set after the pixels, so a reader never sees half an image

    def count(self) -> int:
        return int(self.filled.sum())


class CellDataset(Dataset):
    """Item = (uint8 tensor [3,S,S], target int (-1 = none), index int)."""

    def __init__(self, root, paths: Sequence[str], targets: Sequence[int] | None = None, *,
                 img_size: int, interpolation: str = "bicubic", augment: bool = False,
                 cache: DecodedCache | None = None, extra: Augment | None = None):
        self.root = Path(root)
        self.paths = list(paths)
        self.targets = [-1] * len(self.paths) if targets is None else [int(t) for t in targets]
        if len(self.targets) != len(self.paths):
            raise ValueError(f"{len(self.paths)} paths but {len(self.targets)} targets")
        if cache is not None and (cache.n_items != len(self.paths) or cache.img_size != img_size):
            raise ValueError("the DecodedCache was made for a different set of images or size")
        self.img_size, self.interpolation = int(img_size), interpolation
        self.augment, self.cache = augment, cache
        # stain / blur / crop on top of the dihedral views (the allblast recipe), training only
        self.extra = extra if augment and extra is not None and extra.active else None

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> np.ndarray:
        """Decoded, resized (H,W,3) uint8 image, from the cache when a worker already made it."""
        if self.cache is not None and (hit := self.cache.get(index)) is not None:
            return hit
        path = self.root / self.paths[index]
        try:
            img = resize_square(read_rgb(path), self.img_size, self.interpolation)
        except ImageReadError as exc:
            raise CellReadError(f"cannot read {path}: {exc} (was it changed since the scan? "
                                f"rescan the folder)") from exc
        if self.cache is not None:
            self.cache.put(index, img)
        return img

    def __getitem__(self, index: int):
        """`index` names the cell (index % N) and, when augmenting, one of the 8 dihedral views
        ((index // N) % 8, 0 = as is) and the seed of the `extra` augmentation (index // 8N). Both
        are chosen by the sampler in the main process, so an epoch's augmentation depends on the
        loader's seed only: not on the number of workers, nor on how long they live (persistent
        workers), nor on where a resumed run starts."""
        n = len(self.paths)
        i, view, aug_seed = index % n, (index // n) % 8, index // (8 * n)
        img = self.load(i)
        if self.extra is not None:
            img = self.extra(img, np.random.default_rng(aug_seed))
        if self.augment and view:
            img = dihedral(img, view)
        # HWC -> CHW always copies here, so a view into the shared cache never leaves this method.
        x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        return x, self.targets[i], i


AUG_SEEDS = 1 << 24  # extra-augmentation seeds drawn per item


def _views(n: int, order: torch.Tensor, generator: torch.Generator, extra: bool) -> list[int]:
    """Each index of `order` with a random dihedral view (and extra-augmentation seed) encoded."""
    views = torch.randint(8, (len(order),), generator=generator)
    items = order + n * views
    if extra:  # drawn after the views, so the paper recipe's stream is what it always was
        items = items + 8 * n * torch.randint(AUG_SEEDS, (len(order),), generator=generator)
    return items.tolist()


class DihedralSampler(Sampler[int]):
    """A shuffled epoch with a random dihedral view per cell: yields `cell + N * view` (+ `8N *
    seed` of the extra augmentation when `extra`)."""

    def __init__(self, n: int, generator: torch.Generator, extra: bool = False) -> None:
        self.n, self.generator, self.extra = n, generator, extra

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(_views(self.n, torch.randperm(self.n, generator=self.generator), self.generator, self.extra))


class DistributedDihedralSampler(DistributedSampler):
    """torch's DistributedSampler (this rank's shard of a seed+epoch shuffle; call `set_epoch`),
    each index with its random view and extra seed, drawn from the same seed+epoch stream."""

    def __init__(self, dataset, *, num_replicas: int, rank: int, seed: int, shuffle: bool = True,
                 drop_last: bool = False, extra: bool = False) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self.augment = bool(getattr(dataset, "augment", False))
        self.extra = extra

    def __iter__(self):
        shard = torch.tensor(list(super().__iter__()), dtype=torch.int64)
        if not self.augment:
            return iter(shard.tolist())
        g = torch.Generator()
        g.manual_seed(self.seed * 100_003 + self.epoch + 1)  # differs from the shuffle's stream
        return iter(_views(len(self.dataset), shard, g, self.extra))


def dihedral(img: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips/rotations of a square (H,W,C) array: k&3 quarter turns, k&4 h-flip.

    Equivalent to random hflip + vflip + rot90 (those generate the same 8 symmetries), with one
    random draw instead of three."""
    out = np.rot90(img, k & 3, axes=(0, 1))
    return out[:, ::-1] if k & 4 else out


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker (base_seed + id); numpy/random are derived so any library code
    # using them is reproducible too and workers never share a stream.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _seed_fresh_worker(worker_id: int) -> None:
    """A worker started from a clean process (forkserver, spawn): it owns an untouched OpenCV, so
    it can be told to decode on one thread: the workers, not OpenCV's pool, are the parallelism."""
    cv2.setNumThreads(1)
    _seed_worker(worker_id)


def default_workers(device: torch.device | str) -> int:
    """CUDA: up to 8 decoding processes feed the GPU. CPU: 1 — the model already uses every core,
    one worker overlaps decoding with compute (measured in benchmarks/bench_predict.py)."""
    cpus = os.cpu_count() or 1
    if torch.device(device).type == "cuda":
        return min(cpus, 8)
    return 1 if cpus > 1 else 0


def worker_context():
    """The multiprocessing context DataLoader workers start in (engine.utils.jobs decides)."""
    import multiprocessing

    from ..utils.jobs import worker_start_method

    method = worker_start_method()
    if method is None and any(sys.modules.get(m) is not None for m in _FORK_UNSAFE):
        method = "forkserver"  # their native thread pools do not survive a fork of this process
    return multiprocessing.get_context(method) if method else None


_FORK_UNSAFE = ("openvino", "onnxruntime")  # loaded in-process by a prediction backend


def make_loader(dataset: Dataset, *, batch_size: int, shuffle: bool, device, workers: int | None = None,
                drop_last: bool = False, seed: int = 0, sampler: Sampler | None = None) -> DataLoader:
    """`sampler` (DDP: a DistributedDihedralSampler) replaces the shuffle and view sampler."""
    device = torch.device(device)
    workers = default_workers(device) if workers is None else int(workers)
    cuda = device.type == "cuda"
    if workers > 0:
        # Forked workers inherit OpenCV's thread pool without its threads: a parallel cv2.resize
        # (or even cv2.setNumThreads) in a worker then deadlocks. Sequential OpenCV in this process
        # avoids that; parallelism comes from the workers (and the scan's thread pool) instead.
        cv2.setNumThreads(0)
    context = worker_context() if workers > 0 else None
    gen = torch.Generator()
    gen.manual_seed(int(seed))
    if sampler is None and shuffle and getattr(dataset, "augment", False):
        sampler = DihedralSampler(len(dataset), gen, extra=getattr(dataset, "extra", None) is not None)
    shuffle = shuffle and sampler is None
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler, drop_last=drop_last,
        num_workers=workers, pin_memory=cuda, generator=gen,
        worker_init_fn=_seed_fresh_worker if context is not None and context.get_start_method() != "fork"
        else _seed_worker,
        multiprocessing_context=context,
        # Persistent workers: no new processes at every epoch. A fork of a large process stalls
        # every thread of the parent that touches memory meanwhile (the app's GUI thread, 100+ ms).
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
    )


def to_model_input(x_uint8: torch.Tensor, spec, device, channels_last: bool = True) -> torch.Tensor:
    """uint8 [B,3,S,S] -> normalised float32 on `device`: (x/255 - mean)/std in one fused step."""
    device = torch.device(device)
    x = x_uint8.to(device, non_blocking=True).float()
    mean, std = _normalisation(tuple(spec.mean), tuple(spec.std), device)
    x = x.sub_(mean).div_(std)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@functools.lru_cache(maxsize=16)
def _normalisation(mean: tuple, std: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # Made once per device: building them per batch copied from pageable host memory, which
    # synchronises the CUDA stream, so the host could never queue a step ahead of the GPU.
    as_255 = [torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1).mul_(255.0).to(device) for v in (mean, std)]
    return as_255[0], as_255[1]
