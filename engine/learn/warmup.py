"""A fixed-shape warm-up before the first epoch: on a GPU, the first step of every new input shape
(and of eval mode) selects or compiles its kernels (cuDNN runtime fusion for bf16), which made the
first epoch take a minute. Running each shape once on synthetic data, before the clock of the
first epoch starts, pays that cost up front, once per shape, and lets the real epoch run at its
steady rate.

The warm-up leaves the model exactly as it found it: weights (no optimizer step), BatchNorm
running statistics and mode are restored, gradients cleared. A failure (out of memory, above all)
is raised as it is, after the restore, so the caller's usual handling applies and nothing is
half-changed.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from contextlib import nullcontext

import torch

from ..data.dataset import to_model_input
from .device import autocast

log = logging.getLogger(__name__)


def warm_up(model: torch.nn.Module, spec, device, *, train_batches: Iterable[int] = (),
            eval_batches: Iterable[int] = (), autocast_dtype=None, channels_last: bool = False) -> float:
    """Run one training step's forward + backward for each batch size in `train_batches` and one
    eval forward for each in `eval_batches`, on uint8 noise at the model's image size. Returns the
    seconds it took."""
    device = torch.device(device)
    start = time.perf_counter()
    was_training = model.training
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}  # BN running stats
    no_sync = getattr(model, "no_sync", nullcontext)  # DDP: no gradient all-reduce for noise
    try:
        for n in sorted(set(train_batches)):
            model.train()
            x = to_model_input(_noise(n, spec, device), spec, device, channels_last)
            with no_sync():
                with autocast(device, autocast_dtype):  # the forward only, as in training
                    out = model(x)
                out.float().sum().backward()
        for n in sorted(set(eval_batches)):
            model.eval()
            x = to_model_input(_noise(n, spec, device), spec, device, channels_last)
            with torch.inference_mode(), autocast(device, autocast_dtype):
                model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    seconds = time.perf_counter() - start
    log.info("warm-up of %s train / %s eval batch shapes on %s: %.1f s", sorted(set(train_batches)),
             sorted(set(eval_batches)), device, seconds)
    return seconds


def _noise(n: int, spec, device: torch.device) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, spec.img_size, spec.img_size), dtype=torch.uint8, device=device)


def batch_shapes(n_items: int, batch_size: int, drop_last: bool) -> list[int]:
    """The batch sizes a loader over `n_items` yields: the full one, and the last partial one
    unless `drop_last` drops it (a set smaller than one batch is kept whole, never dropped)."""
    shapes = [batch_size] if n_items >= batch_size else []
    if n_items % batch_size and not (drop_last and n_items >= batch_size):
        shapes.append(n_items % batch_size)
    return shapes


__all__ = ["warm_up", "batch_shapes"]
