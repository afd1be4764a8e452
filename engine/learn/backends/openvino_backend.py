"""The network in OpenVINO on the CPU: compiled from the cached ONNX export, with OpenVINO's own
compiled-model cache (CACHE_DIR) in the model's cache entry, one folder per precision, so a second
prediction loads the compiled blob instead of compiling again."""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .base import INSTALL_FAST, Backend, BackendError, BackendUnavailable, cannot_run, reason

log = logging.getLogger(__name__)

# OpenVINO's names: the hint it takes, and the capability the CPU must report for it.
_HINT = {"f32": "f32", "bf16": "bf16", "f16": "f16"}
_NEEDS = {"bf16": "BF16", "f16": "FP16"}


def import_openvino():
    """The openvino module, or BackendUnavailable saying how to install it (or why it does not load).

    OpenVINO's model-conversion tools start usage telemetry when openvino is imported (a client id
    written under ~/intel, a sender thread). A clinical workstation sends nothing: while openvino is
    first imported, its telemetry package is hidden, so OpenVINO uses its own no-op stub."""
    if "openvino" not in sys.modules:
        saved = sys.modules.get("openvino_telemetry")
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment] - `import` now raises ImportError
        try:
            return _import()
        finally:
            if saved is None:
                del sys.modules["openvino_telemetry"]
            else:
                sys.modules["openvino_telemetry"] = saved
    return _import()


def _import():
    try:
        import openvino
    except ImportError as exc:
        if getattr(exc, "name", None) not in (None, "openvino"):  # installed, but a part of it is missing
            raise cannot_run("OpenVINO", exc) from exc
        raise BackendUnavailable(f"OpenVINO is not installed: {INSTALL_FAST}, or use --backend torch",
                                 f"OpenVINO is not installed, so torch predicts ({INSTALL_FAST} for faster "
                                 "CPU predictions)") from exc
    except Exception as exc:  # noqa: BLE001 - a broken install (a native library that does not load)
        log.debug("importing OpenVINO failed", exc_info=exc)
        raise cannot_run("OpenVINO", exc) from exc
    return openvino


def openvino_core():
    """An OpenVINO Core whose CPU plugin loads, or BackendUnavailable naming why not. Asks the CPU
    plugin alone: a bundle or an install without it fails here, before any export or compilation,
    and other devices' plugins (GPU, NPU) are never probed."""
    ov = import_openvino()
    try:
        core = ov.Core()
        core.get_versions("CPU")  # raises when no CPU plugin is registered or it does not load
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError; anything here means it cannot run
        log.debug("OpenVINO's CPU plugin does not load", exc_info=exc)
        raise cannot_run("OpenVINO", exc) from exc
    return ov, core


class OpenVinoBackend(Backend):
    name = "openvino"

    def __init__(self, onnx_path: str | os.PathLike, precision: str, cache_dir: str | os.PathLike) -> None:
        super().__init__(precision, torch.device("cpu"))
        # Any other error of OpenVINO's below is made one line by the loader (loader._open_fast).
        ov, core = openvino_core()
        capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        need = _NEEDS.get(precision)
        if need and need not in capabilities:
            # OpenVINO would quietly run f32 instead; the output would then state a precision it did not use.
            raise BackendError(f"this CPU cannot run {precision} in OpenVINO (it offers {', '.join(capabilities)}); "
                               "use --precision f32")
        cache = Path(cache_dir) / f"openvino-{precision}"
        cache.mkdir(parents=True, exist_ok=True)
        self.cache_dir = cache
        core.set_property({"CACHE_DIR": str(cache)})
        start = time.perf_counter()
        try:
            # THROUGHPUT: several CPU streams, each running a slice of the batch on its own cores;
            # on 2 cores 2 streams ran Lite0 @160 at 275 img/s against 246 for one LATENCY stream.
            self.compiled = core.compile_model(str(onnx_path), "CPU", {"INFERENCE_PRECISION_HINT": _HINT[precision],
                                                                        "PERFORMANCE_HINT": "THROUGHPUT"})
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError for a graph it cannot compile
            log.debug("OpenVINO could not compile %s", onnx_path, exc_info=exc)
            why = reason(exc)
            raise BackendUnavailable(f"OpenVINO could not compile this model ({why}); use --backend onnxruntime "
                                     "or torch", f"OpenVINO could not compile this model ({why}), so torch "
                                     "predicts") from exc
        self.compile_seconds = time.perf_counter() - start
        self.from_cache = bool(self.compiled.get_property("LOADED_FROM_CACHE"))
        streams = max(1, int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self.requests = [self.compiled.create_infer_request() for _ in range(streams)]
        log.info("OpenVINO %s (%s) %s in %.2f s, cache %s", ov.__version__, precision,
                 "loaded from its cache" if self.from_cache else "compiled", self.compile_seconds, cache)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, False)[0]

    def logits_and_embeddings(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        # an export with the `embedding` output (engine.learn.backends.onnx_export) has two
        return self._run(x, len(getattr(self.compiled, "outputs", ())) > 1)

    def _run(self, x: torch.Tensor, embeddings: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The batch split over the streams' requests, run at once, joined in order."""
        parts = [p for p in np.array_split(np.ascontiguousarray(x.numpy()), len(self.requests)) if len(p)]
        running = self.requests[:len(parts)]
        for request, part in zip(running, parts):
            request.start_async({0: part})
        out, emb = [], []
        for request in running:
            request.wait()
            out.append(np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True))
            if embeddings:
                emb.append(np.array(request.get_output_tensor(1).data, dtype=np.float32, copy=True))
        return torch.from_numpy(np.concatenate(out)), torch.from_numpy(np.concatenate(emb)) if emb else None


__all__ = ["OpenVinoBackend", "import_openvino", "openvino_core"]
