"""A fast backend that imports but cannot start: `auto` predicts with torch and says why in one
`info:` line; asked for by name, it fails with one line (no traceback, no "internal error").

OpenVINO never loads in the pytest process (tests/conftest.py): these tests put a fake `openvino`
(and `onnxruntime`) module in its place that fails as the real one did in a bundle without its CPU
plugin, or as a broken install or an unsupported CPU would."""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from engine.cli import main
from engine.learn.backends import loader
from engine.learn.backends.base import BackendUnavailable, reason
from engine.learn.model import build_model, save_model
from fake_backends import NO_CPU_PLUGIN, fake_openvino as _fake_openvino

TINY = "test_efficientnet"  # timm's tiny test net: no weights to download


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model, spec, _ = build_model(TINY, ["all", "hem"], pretrained=False, img_size=32)
    path = tmp_path_factory.mktemp("run") / "model.pt"
    save_model(path, model, spec)
    return path


@pytest.fixture()
def cells(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("all", "hem"):
        (tmp_path / "cells" / cls).mkdir(parents=True)
        for i in range(2):
            cv2.imwrite(str(tmp_path / "cells" / cls / f"UID_{i + 1}_1_1_{cls}.png"),
                        rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    return tmp_path / "cells"


@pytest.fixture()
def no_export(monkeypatch, tmp_path):
    """The ONNX export is not what these tests are about (nor is onnx needed for them)."""
    onnx = tmp_path / "fake.onnx"
    onnx.write_bytes(b"")
    monkeypatch.setattr(loader, "onnx_model", lambda *_a, **_k: onnx)


def _predict(model, folder, out, *args) -> int:
    return main(["-q", "predict", str(model), str(folder), "--out", str(out), "--device", "cpu", *args])


@pytest.mark.parametrize("fake, why", [
    (dict(cpu=False), 'Device with "CPU" name is not registered in the OpenVINO Runtime'),
    (dict(compiles=False), "no kernel for operation Foo"),
    (dict(runs=False), "unsupported CPU instruction set"),
], ids=["no-cpu-plugin", "cannot-compile", "cannot-run"])
def test_auto_falls_back_to_torch_with_one_info_line_naming_the_reason(fake, why, tiny_model, cells, tmp_path,
                                                                       monkeypatch, capsys, no_export):
    monkeypatch.setitem(sys.modules, "openvino", _fake_openvino(**fake))
    out = tmp_path / "p.csv"
    assert _predict(tiny_model, cells, out) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    info = [line for line in err.splitlines() if line.startswith("info:")]
    assert len(info) == 1 and why in info[0] and "torch predicts" in info[0], err
    assert "Exception from" not in info[0]  # the reason, not OpenVINO's source location
    assert "internal error" not in err and "Traceback" not in err
    assert json.loads(Path(f"{out}.model.json").read_text())["backend"] == "torch"
    assert len(out.read_text().splitlines()) == 1 + 4  # every cell predicted


def test_openvino_asked_for_by_name_fails_with_one_line(tiny_model, cells, tmp_path, monkeypatch, capsys, no_export):
    monkeypatch.setitem(sys.modules, "openvino", _fake_openvino(cpu=False))
    out = tmp_path / "p.csv"
    assert _predict(tiny_model, cells, out, "--backend", "openvino") == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert 'Device with "CPU" name is not registered' in lines[0] and "--backend torch" in lines[0]
    assert "internal error" not in lines[0] and not out.exists()


def test_a_broken_openvino_install_falls_back_too(tiny_model, cells, tmp_path, monkeypatch, capsys, no_export):
    """An `openvino` whose import itself fails with something other than "not installed" (a native
    library missing from the install)."""
    fake = tmp_path / "site" / "openvino"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise OSError('libopenvino.so.2026.4.1: cannot open shared object file')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "openvino")  # conftest's None: the import now finds the fake
    assert _predict(tiny_model, cells, tmp_path / "p.csv") == 0
    info = [line for line in capsys.readouterr().err.splitlines() if line.startswith("info:")]
    assert len(info) == 1 and "cannot open shared object file" in info[0] and "torch predicts" in info[0]
    assert sys.modules.get("openvino") is None  # the fake never stayed loaded


def test_onnxruntime_that_cannot_load_the_model_is_one_line(tiny_model, cells, tmp_path, monkeypatch, capsys,
                                                            no_export):
    class Fail(Exception):  # onnxruntime's own exception types derive from Exception
        pass

    def session(*_a, **_k):
        raise Fail("[ONNXRuntimeError] : 1 : FAIL : this CPU lacks an instruction the kernels need")

    fake = types.SimpleNamespace(SessionOptions=lambda: types.SimpleNamespace(), InferenceSession=session,
                                 __version__="fake")
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    assert _predict(tiny_model, cells, tmp_path / "p.csv", "--backend", "onnxruntime") == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "ONNX Runtime cannot run on this computer" in lines[0], lines
    assert "lacks an instruction" in lines[0] and "internal error" not in lines[0]


def test_a_precision_the_cpu_lacks_is_still_an_error_under_auto(tiny_model, monkeypatch, no_export):
    """Not a broken backend but a choice the user can change: said, not silently run otherwise."""
    monkeypatch.setitem(sys.modules, "openvino", _fake_openvino())
    with pytest.raises(ValueError, match="cannot run bf16") as caught:
        loader.open_predictor(tiny_model, backend="auto", device="cpu", precision="bf16")
    assert not isinstance(caught.value, BackendUnavailable)


def test_a_working_fast_backend_is_used_and_says_nothing(tiny_model, monkeypatch, no_export):
    monkeypatch.setitem(sys.modules, "openvino", _fake_openvino())
    predictor = loader.open_predictor(tiny_model, backend="auto", device="cpu")
    assert predictor.backend.name == "openvino" and predictor.note is None


def test_reason_is_the_line_after_openvino_s_source_location():
    assert reason(RuntimeError(NO_CPU_PLUGIN)) == 'Device with "CPU" name is not registered in the OpenVINO Runtime'
    assert reason(RuntimeError("")) == "RuntimeError"
    assert len(reason(RuntimeError("x" * 1000))) == 200


def test_the_app_exports_to_onnx_in_a_child_process(tiny_model, tmp_path):
    """Regression (issue 28): torch's ONNX exporter held the GIL for ~0.5 s on the prediction
    thread and froze the window. With the app's worker start method set, the export runs in a
    child: this process never imports torch.onnx, and the file is the same export."""
    code = f"""
import sys
from pathlib import Path
from engine.utils.jobs import set_worker_start_method
from engine.learn.backends.loader import onnx_model
from engine.learn.backends.onnx_export import has_embedding_output
set_worker_start_method("forkserver")
path = onnx_model({str(tiny_model)!r}, "abc", Path({str(tmp_path)!r}))
assert path.is_file() and has_embedding_output(path), path
assert "torch.onnx" not in sys.modules, "exported in this process"
print("ok")
"""
    import subprocess

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_a_backend_error_comes_back_whole_from_the_child():
    import pickle

    exc = pickle.loads(pickle.dumps(BackendUnavailable("the message", "the fallback")))
    assert str(exc) == "the message" and exc.fallback == "the fallback"
