"""OpenVINO work for tests/test_backends.py, run in a fresh "spawn" child process.

OpenVINO's native thread pools, once started in the pytest process, made full runs die with
SIGSEGV tens of tests later (when later tests fork), so the pytest process never imports it
(tests/conftest.py). Each job here runs in a child that `in_child` spawns (a clean interpreter,
no fork of pytest), does its work and returns plain data (numbers, arrays, strings); the test
asserts on what comes back. Works with any pytest: no plugin is involved.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import io
import multiprocessing
import os
from pathlib import Path

import numpy as np

CHILD_TIMEOUT_S = 600  # a child stuck in native code fails its test instead of hanging the run


def in_child(job, *args, **kwargs):
    """`job(*args, **kwargs)` in a new spawned interpreter; its return value (or its exception)."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(job, *args, **kwargs).result(timeout=CHILD_TIMEOUT_S)


# ---- what the jobs return -----------------------------------------------------------------------
def _result(p) -> dict:
    return {"paths": list(p.paths), "predicted": list(p.predicted), "probs": np.asarray(p.probs)}


def predict_with(backend: str, model_path: str, root: str, cells: list[str], **kwargs) -> dict:
    """Predictions of `cells` through `backend`, as the CLI makes them (calibrated temperature).

    `shifted-torch` is the test double of a wrong backend: torch's logits with one class raised,
    as a backend that fed the network differently (or mixed up an output) would give."""
    from engine.learn.backends.loader import open_predictor
    from engine.learn.inference import predict
    from engine.learn.model import temperature_of

    p = open_predictor(model_path, backend="torch" if backend == "shifted-torch" else backend, device="cpu")
    if backend == "shifted-torch":
        p.backend = shifted_backend(p.backend, shift=2.0)
    return _result(predict(p.backend, p.spec, root, cells, batch_size=32, temperature=temperature_of(p.extras),
                           **kwargs))


def shifted_backend(inner, shift: float):
    """A backend that returns `inner`'s logits with the first class raised by `shift`."""
    from engine.learn.backends.base import Backend

    class ShiftedLogits(Backend):
        name = "shifted-torch"
        channels_last = inner.channels_last

        def __init__(self) -> None:
            super().__init__(inner.precision, inner.device)

        def running(self):
            return inner.running()

        def logits(self, x):
            out = inner.logits(x).clone()
            out[:, 0] += shift
            return out

    return ShiftedLogits()


PBC_CLASSES = ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"]


def save_cell_model(path: Path, seed: int, img_size: int = 128) -> Path:
    """Lite0 with its ImageNet backbone and a random, sharpened head: confident, distinct
    probabilities, so a backend that feeds the network differently changes the top class."""
    import torch

    from engine.learn.model import build_model, save_model
    from engine.learn.weights import LITE0

    torch.manual_seed(seed)
    model, spec, _ = build_model(LITE0, PBC_CLASSES, img_size=img_size)
    with torch.no_grad():
        model.head[-1].weight.mul_(20)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(path, model, spec, calibration={"temperature": 1.3})
    return path


def cache_lifecycle(model_path: str, root: str, cells: list[str]) -> dict:
    """Open the model with OpenVINO three times (first use, cached, retrained) and report what
    happened each time: cache folders, whether it exported or compiled again, the probabilities."""
    import engine.learn.backends.onnx_export as export_mod
    from engine.learn.backends.loader import open_predictor
    from engine.learn.inference import predict
    from engine.learn.model import temperature_of

    exports = []
    original = export_mod.export_onnx

    def counting_export(*args, **kwargs):
        exports.append(1)
        return original(*args, **kwargs)

    export_mod.export_onnx = counting_export

    def probs(p):
        return np.asarray(predict(p.backend, p.spec, root, cells, batch_size=32,
                                  temperature=temperature_of(p.extras)).probs)

    first = open_predictor(model_path, backend="openvino", precision="f32")
    entry = first.backend.cache_dir.parent
    out = {"entry": str(entry), "sha_first": first.sha256, "first_from_cache": first.backend.from_cache,
           "entry_has_onnx": (entry / "model.onnx").is_file(),
           "compiled_files": len(list(first.backend.cache_dir.iterdir())), "exports_first": len(exports)}
    second = open_predictor(model_path, backend="openvino", precision="f32")
    out.update(exports_second=len(exports) - out["exports_first"], second_from_cache=second.backend.from_cache,
               second_cache_dir_same=second.backend.cache_dir == first.backend.cache_dir, before=probs(second))
    save_cell_model(Path(model_path), seed=2, img_size=64)  # retrained: same file, new weights
    third = open_predictor(model_path, backend="openvino", precision="f32")
    out.update(sha_third=third.sha256, third_from_cache=third.backend.from_cache, old_entry_exists=entry.exists(),
               after=probs(third))
    return out


def cli(argv: list[str], with_openvino_caps: bool = False) -> dict:
    """`allblast-engine argv` in this child: its exit code and what it printed."""
    from engine.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    result = {"rc": rc, "out": out.getvalue(), "err": err.getvalue()}
    if with_openvino_caps:
        from engine.learn.backends.openvino_backend import import_openvino

        result["caps"] = list(import_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return result


def prepare_export(model_path: str) -> None:
    """Open the model with OpenVINO once: its ONNX export and compiled model are now cached."""
    from engine.learn.backends.loader import open_predictor

    open_predictor(model_path, backend="openvino")


def stream_logits(model_path: str, x: np.ndarray, sizes: list[int]) -> dict:
    """OpenVINO's logits for the first n rows of `x`, for each n, and its number of requests."""
    import torch

    from engine.learn.backends.loader import open_predictor

    ov = open_predictor(model_path, backend="openvino", device="cpu")
    t = torch.from_numpy(x)
    return {"requests": len(ov.backend.requests),
            "logits": {n: ov.backend.logits(t[:n].contiguous()).numpy() for n in sizes}}


def predict_workers(model_path: str, root: str, out_dir: str) -> dict:
    """`predict --backend openvino` with 0 and 1 loader workers: both CSVs and this process's
    worker start method afterwards."""
    from engine.cli import main
    from engine.utils.jobs import worker_start_method

    base = ["-q", "predict", model_path, root, "--backend", "openvino", "--device", "cpu"]
    rcs = [main([*base, "--out", os.path.join(out_dir, f"w{n}.csv"), "--workers", str(n)]) for n in (0, 1)]
    return {"rcs": rcs, "method": worker_start_method(),
            "csv": [Path(out_dir, f"w{n}.csv").read_text() for n in (0, 1)]}
