"""The first-epoch warm-up (engine.learn.warmup), on the CPU: it runs every batch shape it is given,
leaves the model as it found it, and on an injected out-of-memory error still restores it and
lets the error through for the usual handling."""
from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from engine.learn.device import is_oom
from engine.learn.model import ModelSpec
from engine.learn.warmup import batch_shapes, warm_up

SPEC = ModelSpec("tiny", ("a", "b"), 16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "bilinear")


class Tiny(nn.Module):
    """A conv + BatchNorm network that records the batch shapes and modes it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2)
        self.seen: list[tuple[int, bool, bool]] = []  # (batch, training, grad enabled)
        self.fail_at: int | None = None

    def forward(self, x):
        self.seen.append((x.shape[0], self.training, torch.is_grad_enabled()))
        if self.fail_at == x.shape[0]:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return self.fc(self.bn(self.conv(x)).amax((2, 3)))


def _snapshot(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_warm_up_runs_each_shape_once_and_leaves_the_model_untouched():
    model = Tiny()
    model.eval()
    before = _snapshot(model)
    start = time.perf_counter()
    seconds = warm_up(model, SPEC, "cpu", train_batches=[8, 3, 8], eval_batches=[5])
    # what it reports is the time it took: more than nothing, and within the time around the call
    assert 0 < seconds <= time.perf_counter() - start
    assert model.seen == [(3, True, True), (8, True, True), (5, False, False)]
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN statistics
    assert all(p.grad is None for p in model.parameters()) and not model.training


def test_an_out_of_memory_error_in_the_warm_up_is_raised_after_the_model_is_restored():
    model = Tiny()
    model.train()
    before = _snapshot(model)
    model.fail_at = 64
    with pytest.raises(torch.cuda.OutOfMemoryError) as info:
        warm_up(model, SPEC, "cpu", train_batches=[4, 64], eval_batches=[4])
    assert is_oom(info.value)  # fit's out-of-memory message applies, as for a real batch
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the batch of 4 ran, and was undone
    assert all(p.grad is None for p in model.parameters()) and model.training


@pytest.mark.parametrize(("n", "batch", "drop_last", "shapes"), [
    (100, 32, False, [32, 4]), (100, 32, True, [32]), (96, 32, False, [32]), (10, 32, True, [10]),
    (10, 32, False, [10]), (0, 32, False, []),
])
def test_batch_shapes_are_those_a_loader_yields(n, batch, drop_last, shapes):
    assert batch_shapes(n, batch, drop_last) == shapes
    loader = torch.utils.data.DataLoader(list(range(n)), batch_size=batch, drop_last=drop_last and n >= batch)
    assert sorted({len(b) for b in loader}, reverse=True) == shapes
