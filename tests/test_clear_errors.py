"""Issue 10: errors and warnings as one clear line (no tracebacks, no third-party noise), leaky splits
labelled in every output, the C-NMC export's Patient_ID, and `labels set` paths as the README writes them."""
from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli import main

REPO = Path(__file__).resolve().parents[1]
CELL = "training_data/fold_0/all/UID_1_1_1_all.bmp"
TRAIN_ARGS = ["--backbone", "tf_efficientnet_lite0", "--img-size", "64", "--batch-size", "8",
              "--ask-every", "0", "--seed", "0", "--workers", "0", "--device", "cpu"]


def _engine(*args: str, env: dict | None = None, py_args: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *py_args, "-m", "engine.cli", "-q", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


def _linked_copy(src: Path, dst: Path) -> Path:
    """The folder's tree with every file a symlink to the original: the shared data is never written."""
    for folder, dirs, files in os.walk(src):
        here = dst / Path(folder).relative_to(src)
        here.mkdir(parents=True, exist_ok=True)
        for name in files:
            (here / name).symlink_to(Path(folder) / name)
    return dst


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _tiny_model(path: Path, **extra) -> Path:
    from engine.learn.model import build_model, save_model

    model, spec, _ = build_model("test_efficientnet", ["all", "hem"], pretrained=False, img_size=32)
    save_model(path, model, spec, **extra)
    return path


# ---- 1. a file that is not a model -------------------------------------------------------------------
def _not_a_model(kind: str, folder: Path, pbc_dir: Path) -> Path:
    path = folder / "model.pt"
    if kind == "text":
        path.write_text("this is not a model\n")
    elif kind == "jpeg":
        path.write_bytes(next((pbc_dir / "basophil").glob("*.jpg")).read_bytes())
    else:  # a real model.pt cut short (a copy that did not finish)
        whole = _tiny_model(folder / "whole.pt").read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
    return path


@pytest.mark.parametrize("command", ["predict", "evaluate"])
@pytest.mark.parametrize("kind", ["text", "jpeg", "truncated"])
def test_a_file_that_is_not_a_model_is_one_line(kind, command, tmp_path, pbc_dir, capsys):
    model = _not_a_model(kind, tmp_path, pbc_dir)
    (tmp_path / "cells").mkdir()
    out = ["--out", str(tmp_path / "p.csv")] if command == "predict" else ["--json", str(tmp_path / "e.json")]
    capsys.readouterr()
    assert main(["-q", command, str(model), str(tmp_path / "cells"), *out, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"allblast-engine {command}: error: "), err
    assert "Traceback" not in err and "weights_only" not in err and "internal error" not in err, err
    said = "damaged or truncated" if kind == "truncated" else "is not an allblast model file"
    assert said in err and "choose" in err, err


# ---- 2. OpenCV's own messages ----------------------------------------------------------------------
def test_opencv_messages_do_not_reach_stderr(tmp_path, cnmc_dir):
    folder = tmp_path / "cells"
    folder.mkdir()
    (folder / "good.bmp").symlink_to(cnmc_dir / CELL)
    noise = random.Random(0).randbytes(3000)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + noise)  # OpenCV: "IHDR chunk shall be first"
    (folder / "broken.bmp").write_bytes(b"BM" + noise)  # OpenCV: "imdecode_ ... can't read header"
    done = _engine("scan", str(folder))
    assert done.returncode == 0, done.stderr
    assert "broken.png" in done.stdout and "broken.bmp" in done.stdout  # the engine's own report
    for noise_mark in ("[ERROR", "[ WARN", "imdecode_", "loadsave.cpp", "grfmt_"):
        assert noise_mark not in done.stderr, done.stderr


# ---- 3. warnings are messages --------------------------------------------------------------------
def test_warnings_print_as_messages_whatever_pythons_filters(tmp_path, cnmc_dir):
    data = _linked_copy(cnmc_dir, tmp_path / "cnmc")
    assert _engine("labels", "set", str(data), CELL, "unsure").returncode == 0
    for i, flag in enumerate(("error", "ignore", "default")):  # -W error must not make it a crash
        done = _engine("labels", "export", str(data), "--out", str(tmp_path / f"c{i}.csv"), "--format", "cnmc",
                       py_args=("-W", flag))
        assert done.returncode == 0, done.stderr
        lines = done.stderr.splitlines()
        assert "warning: C-NMC export holds only 'all' (1) and 'hem' (0): skipped 1 cells (1 unsure)" in lines, flag
        assert "AllblastWarning" not in done.stderr and "UserWarning" not in done.stderr and ".py:" not in done.stderr


def test_engine_warnings_read_as_messages_without_the_cli(tmp_path):
    """A script or a worker process that uses the engine without the CLI's hook."""
    done = subprocess.run([sys.executable, "-c", "from engine.utils.logs import warn; warn('skipped 1 cells')"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.stderr == "warning: skipped 1 cells\n"


def test_other_libraries_warnings_are_one_line(capsys, monkeypatch):
    import warnings

    from engine.utils.logs import route_warnings_to_logging, setup_logging

    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # restored after the test
    setup_logging(console=True)
    route_warnings_to_logging()
    warnings.warn_explicit("pin_memory is set but no accelerator is found\nsecond line", UserWarning,
                           "torch/utils/data/dataloader.py", 683, registry={})
    err = capsys.readouterr().err
    assert err == "warning: pin_memory is set but no accelerator is found (UserWarning)\n", err


# ---- 4. leaky splits labelled in every output --------------------------------------------------------
def test_train_test_line_says_leaky(cnmc_dir, tmp_path, capsys):
    out = tmp_path / "paper"
    assert main(["-q", "train", str(cnmc_dir / "training_data"), "--out", str(out), "--epochs", "1",
                 "--split", "image", "--test-fraction", "0.2", *TRAIN_ARGS]) == 0
    test_line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("test:"))
    assert test_line.endswith("(leaky: image-level split)"), test_line


@pytest.mark.parametrize("leaky", [True, False])
def test_evaluate_and_predict_say_whether_the_models_split_was_leaky(leaky, cnmc_dir, tmp_path, capsys):
    from engine.utils.files import sha256_file

    model = _tiny_model(tmp_path / "model.pt", split_protocol="image" if leaky else "patient", leaky=leaky,
                        calibration={"temperature": 1.5})
    data = cnmc_dir / "training_data"
    report = tmp_path / "eval.json"
    capsys.readouterr()
    assert main(["-q", "evaluate", str(model), str(data), "--json", str(report), "--device", "cpu"]) == 0
    said = json.loads(report.read_text())
    assert said["leaky"] is leaky and said["split_protocol"] == ("image" if leaky else "patient")
    metrics_line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("n "))
    assert ("leaky" in metrics_line) is leaky, metrics_line

    out = tmp_path / "predictions.csv"
    assert main(["-q", "predict", str(model), str(data), "--out", str(out), "--device", "cpu"]) == 0
    side = json.loads(Path(f"{out}.model.json").read_text())
    assert side["sha256"] == sha256_file(model) and side["backbone"] == "test_efficientnet"
    assert side["classes"] == ["all", "hem"] and side["calibration_temperature"] == 1.5
    assert side["split_protocol"] == ("image" if leaky else "patient") and side["leaky"] is leaky
    assert (side["leaky_note"] is not None) is leaky
    # the sidecar is an output like the CSV: not replaced without --force
    Path(f"{tmp_path / 'third.csv'}.model.json").write_text("{}")
    assert main(["-q", "predict", str(model), str(data), "--out", str(tmp_path / "third.csv"), "--device", "cpu"]) == 2


# ---- 5. the C-NMC export keeps the official Patient_ID -------------------------------------------------
def test_cnmc_export_has_the_official_patient_ids_and_round_trips(cnmc_dir, tmp_path, capsys):
    data = _linked_copy(cnmc_dir, tmp_path / "cnmc")
    official = {r["new_names"]: r["Patient_ID"] for r in _read_csv(
        cnmc_dir / "validation_data" / "C-NMC_test_prelim_phase_data_labels.csv")}
    out = tmp_path / "export.csv"
    assert main(["-q", "labels", "export", str(data), "--out", str(out), "--format", "cnmc"]) == 0
    rows = _read_csv(out)
    validation = {r["new_names"]: r["Patient_ID"] for r in rows if r["new_names"] in official}
    assert validation == {name: official[name] for name in ("1002.bmp", "1005.bmp")}
    assert validation["1002.bmp"] == "UID_H49_5_2_hem.bmp"
    training = [r for r in rows if r["new_names"] not in official]
    assert training and all(r["Patient_ID"] == r["new_names"] for r in training)  # their names are the originals

    before = tmp_path / "before.csv"
    assert main(["-q", "labels", "export", str(data), "--out", str(before)]) == 0
    capsys.readouterr()
    assert main(["-q", "labels", "import", str(data), str(out), "--annotator", "round trip"]) == 0
    assert capsys.readouterr().out.startswith(f"applied 0, unchanged {len(rows)}, missing images 0, problems 0")
    after = tmp_path / "after.csv"
    assert main(["-q", "labels", "export", str(data), "--out", str(after)]) == 0
    assert after.read_text() == before.read_text()
    again = tmp_path / "again.csv"
    assert main(["-q", "labels", "export", str(data), "--out", str(again), "--format", "cnmc"]) == 0
    assert again.read_text() == out.read_text()


# ---- 6. `labels set` as the README writes it ---------------------------------------------------------
def _label_of(root: Path, path: str):
    from engine.labels.store import LabelStore

    store = LabelStore.open(root)
    try:
        state = store.state(path)
        return state.current, state.annotator
    finally:
        store.close()


def test_readme_labels_set_works_from_the_cnmc_root(cnmc_dir, tmp_path, capsys):
    data = _linked_copy(cnmc_dir, tmp_path / "cnmc")
    # as the README writes it, DIR being the C-NMC root: the path is found in training_data/
    assert main(["-q", "labels", "set", str(data), "fold_0/all/UID_1_1_1_all.bmp", "hem", "--annotator", "Dr. A"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"{CELL}: hem"
    assert _label_of(data, CELL) == ("hem", "Dr. A")
    # DIR = training_data, whose labels the root's store already keeps: no second store beside it
    assert main(["-q", "labels", "set", str(data / "training_data"), "fold_0/all/UID_1_1_1_all.bmp", "unsure",
                 "--annotator", "Dr. B"]) == 0
    assert not (data / "training_data" / ".allblast").exists()
    assert _label_of(data, CELL) == ("unsure", "Dr. B")
    assert "label store of" in capsys.readouterr().out


def test_labels_set_path_outside_dir_is_one_line_and_opens_no_store(cnmc_dir, tmp_path, capsys):
    data = _linked_copy(cnmc_dir, tmp_path / "cnmc")
    hem = data / "training_data" / "fold_0" / "hem"
    capsys.readouterr()
    # written relative to training_data, while DIR is its fold_0/hem: the cell is not in DIR at all
    assert main(["-q", "labels", "set", str(hem), "fold_0/all/UID_1_1_1_all.bmp", "hem"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"it is in {data / 'training_data'}: run with that folder" in err, err
    assert main(["-q", "labels", "set", str(data), "nowhere/UID_1_1_1_all.bmp", "hem"]) == 2
    assert "is not a cell of" in capsys.readouterr().err
    assert not any(p.name == ".allblast" for p in data.rglob("*")), "a failed command leaves no store behind"
