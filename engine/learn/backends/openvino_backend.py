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

from .base import INSTALL_FAST, Backend, BackendError

log = logging.getLogger(__name__)

# OpenVINO's names: the hint it takes, and the capability the CPU must report for it.
_HINT = {"f32": "f32", "bf16": "bf16", "f16": "f16"}
_NEEDS = {"bf16": "BF16", "f16": "FP16"}


def import_openvino():
    """The openvino module, or BackendError saying how to install it.

    OpenVINO's model-conversion tools start usage telemetry when openvino is imported (a client id
    written under ~/intel, a sender thread). A clinical workstation sends nothing: while openvino is
    first imported, its telemetry package is hidden, so OpenVINO uses its own no-op stub."""
    if "openvino" not in sys.modules:
        saved = sys.modules.get("openvino_telemetry")
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment] - `import` now raises ImportError
        try:
            import openvino  # noqa: F401
        except ImportError as exc:
            raise BackendError(f"OpenVINO is not installed: {INSTALL_FAST}, or use --backend torch") from exc
        finally:
            if saved is None:
                del sys.modules["openvino_telemetry"]
            else:
                sys.modules["openvino_telemetry"] = saved
    try:
        import openvino
    except ImportError as exc:
        raise BackendError(f"OpenVINO is not installed: {INSTALL_FAST}, or use --backend torch") from exc
    return openvino


class OpenVinoBackend(Backend):
    name = "openvino"

    def __init__(self, onnx_path: str | os.PathLike, precision: str, cache_dir: str | os.PathLike) -> None:
        super().__init__(precision, torch.device("cpu"))
        ov = import_openvino()
        core = ov.Core()
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
        except RuntimeError as exc:  # OpenVINO raises RuntimeError for a graph it cannot compile
            log.debug("OpenVINO could not compile %s", onnx_path, exc_info=exc)
            first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise BackendError(f"OpenVINO could not compile this model ({first_line}); use --backend onnxruntime "
                               "or torch") from exc
        self.compile_seconds = time.perf_counter() - start
        self.from_cache = bool(self.compiled.get_property("LOADED_FROM_CACHE"))
        streams = max(1, int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self.requests = [self.compiled.create_infer_request() for _ in range(streams)]
        log.info("OpenVINO %s (%s) %s in %.2f s, cache %s", ov.__version__, precision,
                 "loaded from its cache" if self.from_cache else "compiled", self.compile_seconds, cache)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The batch split over the streams' requests, run at once, joined in order."""
        parts = [p for p in np.array_split(np.ascontiguousarray(x.numpy()), len(self.requests)) if len(p)]
        running = self.requests[:len(parts)]
        for request, part in zip(running, parts):
            request.start_async({0: part})
        out = []
        for request in running:
            request.wait()
            out.append(np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True))
        return torch.from_numpy(np.concatenate(out))


__all__ = ["OpenVinoBackend", "import_openvino"]
