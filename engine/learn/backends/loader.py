"""Choosing and opening an inference backend for a model file.

`auto` is OpenVINO on the CPU when it is installed and starts, and torch on a CUDA GPU; when
OpenVINO is missing or cannot start here, torch predicts and one info line says why. OpenVINO and
ONNX Runtime read the model's ONNX export from its cache entry (made on first use), so only torch
needs timm to build the network.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from ...utils.files import sha256_file
from ...utils.jobs import worker_start_method
from .base import BACKENDS, Backend, BackendError, BackendUnavailable, cannot_run
from .cache import cache_entry

log = logging.getLogger(__name__)


@dataclass
class Predictor:
    backend: Backend
    spec: object  # engine.learn.model.ModelSpec
    extras: dict  # what the model file says of itself (calibration, split protocol)
    sha256: str
    note: str | None = None  # one line for the user: why the chosen backend is not the one asked for


def choose_backend(backend: str, device: str = "auto") -> tuple[str, torch.device, str | None]:
    """(backend name, device, note) for the user's --backend and --device. `auto` on a CPU takes
    OpenVINO when it imports and its CPU plugin loads; else torch, with the reason in `note`."""
    from ..device import resolve_device

    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend in ("openvino", "onnxruntime"):
        if str(device).startswith("cuda"):
            raise BackendError(f"--backend {backend} runs on the CPU; use --device cpu or auto, or --backend torch "
                               "for the GPU")
        return backend, torch.device("cpu"), None
    dev = resolve_device(device)
    if backend == "torch" or dev.type != "cpu":
        return "torch", dev, None
    from .openvino_backend import openvino_core

    try:
        openvino_core()
    except BackendUnavailable as exc:
        return "torch", dev, exc.fallback
    return "openvino", dev, None


def onnx_model(model_path: str | os.PathLike, sha256: str, entry: Path) -> Path:
    """The model's ONNX export in its cache entry (logits and each cell's embedding), exported now
    if it is not there yet, or exported again when an earlier allblast cached one without the
    embedding output. In the app (a worker start method is set) the export runs in a child process:
    torch's exporter holds the GIL through its graph passes for about half a second, which froze
    the window although it ran on a pool thread (issue 28)."""
    from .onnx_export import has_embedding_output

    path = entry / "model.onnx"
    if not path.is_file() or not has_embedding_output(path):
        log.info("exporting %s to ONNX (once per model version)", model_path)
        method = worker_start_method()
        if method is None:
            _export(str(model_path), sha256, str(path))
        else:
            context = multiprocessing.get_context(method)
            with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
                pool.submit(_export, str(model_path), sha256, str(path)).result()
    return path


def _export(model_path: str, sha256: str, path: str) -> None:
    from ..model import load_model, temperature_of
    from .onnx_export import export_onnx

    model, spec, extras = load_model(model_path, "cpu")
    export_onnx(model, spec, path, temperature=temperature_of(extras), sha256=sha256, embedding=True)


def open_predictor(model_path: str | os.PathLike, *, backend: str = "auto", device: str = "auto",
                   precision: str = "f32", data_root: str | os.PathLike | None = None) -> Predictor:
    """Load `model_path` for prediction with the chosen backend. Raises BackendError / ValueError
    with one line for the user. `auto` never fails for a fast backend that cannot start (not
    installed, a broken install, no CPU plugin, a graph it cannot compile, a first image that
    fails): torch predicts instead, and `Predictor.note` says why in one line."""
    from ..model import read_checkpoint

    name, dev, note = choose_backend(backend, device)
    if name != "torch":
        spec, _, extras = read_checkpoint(model_path)  # checked before anything is written for it
        try:
            return _open_fast(name, model_path, spec, extras, precision, data_root)
        except BackendUnavailable as exc:
            if backend != "auto":
                raise
            log.debug("%s cannot start; torch predicts", name, exc_info=exc)
            note = exc.fallback
    if note:
        log.info("%s", note)
    return _open_torch(model_path, dev, precision, note)


def _open_torch(model_path, dev: torch.device, precision: str, note: str | None) -> Predictor:
    from ..model import load_model
    from .torch_backend import TorchBackend

    model, spec, extras = load_model(model_path, dev)
    return Predictor(TorchBackend(model, dev, precision), spec, extras, sha256_file(model_path), note)


def _open_fast(name: str, model_path, spec, extras: dict, precision: str, data_root) -> Predictor:
    """OpenVINO or ONNX Runtime, started and checked on one blank image. Whatever its native library
    raises becomes BackendUnavailable (one line; `auto` falls back on it); BackendError for a
    precision it cannot run goes through as it is."""
    sha = sha256_file(model_path)
    entry = cache_entry(model_path, sha, data_root=data_root)
    onnx_path = onnx_model(model_path, sha, entry)
    what = {"openvino": "OpenVINO", "onnxruntime": "ONNX Runtime"}[name]
    try:
        if name == "openvino":
            from .openvino_backend import OpenVinoBackend

            runner: Backend = OpenVinoBackend(onnx_path, precision, entry)
        else:
            from .onnxruntime_backend import OnnxRuntimeBackend

            runner = OnnxRuntimeBackend(onnx_path, precision)
        runner.check(spec.img_size)
    except BackendError:
        raise
    except Exception as exc:  # noqa: BLE001 - a native library's own error: this computer cannot run it
        log.debug("%s failed on a blank image", what, exc_info=exc)
        raise cannot_run(what, exc) from exc
    return Predictor(runner, spec, extras, sha)


__all__ = ["Predictor", "choose_backend", "open_predictor", "onnx_model"]
