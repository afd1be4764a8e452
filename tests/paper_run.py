"""A tiny seeded paper-recipe run whose numbers `test_recipes.py` pins (run by hand to remake them).

Run against any checkout of the engine (it imports the `engine` on sys.path), e.g. the commit
before recipes existed, to record what "today's behaviour" was:

    git worktree add /tmp/ref 0cf73f7
    PYTHONPATH=/tmp/ref python tests/paper_run.py ../shared/data/pbc-dev > tests/data/paper_reference.json

It prints JSON: every epoch's train and validation metrics, the test metrics, a sha256 of the
final (last.pt) weights, and a per-tensor fingerprint of them (float64 sum and sum of squares),
with the CPU capability torch ran on (the sha256 is bit-exact on that capability only; the
fingerprint compares the weights on any CPU).
"""
from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch

from engine.data.cells import ScanResult
from engine.data.scan import scan
from engine.learn.fit import TrainConfig, fit
from engine.learn.run_folder import RunDir
from engine.utils.jobs import drain

CLASSES, PER_CLASS = ("eosinophil", "lymphocyte", "platelet"), 12
SETTINGS = dict(backbone="tf_efficientnet_lite0", img_size=64, epochs=2, batch_size=8, ask_every=0, workers=0,
                split="image", val_fraction=0.25, test_fraction=0.25, seed=0, device="cpu")


def run(data_dir, out_dir, **config) -> dict:
    data = scan(data_dir, verify=False)
    cells = [c for k in CLASSES for c in [c for c in data.cells if c.label == k][:PER_CLASS]]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: sums in a fixed order, the same bits on every run
    try:
        drain(fit(ScanResult(data.root, cells), out_dir, TrainConfig(**{**SETTINGS, **config})))
    finally:
        torch.set_num_threads(threads)
    rd = RunDir(out_dir)
    weights = torch.load(rd.last_path, map_location="cpu", weights_only=True)["model"]
    h = hashlib.sha256()
    for k, v in weights.items():
        h.update(k.encode())
        h.update(v.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    fingerprint = {k: [v.double().sum().item(), v.double().square().sum().item()]
                   for k, v in weights.items() if v.is_floating_point()}
    keep = ("loss", "accuracy")
    epochs = [{"epoch": m["epoch"], "lr": m["lr"], "train": {k: m["train"][k] for k in keep},
               "val": {k: m["val"][k] for k in ("loss", "accuracy", "weighted_f1")}} for m in rd.read_metrics()]
    test = rd.read_model_card()["test_metrics"]
    return {"epochs": epochs, "test": {k: test[k] for k in ("accuracy", "weighted_f1", "loss")},
            "weights_sha256": h.hexdigest(), "weights_fingerprint": fingerprint,
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(run(Path(sys.argv[1]), Path(tmp) / "run"), indent=1))
