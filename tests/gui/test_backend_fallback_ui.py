"""The Predict dialog with `auto` when OpenVINO imports but cannot start (issue 27's bundle had no
CPU plugin): the window predicts with torch, says why in the status bar, keeps the reason in the
final line, and a script can read it (`predictions.controller.last_notice`)."""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from engine.learn.model import build_model, save_model
from fake_backends import fake_openvino

from .conftest import open_and_wait


def _folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("all", "hem"):
        (root / cls).mkdir(parents=True)
        for i in range(2):
            cv2.imwrite(str(root / cls / f"UID_{i + 1}_1_1_{cls}.png"), rng.integers(0, 255, (40, 40, 3), np.uint8))
    return root


def test_the_predict_dialog_with_auto_falls_back_to_torch_and_says_why(qtbot, window, tmp_path, monkeypatch):
    torch.manual_seed(0)
    model, spec, _ = build_model("test_efficientnet", ["all", "hem"], pretrained=False, img_size=32)
    save_model(tmp_path / "run" / "model.pt", model, spec)
    open_and_wait(qtbot, window, _folder(tmp_path / "cells"))
    monkeypatch.setitem(sys.modules, "openvino", fake_openvino(cpu=False))
    shown = []
    window.predictions.message.connect(shown.append)

    dialog = window.predictions.open_predict_dialog()
    dialog.file.setText(str(tmp_path / "run" / "model.pt"))
    dialog.backend.setCurrentIndex(dialog.backend.findData("auto"))
    dialog.device.setCurrentIndex(dialog.device.findData("cpu"))
    controller = window.predictions.controller
    with qtbot.waitSignal(controller.runningChanged, timeout=120_000, check_params_cb=lambda running: not running):
        dialog.accept()
    assert controller.last_error is None  # issue 27: "Device with "CPU" name is not registered ..."
    assert len(controller.last_result) == 4  # every cell, predicted by torch
    why = 'Device with "CPU" name is not registered in the OpenVINO Runtime'
    assert why in controller.last_notice and "torch predicts" in controller.last_notice
    notices = [m for m in shown if why in m]
    assert len(notices) == 2 and notices[-1].startswith("Predicted 4 cells")  # at once, then with the result
    assert why in window.statusBar().currentMessage()
