"""Fixed batch shapes, the GPU's first-epoch fix, run on the CPU by switching the policy on: training
sees full batches only, every evaluation batch is padded to the batch size without changing a
metric, the shapes are warmed up before the first epoch, and an out-of-memory error there ends the
run at once with the usual advice and nothing half-written."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import engine.learn.loops as loops
import engine.learn.session as session
import engine.learn.warmup as warmup
from engine.data.cells import ScanResult
from engine.data.scan import scan
from engine.learn.events import EpochEnd, Message, TrainingFailed, TrainingFinished
from engine.learn.fit import TrainConfig, fit
from engine.learn.loops import validate
from engine.learn.model import ModelSpec
from engine.learn.warmup import warm_up
from engine.utils.jobs import drain

from tests.test_training import drive


@pytest.fixture(scope="module")
def cells(pbc_dir) -> ScanResult:
    data = scan(pbc_dir, verify=False)
    picked = [c for k in ("lymphocyte", "platelet") for c in [c for c in data.cells if c.label == k][:11]]
    return ScanResult(data.root, picked)


def config(**kw) -> TrainConfig:
    base = dict(backbone="tf_efficientnet_lite0", img_size=48, epochs=2, batch_size=8, ask_every=0, workers=0,
                split="image", val_fraction=0.25, test_fraction=0.2, seed=3)
    return TrainConfig(**{**base, **kw})


@pytest.fixture
def shapes_seen(monkeypatch):
    """Switch fixed shapes on, and record (batch size, training mode) of every forward pass of the
    model the session builds, and which code converted each batch."""
    import engine.learn.model as model_module

    seen: list[tuple[str, int, bool]] = []
    where = {"now": "?"}

    def recorder(name, real):
        def to_model_input(x, spec, device, channels_last=True):
            where["now"] = name
            return real(x, spec, device, channels_last)
        return to_model_input

    real_build = model_module.build_model

    def build_model(*args, **kwargs):
        model, spec, info = real_build(*args, **kwargs)
        model.register_forward_pre_hook(lambda m, inp: seen.append((where["now"], inp[0].shape[0], m.training)))
        return model, spec, info

    monkeypatch.setattr(session, "fixed_batch_shapes", lambda device: True)
    monkeypatch.setattr(model_module, "build_model", build_model)
    monkeypatch.setattr(loops, "to_model_input", recorder("loop", loops.to_model_input))
    monkeypatch.setattr(warmup, "to_model_input", recorder("warm-up", warmup.to_model_input))
    return seen


def test_fixed_shapes_train_on_full_batches_pad_evaluation_and_warm_up_first(cells, tmp_path, shapes_seen):
    events = drive(fit(cells, tmp_path / "run", config()))
    done = events[-1]
    assert isinstance(done, TrainingFinished), done
    texts = [e.text for e in events if isinstance(e, Message)]
    first_epoch = next(i for i, e in enumerate(events) if isinstance(e, EpochEnd))
    warm = next(i for i, e in enumerate(events) if isinstance(e, Message) and "kernels ready" in e.text)
    assert warm < first_epoch and any("preparing the GPU" in t for t in texts)
    # the warm-up ran the one train shape and the one eval shape, before any real batch
    assert shapes_seen[:2] == [("warm-up", 8, True), ("warm-up", 8, False)]
    loop = shapes_seen[2:]
    assert loop and {n for _, n, _ in loop} == {8}, loop  # every batch, train and eval, has 8 images
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    n_train, n_val = len(split["train"]), len(split["val"])
    assert n_train % 8  # a short last batch existed, and was dropped
    assert sum(1 for _, _, training in loop if training) == 2 * (n_train // 8)  # 2 epochs
    val = [e for e in events if isinstance(e, EpochEnd)][0].val
    assert val["n"] == n_val  # the padding is never counted
    assert done.test_metrics["n"] == len(split["test"])


def test_an_out_of_memory_error_in_the_warm_up_ends_the_run_before_any_batch_trains(cells, tmp_path, monkeypatch):
    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 90.00 GiB")

    def never(*args, **kwargs):
        raise AssertionError("no batch may train after a failed warm-up")

    monkeypatch.setattr(session, "fixed_batch_shapes", lambda device: True)
    monkeypatch.setattr(session, "warm_up", oom)
    monkeypatch.setattr(loops, "device_batches", never)
    run = tmp_path / "oom"
    failed = drive(fit(cells, run, config(batch_size=1024)))[-1]
    assert isinstance(failed, TrainingFailed) and failed.kind == "out-of-memory"
    assert "--batch-size 512" in failed.message
    assert not (run / "model.pt").exists() and not (run / "last.pt").exists()
    assert json.loads((run / "model_card.json").read_text())["status"] == "failed"
    assert list(run.glob("*.tmp")) == []


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 3)
        self.batches: list[int] = []

    def forward(self, x):
        self.batches.append(x.shape[0])
        return self.fc(self.bn(self.conv(x)).amax((2, 3)))


@pytest.mark.parametrize("tta", [False, True])
def test_padding_the_last_evaluation_batch_changes_no_output(tta):
    torch.manual_seed(0)
    spec = ModelSpec("tiny", ("a", "b", "c"), 12, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "bilinear")
    items = [(torch.randint(0, 256, (3, 12, 12), dtype=torch.uint8), i % 3, i) for i in range(11)]
    loader = torch.utils.data.DataLoader(items, batch_size=4)
    model = Tiny()
    model.bn.running_mean.uniform_(-1, 1)  # eval mode uses these, whatever the batch holds
    plain = drain(validate(model, loader, "cpu", spec, outputs=True, tta=tta))
    model.batches.clear()
    padded = drain(validate(model, loader, "cpu", spec, outputs=True, tta=tta, pad_to=4))
    assert model.batches == [4 * (4 if tta else 1)] * 3  # the last batch of 3 was padded
    assert padded["n"] == plain["n"] == 11
    torch.testing.assert_close(torch.as_tensor(padded["logits"]), torch.as_tensor(plain["logits"]))
    assert padded["loss"] == pytest.approx(plain["loss"]) and padded["accuracy"] == plain["accuracy"]


def test_the_warm_up_of_a_ddp_model_does_not_all_reduce_its_noise():
    class Wrapped(Tiny):
        def __init__(self) -> None:
            super().__init__()
            self.unsynced = 0

        def no_sync(self):
            outer = self

            class Context:
                def __enter__(self):
                    outer.unsynced += 1

                def __exit__(self, *exc):
                    return False
            return Context()

    model = Wrapped()
    spec = ModelSpec("tiny", ("a", "b", "c"), 12, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "bilinear")
    warm_up(model, spec, "cpu", train_batches=[4, 2], eval_batches=[4])
    assert model.unsynced == 2 and model.batches == [2, 4, 4]
