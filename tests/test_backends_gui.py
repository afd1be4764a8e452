"""The inference backend in the app: the Predict dialog offers it (and the precision), the
settings remember it, and the worker that predicts for the window uses it, saying so in one
message when OpenVINO is missing."""
from __future__ import annotations

import sys

import pytest
import torch
from PySide6.QtCore import QSettings

from engine.workspace.predict_store import run_prediction
from allblast_gui.predictions import predict_dialog
from allblast_gui.predictions.predict_dialog import PredictDialog
from allblast_gui.settings import Prefs
from engine.labels.store import LabelStore
from engine.learn.events import Message, PredictedBatch
from engine.learn.model import build_model, save_model
from engine.learn.weights import LITE0
from engine.utils.jobs import CancelToken
from engine.utils.files import sha256_file


def test_the_backend_and_precision_are_remembered_and_unknown_values_fall_back(tmp_path):
    prefs = Prefs(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    assert prefs.inference() == ("auto", "f32")
    prefs.set_inference("onnxruntime", "f32")
    assert Prefs(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)).inference() == ("onnxruntime", "f32")
    prefs.set_inference("tensorrt", "int4")  # a value from another version of the app
    assert prefs.inference() == ("auto", "f32")


def test_the_predict_dialog_offers_the_backends_and_greys_out_a_missing_one(qtbot, monkeypatch):
    dialog = PredictDialog(None, "", backend="torch", precision="bf16")
    qtbot.addWidget(dialog)
    assert dialog.options()["backend"] == "torch" and dialog.options()["precision"] == "bf16"
    assert [dialog.backend.itemData(i) for i in range(dialog.backend.count())] == [
        "auto", "torch", "openvino", "onnxruntime"]
    monkeypatch.setattr(predict_dialog, "backend_installed", lambda b: b != "openvino")
    missing = PredictDialog(None, "", backend="openvino")
    qtbot.addWidget(missing)
    index = missing.backend.findData("openvino")
    assert not missing.backend.model().item(index).isEnabled() and "not installed" in missing.backend.itemText(index)
    assert missing.options()["backend"] == "auto"  # the remembered choice is gone: auto, not a dead entry


@pytest.mark.shared_data
def test_the_window_s_worker_falls_back_to_torch_with_one_message(tmp_path, pbc_dir, monkeypatch):
    torch.manual_seed(0)
    model, spec, _ = build_model(LITE0, ["basophil", "eosinophil"], img_size=64)
    save_model(tmp_path / "run" / "model.pt", model, spec)
    cells = [f"{c}/{p.name}" for c in ("basophil", "eosinophil") for p in sorted((pbc_dir / c).iterdir())[:3]]
    monkeypatch.setitem(sys.modules, "openvino", None)
    with LabelStore.open(pbc_dir, db_path=tmp_path / "db.sqlite") as store:
        gen = run_prediction(store, pbc_dir, cells, tmp_path / "run" / "model.pt", tta=False, batch_size=4,
                             device="cpu", cancel=CancelToken(), backend="auto", precision="f32")
        events = []
        while True:
            try:
                events.append(next(gen))
            except StopIteration as stop:
                result = stop.value
                break
    record = events[0]
    assert record.sha256 == sha256_file(tmp_path / "run" / "model.pt")
    messages = [e.text for e in events if isinstance(e, Message)]
    assert len(messages) == 1 and "OpenVINO is not installed" in messages[0]
    assert sum(len(e.paths) for e in events if isinstance(e, PredictedBatch)) == 6 and len(result) == 6
