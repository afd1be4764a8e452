"""Hardening round 2 (issue 22), the window's side: one image size range in the Train dialog and
scripts, an unattended script never waits on a dialog, and a killed process (a run's trainer, a
folder's holder) is told from a live one by the one process check."""
from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from PySide6.QtWidgets import QMessageBox

from .conftest import open_and_wait

REPO = Path(__file__).resolve().parents[2]


def make_images(root: Path, per_class: int = 3) -> Path:
    for cls, colour in (("all", (200, 40, 40)), ("hem", (40, 40, 200))):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = Image.new("RGB", (16, 16), colour)
            img.putpixel((i, i), (i, 255 - i, 0))
            img.save(root / cls / f"UID_{i + 1}_1_1_{cls}.png")
    return root


def _zombie() -> subprocess.Popen:
    """A process killed and not yet reaped (its parent, this test, has not waited for it)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    os.kill(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:
        text = Path(f"/proc/{proc.pid}/stat").read_text()
        if text[text.rfind(")") + 2:].split()[0] == "Z":
            return proc
        assert time.monotonic() < deadline, "the killed process did not become a zombie"
        time.sleep(0.05)


# ---- 9. one image size range ---------------------------------------------------------------------------
def test_the_train_dialog_offers_exactly_the_image_sizes_a_model_may_have(qtbot, window, cnmc_dir, indexed_db,
                                                                         tmp_path):
    indexed_db(cnmc_dir, tmp_path / "db")
    open_and_wait(qtbot, window, cnmc_dir)
    dialog = window.training.open_train_dialog()
    try:
        assert (dialog.img_size.minimum(), dialog.img_size.maximum()) == (16, 2048)  # what a model may have
    finally:
        dialog.reject()


@pytest.mark.parametrize("size", [8, 1, 0, 4096])
def test_a_script_asking_for_an_image_size_a_model_may_not_have_gets_a_script_error(size):
    from allblast_gui.scripting import ScriptError, train_config

    with pytest.raises(ScriptError, match="allowed 16-2048"):
        train_config({"img_size": size})
    assert train_config({"img_size": 16}).img_size == 16


# ---- 15. an unattended script never waits on a dialog ------------------------------------------------------
UNATTENDED = """
import sys
import allblast_gui.opening.folders as dataset
dataset.LARGE_FOLDER = 4  # as a folder of more than 20,000 files
from allblast_gui.app import main
sys.exit(main(sys.argv[1:]))
"""


def test_an_unattended_script_on_a_large_folder_runs_and_exits(tmp_path):
    root = make_images(tmp_path / "data")
    done = tmp_path / "done.json"
    script = tmp_path / "s.py"
    script.write_text(f"import json\njson.dump(len(app.window.datasets.current.rows), open({str(done)!r}, 'w'))\n")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(REPO),
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
           "XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    try:
        proc = subprocess.run([sys.executable, "-c", UNATTENDED, str(root), "--script", str(script), "--exit-after",
                               "--settings", str(tmp_path / "settings.ini"), "--db-dir", str(tmp_path / "db")],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail("allblast --script --exit-after waited on a dialog (the large-folder question)")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(done.read_text()) == 6
    said = [line for line in proc.stderr.splitlines() if "more than 4 files" in line]
    assert len(said) == 1 and "without asking" in said[0], proc.stderr


def test_an_unattended_window_opens_a_large_folder_without_asking(qtbot, make_window, tmp_path, monkeypatch):
    from allblast_gui.opening import folders as dataset

    root = make_images(tmp_path / "data")
    monkeypatch.setattr(dataset, "LARGE_FOLDER", 4)
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: pytest.fail("a dialog in unattended mode"))
    window = make_window()
    window.script_app.unattended = True
    assert len(open_and_wait(qtbot, window, root).rows) == 6


def test_an_unattended_training_without_on_ask_never_asks_to_continue(qtbot, window, cnmc_dir, indexed_db,
                                                                     tmp_path, monkeypatch):
    """--exit-after and no on_ask: nobody would answer the continue dialog, so --epochs is the end
    (as the CLI off a terminal); with on_ask, the script answers."""
    indexed_db(cnmc_dir, tmp_path / "db")
    open_and_wait(qtbot, window, cnmc_dir)
    started = []
    monkeypatch.setattr(window.training, "start", lambda config: started.append(config) or tmp_path / "run")
    window.script_app.unattended = True
    window.script_app.train(no_pretrained=True, epochs=4, ask_every=2, device="cpu", split="image")
    window.script_app.train(no_pretrained=True, epochs=4, ask_every=2, device="cpu", split="image",
                            on_ask=lambda summary: None)
    assert [c.ask_every for c in started] == [0, 2]


# ---- 16. one process check: a zombie is dead ----------------------------------------------------------------
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="makes a zombie and reads /proc")
def test_a_lock_held_by_a_killed_window_is_stale(qtbot, make_window, tmp_path):
    from engine.labels.store import LabelStore

    root = make_images(tmp_path / "data")
    LabelStore.open(root).close()
    zombie = _zombie()
    try:
        lock = root / ".allblast" / "lock.json"
        lock.write_text(json.dumps([{"user": "Dr. A", "host": platform.node(), "pid": zombie.pid,
                                     "since": "2026-01-01T00:00:00+00:00"}]))
        window = make_window(default_store=True)
        open_and_wait(qtbot, window, root)
        assert window.datasets.others == [] and window.findChild(QMessageBox, "alsoOpenBox") is None
        window.close()
    finally:
        zombie.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="makes a zombie and reads /proc")
def test_the_runs_panel_shows_a_killed_run_as_interrupted(qtbot, window, tmp_path):
    from allblast_gui.training.runs_panel import COLUMNS
    from engine.learn.run_folder import RunDir
    from engine.learn.run_list import summarize_run

    zombie = _zombie()
    try:
        run = RunDir(tmp_path / "run")
        run.create()
        run.write_config({"backbone": "efficientnet_b0", "split": "patient"})
        run.write_model_card({"status": "running", "pid": zombie.pid, "host": platform.node()})
        panel = window.training.runs
        panel.set_runs([summarize_run(run.path)], None)
        status = panel.model.index(0, COLUMNS.index("Status")).data()
        assert status == "stopped (interrupted)", status
    finally:
        zombie.wait()
