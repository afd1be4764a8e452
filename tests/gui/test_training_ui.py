"""Training inside the window: the Train dialog, live dashboard, the continue dialog, Stop and
resume, the Runs panel, failure dialogs, closing while training, and --script end to end.

Trains tf_efficientnet_lite0 (ImageNet weights shipped with a pip package) at 64 px on a small
subset of the real PBC cells, linked (not copied) from ../shared/data into tmp_path.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PySide6.QtWidgets import QLabel, QMessageBox

from engine.learn.config import TrainConfig
from engine.learn.run_folder import RunDir
from engine.learn.run_list import summarize_run
from engine.learn.weights import LITE0

from .conftest import open_and_wait

pytestmark = pytest.mark.shared_data
CLASSES = ("eosinophil", "lymphocyte", "neutrophil")


def link_subset(src: Path, dst: Path, per_class: int) -> Path:
    """A class-folder tree of symlinks to real PBC images: read in place, never copied."""
    for cls in CLASSES:
        (dst / cls).mkdir(parents=True, exist_ok=True)
        for image in sorted((src / cls).glob("*.jpg"))[:per_class]:
            (dst / cls / image.name).symlink_to(image)
    return dst


@pytest.fixture
def pbc_small(pbc_dir, tmp_path) -> Path:
    return link_subset(pbc_dir, tmp_path / "pbc-small", 16)


def fast(**changes) -> TrainConfig:
    base = TrainConfig(backbone=LITE0, img_size=64, epochs=2, batch_size=8, ask_every=0, device="cpu",
                       split="image", workers=0, seed=0)
    return replace(base, **changes)


def wait_until_done(qtbot, window, timeout=240_000):
    qtbot.waitUntil(lambda: not window.training.controller.running, timeout=timeout)


def listed_runs(qtbot, ui):
    """The Runs panel's rows after a refresh (it lists on a pool thread)."""
    with qtbot.waitSignal(ui.run_list.refreshed, timeout=30_000):
        ui.refresh_runs()
    return ui.runs.model.runs()


def test_train_from_the_dialog_answer_continue_both_ways(qtbot, window, pbc_small):
    open_and_wait(qtbot, window, pbc_small)
    ui = window.training
    window.actions["train"].trigger()  # Model > Train Model... (Ctrl+T)
    dialog = ui.train_dialog
    assert dialog is not None and dialog.isVisible()
    # Each backbone says whether ImageNet weights are here (looked up off the GUI thread: "checking…"
    # until then); Lite0's ship with the package.
    qtbot.waitUntil(dialog.weights_checked, timeout=60_000)
    texts = [dialog.backbone.itemText(i) for i in range(dialog.backbone.count())]
    assert any(t.startswith(LITE0) and "bundled (tf_efficientnet_lite0)" in t for t in texts)
    assert dialog.backbone.currentData() == "efficientnet_b3"  # the paper's backbone is the default
    # The labels used: 16 cells per class, no patient ids in PBC.
    assert [dialog.counts.item(i, 0).text() for i in range(3)] == list(CLASSES)
    assert {dialog.counts.item(i, 1).text() for i in range(3)} == {"16"}
    assert dialog.counts.item(0, 2).text() == "no ids"
    dialog.backbone.setCurrentIndex(dialog.backbone.findData(LITE0))
    assert dialog.img_size.value() == 224  # the backbone's own default size follows the choice
    dialog.img_size.setValue(64)
    dialog.epochs.setValue(2)
    dialog.batch_size.setValue(8)
    dialog.ask_every.setValue(1)
    dialog.split.setCurrentIndex(dialog.split.findData("image"))
    dialog.device.setCurrentIndex(dialog.device.findData("cpu"))
    dialog.refresh()
    assert "leaky" in dialog.warnings.text() and dialog.start_button.isEnabled()
    dialog.start_button.click()

    qtbot.waitUntil(lambda: ui.continue_dialog is not None, timeout=240_000)  # after epoch 1
    first = ui.continue_dialog
    assert first.table.rowCount() == 1 and first.table.item(0, 0).text() == "1"
    assert "Epoch 1 done" in first.findChild(QLabel, "continueHeadline").text()
    assert ui.controller.waiting_for_answer and ui.controller.running  # the engine waits; the window does not
    assert first.epochs.value() != 3  # the answer below is the user's, not the dialog's default
    first.epochs.setValue(3)
    first.continue_button.click()  # three more epochs (past the 2 planned)...
    qtbot.waitUntil(lambda: ui.continue_dialog is not None and ui.continue_dialog is not first, timeout=480_000)
    second = ui.continue_dialog
    assert second.table.rowCount() == 1 and second.table.item(0, 0).text() == "4"  # asked again after epoch 4
    second.halt_button.click()  # ...then halt
    wait_until_done(qtbot, window)

    run = ui.controller.run_dir
    assert run.parent == ui.catalog.root and run.name.endswith("-" + LITE0)
    card = RunDir(run).read_model_card()
    assert card["status"] == "completed" and card["epochs_run"] == 4  # epoch 1 + the 3 asked for
    assert [r["epoch"] for r in RunDir(run).read_metrics()] == [1, 2, 3, 4]
    # One point per epoch per curve, the batch curve has more; the curves were created once.
    for name in ("train_loss", "val_loss", "train_accuracy", "val_accuracy", "val_weighted_f1", "lr"):
        xs, _ = ui.dashboard.curves[name].getData()
        assert list(xs) == [1.0, 2.0, 3.0, 4.0], name
    assert len(ui.dashboard.curves["batch_loss"].getData()[0]) >= 4
    assert len(ui.dashboard.loss_plot.listDataItems()) == 3
    assert any("new best" in line for line in ui.dashboard.log_lines())
    assert any("leaky" in line for line in ui.dashboard.log_lines())  # the engine's warning reached the log
    # The Runs panel lists it with its metrics; the settings are remembered.
    summary = listed_runs(qtbot, ui)[0]
    assert summary.path == run and summary.status == "finished" and summary.epochs_run == 4
    assert ui.runs.model.index(0, 8).data() == f"{summary.best['val_weighted_f1']:.3f}"
    assert window.prefs.train_settings()["backbone"] == LITE0
    # The folder's first model becomes its active model, so Model > Predict works at once.
    assert ui.catalog.active() == run and window.predictions.active_model() == run / "model.pt"


def test_stop_mid_epoch_keeps_checkpoints_then_resume_continues_the_curves(qtbot, window, pbc_small):
    open_and_wait(qtbot, window, pbc_small)
    ui = window.training
    run = ui.start(fast(epochs=3))
    seen = []
    ui.controller.progress.connect(lambda e: seen.append((e.phase, e.epoch)))
    qtbot.waitUntil(lambda: ("train", 2) in seen, timeout=240_000)  # inside epoch 2
    ui.dashboard.stop_button.click()
    wait_until_done(qtbot, window)
    outcome = ui.controller.last_outcome
    assert outcome.reason == "cancelled" and outcome.epochs_run == 1
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and (run / "model.pt").is_file()
    assert not list(run.glob(".*.tmp")), "no half-written checkpoint"
    assert summarize_run(run).status == "stopped"
    assert listed_runs(qtbot, ui)[0].status == "stopped"

    assert ui.runs.select_run(run)
    assert ui.runs.resume_button.isEnabled()
    ui.runs.resume_button.click()
    assert ui.controller.running
    assert list(ui.dashboard.curves["val_loss"].getData()[0]) == [1.0]  # the saved epoch, at once
    wait_until_done(qtbot, window)
    assert ui.controller.last_outcome.reason == "completed"
    assert [r["epoch"] for r in RunDir(run).read_metrics()] == [1, 2, 3]
    assert list(ui.dashboard.curves["val_loss"].getData()[0]) == [1.0, 2.0, 3.0]
    assert summarize_run(run).status == "finished"


def test_missing_weights_dialog_offers_the_ways_out(qtbot, window, pbc_small, tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch"))
    open_and_wait(qtbot, window, pbc_small)
    ui = window.training
    failed_run = ui.start(fast(backbone="efficientnet_b0", epochs=1))
    qtbot.waitUntil(lambda: ui.failure_dialog is not None, timeout=120_000)
    dialog = ui.failure_dialog
    assert dialog.failed.kind == "weights" and "--no-pretrained" in dialog.informativeText()
    assert set(dialog.choices) == {"failedChooseWeights", "failedUseLite0", "failedFromScratch"}
    assert summarize_run(failed_run).status == "failed"
    wait_until_done(qtbot, window)
    dialog.choices["failedUseLite0"].click()  # the bundled weights: a new run that works
    assert ui.controller.running and ui.controller.config.backbone == LITE0
    wait_until_done(qtbot, window)
    assert ui.controller.last_outcome.reason == "completed"
    statuses = {r.path: r.status for r in listed_runs(qtbot, ui)}
    assert statuses[failed_run] == "failed" and statuses[ui.controller.run_dir] == "finished"


def test_out_of_memory_dialog_suggests_a_smaller_batch(qtbot, window, pbc_small, monkeypatch):
    import engine.learn.session as session

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        yield  # a generator, like the real one

    monkeypatch.setattr(session, "train_one_epoch", oom)
    open_and_wait(qtbot, window, pbc_small)
    ui = window.training
    ui.start(fast(batch_size=16, img_size=128))
    qtbot.waitUntil(lambda: ui.failure_dialog is not None, timeout=120_000)
    dialog = ui.failure_dialog
    assert dialog.failed.kind == "out-of-memory" and "--batch-size 8" in dialog.informativeText()
    assert dialog.choices["failedSmallerBatch"].text() == "Retry With Batch Size 8"
    assert dialog.choices["failedSmallerImage"].text() == "Retry At 96 px"
    wait_until_done(qtbot, window)
    dialog.done(0)


def test_a_run_made_elsewhere_is_added_and_made_active(qtbot, make_window, pbc_small, tmp_path):
    cli_run = tmp_path / "server-run"
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "-q", "train", str(pbc_small), "--out", str(cli_run),
                           "--backbone", LITE0, "--img-size", "64", "--epochs", "1", "--batch-size", "8",
                           "--ask-every", "0", "--device", "cpu", "--workers", "0", "--split", "image"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    window = make_window()
    open_and_wait(qtbot, window, pbc_small)
    ui = window.training
    assert listed_runs(qtbot, ui) == []
    assert ui.add_run(cli_run) == cli_run.resolve()
    qtbot.waitUntil(lambda: ui.runs.selected_path() == cli_run.resolve())  # selected once listed
    (row,) = ui.runs.model.runs()
    assert row.status == "finished" and row.split == "image" and row.leaky
    assert ui.runs.model.index(0, 4).data() == "image (leaky)"
    ui.runs.select_run(cli_run)
    with qtbot.waitSignal(ui.run_list.refreshed):  # the active model changed: the panel lists again
        ui.runs.active_button.click()
    assert ui.catalog.active() == cli_run.resolve() and ui.runs.model.index(0, 0).data() == "★"
    window.close()
    # Another window on the same folder sees the same runs and the same active model.
    again = make_window()
    open_and_wait(qtbot, again, pbc_small)
    assert [r.path for r in listed_runs(qtbot, again.training)] == [cli_run.resolve()]
    assert again.training.catalog.active() == cli_run.resolve()


def test_closing_while_training_asks_then_stops_and_keeps_checkpoints(qtbot, window, pbc_small, monkeypatch):
    open_and_wait(qtbot, window, pbc_small)
    ui = window.training
    run = ui.start(fast(epochs=50, ask_every=0))
    epochs = []
    ui.controller.epochEnded.connect(lambda e: epochs.append(e.epoch))
    qtbot.waitUntil(lambda: bool(epochs), timeout=240_000)
    asked = []

    def answer(box):
        asked.append(box.text())
        return [b for b in box.buttons() if b.text().startswith("Stop")][0]

    monkeypatch.setattr(QMessageBox, "exec", lambda box: box.__dict__.setdefault("_clicked", answer(box)))
    monkeypatch.setattr(QMessageBox, "clickedButton", lambda box: box.__dict__.get("_clicked"))
    window.close()
    assert asked and "keep its checkpoints" in asked[0]
    assert not window.isVisible() and not ui.controller.running
    card = RunDir(run).read_model_card()
    assert card["status"] == "cancelled" and card["epochs_run"] >= 1
    assert not list(run.glob(".*.tmp"))


def test_keep_training_cancels_the_close(qtbot, window, pbc_small, monkeypatch):
    open_and_wait(qtbot, window, pbc_small)
    ui = window.training
    ui.start(fast(epochs=50))
    monkeypatch.setattr(QMessageBox, "exec", lambda box: None)
    monkeypatch.setattr(QMessageBox, "clickedButton", lambda box: box.buttons()[1])  # Keep Training
    window.close()
    assert window.isVisible() and ui.controller.running
    ui.stop()
    wait_until_done(qtbot, window)


def test_the_recipe_brings_its_batch_size_and_learning_rate(qtbot, window, pbc_small):
    open_and_wait(qtbot, window, pbc_small)
    dialog = window.training.open_train_dialog()
    assert dialog.recipe.currentData() == "allblast" and dialog.batch_size.value() == 16
    assert dialog.config().ema_decay > 0
    dialog.recipe.setCurrentIndex(dialog.recipe.findData("paper"))
    config = dialog.config()
    assert dialog.batch_size.value() == 32 and config.batch_size == 32 and config.lr == 1e-3
    assert config.recipe == "paper" and config.ema_decay == 0 and not config.tta_eval
    dialog.batch_size.setValue(8)  # still the user's to change
    assert dialog.config().batch_size == 8
    dialog.reject()


def test_the_dialog_names_the_run_folder_after_the_backbone_chosen(qtbot, window, pbc_small):
    """Regression: the dialog showed a folder named (and timed) when it opened, after the
    remembered backbone: `...-efficientnet_b3` while Lite0 was chosen; training made another."""
    open_and_wait(qtbot, window, pbc_small)
    dialog = window.training.open_train_dialog()
    dialog.backbone.setCurrentIndex(dialog.backbone.findData(LITE0))
    dialog.refresh()
    root = window.training.catalog.root
    assert dialog.run_label.text() == f"Run folder: a new {root / ('<date>-<time>-' + LITE0)}"
    dialog.reject()


def test_a_script_trains_with_the_recipe_it_names_else_allblast():
    """Regression: app.train() built a bare TrainConfig, so scripts always trained the paper's
    recipe (and could not name one), while the dialog and the CLI default to allblast."""
    from allblast_gui.scripting import ScriptError, train_config

    default = train_config({"backbone": LITE0, "epochs": 1})
    assert default.recipe == "allblast" and default.batch_size == 16 and default.ema_decay > 0
    paper = train_config({"recipe": "paper", "batch_size": 8})
    assert paper.recipe == "paper" and paper.batch_size == 8 and paper.ema_decay == 0
    with pytest.raises(ScriptError, match="unknown recipe"):
        train_config({"recipe": "nope"})
    with pytest.raises(ScriptError, match="batch_size must be at least 1"):
        train_config({"batch_size": 0})


def test_the_dialog_blocks_a_folder_with_one_class(qtbot, window, pbc_dir, tmp_path):
    one = tmp_path / "one-class"
    (one / "lymphocyte").mkdir(parents=True)
    (one / "unlabeled").mkdir()
    for image in sorted((pbc_dir / "lymphocyte").glob("*.jpg"))[:4]:
        (one / "lymphocyte" / image.name).symlink_to(image)
    for image in sorted((pbc_dir / "neutrophil").glob("*.jpg"))[:3]:
        (one / "unlabeled" / image.name).symlink_to(image)
    open_and_wait(qtbot, window, one)
    store = window.datasets.current.store
    paths = [p for p in store.states() if p.startswith("unlabeled/")]
    store.set_labels(paths[:1], "unsure", annotator="t")
    store.set_labels(paths[1:], None, annotator="t")
    dialog = window.training.open_train_dialog()
    dialog.refresh()
    assert not dialog.start_button.isEnabled()
    assert "at least 2 classes" in dialog.problems.text()
    assert "1 unsure and 2 unlabeled" in dialog.left_out.text()
    dialog.reject()


def test_a_script_trains_takes_a_screenshot_and_quits(pbc_dir, tmp_path):
    data = link_subset(pbc_dir, tmp_path / "pbc-small", 12)
    shot, out = tmp_path / "window.png", tmp_path / "result.json"
    script = tmp_path / "train.py"
    script.write_text(
        "import json\n"
        f"run = app.train(backbone={LITE0!r}, img_size=64, epochs=1, batch_size=8, ask_every=0, device='cpu',"
        " split='image')\n"
        f"app.screenshot({str(shot)!r})\n"
        f"json.dump({{'run': str(run), 'runs': len(app.window.training.catalog.runs())}}, open({str(out)!r}, 'w'))\n"
        "app.quit()\n")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_STATE_HOME": str(tmp_path / "state"),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "allblast_gui.app", str(data), "--script", str(script),
                           "--db-dir", str(tmp_path / "db")], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert Path(result["run"]).is_dir() and result["runs"] == 1
    assert (Path(result["run"]) / "model.pt").is_file()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    log = (tmp_path / "state" / "allblast" / "log" / "allblast.log").read_text()
    assert "script" in log and "finished" in log

    broken = tmp_path / "broken.py"
    broken.write_text("app.open('/no/such/folder/at/all')\n")
    proc = subprocess.run([sys.executable, "-m", "allblast_gui.app", "--script", str(broken), "--exit-after"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "ScriptError" in (tmp_path / "state" / "allblast" / "log" / "allblast.log").read_text()


def test_the_window_starts_without_torch():
    """torch and timm (seconds to import) load on a pool thread after the window shows, or when
    training starts, never while the window is being built."""
    code = ("import sys, allblast_gui.main_window, allblast_gui.app\n"
            "heavy = [m for m in ('torch', 'timm', 'torchvision') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_closing_during_the_warm_up_stops_it_between_imports(qtbot, make_window, monkeypatch):
    """Regression: quitting early left the warm-up importing torch while Python shut down
    ("can't register atexit after shutdown" and a traceback on stderr)."""
    import threading

    from allblast_gui.training import warm_up as training_ui

    started, closing, ran = threading.Event(), threading.Event(), []

    def slow_import():
        started.set()
        # The import in flight finishes only once closing has begun: released by the window's
        # own stop request (set first thing in shutdown), never by a timer that could fire before.
        if window.training._warm_stop.wait(30):
            closing.set()
        ran.append("first")

    monkeypatch.setattr(training_ui, "WARM_UP_STEPS", (slow_import, lambda: ran.append("second")))
    window = make_window()
    window.training.warm_up()
    assert started.wait(10)
    window.close()
    assert closing.is_set()  # the close released it, the warm-up did not time out
    assert ran == ["first"]  # waited for, and nothing started after it
    assert window.training.controller._runner.pool.activeThreadCount() == 0


def test_the_warm_up_imports_what_building_a_network_needs():
    """Regression: the warm-up imported engine.learn.model, which imports timm only when a network
    is built; pressing Train then imported ~1,500 modules on the training thread, and the event
    loop stalled up to 200 ms at a time. After the warm-up, building a network imports nothing big."""
    code = textwrap.dedent("""
        import sys
        from allblast_gui.training import warm_up as training_ui
        for step in training_ui.WARM_UP_STEPS[1:]:  # every import (the fork server is not one)
            step()
        before = set(sys.modules)
        from engine.learn.model import build_model
        build_model("tf_efficientnet_lite0", ("a", "b"), pretrained=False, img_size=32)
        new = sorted(set(sys.modules) - before)
        assert len(new) < 20, (len(new), new[:25])
        """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=240)


def test_the_warm_up_loads_the_prediction_backend_of_the_settings():
    """Regression: OpenVINO was first imported on the prediction thread when Predict was pressed,
    and its runtime held the GIL for 100-150 ms: the window froze as predictions began."""
    code = textwrap.dedent("""
        import sys
        from allblast_gui.training.warm_up import _load_prediction_backend
        _load_prediction_backend("torch")
        assert "openvino" not in sys.modules
        _load_prediction_backend("auto")  # a CPU, OpenVINO installed: auto predicts with it
        assert sys.modules.get("openvino") is not None
        """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=240,
                   env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
