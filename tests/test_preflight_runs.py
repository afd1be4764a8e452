"""What the app asks the engine before and after training: the preflight check, weights
availability, run summaries and their status, expert labels, and per-data-set settings."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path
import pytest

from engine.data.cells import UNSURE, Cell, ScanResult
from engine.data.scan import scan
from engine.labels.project import apply_expert_labels, open_dataset
from engine.learn.config import TrainConfig
from engine.learn.preflight import check_training, count_classes
from engine.learn.run_folder import RunDir
from engine.learn.run_list import list_runs, summarize_run
from engine.learn.weights import LITE0, default_img_size, find_weights


def cells(spec):
    """spec: (label, patient) pairs -> a ScanResult of synthetic cells."""
    return ScanResult(root=Path("/data"),
                      cells=[Cell(f"c{i}.png", label, patient) for i, (label, patient) in enumerate(spec)])


def test_counts_per_class_and_patient_leave_out_unsure_and_unlabeled():
    report = count_classes(cells([("all", "1"), ("all", "2"), ("all", "2"), ("hem", "H1"), (UNSURE, "1"),
                                  (None, "3"), (None, "3")]))
    assert [(c.name, c.cells, c.patients) for c in report.classes] == [("all", 3, 2), ("hem", 1, 1)]
    assert (report.unsure, report.unlabeled, report.by_patient) == (1, 2, True)


def test_a_class_with_one_patient_blocks_a_patient_split_but_not_an_image_split():
    data = cells([("all", "1")] * 4 + [("all", "2")] * 4 + [("hem", "H1")] * 5)
    report = check_training(data, TrainConfig(split="patient", batch_size=4))
    assert not report.ok and any("class hem has cells of only 1 patient" in p for p in report.problems)
    image = check_training(data, TrainConfig(split="image", batch_size=4))
    assert image.ok and any("leaky" in w for w in image.warnings)


def test_one_class_missing_weights_and_an_unwritable_folder_block(tmp_path):
    one = check_training(cells([("all", "1"), ("all", "2")]), TrainConfig(split="image"))
    assert any("at least 2 classes" in p for p in one.problems)
    data = cells([("a", None)] * 6 + [("b", None)] * 6)
    no_weights = check_training(data, TrainConfig(split="image"), weights_found=False)
    assert any("no ImageNet weights for efficientnet_b3" in p for p in no_weights.problems)
    assert check_training(data, TrainConfig(split="image", pretrained=False), weights_found=False).ok
    missing_file = check_training(data, TrainConfig(split="image", weights=str(tmp_path / "nope.pth")))
    assert any("does not exist" in p for p in missing_file.problems)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    not_a_dir = check_training(data, TrainConfig(split="image"), blocker / "runs" / "r1")
    assert any("cannot be written" in p for p in not_a_dir.problems)
    assert not (blocker.parent / "runs").exists()  # checking creates nothing
    assert any("no patient ids" in w for w in check_training(data, TrainConfig()).warnings)


def test_weights_availability_is_found_without_building_a_network(monkeypatch, tmp_path, no_network):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    lite0 = find_weights(LITE0)
    assert lite0.found and lite0.text == "bundled (tf_efficientnet_lite0)"
    b3 = find_weights("efficientnet_b3")
    assert not b3.found and b3.text == "not found: choose a weights file or train from scratch"
    with pytest.raises(ValueError, match="unknown backbone"):
        find_weights("no_such_net")
    assert default_img_size(LITE0) == 224 and default_img_size("efficientnet_b3") == 288


def test_expert_labels_replace_the_originals(cnmc_dir, tmp_path):
    with open_dataset(cnmc_dir, db_path=tmp_path / "db.sqlite") as project:
        cell = "training_data/fold_0/all/UID_1_1_1_all.bmp"
        project.store.set_label(cell, "hem", annotator="t")
        project.store.set_label("training_data/fold_0/hem/UID_H6_1_1_hem.bmp", UNSURE, annotator="t")
        swapped, changed = apply_expert_labels(project.scan, project.store.states())
    by_path = {c.path: c for c in swapped.cells}
    assert changed == 2 and by_path[cell].label == "hem" and by_path[cell].label_source == "expert"
    assert count_classes(swapped).unsure == 1


def test_data_set_settings_persist_in_the_label_database(cnmc_dir, tmp_path):
    with open_dataset(cnmc_dir, db_path=tmp_path / "db.sqlite") as project:
        assert project.store.meta("active_model") is None
        project.store.set_meta("active_model", "/runs/a")
    with open_dataset(cnmc_dir, db_path=tmp_path / "db.sqlite") as project:
        assert project.store.meta("active_model") == "/runs/a"
        project.store.set_meta("active_model", None)
        assert project.store.meta("active_model") is None


def write_run(path, card=None, epochs=2, last=True):
    run = RunDir(path)
    run.path.mkdir(parents=True)
    run.write_config(TrainConfig(backbone=LITE0, img_size=64, split="image").to_dict())
    for e in range(1, epochs + 1):
        run.append_metrics({"epoch": e, "lr": 1e-3, "train": {"loss": 1.0 / e, "accuracy": 0.5},
                            "val": {"loss": 1.1 / e, "accuracy": 0.4 + e / 10, "weighted_f1": 0.3 + e / 10},
                            "is_best": True, "stalls": 0})
    if card is not None:
        run.write_model_card(card)
    if last:
        run.last_path.write_bytes(b"x")
    return run.path


def test_run_status_tells_live_finished_stopped_interrupted_and_failed(tmp_path):
    me = {"pid": os.getpid(), "host": platform.node()}
    live = summarize_run(write_run(tmp_path / "live", {"status": "running", **me}))
    assert (live.status, live.detail) == ("running", "training")
    dead = summarize_run(write_run(tmp_path / "dead", {"status": "running", "pid": 2**22 + 12345,
                                                       "host": platform.node()}))
    assert (dead.status, dead.detail) == ("stopped", "interrupted")
    done = summarize_run(write_run(tmp_path / "done", {"status": "halted", "best_epoch": 2,
                                                       "split": {"protocol": "image", "leaky": True}}))
    assert (done.status, done.detail, done.split, done.leaky) == ("finished", "halted", "image", True)
    assert done.epochs_run == 2 and done.best_epoch == 2 and done.best["val_accuracy"] == pytest.approx(0.6)
    stopped = summarize_run(write_run(tmp_path / "stopped", {"status": "cancelled"}))
    assert stopped.status == "stopped"
    failed = summarize_run(write_run(tmp_path / "failed", {"status": "failed", "failure": {
        "kind": "out-of-memory", "message": "out of memory with batch size 64"}}))
    assert (failed.status, failed.detail) == ("failed", "out of memory with batch size 64")
    killed = summarize_run(write_run(tmp_path / "killed", None))
    assert killed.status == "stopped" and killed.detail == "interrupted"
    (tmp_path / "not-a-run").mkdir()
    assert {r.path.name for r in list_runs(tmp_path)} == {"live", "dead", "done", "stopped", "failed", "killed"}
    with pytest.raises(FileNotFoundError):
        summarize_run(tmp_path / "not-a-run")


def test_a_run_that_fails_before_training_is_marked_failed(pbc_dir, tmp_path, monkeypatch, no_network):
    from engine.learn.events import TrainingFailed
    from engine.learn.fit import fit

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for cls in ("basophil", "platelet"):  # a small class-folder tree of links to the real cells
        (tmp_path / "data" / cls).mkdir(parents=True)
        for image in sorted((pbc_dir / cls).glob("*.jpg"))[:10]:
            (tmp_path / "data" / cls / image.name).symlink_to(image)
    events = list(fit(scan(tmp_path / "data"), tmp_path / "run",
                      TrainConfig(backbone="efficientnet_b0", epochs=1, split="image")))
    assert isinstance(events[-1], TrainingFailed) and events[-1].kind == "weights"
    card = json.loads((tmp_path / "run" / "model_card.json").read_text())
    assert card["status"] == "failed" and card["failure"]["kind"] == "weights"
    assert summarize_run(tmp_path / "run").status == "failed"
