"""DistributedDataParallel through torchrun, on the CPU: 2 gloo processes on a small PBC subset.

What differs from one process over the same data, and why the metrics are compared with a tolerance:
each rank trains on its half of the shuffled cells (torch's DistributedSampler: another order, and
one padded cell when the count is odd) with its own BatchNorm statistics over its batch of 8, and
DDP averages the two ranks' gradients; one process sees batches of 16. Same data, same initial
weights, same number of updates, so the epoch's numbers agree closely but not bit for bit.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.learn.runs import RunDir

ROOT = Path(__file__).resolve().parents[1]
CLASSES, PER_CLASS = ("eosinophil", "lymphocyte", "platelet"), 10
# How far the 2-process run's validation metrics may be from one process's (see the docstring):
# 1 epoch, 8 validation cells, so one cell is 0.125 of accuracy.
ACCURACY_TOLERANCE, LOSS_TOLERANCE = 0.25, 0.25


@pytest.fixture(scope="module")
def subset(pbc_dir, tmp_path_factory) -> Path:
    """Links (not copies) to 10 cells of 3 classes, in class folders."""
    root = tmp_path_factory.mktemp("pbc-subset")
    for k in CLASSES:
        (root / k).mkdir()
        for f in sorted((pbc_dir / k).iterdir())[:PER_CLASS]:
            (root / k / f.name).symlink_to(f)
    return root


def train(data: Path, out: Path, *extra: str, nproc: int = 0, batch: int = 8) -> subprocess.CompletedProcess:
    args = [str(data), "--out", str(out), "--recipe", "allblast", "--backbone", "tf_efficientnet_lite0",
            "--img-size", "64", "--epochs", "1", "--batch-size", str(batch), "--workers", "0", "--split", "image",
            "--val-fraction", "0.25", "--test-fraction", "0", "--device", "cpu", "--seed", "3", *extra]
    cmd = [sys.executable, "-m", "engine.cli", "-q", "train", *args]
    if nproc:  # the command a user runs: allblast-engine train --ddp starts torchrun itself
        cmd += ["--ddp", "--nproc-per-node", str(nproc)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    # A session of its own: nothing torchrun signals to its process group can reach pytest.
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
                       start_new_session=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def digest(state: dict) -> str:
    h = hashlib.sha256()
    for k, v in state.items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@pytest.mark.slow
def test_two_gloo_processes_train_like_one_and_resume(subset, tmp_path):
    ddp = RunDir(tmp_path / "ddp")
    r = train(subset, ddp.path, nproc=2)
    assert r.stdout.count("run folder:") == 1  # rank 0 alone reports
    card = ddp.read_model_card()
    assert card["status"] == "completed" and card["world_size"] == 2
    assert card["distributed"]["backend"] == "gloo"
    # both ranks ended with the same weights, and they are the ones last.pt holds
    digests = card["distributed"]["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1] == digest(ddp.load_last()["model"])
    for name in ("model.pt", "last.pt", "config.json", "split.json", "metrics.jsonl", "model_card.json",
                 "val_predictions.csv"):
        assert (ddp.path / name).is_file(), name
    assert card["recipe"]["name"] == "allblast"
    split = json.loads((ddp.path / "split.json").read_text())
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (24, 6, 0)
    metrics = ddp.read_metrics()
    assert [m["epoch"] for m in metrics] == [1]
    assert metrics[0]["train"]["images"] == 24  # reduced over the ranks: 12 each

    single = RunDir(tmp_path / "single")
    train(subset, single.path, batch=16)
    one = single.read_metrics()[0]
    two = metrics[0]
    assert one["val"]["n"] == two["val"]["n"] == len(split["val"])  # every validation cell, once
    assert abs(one["val"]["accuracy"] - two["val"]["accuracy"]) <= ACCURACY_TOLERANCE
    assert abs(one["val"]["loss"] - two["val"]["loss"]) <= LOSS_TOLERANCE
    assert abs(one["train"]["loss"] - two["train"]["loss"]) <= LOSS_TOLERANCE

    # --resume under torchrun: one more epoch, the run folder continued by rank 0
    train(subset, ddp.path, "--resume", "--epochs", "2", nproc=2)
    card = ddp.read_model_card()
    assert card["epochs_run"] == 2 and [m["epoch"] for m in ddp.read_metrics()] == [1, 2]
    digests = card["distributed"]["rank_weight_digests"]
    assert digests[0] == digests[1] == digest(ddp.load_last()["model"])
