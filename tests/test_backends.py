"""Inference backends: OpenVINO and ONNX Runtime agree with torch on real cells, the compiled model
is cached beside the run and invalidated with the model, `auto` falls back to torch with one line,
the fast paths never import timm, and `export` writes a usable ONNX file."""
from __future__ import annotations

import json
import os
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.cli import main
from engine.learn.backends import cache as cache_mod
from engine.learn.backends.loader import open_predictor
from engine.learn.inference import predict
from engine.learn.model import temperature_of

import backend_jobs as jobs  # tests/backend_jobs.py: the OpenVINO work, each job in a spawned child
from backend_jobs import PBC_CLASSES, in_child, save_cell_model as _save_cell_model
from conftest import REQUIRE_SHARED

REPO = Path(__file__).resolve().parents[1]
# The pytest process never imports OpenVINO (tests/conftest.py): every test that needs it runs that
# work in a spawned child (tests/backend_jobs.py) and asserts here on what the child returns.
for _package in ("openvino", "onnxruntime", "onnx"):  # looked up, not imported, in this process
    try:
        importlib.metadata.distribution(_package)
    except importlib.metadata.PackageNotFoundError:
        if REQUIRE_SHARED:  # CI installs the test extra, which has them: missing is a broken install
            pytest.fail(f"{_package} is not installed, but the test extra installs it", pytrace=False)
        pytest.skip(f"{_package} is not installed (pip install -e \".[fast]\")", allow_module_level=True)


@pytest.fixture(scope="module")
def run_model(tmp_path_factory) -> Path:
    return _save_cell_model(tmp_path_factory.mktemp("runs") / "run" / "model.pt", seed=0)


def _pbc_sample(pbc_dir: Path, per_class: int) -> list[str]:
    return [f"{c}/{name}" for c in PBC_CLASSES for name in sorted(os.listdir(pbc_dir / c))[:per_class]]


@pytest.fixture
def small_folder(tmp_path, pbc_dir) -> Path:
    """8 real PBC cells (2 classes) linked into a folder of their own, read in place."""
    root = tmp_path / "cells"
    for rel in _pbc_sample(pbc_dir, 4)[:4] + _pbc_sample(pbc_dir, 4)[-4:]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(pbc_dir / rel)
    return root


def _probs(p, root: Path, cells: list[str], **kwargs):
    return predict(p.backend, p.spec, root, cells, batch_size=32, temperature=temperature_of(p.extras), **kwargs)


def _predict_with(backend: str, model_path: Path, root: Path, cells: list[str], **kwargs):
    return _probs(open_predictor(model_path, backend=backend, device="cpu"), root, cells, **kwargs)


def assert_agrees(got: dict, reference, name: str) -> None:
    """A backend's predictions are torch's: same rows, the same top class on >= 99.5 % of cells,
    every probability within 0.01."""
    assert got["paths"] == reference.paths, name
    agree = np.mean(np.array(got["predicted"]) == np.array(reference.predicted))
    assert agree >= 0.995, f"{name}: top class agrees on {agree:.1%}"
    assert np.abs(got["probs"] - reference.probs).max() <= 0.01, name


@pytest.mark.slow  # 200 cells through three backends: about 20 s idle, a minute on a loaded 2-core machine
@pytest.mark.shared_data
def test_openvino_and_onnxruntime_agree_with_torch_on_real_pbc_cells(run_model, pbc_dir):
    cells = _pbc_sample(pbc_dir, 25)  # 200 cells, every class
    reference = _predict_with("torch", run_model, pbc_dir, cells)
    assert len(reference) == 200 and reference.probs.max(1).mean() > 0.5  # not a uniform non-answer
    for backend in ("openvino", "onnxruntime"):
        assert_agrees(in_child(jobs.predict_with, backend, str(run_model), str(pbc_dir), cells), reference, backend)
    # TTA runs through the chosen backend: its four views agree with torch's too.
    tta_ref = _predict_with("torch", run_model, pbc_dir, cells[::10], tta=True)
    tta_ov = in_child(jobs.predict_with, "openvino", str(run_model), str(pbc_dir), cells[::10], tta=True)
    assert np.abs(tta_ov["probs"] - tta_ref.probs).max() <= 0.01
    assert np.abs(tta_ov["probs"] - reference.probs[::10]).max() > 1e-3  # the views did change the numbers


@pytest.mark.shared_data
def test_the_parity_check_fails_a_backend_that_shifts_torchs_logits(run_model, pbc_dir):
    """The test double of a wrong backend (torch's logits, one class raised by 2) goes through the
    same child and the same check, and the check fails it."""
    cells = _pbc_sample(pbc_dir, 5)
    reference = _predict_with("torch", run_model, pbc_dir, cells)
    wrong = in_child(jobs.predict_with, "shifted-torch", str(run_model), str(pbc_dir), cells)
    with pytest.raises(AssertionError):
        assert_agrees(wrong, reference, "shifted-torch")


def test_the_compiled_model_is_cached_beside_the_run_and_replaced_when_the_model_changes(tmp_path, pbc_dir):
    model_path = _save_cell_model(tmp_path / "run" / "model.pt", seed=1, img_size=64)
    cells = _pbc_sample(pbc_dir, 1)
    got = in_child(jobs.cache_lifecycle, str(model_path), str(pbc_dir), cells)
    entry = Path(got["entry"])
    assert entry.parent == model_path.parent / cache_mod.CACHE_FOLDER and got["sha_first"][:16] in entry.name
    assert got["entry_has_onnx"] and got["compiled_files"] > 0
    assert not got["first_from_cache"] and got["exports_first"] == 1  # the first use exports and compiles
    # the second use reads both from the cache
    assert got["second_from_cache"] and got["second_cache_dir_same"] and got["exports_second"] == 0
    # retrained: a new version, compiled again, the old version's files gone
    assert got["sha_third"] != got["sha_first"] and not got["third_from_cache"] and not got["old_entry_exists"]
    reference = _predict_with("torch", model_path, pbc_dir, cells)
    assert np.abs(got["after"] - got["before"]).max() > 0.05  # the new weights, not the cached old ones
    np.testing.assert_allclose(got["after"], reference.probs, atol=1e-3)


def _torch_args(model_path: Path):
    p = open_predictor(model_path, backend="torch", device="cpu")
    return p.backend, p.spec


def test_a_model_inside_the_data_folder_gets_its_cache_in_the_user_cache(tmp_path):
    data = tmp_path / "slides"
    (data / "models").mkdir(parents=True)
    entry = cache_mod.cache_entry(data / "models" / "model.pt", "ab" * 32, data_root=data)
    assert cache_mod.user_cache_root() in entry.parents and not (data / "models" / cache_mod.CACHE_FOLDER).exists()
    beside = cache_mod.cache_entry(tmp_path / "run" / "model.pt", "ab" * 32, data_root=data)
    assert beside.parent == tmp_path / "run" / cache_mod.CACHE_FOLDER


def test_predict_without_openvino_falls_back_to_torch_with_one_info_line(run_model, small_folder, tmp_path,
                                                                        monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError
    out = tmp_path / "p.csv"
    assert main(["-q", "predict", str(run_model), str(small_folder), "--out", str(out), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    info = [line for line in err.splitlines() if line.startswith("info:")]
    assert len(info) == 1 and "OpenVINO is not installed" in info[0] and "allblast[fast]" in info[0], err
    sidecar = json.loads(Path(f"{out}.model.json").read_text())
    assert (sidecar["backend"], sidecar["precision"]) == ("torch", "f32")
    # Asked for by name, a missing OpenVINO is an error that says what to do, not a silent fallback.
    assert main(["-q", "predict", str(run_model), str(small_folder), "--out", str(tmp_path / "q.csv"),
                 "--backend", "openvino"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "OpenVINO is not installed" in err[0] and "Traceback" not in err[0]


def test_precisions_a_backend_cannot_run_are_one_clear_line(run_model, small_folder, tmp_path, capsys):
    args = ["-q", "predict", str(run_model), str(small_folder), "--out", str(tmp_path / "p.csv")]
    assert main([*args, "--backend", "onnxruntime", "--precision", "bf16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "f32 only" in err[0]
    got = in_child(jobs.cli, [*args, "--backend", "openvino", "--precision", "bf16"], with_openvino_caps=True)
    if "BF16" in got["caps"]:  # this CPU runs bf16: the output and the sidecar say so
        assert got["rc"] == 0 and "openvino bf16 on cpu" in got["out"]
        assert json.loads((tmp_path / "p.csv.model.json").read_text())["precision"] == "bf16"
    else:  # OpenVINO would silently run f32: refused instead
        lines = got["err"].strip().splitlines()
        assert got["rc"] == 2 and len(lines) == 1 and "cannot run bf16" in lines[0]
        assert not (tmp_path / "p.csv").exists()


def test_the_fast_backends_never_import_timm_or_torchvision(run_model, small_folder, tmp_path):
    """Nor OpenVINO's usage telemetry: nothing is sent from a clinical workstation."""
    in_child(jobs.prepare_export, str(run_model))  # the export is cached: a later predict only reads it
    script = (
        "import json, sys\n"
        "from engine.cli import main\n"
        f"rcs = [main(['-q', 'predict', {str(run_model)!r}, {str(small_folder)!r}, '--out', "
        f"{str(tmp_path / 'x.csv')!r}, '--force', '--backend', b]) for b in ('openvino', 'onnxruntime')]\n"
        "print(json.dumps({'rc': rcs, 'loaded': sorted(m for m in ('timm', 'torchvision', 'openvino_telemetry')\n"
        "                                              if m in sys.modules)}))\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"rc": [0, 0], "loaded": []}, proc.stderr


def test_export_writes_an_onnx_file_that_reproduces_the_model(run_model, tmp_path, capsys):
    out = tmp_path / "cells.onnx"
    assert main(["export", str(run_model), "--onnx", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    spec = json.loads(meta["allblast.spec"])
    assert spec["classes"] == PBC_CLASSES and float(meta["allblast.temperature"]) == pytest.approx(1.3)
    x = torch.randn(3, 3, spec["img_size"], spec["img_size"])
    import onnxruntime as ort

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"image": x.numpy()})
    backend, _ = _torch_args(run_model)
    with backend.running():
        expected = backend.logits(x).numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-3)
    # An existing file needs --force; a file that is no model is one line, no traceback.
    assert main(["export", str(run_model), "--onnx", str(out)]) == 2
    not_a_model = tmp_path / "notes.pt"
    not_a_model.write_text("hello")
    assert main(["export", str(not_a_model), "--onnx", str(tmp_path / "y.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "not an allblast model file" in err[1] and not (tmp_path / "y.onnx").exists()


def test_openvino_splits_a_batch_over_its_streams_and_keeps_the_order(run_model):
    """The batch is cut into one slice per CPU stream, run at once and joined: any batch size,
    smaller than the number of streams too, comes back whole and in order."""
    ref = open_predictor(run_model, backend="torch", device="cpu")
    torch.manual_seed(1)
    x = torch.randn(7, 3, 128, 128)
    expected = ref.backend.logits(x.contiguous(memory_format=torch.channels_last))
    got = in_child(jobs.stream_logits, str(run_model), x.numpy(), [1, 2, 7])
    assert got["requests"] >= 1
    for n, logits in got["logits"].items():
        assert logits.shape == (n, len(PBC_CLASSES))
        torch.testing.assert_close(torch.from_numpy(logits), expected[:n], atol=2e-3, rtol=1e-3)


def test_predict_workers_start_from_a_fork_server_and_give_the_same_csv(run_model, small_folder, tmp_path):
    """With OpenVINO loaded, `predict --workers N` starts its loader workers from a fork server
    (never a fork of this process), gives the CSV that in-process decoding gives, and leaves this
    process's worker start method as it was."""
    got = in_child(jobs.predict_workers, str(run_model), str(small_folder), str(tmp_path))
    assert got["rcs"] == [0, 0] and got["method"] is None
    assert got["csv"][1] == got["csv"][0] and got["csv"][0].count("\n") == 9  # a header and 8 cells
