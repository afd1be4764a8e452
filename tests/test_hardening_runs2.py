"""Hardening round 2 (issue 22), training, model files and the CLI: a refused start changes nothing,
model files are checked before they are used, failures are one line that says what to do, and a
run's state (live, killed, failed on a full disk) is told as it is. Runs that lose work are tested
with real `allblast-engine` processes."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY = ["--backbone", "test_efficientnet", "--no-pretrained", "--img-size", "32", "--batch-size", "4",
        "--ask-every", "0", "--workers", "0", "--device", "cpu", "--seed", "0"]


def _engine(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", "-q", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=_env())


def _env() -> dict:
    return {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(REPO)}


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones too) with its sha256: byte-identical or not."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]


def _linked_copy(src: Path, dst: Path) -> Path:
    """The folder's tree with every file a symlink to the original: the shared data is never written."""
    for folder, _dirs, files in os.walk(src):
        here = dst / Path(folder).relative_to(src)
        here.mkdir(parents=True, exist_ok=True)
        for name in files:
            (here / name).symlink_to(Path(folder) / name)
    return dst


@pytest.fixture(scope="module")
def finished_run(cnmc_dir, tmp_path_factory) -> Path:
    """A real, complete run (one epoch of a tiny network on the 15 C-NMC samples); tests copy it."""
    out = tmp_path_factory.mktemp("finished") / "good"
    proc = _engine("train", str(cnmc_dir / "training_data"), "--out", str(out), "--epochs", "1", *TINY)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((out / "model_card.json").read_text())["status"] == "completed"
    return out


def _copy_run(finished_run: Path, tmp_path: Path, name: str = "good") -> Path:
    return Path(shutil.copytree(finished_run, tmp_path / name))


# ---- 1. a refusal changes nothing ------------------------------------------------------------------
def test_refusing_to_train_into_a_finished_run_leaves_it_byte_identical(finished_run, cnmc_dir, tmp_path):
    run = _copy_run(finished_run, tmp_path)
    before = _snapshot(run)
    proc = _engine("train", str(cnmc_dir / "training_data"), "--out", str(run), "--epochs", "1", *TINY)
    assert proc.returncode != 0
    assert "already holds a training run" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert _snapshot(run) == before
    card = json.loads((run / "model_card.json").read_text())
    assert card["status"] == "completed" and card["classes"] == ["all", "hem"]


@pytest.mark.parametrize("epochs", [1, 0], ids=["run-there", "invalid-settings"])
def test_the_engine_refusing_a_start_records_nothing_in_the_run_folder(epochs, finished_run, cnmc_dir, tmp_path):
    """The engine itself (the app and scripts start runs without the CLI): a start refused because
    a run is there, or because the settings are invalid, writes no 'failed' card over it."""
    from engine.data.scan import scan
    from engine.learn.events import TrainingFailed
    from engine.learn.fit import TrainConfig, fit

    run = _copy_run(finished_run, tmp_path)
    before = _snapshot(run)
    config = TrainConfig(backbone="test_efficientnet", pretrained=False, img_size=32, epochs=epochs, batch_size=4,
                         ask_every=0, workers=0, device="cpu")
    events = list(fit(scan(cnmc_dir / "training_data"), run, config))
    assert isinstance(events[-1], TrainingFailed)
    assert _snapshot(run) == before


# ---- 5. evaluate says which cells it did not score ---------------------------------------------------
def test_evaluate_says_how_many_cells_of_unknown_classes_it_skipped(finished_run, cnmc_dir, tmp_path, capsys):
    data = tmp_path / "cells"
    data.mkdir()
    images = sorted((cnmc_dir / "training_data" / "fold_0").rglob("*.bmp"))[:6]
    for image in images:
        (data / image.name).symlink_to(image)
    labels = ["all", "hem", "smudge cell", "smudge cell", "blast?", "all"]
    (tmp_path / "labels.csv").write_text("path,label\n" + "".join(f"{i.name},{k}\n" for i, k in zip(images, labels)))
    capsys.readouterr()
    assert main(["-q", "evaluate", str(finished_run / "model.pt"), str(data), "--labels", str(tmp_path / "labels.csv"),
                 "--json", str(tmp_path / "e.json"), "--device", "cpu", "--backend", "torch"]) == 0
    out = capsys.readouterr()
    said = [line for line in (out.out + out.err).splitlines() if "not scored" in line]
    assert len(said) == 1, out.out + out.err
    assert "3 cells" in said[0] and "smudge cell: 2" in said[0] and "blast?: 1" in said[0], said[0]
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["n"] == 3 and report["skipped"]["unknown_class_cells"] == {"blast?": 1, "smudge cell": 2}


# ---- 6. a model file cannot make the offline program reach the network ---------------------------------
def _tiny_model(path: Path, **changes) -> Path:
    from engine.learn.model import build_model, save_model

    model, spec, _ = build_model("test_efficientnet", ["all", "hem"], pretrained=False, img_size=32)
    save_model(path, model, spec)
    if changes:
        ckpt = torch.load(path, weights_only=True)
        ckpt["spec"].update(changes.pop("spec", {}))
        ckpt.update(changes)
        torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("backbone", ["hf-hub:evil/evil", "local-dir:/tmp/evil", "timm/efficientnet_b0"])
def test_a_model_file_naming_a_hub_backbone_is_refused_without_the_network(backbone, tmp_path, cnmc_dir, capsys,
                                                                          no_network):
    model = _tiny_model(tmp_path / "model.pt", spec={"backbone": backbone})
    capsys.readouterr()
    code = main(["-q", "predict", str(model), str(cnmc_dir / "validation_data"), "--out", str(tmp_path / "p.csv"),
                 "--device", "cpu", "--backend", "torch"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("allblast-engine predict: error: "), err
    assert "backbone" in err and str(model) in err and "internal error" not in err, err
    assert not (tmp_path / "p.csv").exists()


def test_a_model_file_of_a_newer_format_says_it_comes_from_a_newer_allblast(tmp_path, cnmc_dir, capsys):
    model = _tiny_model(tmp_path / "model.pt", format="allblast.model/2")
    capsys.readouterr()
    code = main(["-q", "predict", str(model), str(cnmc_dir / "validation_data"), "--out", str(tmp_path / "p.csv"),
                 "--device", "cpu", "--backend", "torch"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "newer allblast" in err and "allblast.model/2" in err and "not an allblast model" not in err, err


# ---- 7. one safe reader for every checkpoint -------------------------------------------------------------
class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_last_pt_is_refused_in_one_line_on_resume(finished_run, cnmc_dir, tmp_path):
    run = _copy_run(finished_run, tmp_path)
    marker = tmp_path / "pwned"
    torch.save({"format": "allblast.last/1", "epoch": 1, "x": _Evil(marker)}, run / "last.pt")
    before = _snapshot(run)
    proc = _engine("train", str(cnmc_dir / "training_data"), "--out", str(run), "--resume", "--epochs", "2", *TINY)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    assert not marker.exists()
    assert "weights_only" not in text and "Traceback" not in text, text
    said = [line for line in _lines(proc) if "last.pt" in line]
    assert len(said) == 1 and "could run code" in said[0], text
    assert _snapshot(run) == before  # a resume that cannot start keeps the run as it was


def test_every_checkpoint_reader_refuses_python_objects_the_same_way(tmp_path):
    """model.pt (predict), last.pt (resume) and an ImageNet weights file (--weights): one reader."""
    from engine.learn.model import build_model, read_checkpoint
    from engine.learn.run_folder import RunDir

    evil = tmp_path / "evil.pt"
    torch.save({"format": "allblast.model/1", "x": _Evil(tmp_path / "pwned")}, evil)
    shutil.copy(evil, tmp_path / "last.pt")
    readers = [lambda: read_checkpoint(evil), lambda: RunDir(tmp_path).load_last(),
               lambda: build_model("test_efficientnet", ["a", "b"], pretrained=False, weights=evil)]
    for read in readers:
        with pytest.raises(ValueError) as info:
            read()
        text = str(info.value)
        assert "could run code" in text and "weights_only" not in text and "\n" not in text, text
    assert not (tmp_path / "pwned").exists()


# ---- 8. a run folder is never .allblast/ nor a folder of images -------------------------------------------
@pytest.mark.parametrize("where", [".allblast", "fold_0/all"])
def test_train_refuses_the_label_database_folder_and_an_image_folder(where, cnmc_dir, tmp_path):
    data = _linked_copy(cnmc_dir / "training_data", tmp_path / "data")
    (data / ".allblast").mkdir()
    (data / ".allblast" / "project.sqlite").write_bytes(b"the expert's labels")
    before = _snapshot(data)
    proc = _engine("train", str(data), "--out", str(data / where), "--epochs", "1", *TINY)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    said = _lines(proc)
    assert len(said) == 1 and said[0].startswith("allblast-engine train: error: refusing"), said
    assert _snapshot(data) == before


# ---- 9. one image size range -------------------------------------------------------------------------------
@pytest.mark.parametrize("size", ["8", "1", "0", "4096"])
def test_train_refuses_an_image_size_a_model_may_not_have(size, cnmc_dir, tmp_path, capsys):
    args = [a if a != "32" else size for a in TINY]
    capsys.readouterr()
    code = main(["-q", "train", str(cnmc_dir / "training_data"), "--out", str(tmp_path / "run"), "--epochs", "1",
                 *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "allowed 16-2048" in err, err  # what predict allows
    assert not (tmp_path / "run").exists()


def test_training_and_model_files_share_one_image_size_range():
    from engine.learn.config import TrainConfig
    from engine.learn.model import ModelSpec

    for size in (15, 2049):
        with pytest.raises(ValueError, match="allowed 16-2048"):
            TrainConfig(img_size=size).validate()
        with pytest.raises(ValueError, match="allowed 16-2048"):
            ModelSpec("efficientnet_b0", ("a", "b"), size, (0.5,) * 3, (0.5,) * 3, "bicubic").validate()
    for size in (16, 2048):
        TrainConfig(img_size=size).validate()
        ModelSpec("efficientnet_b0", ("a", "b"), size, (0.5,) * 3, (0.5,) * 3, "bicubic").validate()


# ---- 10. an image deleted while training ------------------------------------------------------------------
DELETE_AFTER_SCAN = """
import sys
from pathlib import Path
import engine.cli.train as train
scanned = train.scan_with_progress
def scan_then_delete(*args, **kwargs):
    result = scanned(*args, **kwargs)
    for path in sorted(Path(sys.argv[1]).rglob("*.jpg"))[::4]:
        path.unlink()  # as a colleague tidying the folder while the run starts
    return result
train.scan_with_progress = scan_then_delete
from engine.cli import main
sys.exit(main(["-q", "train", *sys.argv[1:]]))
"""


def test_an_image_deleted_while_training_with_workers_is_one_line(pbc_dir, tmp_path):
    data = tmp_path / "cells"
    for cls in ("basophil", "eosinophil"):
        (data / cls).mkdir(parents=True)
        for image in sorted((pbc_dir / cls).glob("*.jpg"))[:12]:
            shutil.copy(image, data / cls / image.name)  # copies: the test deletes some
    deleted = sorted(data.rglob("*.jpg"))[::4]
    args = [str(data), "--out", str(tmp_path / "run"), "--epochs", "1", "--split", "image", *TINY, "--workers", "1"]
    proc = subprocess.run([sys.executable, "-c", DELETE_AFTER_SCAN, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env=_env())
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    assert "Traceback" not in text and "DataLoader worker" not in text, text
    said = [line for line in _lines(proc) if any(p.name in line for p in deleted)]
    assert len(said) == 1 and said[0].startswith("error (data): cannot read"), text
    card = json.loads((tmp_path / "run" / "model_card.json").read_text())
    assert card["status"] == "failed" and card["failure"]["kind"] == "data"


# ---- 11. a full disk while writing a checkpoint ------------------------------------------------------------
FULL_DISK_AT_LAST_PT = """
import sys
import torch
real_save = torch.save
def save(obj, f, *args, **kwargs):
    # last.pt goes to a full disk: /dev/full fails every write with ENOSPC, and torch reports
    # that as it would on a full disk (given a path or a file object alike)
    name = str(getattr(f, "name", f))
    if ".last.pt." in name:
        if hasattr(f, "write"):
            with open("/dev/full", "wb") as full:
                return real_save(obj, full, *args, **kwargs)
        return real_save(obj, "/dev/full", *args, **kwargs)
    return real_save(obj, f, *args, **kwargs)
torch.save = save
from engine.cli import main
sys.exit(main(["-q", "train", *sys.argv[1:]]))
"""


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux) to fail writes with ENOSPC")
def test_a_full_disk_at_a_checkpoint_is_said_recorded_and_resumable(cnmc_dir, tmp_path):
    # What torch itself says when its writer hits a full disk: nothing about space.
    with pytest.raises(RuntimeError, match="inline_container"):
        torch.save({"x": torch.zeros(1000)}, "/dev/full")
    run = tmp_path / "run"
    args = [str(cnmc_dir / "training_data"), "--out", str(run), "--epochs", "1", *TINY]
    proc = subprocess.run([sys.executable, "-c", FULL_DISK_AT_LAST_PT, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env=_env())
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    assert "enforce fail" not in text and "Traceback" not in text, text
    failed = [line for line in _lines(proc) if line.startswith("error (")]
    assert len(failed) == 1 and failed[0].startswith("error (disk-full): the disk holding") and "is full" in failed[0]
    assert "resume" in failed[0], failed[0]
    card = json.loads((run / "model_card.json").read_text())
    assert card["status"] == "failed" and card["failure"]["kind"] == "disk-full"
    assert (run / "model.pt").is_file() and not (run / "last.pt").exists()
    assert not list(run.glob(".*.tmp"))
    # Space freed: the run goes on from what is on disk (epoch 1's model.pt).
    proc = _engine("train", str(cnmc_dir / "training_data"), "--out", str(run), "--resume", "--epochs", "2", *TINY)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "resuming from model.pt (epoch 1)" in proc.stdout + proc.stderr
    card = json.loads((run / "model_card.json").read_text())
    assert card["status"] == "completed" and card["epochs_run"] == 2
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


# ---- 12. report on a damaged run ---------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["model", "card-json", "card-classes"])
def test_report_on_a_damaged_run_is_one_line_naming_the_file(damage, finished_run, tmp_path, capsys):
    run = _copy_run(finished_run, tmp_path)
    if damage == "model":
        (run / "model.pt").write_text("not a model\n")
        named = run / "model.pt"
    elif damage == "card-json":
        (run / "model_card.json").write_text('{"status": ')
        named = run / "model_card.json"
    else:
        card = json.loads((run / "model_card.json").read_text())
        (run / "model_card.json").write_text(json.dumps({**card, "classes": ["blast", "normal"]}))
        named = run / "model_card.json"
    capsys.readouterr()
    assert main(["-q", "report", str(run), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("allblast-engine report: error: ") and str(named) in err, err
    assert "are not among the classes" not in err, err
    assert not (tmp_path / "r.html").exists()


def test_report_on_a_run_whose_card_lost_its_details_reads_the_model_file(finished_run, tmp_path):
    """The card item 1 used to leave ({"status": "failed", ...}): the report still comes, with the
    model's own classes."""
    run = _copy_run(finished_run, tmp_path)
    (run / "model_card.json").write_text(json.dumps({"format": "allblast.model_card/1", "status": "failed"}))
    proc = _engine("report", str(run), "--out", str(tmp_path / "r.html"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all" in (tmp_path / "r.html").read_text()


# ---- 14. a damaged config.json on resume -------------------------------------------------------------------
@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"batch_size": "many"}'])
def test_a_damaged_config_json_on_resume_names_the_file(content, finished_run, cnmc_dir, tmp_path, capsys):
    run = _copy_run(finished_run, tmp_path)
    (run / "config.json").write_text(content)
    before = _snapshot(run)
    capsys.readouterr()
    code = main(["-q", "train", str(cnmc_dir / "training_data"), "--out", str(run), "--resume", "--epochs", "2", *TINY])
    out = capsys.readouterr()
    assert code == 1
    failed = [line for line in out.out.splitlines() if line.startswith("error (")]
    assert len(failed) == 1 and str(run / "config.json") in failed[0] and "damaged" in failed[0], out.out
    assert _snapshot(run) == before


# ---- 16. a killed run is told from a live one ----------------------------------------------------------------
def _wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _process_state(pid: int) -> str | None:
    """Linux: the process's state letter (R, S, Z for a zombie, ...), None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()[0]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tells a zombie by /proc")
def test_a_killed_run_is_told_from_a_live_one_by_train_the_runs_and_report(cnmc_dir, tmp_path):
    from engine.learn.run_list import summarize_run
    from engine.report.model_report import build_model_report

    run, log = tmp_path / "run", tmp_path / "train.log"
    with open(log, "w") as out:
        train = subprocess.Popen([sys.executable, "-m", "engine.cli", "-q", "train", str(cnmc_dir / "training_data"),
                                  "--out", str(run), "--epochs", "1000", *TINY], cwd=REPO, env=_env(),
                                 stdout=out, stderr=subprocess.STDOUT)
    try:
        card = run / "model_card.json"
        _wait_for(lambda: (run / "last.pt").is_file() and card.is_file() or train.poll() is not None, 300,
                  "the first epoch")
        assert train.poll() is None, log.read_text()
        assert json.loads(card.read_text())["status"] == "running"
        assert summarize_run(run).status == "running"
        # A second training of the same folder, while the first one runs, is refused.
        second = _engine("train", str(cnmc_dir / "training_data"), "--out", str(run), "--resume",
                         "--epochs", "2", *TINY)
        assert second.returncode == 1 and "being trained right now" in second.stdout, second.stdout + second.stderr
        assert train.poll() is None
        os.kill(train.pid, signal.SIGKILL)  # as the kernel's out-of-memory killer does
        _wait_for(lambda: _process_state(train.pid) == "Z", 30, "the kill")
        # Killed, not yet reaped by its parent (this test): a zombie is no training process.
        assert (summarize_run(run).status, summarize_run(run).detail) == ("stopped", "interrupted")
    finally:
        if train.poll() is None:
            train.kill()
        train.wait()
    assert json.loads(card.read_text())["status"] == "running"  # the card cannot know; its readers do
    assert (summarize_run(run).status, summarize_run(run).detail) == ("stopped", "interrupted")
    report = build_model_report(run)
    assert report.card["status"].startswith("interrupted"), report.card["status"]
